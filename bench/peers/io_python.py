"""concurrent.futures.ThreadPoolExecutor on W7-W9 (../io_common.h).

Adapted from the project's shared bench-peers/io_python.py: the same pools,
submits and clocks, plus BENCH_QUICK=1 (task counts and W9's rounds / 10,
as bench_n() in ../bench_common.h) and checks that every task ran once
(the sum of the values the tasks returned).  The constants repeat
../io_common.h; keep them equal.  W7b runs in a fresh interpreter (this
script run again as `io_python.py W7b`), as it does for libfuture and
GLib: not after W7's pool in the same process.
"""
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait

W7_TASKS, W7_WORKERS, W7B_TASKS, W7B_WORKERS, W7_BLOCK_MS = 512, 64, 256, 256, 20
W8_BLOCKERS, W8_BLOCK_MS, W8_TINY, W8_WORKERS = 6, 300, 20000, 8
W9_TASKS, W9_ROUNDS, W9_CAP_S = 16, 20, 2.0
W9_WATCH_POLL_S = 50e-6

QUICK = os.environ.get("BENCH_QUICK", "0") not in ("", "0")


def n_of(n):
    return max(1, n // 10) if QUICK else n


def report(workload, n, figure, value):
    print(f"RESULT workload={workload} impl=python-tpe n={n} {figure}={value}",
          flush=True)


def check(ok, what):
    if not ok:
        sys.exit(f"io_python: {what} wrong")


def block_then_plus_one(i, ms):
    time.sleep(ms / 1000)
    return i + 1


def w7(name, tasks, workers):
    with ThreadPoolExecutor(workers) as ex:
        t0 = time.perf_counter()
        fs = [ex.submit(block_then_plus_one, i, W7_BLOCK_MS)
              for i in range(tasks)]
        wait(fs)
        d = time.perf_counter() - t0
    check(sum(f.result() for f in fs) == tasks * (tasks + 1) // 2,
          f"{name} sum")
    ideal = (tasks + workers - 1) // workers * W7_BLOCK_MS / 1000
    report(name, tasks, "efficiency", f"{ideal / d:.3f}")


def w8(tiny):
    with ThreadPoolExecutor(W8_WORKERS) as ex:
        blockers = [ex.submit(block_then_plus_one, i, W8_BLOCK_MS)
                    for i in range(W8_BLOCKERS)]
        t0 = time.perf_counter()
        fs = [ex.submit(int, i + 1) for i in range(tiny)]
        wait(fs)
        d = time.perf_counter() - t0
    check(sum(f.result() for f in fs) == tiny * (tiny + 1) // 2, "W8 sum")
    check(sum(f.result() for f in blockers) ==
          W8_BLOCKERS * (W8_BLOCKERS + 1) // 2, "W8 blockers' sum")
    report("W8", tiny, "ms", f"{d * 1e3:.1f}")


def w9_round():
    gate = threading.Event()
    lock = threading.Lock()
    running = [0]

    def gated(i):
        with lock:
            running[0] += 1
        gate.wait()
        return i + 1

    with ThreadPoolExecutor(W9_TASKS) as ex:
        t0 = time.perf_counter()
        fs = [ex.submit(gated, i) for i in range(W9_TASKS)]
        while running[0] < W9_TASKS and time.perf_counter() - t0 < W9_CAP_S:
            time.sleep(W9_WATCH_POLL_S)
        d = min(time.perf_counter() - t0, W9_CAP_S)
        gate.set()
    check(running[0] == W9_TASKS and
          sum(f.result() for f in fs) == W9_TASKS * (W9_TASKS + 1) // 2,
          "W9 tasks ran")
    return d


def main():
    if sys.argv[1:] == ["W7b"]:
        w7("W7b", n_of(W7B_TASKS), W7B_WORKERS)
        return
    if sys.argv[1:]:
        sys.exit("usage: io_python.py [W7b]")
    # First, in a fresh process.
    if subprocess.run([sys.executable, os.path.abspath(__file__),
                       "W7b"]).returncode != 0:
        sys.exit("io_python: io_python.py W7b failed")
    w7("W7", n_of(W7_TASKS), W7_WORKERS)
    w8(n_of(W8_TINY))
    worst = max(w9_round() for _ in range(n_of(W9_ROUNDS)))
    report("W9", W9_TASKS, "worst_ms", f"{worst * 1e3:.2f}")


if __name__ == "__main__":
    main()
