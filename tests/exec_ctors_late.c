/*
 * exec_ctors_late.c: a constructor of the program that comes after the
 * library's in link order (test_pp_exec_ctors links this file after
 * libfuture.a, and after -lfuture), so that its run in a FUT_START_EXEC
 * fork server is the library's doing.
 */
int exec_ctors_late_value;

__attribute__((constructor)) static void late_ctor(void)
{
	exec_ctors_late_value = 42;
}
