/*
 * process_pool/child_clock.h: the worker's clock (child.c), read at most
 * once a task, and less often through the CPU's tick counter.  Header
 * only: its calls sit on a task's path, inlined.  Private to the
 * library; the worker process's one thread.
 */
#ifndef FUT_PROCESS_POOL_CHILD_CLOCK_H
#define FUT_PROCESS_POOL_CHILD_CLOCK_H

#include <stdbool.h>
#include <stdint.h>
#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

#include "core/sync.h"

/* The tick counter at the last clock read (ticks), that read (clock_ns),
 * how many ticks make FUT__PP_GATE_NS (gate; 0: not known yet, and the clock is
 * then read after every task); cal_ns and cal_ticks: the pair it was
 * last worked out from. */
struct fut__pp_clock {
	uint64_t ticks;
	int64_t clock_ns;
	uint64_t gate;
	int64_t cal_ns;
	uint64_t cal_ticks;
};

/*
 * A task that ends less than FUT__PP_GATE_NS after the clock was last read ran
 * shorter than that, and needs no clock read of its own: the CPU's tick
 * counter tells, at less than half the cost (W5's tasks of ~100 ns read
 * the clock, 25 ns through the vDSO on the VMs we measure on, for a
 * fifth of a worker's time; docs/perf-log.md).  Every rule that reads
 * the time (a result sent before a task that follows one of 50 us, a
 * result at most 1 ms old) is then off by at most FUT__PP_GATE_NS.  The counter's
 * rate is worked out from two clock reads FUT__PP_CAL_NS or more apart (and
 * again every FUT__PP_RECAL_NS); a counter that goes back or leaps (another
 * CPU's) only makes the worker read the clock.
 */
#define FUT__PP_GATE_NS 2000
#define FUT__PP_CAL_NS 1000000
#define FUT__PP_RECAL_NS 100000000
/* A gate of more ticks than this is a bad reading (a counter of 10 GHz
 * or more): not used. */
#define FUT__PP_GATE_MAX_TICKS ((uint64_t)FUT__PP_GATE_NS * 10)

/* The CPU's tick counter in *t; false where there is none to read. */
static inline bool fut__pp_read_ticks(uint64_t *t)
{
#if defined(__x86_64__) || defined(__i386__)
	*t = __rdtsc();
	return true;
#elif defined(__aarch64__)
	uint64_t v;
	__asm__ __volatile__("mrs %0, cntvct_el0" : "=r"(v));
	*t = v;
	return true;
#else
	(void)t;
	return false;
#endif
}

/* The clock, read; the tick counter with it. */
static inline int64_t fut__pp_clock_read(struct fut__pp_clock *o)
{
	int64_t now = fut__now_ns();
	uint64_t tk;
	o->clock_ns = now;
	if (!fut__pp_read_ticks(&tk))
		return now;
	o->ticks = tk;
	int64_t span = now - o->cal_ns;
	if (o->cal_ns != 0 &&
	    span >= (o->gate == 0 ? FUT__PP_CAL_NS : FUT__PP_RECAL_NS)) {
		double g = (double)(tk - o->cal_ticks) * FUT__PP_GATE_NS /
			   (double)span;
		o->gate = g >= 1 && g <= (double)FUT__PP_GATE_MAX_TICKS ?
				  (uint64_t)g :
				  0;
	} else if (o->cal_ns != 0 && span >= 0) {
		return now;
	}
	o->cal_ns = now;
	o->cal_ticks = tk;
	return now;
}

/* When the task that just returned ended: the last clock read when that
 * was less than FUT__PP_GATE_NS ago (the tick counter says so), else the clock. */
static inline int64_t fut__pp_clock_task_end(struct fut__pp_clock *o)
{
	uint64_t tk;
	if (o->gate != 0 && fut__pp_read_ticks(&tk) && tk - o->ticks < o->gate)
		return o->clock_ns;
	return fut__pp_clock_read(o);
}

#endif
