/*
 * link.c: wire frames (wire.c) as a byte stream over MPI messages, and
 * the polling clock.
 *
 * Owns: the sends in flight of one side (client manager or server loop)
 * and its receive stage.  Every send is nonblocking (MPI_Isend): a
 * blocking send of a large batch against a peer that is sending results
 * back deadlocks (measured, ../shared/design-mpi.md section 5), so
 * receives keep progressing while sends are pending.  A frame longer
 * than the message limit (INT_MAX, MPI's count) goes as several messages
 * of one tag, which MPI keeps in order; the receiver's decoder is a
 * stream decoder, so message boundaries mean nothing to it.  Receiving is
 * MPI_Iprobe then MPI_Recv of the probed message: no wait inside MPI,
 * whose blocking calls busy-poll (mpi4py/mpi4py#419).  Also a server's
 * goodbye (BYE), and the drain of a server that gave up serving.
 * Threads: the one thread of its side that owns every MPI call.
 * Locks: none.
 */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <time.h>

#include "mpi_int.h"

/* A buffer in flight, sent as `parts` messages. */
struct fut__mpi_send {
	unsigned char *buf; /* freed by the part that completes last */
	size_t cap;	    /* bytes at buf */
	unsigned *left;	    /* parts of buf still in flight */
	int to;		    /* the rank it goes to */
};

/* The largest sent buffer a link keeps for its next frame. */
#define SPARE_MAX ((size_t)64 << 10)

static _Atomic size_t message_limit = INT_MAX;
static _Atomic bool corrupt_next;

/* Test hook: the next frame this process sends goes with a bad magic, as
 * from a broken peer. */
void fut__mpi_test_corrupt_next_send(void);
void fut__mpi_test_corrupt_next_send(void)
{
	atomic_store(&corrupt_next, true);
}

static _Atomic bool short_crash_next;

/* Test hook: the first record of the next frame this process sends goes
 * as a crash record (FUT__WIRE_R_ERROR, FUT_ECRASHED) of its own length:
 * a result shorter than 4 bytes makes one without its wait status. */
void fut__mpi_test_short_crash_next_send(void);
void fut__mpi_test_short_crash_next_send(void)
{
	atomic_store(&short_crash_next, true);
}

/* short_crash_next's rewrite of fr's first record: its kind and code,
 * the header's two little-endian 32-bit words at 16. */
static void make_crash_record(struct fut__mpi_frame *fr)
{
	unsigned char *p = fr->buf + FUT__WIRE_FRAME_HDR + 16;
	uint32_t w[2] = { FUT__WIRE_R_ERROR, (uint32_t)FUT_ECRASHED };
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(w[i / 4] >> (8 * (i % 4)));
}

static _Atomic uint32_t junk_min;

/* Test hook: the next frame of at least `records` records this process
 * sends carries a frame header's worth of junk after it, in the same
 * message (a malformed tail after whole records); 0: none. */
void fut__mpi_test_junk_after_send(uint32_t records);
void fut__mpi_test_junk_after_send(uint32_t records)
{
	atomic_store(&junk_min, records);
}

/* junk_min's tail, when fr is such a frame (none without memory). */
static void add_junk(struct fut__mpi_frame *fr)
{
	uint32_t min = atomic_load(&junk_min);
	if (min == 0 || fr->count < min ||
	    !atomic_compare_exchange_strong(&junk_min, &min, 0))
		return;
	size_t need = fr->len + FUT__WIRE_FRAME_HDR;
	if (need > fr->cap) {
		unsigned char *grown = fut__realloc(fr->buf, need);
		if (grown == NULL)
			return;
		fr->buf = grown;
		fr->cap = need;
	}
	memset(fr->buf + fr->len, 0xff, FUT__WIRE_FRAME_HDR);
	fr->len = need;
}

static _Atomic unsigned fail_sends, fail_recvs;
static _Atomic unsigned long failed_calls;

/* Test hook: the next `sends` frames (or empty BREAKs and ACKs) this
 * process sends go, but are reported refused by MPI (FUT_EBROKEN), and
 * its next `recvs` receives
 * fail before they probe; returns how many calls it failed so far. */
unsigned long fut__mpi_test_fail_mpi(unsigned sends, unsigned recvs);
unsigned long fut__mpi_test_fail_mpi(unsigned sends, unsigned recvs)
{
	atomic_store(&fail_sends, sends);
	atomic_store(&fail_recvs, recvs);
	return atomic_load(&failed_calls);
}

/* Whether the hook fails this call (one of *left). */
static bool hook_fails(_Atomic unsigned *left)
{
	unsigned n = atomic_load_explicit(left, memory_order_relaxed);
	while (n != 0 && !atomic_compare_exchange_weak(left, &n, n - 1))
		;
	if (n == 0)
		return false;
	atomic_fetch_add(&failed_calls, 1);
	return true;
}

void fut__mpi_set_message_limit(size_t bytes)
{
	atomic_store(&message_limit,
		     bytes == 0 || bytes > INT_MAX ? (size_t)INT_MAX : bytes);
}

int fut__mpi_frame_add(struct fut__mpi_frame *fr, uint64_t id, uint64_t fn,
		       uint32_t kind, int32_t code, const void *data,
		       size_t len)
{
	size_t base = fr->len ? fr->len : FUT__WIRE_FRAME_HDR;
	if (len > SIZE_MAX - base - FUT__WIRE_REC_HDR)
		return FUT_ENOMEM;
	size_t need = base + FUT__WIRE_REC_HDR + len;
	if (need > fr->cap) {
		size_t cap = fr->cap ? fr->cap : 4096;
		while (cap < need)
			cap = cap > SIZE_MAX / 2 ? need : cap * 2;
		unsigned char *grown = fut__realloc(fr->buf, cap);
		if (grown == NULL)
			return FUT_ENOMEM;
		fr->buf = grown;
		fr->cap = cap;
	}
	fut__wire_put_record(fr->buf + base, id, fn, kind, code, len);
	if (len != 0)
		memcpy(fr->buf + base + FUT__WIRE_REC_HDR, data, len);
	fr->len = need;
	fr->count++;
	return FUT_OK;
}

void fut__mpi_link_init(struct fut__mpi_link *l, MPI_Comm comm)
{
	memset(l, 0, sizeof(*l));
	l->comm = comm;
}

void fut__mpi_link_fini(struct fut__mpi_link *l)
{
	for (size_t i = 0; i < l->nsends; i++) {
		if (--*l->sends[i].left == 0) {
			fut__free(l->sends[i].left);
			fut__free(l->sends[i].buf);
		}
	}
	fut__free(l->sends);
	fut__free(l->reqs);
	fut__free(l->stage);
	fut__free(l->spare);
	memset(l, 0, sizeof(*l));
}

static bool room_for(struct fut__mpi_link *l, size_t more)
{
	if (l->nsends + more <= l->capsends)
		return true;
	size_t cap = l->capsends ? l->capsends : 16;
	while (cap < l->nsends + more)
		cap *= 2;
	struct fut__mpi_send *s = fut__realloc(l->sends, cap * sizeof(*s));
	if (s == NULL)
		return false;
	l->sends = s;
	MPI_Request *r = fut__realloc(l->reqs, cap * sizeof(*r));
	if (r == NULL)
		return false;
	l->reqs = r;
	l->capsends = cap;
	return true;
}

int fut__mpi_link_send(struct fut__mpi_link *l, int to, unsigned type,
		       struct fut__mpi_frame *fr)
{
	if (fr->count == 0)
		return FUT_OK;
	size_t limit =
		atomic_load_explicit(&message_limit, memory_order_relaxed);
	size_t parts = (fr->len + limit - 1) / limit;
	unsigned *left = fut__malloc(sizeof(*left));
	if (left == NULL || !room_for(l, parts)) {
		fut__free(left);
		return FUT_ENOMEM;
	}
	fut__wire_put_frame(fr->buf, type, fr->count,
			    fr->len - FUT__WIRE_FRAME_HDR);
	if (atomic_exchange(&corrupt_next, false))
		fr->buf[0] ^= 0xff;
	if (atomic_exchange(&short_crash_next, false))
		make_crash_record(fr);
	add_junk(fr);
	*left = 0;
	int rc = FUT_OK;
	for (size_t off = 0; off < fr->len; off += limit) {
		size_t n = fr->len - off < limit ? fr->len - off : limit;
		MPI_Request *r = &l->reqs[l->nsends];
		if (MPI_Isend(fr->buf + off, (int)n, MPI_BYTE, to, FUT__MPI_TAG,
			      l->comm, r) != MPI_SUCCESS) {
			rc = FUT_EBROKEN;
			break;
		}
		l->sends[l->nsends].buf = fr->buf;
		l->sends[l->nsends].cap = fr->cap;
		l->sends[l->nsends].left = left;
		l->sends[l->nsends].to = to;
		l->nsends++;
		(*left)++;
	}
	if (*left == 0) {
		fut__free(left);
		fut__free(fr->buf);
	}
	memset(fr, 0, sizeof(*fr));
	if (rc == FUT_OK && hook_fails(&fail_sends))
		rc = FUT_EBROKEN;
	return rc;
}

void fut__mpi_link_frame(struct fut__mpi_link *l, struct fut__mpi_frame *fr)
{
	if (fr->buf != NULL || l->spare == NULL)
		return;
	fr->buf = l->spare;
	fr->cap = l->spare_cap;
	fr->len = 0;
	fr->count = 0;
	l->spare = NULL;
	l->spare_cap = 0;
}

bool fut__mpi_link_progress(struct fut__mpi_link *l)
{
	if (l->nsends == 0)
		return false;
	int flag = 0;
	/* Most sends complete in order: test the oldest first. */
	bool any = false;
	size_t i = 0;
	while (i < l->nsends) {
		int rc = MPI_Test(&l->reqs[i], &flag, MPI_STATUS_IGNORE);
		if (rc == MPI_SUCCESS && !flag) {
			i++;
			if (!any)
				break;
			continue;
		}
		any = true;
		if (rc != MPI_SUCCESS) {
			/* Tested again, it failed for ever: the link stayed
			 * busy, and its owner's loop never ended (found by
			 * review, 2026-12-07).  Dropped, its peer lost; its
			 * buffer stays, with its count (MPI may still read
			 * it). */
			if (l->lost != NULL)
				l->lost(l->lost_arg, l->sends[i].to);
		} else if (--*l->sends[i].left == 0) {
			fut__free(l->sends[i].left);
			if (l->spare == NULL && l->sends[i].cap <= SPARE_MAX) {
				l->spare = l->sends[i].buf;
				l->spare_cap = l->sends[i].cap;
			} else {
				fut__free(l->sends[i].buf);
			}
		}
		l->nsends--;
		memmove(&l->sends[i], &l->sends[i + 1],
			(l->nsends - i) * sizeof(*l->sends));
		memmove(&l->reqs[i], &l->reqs[i + 1],
			(l->nsends - i) * sizeof(*l->reqs));
	}
	return any;
}

bool fut__mpi_link_busy(const struct fut__mpi_link *l)
{
	return l->nsends != 0;
}

int fut__mpi_send_bye(MPI_Comm comm, int root, bool gave_up)
{
	static unsigned char none[1];
	return MPI_Send(none, gave_up ? 1 : 0, MPI_BYTE, root, FUT__MPI_TAG_BYE,
			comm) == MPI_SUCCESS ?
		       FUT_OK :
		       FUT_EBROKEN;
}

int fut__mpi_send_ack(MPI_Comm comm, int to)
{
	static unsigned char none[1];
	/* The test hook's refusals count these too (test_mpi_stop
	 * holdsendfail: a held manager's stops are BREAKs). */
	return MPI_Send(none, 0, MPI_BYTE, to, FUT__MPI_TAG_ACK, comm) ==
				       MPI_SUCCESS &&
			       !hook_fails(&fail_sends) ?
		       FUT_OK :
		       FUT_EBROKEN;
}

int fut__mpi_link_recv(struct fut__mpi_link *l, int from, const void **data,
		       size_t *len, int *source, int *tag)
{
	int flag = 0;
	MPI_Status st;
	if (hook_fails(&fail_recvs) ||
	    MPI_Iprobe(from, MPI_ANY_TAG, l->comm, &flag, &st) != MPI_SUCCESS)
		return FUT_EBROKEN;
	if (!flag)
		return FUT_ETIMEDOUT;
	int count = 0;
	if (MPI_Get_count(&st, MPI_BYTE, &count) != MPI_SUCCESS || count < 0)
		return FUT_EBROKEN;
	if ((size_t)count > l->stage_cap) {
		size_t cap = l->stage_cap ? l->stage_cap : 65536;
		while (cap < (size_t)count)
			cap *= 2;
		unsigned char *grown = fut__malloc(cap);
		if (grown == NULL)
			return FUT_ENOMEM;
		fut__free(l->stage);
		l->stage = grown;
		l->stage_cap = cap;
	}
	if (MPI_Recv(l->stage, count, MPI_BYTE, st.MPI_SOURCE, st.MPI_TAG,
		     l->comm, MPI_STATUS_IGNORE) != MPI_SUCCESS)
		return FUT_EBROKEN;
	*data = l->stage;
	*len = (size_t)count;
	*source = st.MPI_SOURCE;
	*tag = st.MPI_TAG;
	return FUT_OK;
}

void fut__mpi_idle_init(struct fut__mpi_idle *c, double spin, double cap)
{
	c->spin_ns = (int64_t)(spin * 1e9);
	c->cap_ns = (int64_t)(cap * 1e9);
	if (c->cap_ns < 1000)
		c->cap_ns = 1000;
	c->idle_since = 0;
	c->sleep_ns = 0;
}

void fut__mpi_idle_busy(struct fut__mpi_idle *c)
{
	c->idle_since = 0;
	c->sleep_ns = 0;
}

int64_t fut__mpi_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

bool fut__mpi_link_flush(struct fut__mpi_link *l, int64_t ns)
{
	if (l->nsends == 0)
		return true;
	int64_t until = fut__mpi_now_ns() + ns;
	while (l->nsends != 0 && fut__mpi_now_ns() < until)
		(void)fut__mpi_link_progress(l);
	return l->nsends == 0;
}

int64_t fut__mpi_idle_next(struct fut__mpi_idle *c, bool spin)
{
	int64_t now = fut__mpi_now_ns();
	if (c->idle_since == 0)
		c->idle_since = now;
	if (spin && now - c->idle_since < c->spin_ns) {
		/* No sched_yield here: measured, it made round trips slower
		 * (W-MPI1 78 against 55 us, 3 ranks on 2 cpus). */
		return 0;
	}
	/* mpi4py's Backoff: from cap/1024, doubling, up to cap. */
	c->sleep_ns = c->sleep_ns == 0 ? c->cap_ns / 1024 : c->sleep_ns * 2;
	if (c->sleep_ns < 1000)
		c->sleep_ns = 1000;
	if (c->sleep_ns > c->cap_ns)
		c->sleep_ns = c->cap_ns;
	return c->sleep_ns;
}

/*
 * A server that gave up serving said so (a one-byte BYE): what root sent
 * since is read and dropped until root's answer, an empty BYE, which MPI
 * cannot deliver before the messages sent ahead of it.  Left unread, a
 * message too large to go eagerly would never complete on root, and its
 * manager would wait for it forever (free hung): out of memory for one,
 * it tries again until memory comes back.
 */
void fut__mpi_link_drain(struct fut__mpi_link *l, int root, double spin,
			 double backoff)
{
	struct fut__mpi_idle idle;
	fut__mpi_idle_init(&idle, spin, backoff);
	for (;;) {
		const void *data;
		size_t len;
		int src, tag;
		int rc = fut__mpi_link_recv(l, root, &data, &len, &src, &tag);
		/* A BREAK is root's last message to us too (a held manager's
		 * stop, a break): root answers no BYE of a rank it sent one
		 * to (fut__mpi_answer_bye()). */
		if (rc == FUT_OK &&
		    (tag == FUT__MPI_TAG_BYE || tag == FUT__MPI_TAG_BREAK))
			return;
		if (rc == FUT_OK) {
			fut__mpi_idle_busy(&idle);
			continue;
		}
		if (rc == FUT_EBROKEN)
			return; /* MPI failed: nothing better */
		/* None came, or no memory to stage it: the message waits in
		 * MPI, so try again after a nap (given up, root's send of it
		 * would never complete, and its free would hang). */
		int64_t ns = fut__mpi_idle_next(&idle, true);
		if (ns > 0) {
			struct timespec ts = { (time_t)(ns / 1000000000),
					       (long)(ns % 1000000000) };
			(void)nanosleep(&ts, NULL);
		}
	}
}

void fut__mpi_nap(pthread_mutex_t *lock, pthread_cond_t *cv, bool *wake,
		  bool *sleeping, int64_t ns)
{
	struct timespec until = fut__mpi_abstime(ns);
	pthread_mutex_lock(lock);
	if (!*wake) {
		*sleeping = true;
		(void)pthread_cond_timedwait(cv, lock, &until);
		*sleeping = false;
	}
	*wake = false;
	pthread_mutex_unlock(lock);
}

struct timespec fut__mpi_abstime(int64_t ns)
{
	struct timespec ts;
	int64_t t = fut__mpi_now_ns() + ns;
	ts.tv_sec = (time_t)(t / 1000000000);
	ts.tv_nsec = (long)(t % 1000000000);
	return ts;
}
