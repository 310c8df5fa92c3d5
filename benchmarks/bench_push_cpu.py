"""CPU per pushed segment of walship's own push(), in one process, A/B between installs.

What the background process spends per file it pushes ahead, without the
archiver, the calls or PostgreSQL around it: each ``--python`` interpreter
(a venv with its own walship) pushes the same real WAL segments into a fresh
local repository with ``--threads`` pushes at once, and reports its user and
system CPU per segment and the wall time per segment. The variants run
alternately, ``--rounds`` times, so that a machine whose speed drifts (a
shared VM does) affects both alike; the medians are printed.

Segments: real ones, e.g. the copies ``bench_drain.py --keep`` leaves in
``repo-<workload>-cp``, or a stopped cluster's ``pg_wal``::

    python benchmarks/bench_push_cpu.py --segments /tmp/walship-bench-drain-x/repo-mixed-cp \\
        --python /var/tmp/walship-old/bin/python --python /var/tmp/walship-bench/bin/python

Used for "Where a local push spends its CPU" in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

SEGMENT = re.compile(r"^[0-9A-F]{24}$")

#: run by each interpreter: push the segments, print the CPU and wall per segment
CHILD = r"""
import json, os, resource, sys, time
from concurrent.futures import ThreadPoolExecutor
from walship import config
from walship.archive import push
from walship.codec import compress, envelope
from walship.storage.registry import open_backend

repo, threads, segs = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
cfg = config.load(config_path=None, overrides={"repo": repo})
backend = open_backend(repo, cfg)
compress._zstd()
if hasattr(envelope, "keep_read_buffers"):
    envelope.keep_read_buffers()  # as the background process does
ids = push.ConfirmedIdentities()
push.push(cfg, backend, segs[0], os.path.basename(segs[0]), ids)  # repository.json, warm-up
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
with ThreadPoolExecutor(threads) as pool:
    list(pool.map(lambda p: push.push(cfg, backend, p, os.path.basename(p), ids), segs[1:]))
wall, r1, n = time.monotonic() - t0, resource.getrusage(resource.RUSAGE_SELF), len(segs) - 1
print(json.dumps({
    "user_ms": (r1.ru_utime - r0.ru_utime) / n * 1000,
    "sys_ms": (r1.ru_stime - r0.ru_stime) / n * 1000,
    "wall_ms": wall / n * 1000,
}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", required=True, help="a directory of WAL segments")
    parser.add_argument(
        "--python", action="append", required=True, help="an interpreter with walship (repeat)"
    )
    parser.add_argument("--count", type=int, default=60, help="segments pushed per round")
    parser.add_argument("--threads", type=int, default=2, help="pushes at once")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    names = sorted(n for n in os.listdir(args.segments) if SEGMENT.match(n))
    if len(names) < 2:
        print(f"bench_push_cpu: no WAL segments in {args.segments}", file=sys.stderr)
        return 2
    segs = [os.path.join(os.path.abspath(args.segments), n) for n in names[: args.count]]
    runs: dict[str, list[dict[str, float]]] = {p: [] for p in args.python}
    work = tempfile.mkdtemp(prefix="walship-bench-pushcpu-", dir="/var/tmp")
    try:
        for _ in range(args.rounds):
            for python in args.python:
                repo = os.path.join(work, "repo")
                shutil.rmtree(repo, ignore_errors=True)
                os.makedirs(repo)
                out = subprocess.run(
                    [python, "-c", CHILD, repo, str(args.threads), json.dumps(segs)],
                    cwd="/",
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                runs[python].append(json.loads(out))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{len(segs) - 1} segments of {args.segments}, {args.threads} pushes at once")
    report = {}
    for python, rs in runs.items():
        row = {k: statistics.median(r[k] for r in rs) for k in ("user_ms", "sys_ms", "wall_ms")}
        row["cpu_ms_all"] = [round(r["user_ms"] + r["sys_ms"], 1) for r in rs]
        report[python] = row
        print(
            f"{python}: CPU {row['user_ms'] + row['sys_ms']:.1f} ms/segment "
            f"(user {row['user_ms']:.1f}, sys {row['sys_ms']:.1f}; rounds {row['cpu_ms_all']}), "
            f"wall {row['wall_ms']:.1f} ms/segment"
        )
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"segments": args.segments, "threads": args.threads, "runs": report}, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
