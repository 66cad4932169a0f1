/*
 * cpp_tasks: libfuture from C++ (docs/guide.md, "From C++").
 *
 * Lambdas run as tasks on a thread pool and on a process pool:
 * - a lambda that captures nothing converts to a fut_fn and runs on both;
 * - a lambda that captures goes through a static trampoline, one per
 *   closure type: on the thread pool the closure is passed by address
 *   (fut_submit's arg) and must outlive its task; on the process pool it
 *   is copied as bytes (fut_submit_bytes), so it must be trivially
 *   copyable and capture plain values only;
 * - an exception is caught inside the task and becomes fut_task_fail():
 *   the caller gets FUT_ETASK, our code and the exception's what();
 * - futures and executors are held by std::unique_ptr, whose deleters
 *   call fut_release() and fut_executor_free().
 * It checks every answer and exits 1 on any mismatch.  C++11 and later.
 */
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include <future.h>

namespace {

/* RAII: one reference to a future, and an executor. */
struct release_future {
	void operator()(fut_future *f) const
	{
		fut_release(f);
	}
};
using future_ptr = std::unique_ptr<fut_future, release_future>;

struct free_executor {
	void operator()(fut_executor *ex) const
	{
		fut_executor_free(ex);
	}
};
using executor_ptr = std::unique_ptr<fut_executor, free_executor>;

/* The task code for "the task threw"; ours to choose. */
const int TASK_THREW = 1;
/* The task code for "the closure's bytes came wrong". */
const int BAD_CLOSURE = 2;

/*
 * Runs fn(t) and turns an exception into the task's failure.  Nothing may
 * leave a task: the library is C and cannot pass an exception on (on a
 * thread pool it ends the program, on a process pool the worker).
 */
template <class F> void run_guarded(fut_task *t, F &fn) noexcept
{
	try {
		fn(t);
	} catch (const std::exception &e) {
		(void)fut_task_fail(t, TASK_THREW, "%s", e.what());
	} catch (...) {
		(void)fut_task_fail(t, TASK_THREW, "unknown exception");
	}
}

/* Thread pool: the closure travels by address as the task's arg. */
template <class F> void call_by_address(fut_task *t) noexcept
{
	run_guarded(t, *static_cast<F *>(fut_task_arg(t)));
}

/* fn must outlive the task: the task calls it where it lies. */
template <class F>
int submit_by_address(fut_executor *ex, F &fn, future_ptr &out)
{
	fut_future *f = nullptr;
	int rc = fut_submit(ex, call_by_address<F>, &fn, &f);
	out.reset(f);
	return rc;
}

/* Process pool (or any executor): the closure travels as its bytes. */
template <class F> void call_by_copy(fut_task *t) noexcept
{
	size_t len = 0;
	const void *in = fut_task_input(t, &len);
	if (len != sizeof(F)) {
		(void)fut_task_fail(t, BAD_CLOSURE, "%zu bytes, not %zu", len,
				    sizeof(F));
		return;
	}
	/* The input carries no alignment promise: copy it to storage that
	 * has F's. */
	alignas(F) unsigned char buf[sizeof(F)];
	std::memcpy(buf, in, sizeof(F));
	run_guarded(t, *reinterpret_cast<F *>(buf));
}

/* The bytes are copied before return: fn may go at once. */
template <class F>
int submit_by_copy(fut_executor *ex, const F &fn, future_ptr &out)
{
	/* Catches a captured std::string or std::vector, not a captured
	 * pointer or reference: those pass, and mean nothing in the worker
	 * unless what they point to was there when the pool was made. */
	static_assert(std::is_trivially_copyable<F>::value,
		      "a closure sent as bytes must capture plain values");
	fut_future *f = nullptr;
	int rc = fut_submit_bytes(ex, call_by_copy<F>, &fn, sizeof(F), &f);
	out.reset(f);
	return rc;
}

int failures = 0;

void check(bool ok, const char *where, const char *what)
{
	if (!ok) {
		std::fprintf(stderr, "cpp_tasks: %s: %s\n", where, what);
		failures++;
	}
}

/* The future's byte result as a long: FUT_OK, or the code it ended with
 * (FUT_EINVAL for a result of another size). */
int result_long(fut_future *f, long *out)
{
	const void *data;
	size_t len;
	int rc = fut_result_bytes(f, FUT_FOREVER, &data, &len);
	if (rc != FUT_OK)
		return rc;
	if (len != sizeof(*out))
		return FUT_EINVAL;
	std::memcpy(out, data, sizeof(*out));
	return FUT_OK;
}

/* Checks that f ended as a task that threw `message`. */
void check_threw(fut_future *f, const char *where, const char *message)
{
	check(fut_result(f, FUT_FOREVER, nullptr) == FUT_ETASK, where,
	      "fut_result is not FUT_ETASK");
	check(fut_task_code(f) == TASK_THREW, where,
	      "fut_task_code is not TASK_THREW");
	const char *m = fut_error_message(f);
	check(m != nullptr && std::strcmp(m, message) == 0, where,
	      "fut_error_message is not the exception's");
}

/* A lambda that captures nothing is a fut_fn; this one runs on both
 * pools.  noexcept: should it throw, std::terminate stops the exception
 * here, before it reaches the library's frames. */
const fut_fn square = [](fut_task *t) noexcept {
	long x;
	std::memcpy(&x, fut_task_input(t, nullptr), sizeof(x));
	long y = x * x;
	(void)fut_task_return_bytes(t, &y, sizeof(y));
};

void thread_pool_part()
{
	const char *where = "thread pool";
	int before = failures;
	/* What the tasks point to comes first: C++ destroys in reverse
	 * order, so `pool` goes first, and fut_executor_free() waits for
	 * every task before `data` and `parts` go. */
	std::vector<long> data(1000);
	for (size_t i = 0; i < data.size(); i++)
		data[i] = (long)i + 1;
	auto make_sum = [&data](size_t lo, size_t hi) {
		return [&data, lo, hi](fut_task *t) {
			if (hi > data.size())
				throw std::out_of_range("chunk past the end");
			long s = 0;
			for (size_t i = lo; i < hi; i++)
				s += data[i];
			(void)fut_task_return_bytes(t, &s, sizeof(s));
		};
	};
	using sum_task = decltype(make_sum(0, 0));
	std::vector<sum_task> parts;
	parts.reserve(5); /* the tasks hold their addresses: no moves */
	for (size_t lo = 0; lo < 1000; lo += 250)
		parts.push_back(make_sum(lo, lo + 250));
	parts.push_back(make_sum(900, 1100)); /* throws */

	fut_executor *raw = nullptr;
	if (fut_thread_pool_new(&raw, nullptr) != FUT_OK) {
		check(false, where, "fut_thread_pool_new failed");
		return;
	}
	executor_ptr pool(raw);

	/* Another, taking a pointer: thread pools only. */
	fut_fn cube = [](fut_task *t) noexcept {
		long x = *static_cast<long *>(fut_task_arg(t));
		long y = x * x * x;
		(void)fut_task_return_bytes(t, &y, sizeof(y));
	};
	long three = 3;
	future_ptr f_cube;
	fut_future *f = nullptr;
	int rc = fut_submit(pool.get(), cube, &three, &f);
	f_cube.reset(f);
	check(rc == FUT_OK, where, "fut_submit(cube) failed");

	long twelve = 12;
	future_ptr f_square;
	rc = fut_submit_bytes(pool.get(), square, &twelve, sizeof(twelve), &f);
	f_square.reset(f);
	check(rc == FUT_OK, where, "fut_submit_bytes(square) failed");

	std::vector<future_ptr> sums(parts.size());
	for (size_t i = 0; i < parts.size(); i++)
		check(submit_by_address(pool.get(), parts[i], sums[i]) ==
			      FUT_OK,
		      where, "submit_by_address failed");

	long v = 0;
	check(result_long(f_cube.get(), &v) == FUT_OK && v == 27, where,
	      "cube(3) is not 27");
	check(result_long(f_square.get(), &v) == FUT_OK && v == 144, where,
	      "square(12) is not 144");
	for (size_t i = 0; i + 1 < sums.size(); i++) {
		long lo = (long)i * 250, want = 0;
		for (long k = lo + 1; k <= lo + 250; k++)
			want += k;
		check(sums[i] && result_long(sums[i].get(), &v) == FUT_OK &&
			      v == want,
		      where, "a chunk's sum is wrong");
	}
	if (sums.back())
		check_threw(sums.back().get(), where, "chunk past the end");
	std::printf("%s: a cube, a square, 4 sums and 1 exception: %s\n", where,
		    failures == before ? "ok" : "WRONG");
}

void process_pool_part()
{
	const char *where = "process pool";
	int before = failures;
	/* Flushed before the fork: the workers inherit stdio's buffer, and
	 * one that flushes its copy prints our lines again (issue 15, item
	 * 3; seen under TSan). */
	std::fflush(stdout);
	fut_executor *raw = nullptr;
	fut_process_pool_opts opts = {};
	opts.max_workers = 2;
	if (fut_process_pool_new(&raw, &opts) != FUT_OK) {
		check(false, where, "fut_process_pool_new failed");
		return;
	}
	executor_ptr pool(raw);

	/* The same fut_fn on the other pool (it takes bytes). */
	long twelve = 12;
	future_ptr f_square;
	fut_future *f = nullptr;
	int rc = fut_submit_bytes(pool.get(), square, &twelve, sizeof(twelve),
				  &f);
	f_square.reset(f);
	check(rc == FUT_OK, where, "fut_submit_bytes(square) failed");

	/* Capturing lambdas, sent as bytes: each closure may go as soon as
	 * it is submitted. */
	long base = 1000;
	std::vector<future_ptr> polys(8);
	for (int i = 0; i < 8; i++) {
		auto poly = [base, i](fut_task *t) {
			if (i == 5)
				throw std::runtime_error("five is refused");
			if (i == 6)
				throw i; /* not a std::exception */
			long y = base + (long)i * i;
			(void)fut_task_return_bytes(t, &y, sizeof(y));
		};
		check(submit_by_copy(pool.get(), poly, polys[i]) == FUT_OK,
		      where, "submit_by_copy failed");
	}

	long v = 0;
	check(result_long(f_square.get(), &v) == FUT_OK && v == 144, where,
	      "square(12) is not 144");
	for (int i = 0; i < 8; i++) {
		if (!polys[i])
			continue;
		if (i == 5)
			check_threw(polys[i].get(), where, "five is refused");
		else if (i == 6)
			check_threw(polys[i].get(), where, "unknown exception");
		else
			check(result_long(polys[i].get(), &v) == FUT_OK &&
				      v == base + (long)i * i,
			      where, "base + i * i is wrong");
	}
	std::printf("%s: a square, 6 closures and 2 exceptions: %s\n", where,
		    failures == before ? "ok" : "WRONG");
}

} // namespace

int main()
{
	thread_pool_part();
	process_pool_part();
	if (failures != 0) {
		std::fprintf(stderr, "cpp_tasks: %d wrong\n", failures);
		return 1;
	}
	std::printf("cpp_tasks: every answer right\n");
	return 0;
}
