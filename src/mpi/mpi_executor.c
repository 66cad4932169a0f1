/*
 * mpi_executor.c: fut_mpi_executor_new() and fut_mpi_info().
 *
 * Owns: the checks of the options (all local, before any collective call,
 * so that bad input leaves no rank waiting where the check can be made
 * locally), the library's MPI_Comm_dup of comm, and the handshake: one
 * MPI_Allgather of each rank's hello (the wire version, the flags and
 * root it was given, whether its initializer succeeded, how many modules
 * it has), so that every rank reaches the same verdict (mpi4py's
 * initializer allreduce), then an MPI_Gatherv of the servers' module
 * build-ids to root, so that a submit of a function whose module the
 * servers lack fails at once.  Then root makes the client (client.c) and
 * the others serve (server.c).
 * Threads: the caller's, on every rank.
 * Locks: none.
 */
#include <math.h>
#include <string.h>

#include "mpi_int.h"

#define HELLO_MAGIC 0x46544d50 /* "FTMP" */
#define HELLO_INTS 8
#define ID_BYTES (1 + FUT__BUILD_ID_MAX)

enum {
	H_MAGIC,
	H_WIRE,
	H_VERSION,
	H_FLAGS,
	H_ROOT,
	H_INIT_OK,
	H_NMODS
};

static bool poll_time_ok(double t)
{
	return !isnan(t) && t >= 0 && t <= 60;
}

static int check_opts(const fut_mpi_opts *o)
{
	if ((o->flags & ~(FUT_MPI_SPAWN | FUT_MPI_ISOLATE)) != 0 ||
	    o->max_workers > FUT_MAX_WORKERS ||
	    o->threads_per_rank > FUT_MAX_WORKERS ||
	    o->prefetch > FUT_MAX_WORKERS || !poll_time_ok(o->poll_spin) ||
	    !poll_time_ok(o->poll_backoff))
		return FUT_EINVAL;
	if (!(o->flags & FUT_MPI_ISOLATE) &&
	    (o->task_timeout != 0 || o->max_tasks_per_child != 0))
		return FUT_EINVAL;
	if (isnan(o->task_timeout))
		return FUT_EINVAL;
	if (!(o->flags & FUT_MPI_SPAWN) &&
	    (o->command != NULL || o->argv != NULL || o->max_workers != 0))
		return FUT_EINVAL;
	/* Spawn mode: this process alone spawns (over MPI_COMM_SELF). */
	if ((o->flags & FUT_MPI_SPAWN) && (o->comm != NULL || o->root != 0))
		return FUT_EINVAL;
	return FUT_OK;
}

/* Spawn mode: the servers to start, max_workers or else the universe
 * size - 1, at least 1. */
static size_t spawn_count(const fut_mpi_opts *o)
{
	if (o->max_workers != 0)
		return o->max_workers;
	int *usize = NULL, flag = 0;
	size_t n = 1;
	if (MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_UNIVERSE_SIZE, &usize,
			      &flag) == MPI_SUCCESS &&
	    flag && usize != NULL && *usize > 2)
		n = (size_t)*usize - 1;
	return n > FUT_MAX_WORKERS ? FUT_MAX_WORKERS : n;
}

/* Makes setup's communicator: world mode a duplicate of comm, spawn mode
 * the merge with the spawned servers (or, in a spawned copy, with its
 * parent).  FUT_OK, FUT_EINVAL, FUT_ESYS, or a spawn's code. */
static int make_comm(const fut_mpi_opts *o, struct fut__mpi_setup *s)
{
	s->comm = s->inter = MPI_COMM_NULL;
	if (o->flags & FUT_MPI_SPAWN) {
		int rc = fut__mpi_spawned(&s->inter, &s->comm);
		if (rc == FUT_ENOTSUP)
			rc = fut__mpi_spawn(o->command, o->argv, spawn_count(o),
					    &s->inter, &s->comm);
		if (rc != FUT_OK)
			return rc;
		s->root = 0;
		if (MPI_Comm_size(s->comm, &s->size) != MPI_SUCCESS ||
		    MPI_Comm_rank(s->comm, &s->rank) != MPI_SUCCESS) {
			fut__mpi_comm_release(s);
			return FUT_EBROKEN;
		}
		return FUT_OK;
	}
	MPI_Comm comm = o->comm != NULL ? *o->comm : MPI_COMM_WORLD;
	int inter = 0;
	if (comm == MPI_COMM_NULL ||
	    MPI_Comm_test_inter(comm, &inter) != MPI_SUCCESS || inter)
		return FUT_EINVAL;
	if (MPI_Comm_size(comm, &s->size) != MPI_SUCCESS ||
	    MPI_Comm_rank(comm, &s->rank) != MPI_SUCCESS)
		return FUT_EINVAL;
	/* World mode needs a server: launch with mpiexec -n 2 or more. */
	if (o->root < 0 || o->root >= s->size || s->size < 2)
		return FUT_EINVAL;
	s->root = o->root;
	if (MPI_Comm_dup(comm, &s->comm) != MPI_SUCCESS) {
		s->comm = MPI_COMM_NULL;
		return FUT_ESYS;
	}
	(void)MPI_Comm_set_errhandler(s->comm, MPI_ERRORS_RETURN);
	return FUT_OK;
}

/* Tells every server to stop at once (creation failed on root after the
 * handshake), then releases the communicators. */
static void stop_servers(struct fut__mpi_setup *s)
{
	MPI_Comm *comm = &s->comm;
	int size = s->size, root = s->root;
	unsigned char msg[FUT__WIRE_FRAME_HDR + FUT__WIRE_REC_HDR];
	fut__wire_put_frame(msg, FUT__WIRE_TASKS, 1, FUT__WIRE_REC_HDR);
	fut__wire_put_record(msg + FUT__WIRE_FRAME_HDR, 0, 0, FUT__WIRE_T_STOP,
			     0, 0);
	for (int r = 0; r < size; r++)
		if (r != root)
			(void)MPI_Send(msg, (int)sizeof(msg), MPI_BYTE, r,
				       FUT__MPI_TAG, *comm);
	/* They had no task: their BYE is all that comes (one byte from one
	 * that gave up, which waits for our answer). */
	for (int r = 0; r < size; r++) {
		if (r == root)
			continue;
		unsigned char byte;
		MPI_Status st;
		int n = 0;
		if (MPI_Recv(&byte, 1, MPI_BYTE, r, FUT__MPI_TAG_BYE, *comm,
			     &st) == MPI_SUCCESS &&
		    MPI_Get_count(&st, MPI_BYTE, &n) == MPI_SUCCESS && n == 1)
			(void)fut__mpi_send_bye(*comm, r, false);
	}
	fut__mpi_comm_release(s);
}

/* Root: the build-ids every server has, from the gathered lists. */
static int common_ids(const unsigned char *all, const int *counts,
		      const int *displs, int size, int root,
		      struct fut__mpi_setup *s)
{
	int first = root == 0 ? 1 : 0;
	size_t n = (size_t)counts[first] / ID_BYTES;
	s->common = fut__calloc(n ? n : 1, sizeof(*s->common));
	if (s->common == NULL)
		return FUT_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const unsigned char *id = all + displs[first] + i * ID_BYTES;
		bool everywhere = true;
		for (int r = 0; r < size && everywhere; r++) {
			if (r == root || r == first)
				continue;
			bool here = false;
			for (int k = 0; k < counts[r] && !here; k += ID_BYTES)
				here = memcmp(all + displs[r] + k, id,
					      ID_BYTES) == 0;
			everywhere = here;
		}
		if (everywhere) {
			struct fut__build_id *c = &s->common[s->ncommon++];
			c->len = id[0];
			memcpy(c->bytes, id + 1, FUT__BUILD_ID_MAX);
		}
	}
	return FUT_OK;
}

/* The servers' module lists to root (collective). */
static int exchange_modules(struct fut__mpi_setup *s, const int *hellos,
			    const struct fut__build_id *ids, size_t nids)
{
	bool root = s->rank == s->root;
	size_t mine = root ? 0 : nids;
	unsigned char *send = fut__calloc(mine ? mine : 1, ID_BYTES);
	int *counts = fut__calloc((size_t)s->size, sizeof(int));
	int *displs = fut__calloc((size_t)s->size, sizeof(int));
	unsigned char *all = NULL;
	int rc = FUT_OK;
	size_t total = 0;
	for (int r = 0; r < s->size; r++) {
		if (counts != NULL && displs != NULL) {
			counts[r] = r == s->root ?
					    0 :
					    hellos[r * HELLO_INTS + H_NMODS] *
						    (int)ID_BYTES;
			displs[r] = (int)total;
		}
		if (r != s->root)
			total += (size_t)hellos[r * HELLO_INTS + H_NMODS] *
				 ID_BYTES;
	}
	if (root)
		all = fut__malloc(total ? total : 1);
	/* Out of memory still takes part in the gather (with nothing), so
	 * that no rank is left waiting; the verdict comes after. */
	bool ok = send != NULL && counts != NULL && displs != NULL &&
		  (!root || all != NULL);
	for (size_t i = 0; ok && i < mine; i++) {
		send[i * ID_BYTES] = ids[i].len;
		memcpy(send + i * ID_BYTES + 1, ids[i].bytes,
		       FUT__BUILD_ID_MAX);
	}
	static unsigned char none[1];
	if (MPI_Gatherv(ok ? send : none, ok ? (int)(mine * ID_BYTES) : 0,
			MPI_BYTE, all, counts, displs, MPI_BYTE, s->root,
			s->comm) != MPI_SUCCESS)
		rc = FUT_EBROKEN;
	else if (!ok)
		rc = FUT_ENOMEM;
	else if (root)
		rc = common_ids(all, counts, displs, s->size, s->root, s);
	fut__free(send);
	fut__free(counts);
	fut__free(displs);
	fut__free(all);
	return rc;
}

int fut_mpi_executor_new(fut_executor **out, const fut_mpi_opts *opts)
{
	if (out == NULL)
		return FUT_EINVAL;
	*out = NULL;
	fut_mpi_opts o = { 0 };
	if (opts != NULL)
		o = *opts;
	int rc = check_opts(&o);
	if (rc != FUT_OK)
		return rc;
	int inited = 0, finalized = 0, level = MPI_THREAD_SINGLE;
	if (MPI_Initialized(&inited) != MPI_SUCCESS || !inited ||
	    MPI_Finalized(&finalized) != MPI_SUCCESS || finalized)
		return FUT_ENOTSUP;
	if (MPI_Query_thread(&level) != MPI_SUCCESS ||
	    level < MPI_THREAD_MULTIPLE)
		return FUT_ENOTSUP;
	struct fut__mpi_setup s = { 0 };
	rc = make_comm(&o, &s);
	if (rc != FUT_OK)
		return rc;
	s.threads = o.threads_per_rank ? o.threads_per_rank : 1;
	s.prefetch = o.prefetch ? o.prefetch : 2 * s.threads;
	s.spin = o.poll_spin != 0 ? o.poll_spin : 200e-6;
	s.backoff = o.poll_backoff != 0 ? o.poll_backoff : 1e-3;
	bool root = s.rank == s.root;

	int *hellos = fut__calloc((size_t)s.size * HELLO_INTS, sizeof(int));
	if (hellos == NULL) {
		fut__mpi_comm_release(&s);
		return FUT_ENOMEM;
	}

	struct fut__build_id *ids = NULL;
	size_t nids = 0;
	int init_ok = 1;
	if (!root) {
		if (o.initializer != NULL && o.initializer(o.initarg) != 0)
			init_ok = 0;
		/* After the initializer: a module it dlopened is named too
		 * (read before, root refused its functions, FUT_ENOTSUP). */
		if (fut__mpi_modules(&ids, &nids) != FUT_OK)
			init_ok = 0;
		/* ISOLATE: the pool forks now, after MPI_Init and the
		 * initializer (its workers inherit what that set up); they
		 * never call MPI. */
		if (init_ok && (o.flags & FUT_MPI_ISOLATE)) {
			fut__mpi_isolate_rank_set(s.rank);
			fut_process_pool_opts po = {
				.max_workers = s.threads,
				.max_tasks_per_child = o.max_tasks_per_child,
				.task_timeout = o.task_timeout,
			};
			if (fut_process_pool_new(&s.pool, &po) != FUT_OK)
				init_ok = 0;
		}
	}
	int hello[HELLO_INTS] = { 0 };
	hello[H_MAGIC] = HELLO_MAGIC;
	hello[H_WIRE] = FUT__WIRE_VERSION;
	hello[H_VERSION] = FUT_VERSION_MAJOR * 10000 + FUT_VERSION_MINOR * 100 +
			   FUT_VERSION_PATCH;
	hello[H_FLAGS] = (int)o.flags;
	hello[H_ROOT] = o.root;
	hello[H_INIT_OK] = init_ok;
	hello[H_NMODS] = (int)nids;
	if (MPI_Allgather(hello, HELLO_INTS, MPI_INT, hellos, HELLO_INTS,
			  MPI_INT, s.comm) != MPI_SUCCESS) {
		rc = FUT_EBROKEN;
		goto fail;
	}
	for (int r = 0; r < s.size; r++) {
		const int *h = hellos + r * HELLO_INTS;
		if (h[H_MAGIC] != hello[H_MAGIC] ||
		    h[H_WIRE] != hello[H_WIRE] ||
		    h[H_VERSION] != hello[H_VERSION] ||
		    h[H_FLAGS] != hello[H_FLAGS] ||
		    h[H_ROOT] != hello[H_ROOT] || h[H_INIT_OK] != 1 ||
		    h[H_NMODS] < 0 || h[H_NMODS] > 1 << 20)
			rc = FUT_EBROKEN;
	}
	if (rc != FUT_OK)
		goto fail;
	rc = exchange_modules(&s, hellos, ids, nids);
	fut__free(ids);
	fut__free(hellos);
	hellos = NULL;
	if (!root) /* root decides: it stops us if it cannot go on */
		return fut__mpi_serve(&s);
	if (rc == FUT_OK)
		rc = fut__mpi_client_new(out, &s);
	if (rc != FUT_OK) {
		fut__free(s.common);
		if (s.comm != MPI_COMM_NULL)
			stop_servers(&s);
	}
	return rc;
fail:
	fut__free(ids);
	fut__free(hellos);
	fut_executor_free(s.pool);
	fut__mpi_comm_release(&s);
	return rc;
}

int fut_mpi_info(const fut_executor *ex, int *servers, int *rank)
{
	if (!fut__mpi_client_is(ex))
		return FUT_EINVAL;
	fut__mpi_client_info(ex, servers, rank);
	return FUT_OK;
}
