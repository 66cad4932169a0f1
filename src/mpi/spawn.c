/*
 * spawn.c: FUT_MPI_SPAWN, mpi4py's MPIPoolExecutor model: one process
 * spawns the servers (MPI_Comm_spawn over MPI_COMM_SELF) and both sides
 * merge the intercommunicator into the executor's communicator, the
 * spawning process rank 0; the copies find MPI_Comm_get_parent set inside
 * their own fut_mpi_executor_new() call and serve.
 *
 * Owns: the resolution of the command (NULL: this executable, from
 * /proc/self/exe, never that literal path: the launcher would exec
 * itself), the check that it is an executable file before MPI sees it,
 * MPI_ERRORS_RETURN on MPI_COMM_SELF around the spawn, and the release of
 * the communicators at the end (free the merge, disconnect the
 * intercommunicator: collective with the other side).
 *
 * Why the check: Open MPI 4.1 refuses a spawn it cannot start by waiting
 * forever inside MPI_Comm_spawn, errors returned or not (measured: a
 * command that does not exist, and /bin/false, which exits before
 * MPI_Init; mpi4py 3.1.4 hangs there too).  A missing or non-executable
 * command is therefore FUT_EAGAIN before any MPI call; what MPI itself
 * refuses is FUT_EAGAIN (MPI_ERR_SPAWN) or FUT_ENOTSUP.
 * Threads: the caller's.
 * Locks: none.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mpi_int.h"

void fut__mpi_comm_release(struct fut__mpi_setup *setup)
{
	if (setup->comm != MPI_COMM_NULL)
		(void)MPI_Comm_free(&setup->comm);
	if (setup->inter != MPI_COMM_NULL)
		(void)MPI_Comm_disconnect(&setup->inter);
}

static bool executable(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode) &&
	       access(path, X_OK) == 0;
}

/* Whether command names an executable file as a launcher finds it: a
 * path with a slash as it is, a bare name through PATH. */
static bool findable(const char *command)
{
	if (command[0] == '\0')
		return false;
	if (strchr(command, '/') != NULL)
		return executable(command);
	const char *path = getenv("PATH");
	if (path == NULL)
		path = "/usr/local/bin:/usr/bin:/bin";
	size_t clen = strlen(command);
	while (*path != '\0') {
		const char *end = strchr(path, ':');
		size_t dlen = end != NULL ? (size_t)(end - path) : strlen(path);
		char buf[PATH_MAX];
		if (dlen == 0) {
			if (executable(command))
				return true;
		} else if (dlen + 1 + clen < sizeof(buf)) {
			memcpy(buf, path, dlen);
			buf[dlen] = '/';
			memcpy(buf + dlen + 1, command, clen + 1);
			if (executable(buf))
				return true;
		}
		if (end == NULL)
			break;
		path = end + 1;
	}
	return false;
}

int fut__mpi_spawn(const char *command, char *const *argv, size_t n,
		   MPI_Comm *inter, MPI_Comm *merged)
{
	*inter = *merged = MPI_COMM_NULL;
	char self[PATH_MAX];
	if (command == NULL) {
		ssize_t k = readlink("/proc/self/exe", self, sizeof(self) - 1);
		if (k <= 0 || (size_t)k >= sizeof(self) - 1)
			return FUT_ENOTSUP;
		self[k] = '\0';
		command = self;
	}
	if (!findable(command))
		return FUT_EAGAIN;
	/* MPI_Comm_spawn takes char *argv[]: a copy of the pointers. */
	size_t nargs = 0;
	while (argv != NULL && argv[nargs] != NULL)
		nargs++;
	char **args = fut__calloc(nargs + 1, sizeof(*args));
	int *errcodes = fut__calloc(n, sizeof(*errcodes));
	if (args == NULL || errcodes == NULL) {
		fut__free(args);
		fut__free(errcodes);
		return FUT_ENOMEM;
	}
	for (size_t i = 0; i < nargs; i++)
		args[i] = argv[i];
	MPI_Errhandler old;
	if (MPI_Comm_get_errhandler(MPI_COMM_SELF, &old) != MPI_SUCCESS) {
		fut__free(args);
		fut__free(errcodes);
		return FUT_ENOTSUP;
	}
	(void)MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
	int rc = MPI_Comm_spawn(command, nargs != 0 ? args : MPI_ARGV_NULL,
				(int)n, MPI_INFO_NULL, 0, MPI_COMM_SELF, inter,
				errcodes);
	(void)MPI_Comm_set_errhandler(MPI_COMM_SELF, old);
	(void)MPI_Errhandler_free(&old);
	fut__free(args);
	fut__free(errcodes);
	if (rc != MPI_SUCCESS) {
		int cls = MPI_ERR_OTHER;
		(void)MPI_Error_class(rc, &cls);
		*inter = MPI_COMM_NULL;
		return cls == MPI_ERR_SPAWN ? FUT_EAGAIN : FUT_ENOTSUP;
	}
	(void)MPI_Comm_set_errhandler(*inter, MPI_ERRORS_RETURN);
	if (MPI_Intercomm_merge(*inter, 0, merged) != MPI_SUCCESS) {
		(void)MPI_Comm_disconnect(inter);
		*merged = MPI_COMM_NULL;
		return FUT_EBROKEN;
	}
	(void)MPI_Comm_set_errhandler(*merged, MPI_ERRORS_RETURN);
	return FUT_OK;
}

int fut__mpi_spawned(MPI_Comm *inter, MPI_Comm *merged)
{
	*inter = *merged = MPI_COMM_NULL;
	MPI_Comm parent = MPI_COMM_NULL;
	if (MPI_Comm_get_parent(&parent) != MPI_SUCCESS ||
	    parent == MPI_COMM_NULL)
		return FUT_ENOTSUP;
	(void)MPI_Comm_set_errhandler(parent, MPI_ERRORS_RETURN);
	if (MPI_Intercomm_merge(parent, 1, merged) != MPI_SUCCESS) {
		*merged = MPI_COMM_NULL;
		return FUT_EBROKEN;
	}
	(void)MPI_Comm_set_errhandler(*merged, MPI_ERRORS_RETURN);
	*inter = parent;
	return FUT_OK;
}
