/*
 * exec.c: the FUT_START_EXEC start method: the fork server is a fresh
 * exec of the program's own executable (/proc/self/exe), entered through
 * the library before main runs, as Python's forkserver: it inherits no
 * thread, no lock and no memory of the caller.
 *
 * Owns: the hand-over.  The parent forks (forkserver.c), and the child
 * execs the program with FUT__PP_EXEC_SERVER=<fd>:<pid> in its
 * environment, fd its end of the fork server's socket, pid the parent's
 * (taken only so: exec_sock).  The library's constructor (below)
 * sees the variable before main, takes one message from the parent on
 * that socket (this struct exec_msg and the slots memfd), and becomes the
 * fork server: it never returns to main.  Task functions are addresses
 * in the parent: a worker finds each through the parent's module table
 * (core/names.h: build-id and offset); one it cannot find fails its task
 * FUT_ENOTSUP (child.c).  The initializer is found the same way.
 * Threads: the parent's caller of fut__forkserver_start; the new program's
 * only thread.
 * Locks: none.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/names.h"
#include "process_pool/child.h"

#define EXEC_ENV "FUT__PP_EXEC_SERVER"
#define EXEC_MAGIC 0x46555458u /* "FUTX" */
#define EXEC_MAX_MODULES 256u

/* The parent's message to the new fork server: both are the same
 * executable, so the layout is the same. */
struct exec_msg {
	uint32_t magic;
	uint32_t nslots;
	pid_t parent;
	bool track_time;
	sigset_t worker_mask;
	uint64_t initializer; /* an address in the parent, 0: none */
	uint32_t nmods;
	struct fut__fn_module mods[EXEC_MAX_MODULES];
};

extern char **environ;

/* The program to exec: what /proc/self/exe names (valgrind shows its
 * guest there; the kernel's link would be valgrind itself), else the
 * link. */
static void exe_path(char *buf, size_t len)
{
	ssize_t n = readlink("/proc/self/exe", buf, len - 1);
	static const char deleted[] = " (deleted)";
	size_t dl = sizeof(deleted) - 1;
	if (n <= 0 || (size_t)n >= len - 1 ||
	    ((size_t)n > dl && memcmp(buf + n - dl, deleted, dl) == 0)) {
		memcpy(buf, "/proc/self/exe", sizeof("/proc/self/exe"));
		return;
	}
	buf[n] = '\0';
}

#define EXE_PATH_MAX 4096

/* Appends v in decimal at p; past its last digit. */
static char *put_dec(char *p, unsigned v)
{
	char digits[12];
	int d = 0;
	do
		digits[d++] = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	while (d > 0)
		*p++ = digits[--d];
	return p;
}

char **fut__pp_exec_env(int sock, pid_t parent)
{
	size_t n = 0;
	while (environ != NULL && environ[n] != NULL)
		n++;
	/* [0] the path, then the environment, NULL, then the strings. */
	size_t bytes =
		(n + 3) * sizeof(char *) + sizeof(EXEC_ENV) + 32 + EXE_PATH_MAX;
	char **block = fut__malloc(bytes);
	if (block == NULL)
		return NULL;
	char **env = block + 1;
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (strncmp(environ[i], EXEC_ENV "=", sizeof(EXEC_ENV)) != 0)
			env[k++] = environ[i];
	char *ours = (char *)(block + n + 3);
	memcpy(ours, EXEC_ENV "=", sizeof(EXEC_ENV));
	/* "<fd>:<pid>": exec_sock() below takes nothing else. */
	char *p = put_dec(ours + sizeof(EXEC_ENV), (unsigned)sock);
	*p++ = ':';
	p = put_dec(p, (unsigned)parent);
	*p++ = '\0';
	env[k++] = ours;
	env[k] = NULL;
	block[0] = p;
	exe_path(p, EXE_PATH_MAX);
	return block;
}

void fut__pp_exec_child(char **block, int sock)
{
	/* Our end must survive the exec: the only fd of ours that does. */
	if (fcntl(sock, F_SETFD, 0) == 0) {
		static char name[] = "libfuture-forkserver";
		char *argv[] = { name, NULL };
		(void)execve(block[0], argv, block + 1);
	}
	_exit(127);
}

bool fut__pp_exec_send(const struct fut__forkserver_cfg *cfg, int sock,
		       pid_t parent)
{
	struct exec_msg *m = fut__malloc(sizeof(*m));
	if (m == NULL) {
		errno = ENOMEM;
		return false;
	}
	memset(m, 0, sizeof(*m));
	m->magic = EXEC_MAGIC;
	m->nslots = cfg->nslots;
	m->parent = parent;
	m->track_time = cfg->track_time;
	m->worker_mask = cfg->worker_mask;
	m->initializer = (uint64_t)(uintptr_t)cfg->initializer;
	size_t n = fut__fn_table(m->mods, EXEC_MAX_MODULES);
	if (n == 0) {
		/* A program has its own module at least: none is a scan that
		 * found no memory.  Sent, that empty table would end every
		 * task FUT_ENOTSUP (found by review, 2026-12-07). */
		fut__free(m);
		errno = ENOMEM;
		return false;
	}
	m->nmods = (uint32_t)(n < EXEC_MAX_MODULES ? n : EXEC_MAX_MODULES);
	struct iovec iov = { m, sizeof(*m) };
	struct msghdr h = { .msg_iov = &iov, .msg_iovlen = 1 };
	_Alignas(struct cmsghdr) char space[CMSG_SPACE(sizeof(int))];
	fut__pp_attach_fds(&h, space, sizeof(space), &cfg->slots_fd, 1);
	ssize_t sent;
	do
		sent = sendmsg(sock, &h, MSG_NOSIGNAL);
	while (sent < 0 && errno == EINTR);
	int err = errno;
	fut__free(m);
	errno = err;
	return sent == (ssize_t)sizeof(struct exec_msg);
}

/* ------------------------------------------------------------------ */
/* In the new program, before main                                    */

/* The initializer of the parent's that this program does not have: its
 * workers break the pool, as a failing initializer does. */
static int unresolved_initializer(void *initarg)
{
	(void)initarg;
	return FUT_ENOTSUP;
}

static struct fut__forkserver_cfg server_cfg;

/* Takes the parent's message; false if it is not one. */
static bool take_msg(int sock, struct exec_msg *m, int *slots_fd)
{
	struct iovec iov = { m, sizeof(*m) };
	_Alignas(struct cmsghdr) char space[CMSG_SPACE(sizeof(int))];
	struct msghdr h = { .msg_iov = &iov,
			    .msg_iovlen = 1,
			    .msg_control = space,
			    .msg_controllen = sizeof(space) };
	ssize_t got;
	do
		got = recvmsg(sock, &h, MSG_CMSG_CLOEXEC);
	while (got < 0 && errno == EINTR);
	struct cmsghdr *c = CMSG_FIRSTHDR(&h);
	if (c == NULL || c->cmsg_level != SOL_SOCKET ||
	    c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof(int)))
		return false;
	memcpy(slots_fd, CMSG_DATA(c), sizeof(int));
	return got == (ssize_t)sizeof(*m) && m->magic == EXEC_MAGIC &&
	       m->nslots != 0 && m->nmods <= EXEC_MAX_MODULES;
}

/*
 * The program's constructors that its start would run after this one,
 * before main (found by review, 2026-12-07: with libfuture.so none ran):
 *
 * - those of this module's init_array after this entry (a static link:
 *   the objects after the library's in link order);
 * - when this module is not the executable (libfuture.so, or a library
 *   it is linked into), the executable's DT_INIT and init_array, which
 *   the loader runs after every library's (a C++ program's static
 *   initializers); but only when the loader initialised every other
 *   library before this one: none with constructors of its own is
 *   loaded ahead of it in the loader's list (one named before it on the
 *   link line, a preload), and none links it (DT_NEEDED).  The loader
 *   initialises such a library after this one (one that links it after
 *   it, and may move others along: glibc's order is not the list's), so
 *   here it never is, and the program's constructors may need it (a
 *   review, 2026-12-07: a wrapper library's state, a C++ runtime; then a
 *   wrapper named after -lfuture, found by review the same day, whose
 *   state was still unset).  Then none of the executable's run.
 */
static void fut__pp_exec_entry(int argc, char **argv, char **envp);

typedef void (*ctor_fn)(int argc, char **argv, char **envp);

/* A fully static executable has no dynamic section: the linker's bounds
 * of its init_array (hidden, in the module this is linked into; a shared
 * library has none). */
extern ctor_fn __init_array_start[] __attribute__((weak, visibility("hidden")));
extern ctor_fn __init_array_end[] __attribute__((weak, visibility("hidden")));

struct ctor_list {
	ElfW(Addr) init; /* DT_INIT, 0: none */
	const ElfW(Addr) * arr;
	size_t n;
};

struct ctors {
	ElfW(Addr) self;
	unsigned seen;
	bool own_found, own_is_main;
	bool ahead; /* a module initialised after ours */
	struct ctor_list own, main;
	const char *own_path, *own_soname; /* ours: the names it goes by */
};

static bool module_holds(const struct dl_phdr_info *info, ElfW(Addr) a)
{
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type == PT_LOAD &&
		    a - (info->dlpi_addr + ph->p_vaddr) < ph->p_memsz)
			return true;
	}
	return false;
}

/* A module's dynamic section; NULL: none (a fully static program). */
static const ElfW(Dyn) * dynamic_of(const struct dl_phdr_info *info)
{
	for (int i = 0; i < info->dlpi_phnum; i++)
		if (info->dlpi_phdr[i].p_type == PT_DYNAMIC)
			return (const ElfW(Dyn) *)(info->dlpi_addr +
						   info->dlpi_phdr[i].p_vaddr);
	return NULL;
}

/* A module's DT_INIT and init_array, as the loader calls them: their
 * addresses in the dynamic section are not relocated (glibc's call_init
 * adds the load address). */
static void init_of(const struct dl_phdr_info *info, struct ctor_list *l)
{
	*l = (struct ctor_list){ 0 };
	const ElfW(Dyn) *d = dynamic_of(info);
	for (; d != NULL && d->d_tag != DT_NULL; d++)
		if (d->d_tag == DT_INIT)
			l->init = info->dlpi_addr + d->d_un.d_ptr;
		else if (d->d_tag == DT_INIT_ARRAY)
			l->arr = (const ElfW(Addr) *)(info->dlpi_addr +
						      d->d_un.d_ptr);
		else if (d->d_tag == DT_INIT_ARRAYSZ)
			l->n = d->d_un.d_val / sizeof(ElfW(Addr));
	if (l->arr == NULL)
		l->n = 0;
}

/* A module's string table: glibc relocates DT_STRTAB in place, but not
 * in a read-only dynamic section (the vdso's, some architectures'). */
static const char *strtab_of(const struct dl_phdr_info *info,
			     const ElfW(Dyn) * d)
{
	for (; d->d_tag != DT_NULL; d++)
		if (d->d_tag == DT_STRTAB)
			return (const char *)(d->d_un.d_ptr < info->dlpi_addr ?
						      info->dlpi_addr +
							      d->d_un.d_ptr :
						      d->d_un.d_ptr);
	return NULL;
}

/* Whether a DT_NEEDED name is our module's: its soname, path, or the
 * path's last part (the file it was linked with, without a soname). */
static bool names_own(const struct ctors *c, const char *name)
{
	const char *base = strrchr(c->own_path, '/');
	base = base != NULL ? base + 1 : c->own_path;
	return (c->own_soname != NULL && strcmp(name, c->own_soname) == 0) ||
	       strcmp(name, c->own_path) == 0 || strcmp(name, base) == 0;
}

/* Sets c->ahead at a module other than the executable (which links us)
 * that needs ours. */
static int find_needer(struct dl_phdr_info *info, size_t size, void *data)
{
	(void)size;
	struct ctors *c = data;
	const ElfW(Dyn) *d = dynamic_of(info);
	if (c->seen++ == 0 || d == NULL || module_holds(info, c->self))
		return 0;
	const char *str = strtab_of(info, d);
	for (; str != NULL && d->d_tag != DT_NULL; d++)
		if (d->d_tag == DT_NEEDED &&
		    names_own(c, str + d->d_un.d_val)) {
			c->ahead = true;
			return 1;
		}
	return 0;
}

static int find_ctors(struct dl_phdr_info *info, size_t size, void *data)
{
	(void)size;
	struct ctors *c = data;
	bool first = c->seen++ == 0; /* the executable comes first */
	struct ctor_list l;
	init_of(info, &l);
	if (first)
		c->main = l;
	if (!module_holds(info, c->self)) {
		if (!first && (l.init != 0 || l.n != 0))
			c->ahead = true;
		return 0;
	}
	c->own = l;
	if (l.arr == NULL && __init_array_start != NULL &&
	    __init_array_end != NULL) { /* fully static */
		c->own.arr = (const ElfW(Addr) *)(uintptr_t)__init_array_start;
		c->own.n = (size_t)(__init_array_end - __init_array_start);
	}
	c->own_found = true;
	c->own_is_main = first;
	const ElfW(Dyn) *d = dynamic_of(info);
	const char *str = d != NULL ? strtab_of(info, d) : NULL;
	for (; str != NULL && d->d_tag != DT_NULL; d++)
		if (d->d_tag == DT_SONAME)
			c->own_soname = str + d->d_un.d_val;
	c->own_path = info->dlpi_name != NULL ? info->dlpi_name : "";
	return 1;
}

static void call_ctor(ElfW(Addr) a, int argc, char **argv)
{
	if (a != 0 && a != (ElfW(Addr)) - 1)
		((ctor_fn)(uintptr_t)a)(argc, argv, environ);
}

/* Set while this process is a fork server that is starting: from the
 * first of the library's constructors (a priority one: before the
 * program's in a static link too) until it serves.  Only this process's
 * one thread writes it, before any other thread can exist: a pool made
 * elsewhere reads it without a lock, and no environment. */
static bool starting;

/* A decimal as put_dec writes it (no sign, no leading zero, at most
 * INT_MAX) at *s; past it. */
static bool take_dec(const char **s, int *out)
{
	const char *p = *s;
	long v = 0;
	if (*p == '0' && p[1] >= '0' && p[1] <= '9')
		return false;
	while (*p >= '0' && *p <= '9' && v <= INT_MAX)
		v = v * 10 + (*p++ - '0');
	if (p == *s || v > INT_MAX)
		return false;
	*s = p;
	*out = (int)v;
	return true;
}

/*
 * The fork server's socket that EXEC_ENV names, or -1.  Any program
 * linked with the library reads the variable before main: it took "0"
 * for a socket, read stdin and exited 127 (found by a user's trial,
 * 2026-12-07).  So only what fut__pp_exec_env writes is taken: "<fd>:
 * <pid>", the fd a Unix seqpacket socket whose peer, the process that
 * made the pair, is that pid (SO_PEERCRED: the pool's process, alive or
 * not).
 */
static int exec_sock(void)
{
	const char *v = getenv(EXEC_ENV);
	int fd = -1, pid = -1;
	if (v == NULL || !take_dec(&v, &fd) || *v++ != ':' ||
	    !take_dec(&v, &pid) || *v != '\0')
		return -1;
	struct stat st;
	int type = 0, domain = 0;
	struct ucred cr = { 0 };
	socklen_t tl = sizeof(type), dl = sizeof(domain), cl = sizeof(cr);
	if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode) ||
	    getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0 ||
	    type != SOCK_SEQPACKET ||
	    getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &dl) != 0 ||
	    domain != AF_UNIX ||
	    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) != 0 ||
	    cr.pid != pid)
		return -1;
	return fd;
}

__attribute__((constructor(101))) static void see_start(void)
{
	starting = exec_sock() >= 0;
}

static void run_program_ctors(int argc, char **argv)
{
	struct ctors c = { .self = (ElfW(Addr))(uintptr_t)fut__pp_exec_entry };
	(void)dl_iterate_phdr(find_ctors, &c);
	size_t j = 0;
	while (j < c.own.n && c.own.arr[j] != c.self)
		j++;
	if (!c.own_found || j == c.own.n)
		return; /* not entered from an init_array: leave it alone */
	while (++j < c.own.n)
		call_ctor(c.own.arr[j], argc, argv);
	if (!c.own_is_main && !c.ahead) {
		c.seen = 0;
		(void)dl_iterate_phdr(find_needer, &c);
	}
	if (!c.own_is_main && !c.ahead) {
		call_ctor(c.main.init, argc, argv);
		for (size_t i = 0; i < c.main.n; i++)
			call_ctor(c.main.arr[i], argc, argv);
	}
}

bool fut__pp_exec_booting(void)
{
	return starting;
}

/*
 * The loader calls each init_array entry with argc, argv and envp, but a
 * compiler need not: under -flto gcc folds a unit's constructors into one
 * function of its own (_sub_I_65535_0) that calls them without arguments,
 * and warns that argc and argv may be used uninitialised (-Werror: the
 * build stopped; found by a user's trial, 2026-12-07).  So the entry is
 * put in .init_array by hand, as a data object the compiler keeps
 * ("used"), not a constructor: the loader calls it, with the arguments,
 * and run_program_ctors finds its own address there.
 */
__attribute__((used, section(".init_array"))) static ctor_fn exec_entry_ptr =
	fut__pp_exec_entry;

static void fut__pp_exec_entry(int argc, char **argv, char **envp)
{
	(void)envp;
	int sock = exec_sock();
	if (getenv(EXEC_ENV) != NULL)
		(void)unsetenv(EXEC_ENV);
	if (sock < 0) { /* not ours: a program as any */
		starting = false;
		return;
	}
	(void)fcntl(sock, F_SETFD, FD_CLOEXEC);
	static struct exec_msg m;
	int slots_fd = -1;
	if (!take_msg(sock, &m, &slots_fd))
		_exit(127);
	size_t bytes = m.nslots * sizeof(struct fut__worker_slot);
	void *slots = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
			   slots_fd, 0);
	(void)close(slots_fd);
	struct fut__fs_child *table = fut__calloc(m.nslots, sizeof(*table));
	if (slots == MAP_FAILED || table == NULL)
		_exit(127);
	struct fut__forkserver_cfg *cfg = &server_cfg;
	cfg->slots = slots;
	cfg->table = table;
	cfg->nslots = m.nslots;
	cfg->track_time = m.track_time;
	cfg->worker_mask = m.worker_mask;
	cfg->exec = true;
	cfg->slots_fd = -1;
	cfg->parent_mods = m.mods;
	cfg->nparent_mods = m.nmods;
	if (m.initializer != 0) {
		fut_fn f = fut__fn_translate(m.mods, m.nmods, m.initializer);
		cfg->initializer = f != NULL ?
					   (int (*)(void *))(void (*)(void))f :
					   unresolved_initializer;
	}
	/* Also for the program's own constructor(101)s, before see_start
	 * in a static link. */
	starting = true;
	run_program_ctors(argc, argv);
	/* An interval timer survives an exec, not a fork: one that the
	 * program's start armed (a sampling profiler's ITIMER_PROF and
	 * SIGPROF handler) would signal the server, its handler gone, to
	 * death, restart after restart (found by review, 2026-12-07); no
	 * worker inherits one.  Then, started under the caller's mask
	 * (fut__forkserver_start), every signal blocked, as in a forked
	 * server. */
	static const struct itimerval off;
	(void)setitimer(ITIMER_REAL, &off, NULL);
	(void)setitimer(ITIMER_VIRTUAL, &off, NULL);
	(void)setitimer(ITIMER_PROF, &off, NULL);
	sigset_t all;
	sigfillset(&all);
	(void)sigprocmask(SIG_SETMASK, &all, NULL);
	starting = false;
	/* Read the module table now: every worker inherits it. */
	struct fut__build_id *ids;
	size_t nids;
	(void)fut__fn_modules(&ids, &nids);
	fut__free(ids);
	fut__forkserver_serve(cfg, sock, m.parent);
}
