# Copied from ../shared/mpi/bench_mpi4py.py (issue 14's design research).
"""W-MPI1 / W-MPI2 with mpi4py.futures (design-mpi.md).

    mpirun -np 3 python3 -m mpi4py.futures bench_mpi4py.py [N1 N2]  # shared pool
    mpirun -np 1 python3 bench_mpi4py.py spawn [N1 N2]              # MPI_Comm_spawn
    python3 bench_mpi4py.py spawn [N1 N2]                           # singleton spawn

W-MPI1: N1 times submit inc(i) and wait for it (us per round trip).
W-MPI2: N2 tasks inc(i) over 2 workers: map chunksize=1, map chunksize=1000,
and submit-each then wait-all (tasks per second).  Results are checked.
"""
import os
import sys
import time

from mpi4py import MPI
from mpi4py.futures import MPIPoolExecutor, wait


def inc(x):
    return x + 1


def main():
    args = [a for a in sys.argv[1:] if a != "spawn"]
    spawn = "spawn" in sys.argv[1:]
    n1 = int(args[0]) if args else 2000
    n2 = int(args[1]) if len(args) > 1 else 100000
    mode = "spawn" if spawn else "shared"
    backoff = os.environ.get("MPI4PY_FUTURES_BACKOFF", "0.001")
    tag = f"mpi4py-{mode}-backoff{backoff}"
    t0 = time.perf_counter()
    # mpi4py 3.1 takes the backoff only as a keyword; 4.x also reads the
    # environment variable itself.
    with MPIPoolExecutor(max_workers=2, backoff=float(backoff)) as ex:
        ex.submit(inc, 0).result()  # boot the pool
        boot = time.perf_counter() - t0
        print(f"INFO {tag} boot_s={boot:.3f} workers={getattr(ex, 'num_workers', None) or ex._max_workers}",
              flush=True)
        for i in range(200):
            assert ex.submit(inc, i).result() == i + 1
        t = time.perf_counter()
        for i in range(n1):
            assert ex.submit(inc, i).result() == i + 1
        dt = time.perf_counter() - t
        print(f"RESULT workload=W-MPI1 impl={tag} n={n1} "
              f"us_per_op={dt / n1 * 1e6:.1f}", flush=True)
        want = sum(range(1, n2 + 1))
        for cs in (1, 1000):
            t = time.perf_counter()
            got = sum(ex.map(inc, range(n2), chunksize=cs))
            dt = time.perf_counter() - t
            ok = "ok" if got == want else "BAD"
            print(f"RESULT workload=W-MPI2 impl={tag}-map-chunksize{cs} "
                  f"n={n2} rate={n2 / dt:.0f} check={ok}", flush=True)
        t = time.perf_counter()
        fs = [ex.submit(inc, i) for i in range(n2)]
        wait(fs)
        got = sum(f.result() for f in fs)
        dt = time.perf_counter() - t
        ok = "ok" if got == want else "BAD"
        print(f"RESULT workload=W-MPI2 impl={tag}-submit n={n2} "
              f"rate={n2 / dt:.0f} check={ok}", flush=True)
    print(f"INFO {tag} total_s={time.perf_counter() - t0:.1f} "
          f"mpi={MPI.Get_library_version().splitlines()[0].rstrip(chr(0))}", flush=True)


if __name__ == "__main__":
    main()
