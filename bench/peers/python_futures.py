"""concurrent.futures on W1-W6e, two workers, and W5mix: the reference model.

Thread pool (python-tpe): W1-W3; process pool (python-ppe): W3-W6.  Python
runs far fewer iterations per second than C, so W1 uses 200,000 tasks and
W3 a pure-Python work unit: only its speedup is compared.  Every workload
checks its results.  BENCH_QUICK=1 scales the counts down 10x.

W5mix, the mixed batch (bench_process.c's twin), on a pool of 8: 1,002
tasks that sleep the milliseconds their input names, 1,000 ms for tasks 0
and 1 and 1 ms for the rest; seconds until every result is in and checked,
the median of 3 runs (1 with BENCH_QUICK), each on a new pool with its
workers started, as a user writes it with one submit per task
(python-ppe-submit) and with map(chunksize=32)
(python-ppe-map32: 32 is the chunk libfuture's fut_submit_many picks for
1,002 tasks on 8 workers).  The argument W5mix runs W5mix alone.
"""
import concurrent.futures as cf
import os
import struct
import sys
import time

QUICK = os.environ.get("BENCH_QUICK", "0") not in ("", "0")


def n_of(n):
    return max(1, n // 10) if QUICK else n


def twice_plus_one(i):
    return i * 2 + 1


def plus_one(i):
    return i + 1


def echo(b):
    return b


def blob(n):
    return bytes(range(256)) * (n // 256)


W6E_UNIT = bytes((i * 31 + 7) & 0xFF for i in range(256))


def fill(n):
    """W6e's task: allocates and fills n bytes (libfuture's pattern)."""
    return W6E_UNIT * (n // 256)


def spin(seed):
    x = seed
    for _ in range(20000):
        x = (x * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
    return x


W5MIX_N = 1002
W5MIX_WORKERS = 8


def w5mix_inputs(n, long_ms, short_ms, nlong):
    """W5mix's inputs: 4 bytes of milliseconds, 4 of the task's index."""
    return [struct.pack("<II", long_ms if i < nlong else short_ms, i)
            for i in range(n)]


def w5mix_answer(b):
    ms, index = struct.unpack("<II", b)
    return index * 1000003 + ms


def w5mix_task(b):
    """W5mix's task: sleeps the milliseconds its input names, answers."""
    time.sleep(struct.unpack_from("<I", b)[0] / 1000)
    return w5mix_answer(b)


def report(workload, impl, n, figure, value):
    print(f"RESULT workload={workload} impl={impl} n={n} {figure}={value}",
          flush=True)


def check(ok, what):
    if not ok:
        sys.exit(f"python_futures: {what} wrong")


def median(xs):
    xs = sorted(xs)
    k = len(xs)
    return xs[k // 2] if k % 2 else (xs[k // 2 - 1] + xs[k // 2]) / 2


def w5mix_run(submit):
    """One W5mix run on a new pool of 8: seconds from the first submit
    until every result is in; submit(ex) gives the results.  Unlike
    bench_process's, the pool is warmed first (a 0 ms task per worker):
    it learns nothing from them, and the start of 8 Python workers
    (~0.15 s here) would pad its figure."""
    with cf.ProcessPoolExecutor(W5MIX_WORKERS) as ex:
        warm = w5mix_inputs(W5MIX_WORKERS, 0, 0, 0)
        fs = [ex.submit(w5mix_task, b) for b in warm]
        check([f.result() for f in fs] == [w5mix_answer(b) for b in warm],
              "W5mix warm-up")
        t = time.perf_counter()
        out = submit(ex)
        d = time.perf_counter() - t
    return d, out


def w5mix():
    """W5mix: the median of 3 runs per impl (1 with BENCH_QUICK)."""
    runs = 1 if QUICK else 3
    items = w5mix_inputs(W5MIX_N, 1000, 1, 2)
    want = [w5mix_answer(b) for b in items]

    def by_submit(ex):
        fs = [ex.submit(w5mix_task, b) for b in items]
        return [f.result() for f in fs]

    def by_map32(ex):
        return list(ex.map(w5mix_task, items, chunksize=32))

    for impl, submit in (("python-ppe-submit", by_submit),
                         ("python-ppe-map32", by_map32)):
        times = []
        for _ in range(runs):
            d, out = w5mix_run(submit)
            check(out == want, f"W5mix {impl} results")
            times.append(d)
        report("W5mix", impl, W5MIX_N, "seconds", f"{median(times):.3f}")


def main():
    if sys.argv[1:] == ["W5mix"]:
        w5mix()
        return
    if sys.argv[1:]:
        sys.exit("usage: python_futures.py [W5mix]")
    k = n_of(200)
    t = time.perf_counter()
    want = [spin(i) for i in range(k)]
    serial = time.perf_counter() - t

    with cf.ThreadPoolExecutor(2) as ex:
        n = n_of(200000)
        t = time.perf_counter()
        fs = [ex.submit(twice_plus_one, i) for i in range(n)]
        check(sum(f.result() for f in fs) == n * n, "W1 sum")
        report("W1", "python-tpe", n, "rate",
               f"{n / (time.perf_counter() - t):.0f}")

        n = n_of(20000)
        t = time.perf_counter()
        for i in range(n):
            check(ex.submit(plus_one, i).result() == i + 1, "W2 result")
        report("W2", "python-tpe", n, "us_per_op",
               f"{(time.perf_counter() - t) / n * 1e6:.3f}")

        t = time.perf_counter()
        check(list(ex.map(spin, range(k))) == want, "W3 results")
        report("W3", "python-tpe", k, "speedup",
               f"{serial / (time.perf_counter() - t):.2f}")

    with cf.ProcessPoolExecutor(2) as ex:
        ex.submit(plus_one, 1).result()  # start the workers
        t = time.perf_counter()
        check(list(ex.map(spin, range(k), chunksize=10)) == want,
              "W3 results")
        report("W3", "python-ppe", k, "speedup",
               f"{serial / (time.perf_counter() - t):.2f}")

        msg = b"0123456789abcdef"
        n = n_of(5000)
        t = time.perf_counter()
        for _ in range(n):
            check(ex.submit(echo, msg).result() == msg, "W4 echo")
        report("W4", "python-ppe", n, "us_per_op",
               f"{(time.perf_counter() - t) / n * 1e6:.3f}")

        for chunk, n in ((1, n_of(20000)), (1000, n_of(200000))):
            t = time.perf_counter()
            out = list(ex.map(echo, [msg] * n, chunksize=chunk))
            check(len(out) == n and all(b == msg for b in out), "W5 echo")
            report("W5", f"python-ppe-chunk{chunk}", n, "rate",
                   f"{n / (time.perf_counter() - t):.0f}")

        # W5 on distinct items (each holds its index), every one checked:
        # the comparison for libfuture's W5-one-call.
        n = n_of(200000)
        items = [i.to_bytes(8, "little") +
                 ((i * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF).to_bytes(
                     8, "little") for i in range(n)]
        t = time.perf_counter()
        out = list(ex.map(echo, items, chunksize=1000))
        d = time.perf_counter() - t
        check(out == items, "W5 distinct echo")
        report("W5-distinct", "python-ppe-chunk1000", n, "rate",
               f"{n / d:.0f}")

        # W6e: the task makes 64 MiB, the caller reads every byte.
        size = 64 << 20
        want = W6E_UNIT * (size // 256)
        t = time.perf_counter()
        r = ex.submit(fill, size).result()
        ok = r == want
        d = time.perf_counter() - t
        check(ok, "W6e bytes")
        report("W6e", "python-ppe", 1, "MBps", f"{size / d / 1e6:.0f}")
        del r, want

        size = 64 << 20
        t = time.perf_counter()
        r = ex.submit(blob, size).result()
        d = time.perf_counter() - t
        check(len(r) == size and r[:256] == bytes(range(256)), "W6 bytes")
        report("W6", "python-ppe", 1, "MBps", f"{size / d / 1e6:.0f}")

    w5mix()


if __name__ == "__main__":
    main()
