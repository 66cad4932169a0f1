/*
 * test_wire.c: the process pool's frame codec and control messages
 * (src/wire.c): round trips, byte-by-byte feeding, direct reads, and every
 * truncated or corrupted frame rejected with an error, never a crash.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "future.h"
#include "core/alloc.h"
#include "core/executor.h"
#include "core/future_int.h"
#include "core/slab.h"
#include "core/sync.h"
#include "core/task.h"
#include "process_pool/wire.h"

struct rec_spec {
	uint64_t id;
	uint64_t fn;
	uint32_t kind;
	int32_t code;
	size_t len;
};

/* Encodes one frame of records whose payload bytes are (id + i) & 0xff. */
static unsigned char *encode(unsigned type, const struct rec_spec *rs, size_t n,
			     size_t *out_len)
{
	uint64_t body = 0;
	for (size_t i = 0; i < n; i++)
		body += FUT__WIRE_REC_HDR + rs[i].len;
	size_t total = FUT__WIRE_FRAME_HDR + (size_t)body;
	unsigned char *buf = malloc(total);
	assert_non_null(buf);
	fut__wire_put_frame(buf, type, (uint32_t)n, body);
	size_t pos = FUT__WIRE_FRAME_HDR;
	for (size_t i = 0; i < n; i++) {
		fut__wire_put_record(buf + pos, rs[i].id, rs[i].fn, rs[i].kind,
				     rs[i].code, rs[i].len);
		pos += FUT__WIRE_REC_HDR;
		for (size_t j = 0; j < rs[i].len; j++)
			buf[pos + j] = (unsigned char)(rs[i].id + j);
		pos += rs[i].len;
	}
	*out_len = total;
	return buf;
}

static void check_rec(const struct fut__wire_rec *r, const struct rec_spec *s)
{
	assert_int_equal(r->id, s->id);
	assert_int_equal(r->fn, s->fn);
	assert_int_equal(r->kind, s->kind);
	assert_int_equal(r->code, s->code);
	assert_int_equal(r->len, s->len);
	const unsigned char *p = r->data;
	for (size_t j = 0; j < s->len; j++)
		assert_int_equal(p[j], (unsigned char)(s->id + j));
}

static void drop(struct fut__wire_rec *r)
{
	if (r->owned)
		fut__free(r->data);
}

/* Feeds buf in pieces of `step` bytes; returns the number of records
 * decoded and checked against rs, or -1 at the first error. */
static long feed_in_steps(unsigned dir, const unsigned char *buf, size_t len,
			  size_t step, const struct rec_spec *rs, size_t n)
{
	struct fut__wire_dec d;
	fut__wire_dec_init(&d, dir);
	size_t pos = 0, seen = 0;
	while (pos < len) {
		size_t piece = len - pos < step ? len - pos : step;
		size_t off = 0;
		while (off < piece) {
			struct fut__wire_rec r;
			size_t used;
			int rc = fut__wire_dec_feed(&d, buf + pos + off,
						    piece - off, &used, &r);
			off += used;
			if (rc == FUT__WIRE_RECORD) {
				assert_true(seen < n);
				check_rec(&r, &rs[seen]);
				assert_int_equal(r.last, seen + 1 == n);
				seen++;
				drop(&r);
				continue;
			}
			if (rc != FUT__WIRE_MORE) {
				assert_non_null(d.error);
				fut__wire_dec_fini(&d);
				return -1;
			}
			assert_int_equal(off, piece);
		}
		pos += piece;
	}
	assert_true(fut__wire_dec_idle(&d) || seen < n);
	fut__wire_dec_fini(&d);
	return (long)seen;
}

static bool last_idle;
static long decode_all(unsigned dir, const unsigned char *buf, size_t len,
		       int *last_rc);

static const struct rec_spec tasks3[] = {
	{ 1, 0x401000, 0, 0, 16 },
	{ 2, 0x401000, 0, 0, 0 },
	{ 3, 0x402000, 0, 0, 300 },
};

static void test_task_frame_round_trips_whole_and_byte_by_byte(void **state)
{
	(void)state;
	size_t len;
	unsigned char *buf = encode(FUT__WIRE_TASKS, tasks3, 3, &len);
	size_t steps[] = { len, 1, 7, 31, 33, 100 };
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++)
		assert_int_equal(feed_in_steps(FUT__WIRE_TO_WORKER, buf, len,
					       steps[i], tasks3, 3),
				 3);
	free(buf);
}

static void test_result_frame_round_trips_every_kind(void **state)
{
	(void)state;
	const struct rec_spec rs[] = {
		{ 9, 0, FUT__WIRE_R_NONE, 0, 0 },
		{ 10, 0, FUT__WIRE_R_BYTES, 0, 16 },
		{ 11, 0, FUT__WIRE_R_VALUE, 0, 0 },
		{ 12, 0, FUT__WIRE_R_FAIL, -42, 20 },
	};
	size_t len;
	unsigned char *buf = encode(FUT__WIRE_RESULTS, rs, 4, &len);
	assert_int_equal(
		feed_in_steps(FUT__WIRE_TO_PARENT, buf, len, len, rs, 4), 4);
	assert_int_equal(feed_in_steps(FUT__WIRE_TO_PARENT, buf, len, 5, rs, 4),
			 4);
	free(buf);
}

static void test_hello_frame_decodes_and_carries_the_init_code(void **state)
{
	(void)state;
	const struct rec_spec rs[] = {
		{ 0, 0, FUT__WIRE_HELLO_INIT_FAILED, 7, 0 },
	};
	size_t len;
	unsigned char *buf = encode(FUT__WIRE_HELLO, rs, 1, &len);
	assert_int_equal(
		feed_in_steps(FUT__WIRE_TO_PARENT, buf, len, len, rs, 1), 1);
	/* A worker never receives a hello. */
	assert_int_equal(
		feed_in_steps(FUT__WIRE_TO_WORKER, buf, len, len, rs, 1), -1);
	free(buf);
}

static void test_whole_payload_is_returned_in_place(void **state)
{
	(void)state;
	size_t len;
	unsigned char *buf = encode(FUT__WIRE_TASKS, tasks3, 1, &len);
	struct fut__wire_dec d;
	struct fut__wire_rec r;
	size_t used;
	fut__wire_dec_init(&d, FUT__WIRE_TO_WORKER);
	assert_int_equal(fut__wire_dec_feed(&d, buf, len, &used, &r),
			 FUT__WIRE_RECORD);
	assert_int_equal(used, len);
	assert_false(r.owned);
	assert_ptr_equal(r.data, buf + FUT__WIRE_FRAME_HDR + FUT__WIRE_REC_HDR);
	assert_true(fut__wire_dec_idle(&d));
	fut__wire_dec_fini(&d);
	free(buf);
}

static void
test_large_payload_can_be_read_straight_into_its_buffer(void **state)
{
	(void)state;
	const struct rec_spec rs[] = { { 5, 0, FUT__WIRE_R_BYTES, 0, 100000 } };
	size_t len;
	unsigned char *buf = encode(FUT__WIRE_RESULTS, rs, 1, &len);
	struct fut__wire_dec d;
	struct fut__wire_rec r;
	size_t used, room;
	fut__wire_dec_init(&d, FUT__WIRE_TO_PARENT);
	assert_null(fut__wire_dec_direct(&d, &room));
	/* The headers and 10 payload bytes through feed... */
	size_t head = FUT__WIRE_FRAME_HDR + FUT__WIRE_REC_HDR + 10;
	assert_int_equal(fut__wire_dec_feed(&d, buf, head, &used, &r),
			 FUT__WIRE_MORE);
	assert_int_equal(used, head);
	/* ...the rest straight into the payload buffer, in two reads. */
	void *dst = fut__wire_dec_direct(&d, &room);
	assert_non_null(dst);
	assert_int_equal(room, 100000 - 10);
	memcpy(dst, buf + head, 50000);
	assert_int_equal(fut__wire_dec_direct_done(&d, 50000, &r),
			 FUT__WIRE_MORE);
	dst = fut__wire_dec_direct(&d, &room);
	assert_int_equal(room, 100000 - 10 - 50000);
	memcpy(dst, buf + head + 50000, room);
	assert_int_equal(fut__wire_dec_direct_done(&d, room, &r),
			 FUT__WIRE_RECORD);
	assert_true(r.owned);
	check_rec(&r, &rs[0]);
	fut__free(r.data);
	fut__wire_dec_fini(&d);
	free(buf);
}

static void test_two_frames_back_to_back_decode_in_one_buffer(void **state)
{
	(void)state;
	size_t l1, l2;
	unsigned char *a = encode(FUT__WIRE_TASKS, tasks3, 2, &l1);
	unsigned char *b = encode(FUT__WIRE_TASKS, tasks3 + 2, 1, &l2);
	unsigned char *both = malloc(l1 + l2);
	memcpy(both, a, l1);
	memcpy(both + l1, b, l2);
	int rc;
	assert_int_equal(decode_all(FUT__WIRE_TO_WORKER, both, l1 + l2, &rc),
			 3);
	assert_int_equal(rc, FUT__WIRE_MORE);
	assert_true(last_idle);
	free(a);
	free(b);
	free(both);
}

/* Every strict prefix leaves the decoder wanting more, never a record
 * past the cut, never a crash; the leftovers are freed by fini. */
static void test_every_truncated_prefix_is_incomplete_not_a_record(void **state)
{
	(void)state;
	size_t len;
	unsigned char *buf = encode(FUT__WIRE_TASKS, tasks3, 3, &len);
	for (size_t cut = 0; cut < len; cut++) {
		unsigned char *copy = malloc(cut ? cut : 1);
		memcpy(copy, buf, cut);
		struct fut__wire_dec d;
		fut__wire_dec_init(&d, FUT__WIRE_TO_WORKER);
		size_t off = 0, seen = 0;
		for (;;) {
			struct fut__wire_rec r;
			size_t used;
			int rc = fut__wire_dec_feed(&d, copy + off, cut - off,
						    &used, &r);
			off += used;
			if (rc == FUT__WIRE_RECORD) {
				check_rec(&r, &tasks3[seen++]);
				drop(&r);
				continue;
			}
			assert_int_equal(rc, FUT__WIRE_MORE);
			break;
		}
		assert_true(seen < 3);
		assert_false(fut__wire_dec_idle(&d) && cut != 0 && seen == 0);
		fut__wire_dec_fini(&d);
		free(copy);
	}
	free(buf);
}

static long decode_all(unsigned dir, const unsigned char *buf, size_t len,
		       int *last_rc)
{
	struct fut__wire_dec d;
	fut__wire_dec_init(&d, dir);
	size_t off = 0;
	long seen = 0;
	int rc;
	for (;;) {
		struct fut__wire_rec r;
		size_t used;
		rc = fut__wire_dec_feed(&d, buf + off, len - off, &used, &r);
		off += used;
		if (rc != FUT__WIRE_RECORD)
			break;
		seen++;
		drop(&r);
	}
	if (rc == FUT__WIRE_EBAD)
		assert_non_null(d.error);
	last_idle = fut__wire_dec_idle(&d);
	fut__wire_dec_fini(&d);
	*last_rc = rc;
	return seen;
}

static void expect_rejected(unsigned dir, const unsigned char *buf, size_t len)
{
	int rc;
	(void)decode_all(dir, buf, len, &rc);
	assert_int_equal(rc, FUT__WIRE_EBAD);
}

/* libfuture-mpi's records (a NAME, an INTERRUPT, a STOP, a BREAK to a
 * rank; an ERROR to the client) decode only in its directions; the
 * process pool's directions refuse them, and each is checked field by
 * field. */
static void test_mpi_records_decode_only_in_the_mpi_directions(void **state)
{
	(void)state;
	static const struct rec_spec to_rank[] = {
		{ 1, 0, FUT__WIRE_T_NAME, 0, 20 },
		{ 7, 1, FUT__WIRE_T_TASK, 0, 16 },
		{ 7, 0, FUT__WIRE_T_INTERRUPT, 0, 0 },
		{ 0, 0, FUT__WIRE_T_STOP, 0, 0 },
		{ 0, 0, FUT__WIRE_T_BREAK, 0, 0 },
	};
	size_t len;
	unsigned char *buf = encode(FUT__WIRE_TASKS, to_rank, 5, &len);
	int rc;
	assert_int_equal(decode_all(FUT__WIRE_TO_RANK, buf, len, &rc), 5);
	assert_int_equal(rc, FUT__WIRE_MORE);
	expect_rejected(FUT__WIRE_TO_WORKER, buf, len);
	free(buf);

	static const struct rec_spec error[] = {
		{ 5, 0, FUT__WIRE_R_ERROR, FUT_ENOTSUP, 30 },
	};
	buf = encode(FUT__WIRE_RESULTS, error, 1, &len);
	assert_int_equal(decode_all(FUT__WIRE_TO_CLIENT, buf, len, &rc), 1);
	expect_rejected(FUT__WIRE_TO_PARENT, buf, len);
	free(buf);

	static const struct rec_spec bad_to_rank[][1] = {
		{ { 0, 0, FUT__WIRE_T_NAME, 0, 4 } }, /* name id 0 */
		{ { 1, 0, FUT__WIRE_T_NAME, 0, 0 } }, /* empty name */
		{ { 1, 0, FUT__WIRE_T_NAME, 0, FUT__WIRE_MAX_NAME + 1 } },
		{ { 1, 2, FUT__WIRE_T_NAME, 0, 4 } }, /* a function */
		{ { 0, 0, FUT__WIRE_T_INTERRUPT, 0, 0 } },
		{ { 3, 0, FUT__WIRE_T_INTERRUPT, 0, 1 } },
		{ { 1, 0, FUT__WIRE_T_STOP, 0, 0 } },
		{ { 0, 0, FUT__WIRE_T_STOP, 1, 0 } }, /* a code */
		{ { 2, 0, FUT__WIRE_T_BREAK, 0, 0 } },
		{ { 0, 0, FUT__WIRE_T_BREAK, 0, 1 } },
		{ { 1, 0, FUT__WIRE_T_NKINDS, 0, 0 } }, /* unknown kind */
		{ { 1, 0, FUT__WIRE_T_TASK, 0, 0 } },	/* no function */
	};
	for (size_t i = 0; i < sizeof(bad_to_rank) / sizeof(bad_to_rank[0]);
	     i++) {
		buf = encode(FUT__WIRE_TASKS, bad_to_rank[i], 1, &len);
		expect_rejected(FUT__WIRE_TO_RANK, buf, len);
		free(buf);
	}
	static const struct rec_spec bad_to_client[][1] = {
		{ { 5, 0, FUT__WIRE_R_ERROR, 0, 0 } }, /* FUT_OK */
		{ { 5, 0, FUT__WIRE_R_ERROR, FUT_END + 1, 0 } },
		{ { 5, 0, FUT__WIRE_R_ERROR, FUT_ENOTSUP,
		    FUT__WIRE_MAX_MESSAGE + 1 } },
		{ { 0, 0, FUT__WIRE_R_ERROR, FUT_ENOTSUP, 0 } },
		{ { 5, 0, FUT__WIRE_R_ERROR + 1, 0, 0 } },
	};
	for (size_t i = 0; i < sizeof(bad_to_client) / sizeof(bad_to_client[0]);
	     i++) {
		buf = encode(FUT__WIRE_RESULTS, bad_to_client[i], 1, &len);
		expect_rejected(FUT__WIRE_TO_CLIENT, buf, len);
		free(buf);
	}
	/* No hello frame on the MPI stream. */
	static const struct rec_spec hello[] = { { 0, 0, 0, 0, 0 } };
	buf = encode(FUT__WIRE_HELLO, hello, 1, &len);
	expect_rejected(FUT__WIRE_TO_CLIENT, buf, len);
	free(buf);
}

static void test_corrupted_header_fields_are_rejected(void **state)
{
	(void)state;
	size_t len;
	unsigned char *buf = encode(FUT__WIRE_TASKS, tasks3, 3, &len);
	unsigned char *c = malloc(len);
	/* magic, version, type, reserved byte */
	for (int field = 0; field < 4; field++) {
		memcpy(c, buf, len);
		c[field] ^= 0x55;
		expect_rejected(FUT__WIRE_TO_WORKER, c, len);
	}
	/* count 0, count too high, count one off either way */
	uint32_t counts[] = { 0, FUT__WIRE_MAX_RECORDS + 1, 2, 4 };
	for (size_t i = 0; i < 4; i++) {
		memcpy(c, buf, len);
		c[4] = (unsigned char)counts[i];
		c[5] = (unsigned char)(counts[i] >> 8);
		c[6] = (unsigned char)(counts[i] >> 16);
		expect_rejected(FUT__WIRE_TO_WORKER, c, len);
	}
	/* body length shorter than the headers, one off, absurd */
	uint64_t bodies[] = { 10, len - FUT__WIRE_FRAME_HDR - 1,
			      len - FUT__WIRE_FRAME_HDR + 1, UINT64_MAX };
	for (size_t i = 0; i < 4; i++) {
		memcpy(c, buf, len);
		for (int b = 0; b < 8; b++)
			c[8 + b] = (unsigned char)(bodies[i] >> (8 * b));
		expect_rejected(FUT__WIRE_TO_WORKER, c, len);
	}
	free(c);
	free(buf);
}

static void test_corrupted_record_lengths_are_rejected(void **state)
{
	(void)state;
	size_t len;
	unsigned char *buf = encode(FUT__WIRE_TASKS, tasks3, 3, &len);
	unsigned char *c = malloc(len);
	size_t rec0 = FUT__WIRE_FRAME_HDR + 24;
	uint64_t lens[] = { 17, 15, 1u << 20, UINT64_MAX, (uint64_t)1 << 41 };
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		memcpy(c, buf, len);
		for (int b = 0; b < 8; b++)
			c[rec0 + b] = (unsigned char)(lens[i] >> (8 * b));
		/* A record that overruns its frame is an error at once; one
		 * off by a byte shifts the next headers: either way the frame
		 * never decodes cleanly. */
		int rc;
		long seen = decode_all(FUT__WIRE_TO_WORKER, c, len, &rc);
		assert_true(rc == FUT__WIRE_EBAD || !last_idle);
		assert_true(seen < 3);
		if (lens[i] > 1000)
			assert_int_equal(rc, FUT__WIRE_EBAD);
	}
	free(c);
	free(buf);
}

static void
test_result_fields_that_contradict_the_kind_are_rejected(void **state)
{
	(void)state;
	const struct rec_spec bad[] = {
		{ 0, 0, FUT__WIRE_R_BYTES, 0, 4 },  /* id 0 */
		{ 1, 7, FUT__WIRE_R_BYTES, 0, 4 },  /* a function */
		{ 1, 0, FUT__WIRE_R_NKINDS, 0, 0 }, /* unknown kind */
		{ 1, 0, FUT__WIRE_R_NONE, 0, 3 },   /* payload on none */
		{ 1, 0, FUT__WIRE_R_VALUE, 0, 3 },  /* payload on value */
		{ 1, 0, FUT__WIRE_R_BYTES, 5, 3 },  /* stray code */
		{ 1, 0, FUT__WIRE_R_FAIL, 1,
		  FUT__WIRE_MAX_MESSAGE + 1 }, /* long message */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		size_t len;
		unsigned char *buf =
			encode(FUT__WIRE_RESULTS, &bad[i], 1, &len);
		expect_rejected(FUT__WIRE_TO_PARENT, buf, len);
		free(buf);
	}
	const struct rec_spec bad_tasks[] = {
		{ 0, 1, 0, 0, 0 },
		{ 1, 0, 0, 0, 0 },
		{ 1, 1, 1, 0, 0 },
		{ 1, 1, 2, 0, 0 },
	};
	for (size_t i = 0; i < 4; i++) {
		size_t len;
		unsigned char *buf =
			encode(FUT__WIRE_TASKS, &bad_tasks[i], 1, &len);
		expect_rejected(FUT__WIRE_TO_WORKER, buf, len);
		free(buf);
	}
	/* A task record's code is its claim key: any value passes. */
	const struct rec_spec keyed = { 1, 1, 0, -7, 3 };
	size_t len;
	unsigned char *buf = encode(FUT__WIRE_TASKS, &keyed, 1, &len);
	int rc;
	assert_int_equal(decode_all(FUT__WIRE_TO_WORKER, buf, len, &rc), 1);
	free(buf);
	/* A task frame sent to the parent is refused too. */
	buf = encode(FUT__WIRE_TASKS, tasks3, 1, &len);
	expect_rejected(FUT__WIRE_TO_PARENT, buf, len);
	free(buf);
}

/* Flips each byte of a valid frame in turn: the decoder must give records
 * or an error, never crash nor leak (ASan and valgrind watch). */
static void test_every_single_byte_corruption_is_survived(void **state)
{
	(void)state;
	size_t len;
	unsigned char *buf = encode(FUT__WIRE_TASKS, tasks3, 3, &len);
	unsigned char *c = malloc(len);
	for (size_t i = 0; i < len; i++) {
		for (int v = 0; v < 3; v++) {
			memcpy(c, buf, len);
			c[i] = v == 0 ? 0 :
			       v == 1 ? 0xff :
					(unsigned char)~buf[i];
			int rc;
			long seen =
				decode_all(FUT__WIRE_TO_WORKER, c, len, &rc);
			assert_true(seen >= 0 && seen <= 3);
			assert_true(rc == FUT__WIRE_MORE ||
				    rc == FUT__WIRE_EBAD ||
				    rc == FUT__WIRE_RECORD);
		}
	}
	free(c);
	free(buf);
}

static void test_decoder_stays_failed_after_an_error(void **state)
{
	(void)state;
	size_t len;
	unsigned char *buf = encode(FUT__WIRE_TASKS, tasks3, 1, &len);
	buf[0] = 0;
	struct fut__wire_dec d;
	struct fut__wire_rec r;
	size_t used;
	fut__wire_dec_init(&d, FUT__WIRE_TO_WORKER);
	assert_int_equal(fut__wire_dec_feed(&d, buf, len, &used, &r),
			 FUT__WIRE_EBAD);
	buf[0] = FUT__WIRE_MAGIC;
	assert_int_equal(fut__wire_dec_feed(&d, buf, len, &used, &r),
			 FUT__WIRE_EBAD);
	fut__wire_dec_fini(&d);
	free(buf);
}

static void test_payload_allocation_failure_is_reported(void **state)
{
	(void)state;
	const struct rec_spec rs[] = { { 5, 0, FUT__WIRE_R_BYTES, 0, 1000 } };
	size_t len;
	unsigned char *buf = encode(FUT__WIRE_RESULTS, rs, 1, &len);
	struct fut__wire_dec d;
	struct fut__wire_rec r;
	size_t used;
	fut__wire_dec_init(&d, FUT__WIRE_TO_PARENT);
	fut__alloc_fail_nth(1);
	assert_int_equal(fut__wire_dec_feed(&d, buf, 100, &used, &r),
			 FUT__WIRE_ENOMEM);
	fut__alloc_fail_nth(0);
	fut__wire_dec_fini(&d);
	free(buf);
}

/* Found by fuzz_wire: a 100-byte frame whose record claimed 64 GiB made
 * the decoder malloc 64 GiB at once.  The buffer now grows with the bytes
 * that really arrive. */
static void
test_declared_payload_length_costs_no_memory_until_sent(void **state)
{
	(void)state;
	const uint64_t claimed = (uint64_t)1 << 39;
	unsigned char head[FUT__WIRE_FRAME_HDR + FUT__WIRE_REC_HDR + 100];
	memset(head, 'x', sizeof(head));
	fut__wire_put_frame(head, FUT__WIRE_RESULTS, 1,
			    FUT__WIRE_REC_HDR + claimed);
	fut__wire_put_record(head + FUT__WIRE_FRAME_HDR, 5, 0,
			     FUT__WIRE_R_BYTES, 0, claimed);
	struct fut__wire_dec d;
	struct fut__wire_rec r;
	size_t used, room;
	fut__wire_dec_init(&d, FUT__WIRE_TO_PARENT);
	assert_int_equal(fut__wire_dec_feed(&d, head, sizeof(head), &used, &r),
			 FUT__WIRE_MORE);
	assert_int_equal(used, sizeof(head));
	assert_true(d.cap <= (size_t)1 << 20);
	assert_non_null(fut__wire_dec_direct(&d, &room));
	assert_true(room <= (size_t)1 << 20);
	/* 3 MiB more arrive: the buffer follows, at most doubling. */
	size_t chunk = 100000;
	unsigned char *more = calloc(1, chunk);
	assert_non_null(more);
	for (size_t sent = 0; sent < (size_t)3 << 20; sent += chunk) {
		assert_int_equal(fut__wire_dec_feed(&d, more, chunk, &used, &r),
				 FUT__WIRE_MORE);
		assert_int_equal(used, chunk);
	}
	assert_true(d.cap <= 2 * d.got + ((size_t)1 << 20));
	free(more);
	fut__wire_dec_fini(&d);
}

/* A payload longer than the first gathering buffer decodes whole, fed in
 * pieces or read direct in as many reads as the rooms allow. */
static void test_payload_larger_than_the_first_buffer_round_trips(void **state)
{
	(void)state;
	const struct rec_spec rs[] = {
		{ 7, 0, FUT__WIRE_R_BYTES, 0, ((size_t)3 << 20) + 17 },
	};
	size_t len;
	unsigned char *buf = encode(FUT__WIRE_RESULTS, rs, 1, &len);
	assert_int_equal(
		feed_in_steps(FUT__WIRE_TO_PARENT, buf, len, 70001, rs, 1), 1);
	struct fut__wire_dec d;
	struct fut__wire_rec r;
	size_t used, room, pos = FUT__WIRE_FRAME_HDR + FUT__WIRE_REC_HDR + 1;
	fut__wire_dec_init(&d, FUT__WIRE_TO_PARENT);
	assert_int_equal(fut__wire_dec_feed(&d, buf, pos, &used, &r),
			 FUT__WIRE_MORE);
	int rc = FUT__WIRE_MORE;
	while (rc == FUT__WIRE_MORE) {
		void *dst = fut__wire_dec_direct(&d, &room);
		assert_non_null(dst);
		assert_true(room > 0 && room <= len - pos);
		memcpy(dst, buf + pos, room);
		pos += room;
		rc = fut__wire_dec_direct_done(&d, room, &r);
	}
	assert_int_equal(rc, FUT__WIRE_RECORD);
	assert_int_equal(pos, len);
	assert_true(r.owned);
	check_rec(&r, &rs[0]);
	fut__free(r.data);
	fut__wire_dec_fini(&d);
	free(buf);
}

static void test_control_messages_round_trip_and_reject_garbage(void **state)
{
	(void)state;
	unsigned char buf[FUT__WIRE_CTL_SIZE];
	struct fut__wire_ctl in = { FUT__WIRE_CTL_EXITED, 3, 9, 1234, 0x8b };
	struct fut__wire_ctl out;
	fut__wire_ctl_put(buf, &in);
	assert_int_equal(fut__wire_ctl_get(buf, sizeof(buf), &out), FUT_OK);
	assert_int_equal(out.type, in.type);
	assert_int_equal(out.slot, 3);
	assert_int_equal(out.gen, 9);
	assert_int_equal(out.pid, 1234);
	assert_int_equal(out.value, 0x8b);
	assert_int_equal(fut__wire_ctl_get(buf, sizeof(buf) - 1, &out),
			 FUT_EINVAL);
	assert_int_equal(fut__wire_ctl_get(NULL, sizeof(buf), &out),
			 FUT_EINVAL);
	for (size_t i = 0; i < 4; i++) {
		unsigned char c[FUT__WIRE_CTL_SIZE];
		memcpy(c, buf, sizeof(c));
		c[i] ^= 0x40;
		assert_int_equal(fut__wire_ctl_get(c, sizeof(c), &out),
				 FUT_EINVAL);
	}
	struct fut__wire_ctl nopid = { FUT__WIRE_CTL_SPAWNED, 0, 0, 0, 0 };
	fut__wire_ctl_put(buf, &nopid);
	assert_int_equal(fut__wire_ctl_get(buf, sizeof(buf), &out), FUT_EINVAL);
}

/* fuzz_wire found its own check stale: it knew types up to EXITED when
 * the process pool had added KILL. */
static void test_every_control_message_type_round_trips(void **state)
{
	(void)state;
	unsigned char buf[FUT__WIRE_CTL_SIZE];
	struct fut__wire_ctl out;
	for (unsigned type = FUT__WIRE_CTL_SPAWN; type <= FUT__WIRE_CTL_KILL;
	     type++) {
		struct fut__wire_ctl in = { type, 1, 2, 77, -5 };
		fut__wire_ctl_put(buf, &in);
		assert_int_equal(fut__wire_ctl_get(buf, sizeof(buf), &out),
				 FUT_OK);
		assert_int_equal(out.type, type);
		assert_int_equal(out.pid, 77);
		assert_int_equal(out.value, -5);
	}
	unsigned outside[] = { 0, FUT__WIRE_CTL_KILL + 1, 255 };
	for (size_t i = 0; i < sizeof(outside) / sizeof(outside[0]); i++) {
		fut__wire_ctl_put(buf,
				  &(struct fut__wire_ctl){ 1, 1, 2, 77, 0 });
		buf[2] = (unsigned char)outside[i];
		assert_int_equal(fut__wire_ctl_get(buf, sizeof(buf), &out),
				 FUT_EINVAL);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			test_task_frame_round_trips_whole_and_byte_by_byte),
		cmocka_unit_test(test_result_frame_round_trips_every_kind),
		cmocka_unit_test(
			test_hello_frame_decodes_and_carries_the_init_code),
		cmocka_unit_test(test_whole_payload_is_returned_in_place),
		cmocka_unit_test(
			test_large_payload_can_be_read_straight_into_its_buffer),
		cmocka_unit_test(
			test_two_frames_back_to_back_decode_in_one_buffer),
		cmocka_unit_test(
			test_every_truncated_prefix_is_incomplete_not_a_record),
		cmocka_unit_test(test_corrupted_header_fields_are_rejected),
		cmocka_unit_test(
			test_mpi_records_decode_only_in_the_mpi_directions),
		cmocka_unit_test(test_corrupted_record_lengths_are_rejected),
		cmocka_unit_test(
			test_result_fields_that_contradict_the_kind_are_rejected),
		cmocka_unit_test(test_every_single_byte_corruption_is_survived),
		cmocka_unit_test(test_decoder_stays_failed_after_an_error),
		cmocka_unit_test(test_payload_allocation_failure_is_reported),
		cmocka_unit_test(
			test_declared_payload_length_costs_no_memory_until_sent),
		cmocka_unit_test(
			test_payload_larger_than_the_first_buffer_round_trips),
		cmocka_unit_test(
			test_control_messages_round_trip_and_reject_garbage),
		cmocka_unit_test(test_every_control_message_type_round_trips),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
