/*
 * gen_wire_seeds.c: writes fuzz_wire's seed corpus with the encoder.
 *
 *   gen_wire_seeds DIR      (make fuzz-seeds writes tests/fuzz/wire/)
 *
 * Each seed is fuzz_wire's input: a mode byte, four seed bytes, then a
 * stream: valid frames of every type and record kind, frames back to
 * back, a payload large enough to be gathered (and read direct), and the
 * fork server's control messages of every type.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/executor.h"
#include "core/future_int.h"
#include "core/slab.h"
#include "core/sync.h"
#include "core/task.h"
#include "process_pool/wire.h"

#include "fuzz_wire.h"

struct rec {
	uint64_t id, fn;
	uint32_t kind;
	int32_t code;
	size_t len;
};

static unsigned char buf[1 << 16];
static size_t used;

static void start(unsigned mode, uint32_t seed)
{
	used = 0;
	buf[used++] = (unsigned char)mode;
	for (int i = 0; i < 4; i++)
		buf[used++] = (unsigned char)(seed >> (8 * i));
}

static void frame(unsigned type, const struct rec *rs, size_t n)
{
	uint64_t body = 0;
	for (size_t i = 0; i < n; i++)
		body += FUT__WIRE_REC_HDR + rs[i].len;
	fut__wire_put_frame(buf + used, type, (uint32_t)n, body);
	used += FUT__WIRE_FRAME_HDR;
	for (size_t i = 0; i < n; i++) {
		fut__wire_put_record(buf + used, rs[i].id, rs[i].fn, rs[i].kind,
				     rs[i].code, rs[i].len);
		used += FUT__WIRE_REC_HDR;
		for (size_t j = 0; j < rs[i].len; j++)
			buf[used++] =
				(unsigned char)('a' + (rs[i].id + j) % 26);
	}
}

static int save(const char *dir, const char *name)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	if (f == NULL || fwrite(buf, 1, used, f) != used || fclose(f) != 0) {
		perror(path);
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	const char *dir = argv[1];
	int bad = 0;
	const struct rec tasks[] = {
		{ 1, 0x401000, 0, 0, 16 },
		{ 2, 0x401000, 0, 0, 0 },
		{ 3, 0x402000, 0, 0, 300 },
	};
	const struct rec results[] = {
		{ 9, 0, FUT__WIRE_R_NONE, 0, 0 },
		{ 10, 0, FUT__WIRE_R_BYTES, 0, 16 },
		{ 11, 0, FUT__WIRE_R_VALUE, 0, 0 },
		{ 12, 0, FUT__WIRE_R_FAIL, -42, 20 },
	};
	const struct rec hello_ok = { 0, 0, FUT__WIRE_HELLO_OK, 0, 0 };
	const struct rec hello_bad = { 0, 0, FUT__WIRE_HELLO_INIT_FAILED, 7,
				       0 };
	const struct rec big = { 5, 0, FUT__WIRE_R_BYTES, 0, 2000 };
	const struct rec big_task = { 6, 0x403000, 0, 0, 1500 };

	start(0, 1);
	frame(FUT__WIRE_TASKS, tasks, 1);
	bad |= save(dir, "task-one");
	start(0, 2);
	frame(FUT__WIRE_TASKS, tasks, 3);
	bad |= save(dir, "task-three");
	start(0, 3);
	frame(FUT__WIRE_TASKS, tasks, 2);
	frame(FUT__WIRE_TASKS, tasks + 2, 1);
	bad |= save(dir, "task-two-frames");
	for (size_t i = 0; i < 4; i++) {
		char name[32];
		start(0, 10 + (uint32_t)i);
		frame(FUT__WIRE_RESULTS, &results[i], 1);
		snprintf(name, sizeof(name), "result-kind%zu", i);
		bad |= save(dir, name);
	}
	start(0, 20);
	frame(FUT__WIRE_RESULTS, results, 4);
	bad |= save(dir, "result-all-kinds");
	start(0, 21);
	frame(FUT__WIRE_HELLO, &hello_ok, 1);
	frame(FUT__WIRE_RESULTS, results + 1, 3);
	bad |= save(dir, "hello-then-results");
	start(0, 22);
	frame(FUT__WIRE_HELLO, &hello_bad, 1);
	bad |= save(dir, "hello-init-failed");
	start(MODE_DIRECT, 23);
	frame(FUT__WIRE_RESULTS, &big, 1);
	bad |= save(dir, "result-large-direct");
	start(0, 24);
	frame(FUT__WIRE_TASKS, &big_task, 1);
	bad |= save(dir, "task-large");
	start(MODE_DIRECT | MODE_OVERREAD, 25);
	frame(FUT__WIRE_TASKS, &big_task, 1);
	bad |= save(dir, "task-large-overread");
	start(MODE_ALLOCFAIL | (2 << 4), 26); /* the 3rd allocation fails */
	frame(FUT__WIRE_RESULTS, &big, 1);
	frame(FUT__WIRE_RESULTS, &big, 1);
	frame(FUT__WIRE_RESULTS, &big, 1);
	bad |= save(dir, "result-large-allocfail");
	const struct {
		const char *name;
		struct fut__wire_ctl c;
	} ctls[] = {
		{ "ctl-spawn", { FUT__WIRE_CTL_SPAWN, 3, 1, 0, 0 } },
		{ "ctl-spawned", { FUT__WIRE_CTL_SPAWNED, 3, 1, 4242, 0 } },
		{ "ctl-spawn-failed",
		  { FUT__WIRE_CTL_SPAWN_FAILED, 3, 1, 0, 11 } },
		{ "ctl-exited", { FUT__WIRE_CTL_EXITED, 3, 1, 4242, 0x8b } },
	};
	for (size_t i = 0; i < sizeof(ctls) / sizeof(ctls[0]); i++) {
		start(0, 30 + (uint32_t)i);
		fut__wire_ctl_put(buf + used, &ctls[i].c);
		used += FUT__WIRE_CTL_SIZE;
		bad |= save(dir, ctls[i].name);
	}
	return bad;
}
