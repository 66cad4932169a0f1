// tbb.cpp: oneTBB task_group on W1-W3 (default arena: one thread per
// core).  task_group returns nothing per task: W1 and W3 fold results into
// atomics.  Its wait() runs still-queued tasks in the waiting thread.
#include <oneapi/tbb/task_group.h>

#include <atomic>
#include <cstdint>
#include <cstdio>

extern "C" {
#include "../bench_common.h"
}

int main()
{
	setvbuf(stdout, nullptr, _IOLBF, 0);
	long n = bench_n(1000000);
	std::atomic<uint64_t> sum{0};
	tbb::task_group g;
	double t0 = bench_now();
	for (long i = 0; i < n; i++)
		g.run([i, &sum] {
			sum.fetch_add((uint64_t)i * 2 + 1,
				      std::memory_order_relaxed);
		});
	g.wait();
	double d = bench_now() - t0;
	if (sum.load() != (uint64_t)n * (uint64_t)n)
		return 1;
	printf("RESULT workload=W1 impl=onetbb-task_group n=%ld rate=%.0f\n",
	       n, n / d);

	long m = bench_n(100000);
	t0 = bench_now();
	for (long i = 0; i < m; i++) {
		long r = 0;
		tbb::task_group one;
		one.run([&r, i] { r = i + 1; });
		one.wait();
		if (r != i + 1)
			return 1;
	}
	d = bench_now() - t0;
	printf("RESULT workload=W2 impl=onetbb-task_group n=%ld "
	       "us_per_op=%.3f\n",
	       m, d / m * 1e6);

	long k = bench_n(2000);
	uint64_t want = 0;
	t0 = bench_now();
	for (long i = 0; i < k; i++)
		want ^= w3_work((uint64_t)i);
	double serial = bench_now() - t0;
	std::atomic<uint64_t> x{0};
	t0 = bench_now();
	for (long i = 0; i < k; i++)
		g.run([i, &x] { x.fetch_xor(w3_work((uint64_t)i)); });
	g.wait();
	d = bench_now() - t0;
	if (x.load() != want)
		return 1;
	printf("RESULT workload=W3 impl=onetbb-task_group n=%ld speedup=%.2f\n",
	       k, serial / d);
	return 0;
}
