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

/*
 * Every rank's verdict on the memory it needed (collective): a rank out of
 * memory still takes part in each collective call of the handshake, or
 * the others would wait there forever.  bcast: root's word alone (an
 * MPI_Bcast), else every rank's (an MPI_Allreduce, MPI_MIN).  FUT_OK when
 * the memory was there; else FUT_ENOMEM on a rank that lacked it,
 * FUT_EBROKEN on the others (or when MPI failed).
 */
static int verdict(MPI_Comm comm, int root, bool ok, bool bcast)
{
	int mine = ok, all = 0;
	int err = bcast ? MPI_Bcast(&mine, 1, MPI_INT, root, comm) :
			  MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, comm);
	if (bcast)
		all = mine;
	if (err != MPI_SUCCESS)
		return FUT_EBROKEN;
	return all ? FUT_OK : ok ? FUT_EBROKEN : FUT_ENOMEM;
}

/* The buffers of the handshake: each is allocated before the verdict
 * that precedes the collective call that needs it. */
struct handshake {
	int *hellos;	      /* every rank's hello */
	unsigned char *send;  /* a server's build-ids, ID_BYTES each */
	size_t mine;	      /* how many */
	int *counts, *displs; /* root's */
};

static void handshake_free(struct handshake *h)
{
	fut__free(h->hellos);
	fut__free(h->send);
	fut__free(h->counts);
	fut__free(h->displs);
}

/* Allocates h's buffers (and fills a server's); false when one is
 * missing. */
static bool handshake_alloc(struct handshake *h, const struct fut__mpi_setup *s,
			    const struct fut__build_id *ids, size_t nids)
{
	h->hellos = fut__calloc((size_t)s->size * HELLO_INTS, sizeof(int));
	if (s->rank == s->root) {
		h->counts = fut__calloc((size_t)s->size, sizeof(int));
		h->displs = fut__calloc((size_t)s->size, sizeof(int));
		return h->hellos != NULL && h->counts != NULL &&
		       h->displs != NULL;
	}
	h->send = fut__calloc(nids ? nids : 1, ID_BYTES);
	if (h->send == NULL)
		return false;
	h->mine = nids;
	for (size_t i = 0; i < nids; i++) {
		h->send[i * ID_BYTES] = ids[i].len;
		memcpy(h->send + i * ID_BYTES + 1, ids[i].bytes,
		       FUT__BUILD_ID_MAX);
	}
	return h->hellos != NULL;
}

/* The servers' module lists to root (collective), once root said it has
 * room for them (*agreed: then the servers serve, and root decides).
 * FUT_OK, FUT_ENOMEM (root), FUT_EBROKEN. */
static int exchange_modules(struct fut__mpi_setup *s, struct handshake *h,
			    bool *agreed)
{
	bool root = s->rank == s->root;
	unsigned char *all = NULL;
	size_t total = 0;
	for (int r = 0; root && r < s->size; r++) {
		h->counts[r] = r == s->root ?
				       0 :
				       h->hellos[r * HELLO_INTS + H_NMODS] *
					       (int)ID_BYTES;
		h->displs[r] = (int)total;
		total += (size_t)h->counts[r];
	}
	if (root)
		all = fut__malloc(total ? total : 1);
	int rc = verdict(s->comm, s->root, !root || all != NULL, true);
	*agreed = rc == FUT_OK;
	if (rc != FUT_OK)
		return rc;
	if (MPI_Gatherv(root ? all : h->send,
			root ? 0 : (int)(h->mine * ID_BYTES), MPI_BYTE, all,
			h->counts, h->displs, MPI_BYTE, s->root,
			s->comm) != MPI_SUCCESS)
		rc = FUT_EBROKEN;
	else if (root)
		rc = common_ids(all, h->counts, h->displs, s->size, s->root, s);
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
	/* An executor freed from its last done callback waits for a call
	 * like this one to take its servers' BYEs and end (mpi_client.h). */
	fut__mpi_release_held();
	struct fut__mpi_setup s = { 0 };
	rc = make_comm(&o, &s);
	if (rc != FUT_OK)
		return rc;
	s.threads = o.threads_per_rank ? o.threads_per_rank : 1;
	s.prefetch = o.prefetch ? o.prefetch : 2 * s.threads;
	s.spin = o.poll_spin != 0 ? o.poll_spin : 200e-6;
	s.backoff = o.poll_backoff != 0 ? o.poll_backoff : 1e-3;
	bool root = s.rank == s.root;

	struct fut__build_id *ids = NULL;
	size_t nids = 0;
	int init_ok = 1;
	bool nomem = false; /* this rank lacked memory for its module list */
	if (!root) {
		if (o.initializer != NULL && o.initializer(o.initarg) != 0)
			init_ok = 0;
		/* After the initializer: a module it dlopened is named too
		 * (read before, root refused its functions, FUT_ENOTSUP). */
		nomem = fut__mpi_modules(&ids, &nids) != FUT_OK;
		if (nomem)
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
	/* Out of memory on any rank: every rank returns, and none waits in
	 * a collective call that another left. */
	struct handshake h = { 0 };
	bool agreed = false;
	rc = verdict(s.comm, s.root, handshake_alloc(&h, &s, ids, nids), false);
	fut__free(ids);
	if (rc != FUT_OK)
		goto fail;
	int hello[HELLO_INTS] = { 0 };
	hello[H_MAGIC] = HELLO_MAGIC;
	hello[H_WIRE] = FUT__WIRE_VERSION;
	hello[H_VERSION] = FUT_VERSION_MAJOR * 10000 + FUT_VERSION_MINOR * 100 +
			   FUT_VERSION_PATCH;
	hello[H_FLAGS] = (int)o.flags;
	hello[H_ROOT] = o.root;
	hello[H_INIT_OK] = init_ok;
	hello[H_NMODS] = (int)nids;
	if (MPI_Allgather(hello, HELLO_INTS, MPI_INT, h.hellos, HELLO_INTS,
			  MPI_INT, s.comm) != MPI_SUCCESS) {
		rc = FUT_EBROKEN;
		goto fail;
	}
	for (int r = 0; r < s.size; r++) {
		const int *hr = h.hellos + r * HELLO_INTS;
		if (hr[H_MAGIC] != hello[H_MAGIC] ||
		    hr[H_WIRE] != hello[H_WIRE] ||
		    hr[H_VERSION] != hello[H_VERSION] ||
		    hr[H_FLAGS] != hello[H_FLAGS] ||
		    hr[H_ROOT] != hello[H_ROOT] || hr[H_INIT_OK] != 1 ||
		    hr[H_NMODS] < 0 || hr[H_NMODS] > 1 << 20)
			rc = FUT_EBROKEN;
	}
	/* Every rank fails; the one out of memory says so (docs/mpi.md). */
	if (rc != FUT_OK && nomem)
		rc = FUT_ENOMEM;
	if (rc != FUT_OK)
		goto fail;
	rc = exchange_modules(&s, &h, &agreed);
	if (!agreed)
		goto fail;
	/* Root's last steps can still fail (memory for the common ids and
	 * its executor, its manager thread): it says how they went before
	 * the servers serve.  They were serving already, and root's STOP
	 * made them return FUT_OK though no executor was made (found by
	 * review, 2026-12-07; docs/mpi.md: FUT_EBROKEN).  The manager may
	 * already poll the communicator: a collective beside a thread's
	 * point-to-point calls is allowed (MPI_THREAD_MULTIPLE). */
	MPI_Comm comm = s.comm;
	if (root && rc == FUT_OK)
		rc = fut__mpi_client_new(out, &s);
	int made = rc == FUT_OK;
	(void)MPI_Bcast(&made, 1, MPI_INT, s.root, comm);
	if (!root && made) {
		handshake_free(&h);
		return fut__mpi_serve(&s);
	}
	if (!made && rc == FUT_OK)
		rc = FUT_EBROKEN; /* a server: root could not go on */
	if (root && rc == FUT_OK) {
		handshake_free(&h);
		return rc;
	}
fail:
	handshake_free(&h);
	fut__free(s.common);
	s.common = NULL;
	fut_executor_free(s.pool);
	fut__mpi_isolate_rank_set(-1);
	fut__mpi_comm_release(&s);
	return rc;
}

int fut_mpi_info(const fut_executor *ex, int *servers, int *rank)
{
	/* On failure the out-pointers read 0, as every out-pointer does. */
	if (servers != NULL)
		*servers = 0;
	if (rank != NULL)
		*rank = 0;
	if (!fut__mpi_client_is(ex))
		return FUT_EINVAL;
	fut__mpi_client_info(ex, servers, rank);
	return FUT_OK;
}
