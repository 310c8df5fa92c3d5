"""Whole-process start-up paths of walship: what PostgreSQL waits for per WAL file.

Builds a fake data directory (pg_wal with real-format segments marked .ready, a
local repository, a TOML config file, as in production) and times three paths
as whole processes, run as PostgreSQL runs them (cwd = the data directory):

- ``fast``: ``walship push`` of a segment the look-ahead background process
  already pushed (the call only checks its record);
- ``cold``: ``walship push`` with ``archive_lookahead = 0`` of a segment not yet
  in the repository (its object is removed between runs; repository.json stays);
- ``fetch``: ``walship fetch`` of an archived segment (``fetch_prefetch = 0``).

    python benchmarks/bench_startup.py --walship /path/to/venv/bin/walship --runs 40

prints the median wall/CPU ms of each path; ``--keep DIR`` leaves the site in
DIR and prints the shell commands, to time them with another tool (or
``python -X importtime``). Used for the "Stand-ins" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEG = 16 << 20
SYSID = 7_000_000_000_000_000_001


def segment(segno: int) -> bytes:
    """A file that passes walship's WAL checks: a long page header, some data, zeros."""
    header = struct.pack("<HHIQI4xQII", 0xD110, 2, 1, segno * SEG, 0, SYSID, SEG, 8192)
    body = os.urandom(32) * 4096  # 128 KiB that compress like WAL (repeats)
    return header + body + b"\0" * (SEG - len(header) - len(body))


def name(segno: int) -> str:
    return f"{1:08X}{segno // 256:08X}{segno % 256:08X}"


def build(root: Path, walship: str) -> dict[str, list[str] | str]:
    data, repo = root / "data", root / "repo"
    status = data / "pg_wal" / "archive_status"
    status.mkdir(parents=True)
    for segno in range(1, 5):
        (data / "pg_wal" / name(segno)).write_bytes(segment(segno))
        (status / f"{name(segno)}.ready").touch()
    for kind, extra in (("fast", ""), ("cold", "archive_lookahead = 0\n"), ("fetch", "")):
        (root / f"{kind}.toml").write_text(
            f'repo = "{repo}"\nfetch_prefetch = 0\n{extra}[log]\nlevel = "warning"\n'
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALSHIP_")}

    def run(kind: str, *args: str) -> None:
        subprocess.run(
            [walship, *args],
            cwd=data,
            env={**env, "WALSHIP_CONFIG": str(root / f"{kind}.toml")},
            check=True,
            capture_output=True,
        )

    # the first push finds 3 more waiting and starts the background process
    run("fast", "push", f"pg_wal/{name(1)}", name(1))
    deadline = time.monotonic() + 60
    while not list(data.glob(f"pg_wal/.walship/*/r/{name(2)}")):
        if time.monotonic() > deadline:
            raise SystemExit("the background process recorded nothing in 60 s")
        time.sleep(0.05)
    cold_obj = repo / "wal" / name(4)[:16] / name(4)
    return {
        "cwd": str(data),
        "fast": [walship, "push", f"pg_wal/{name(2)}", name(2)],
        "fast_config": str(root / "fast.toml"),
        "cold": [
            "sh",
            "-c",
            f'rm -f "{cold_obj}"; exec "$0" "$@"',
            walship,
            "push",
            f"pg_wal/{name(4)}",
            name(4),
        ],
        "cold_config": str(root / "cold.toml"),
        "fetch": [walship, "fetch", name(1), "pg_wal/RECOVERYXLOG"],
        "fetch_config": str(root / "fetch.toml"),
    }


def timed(cmd: list[str], cwd: str, config: str, runs: int) -> tuple[float, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALSHIP_")}
    env["WALSHIP_CONFIG"] = config
    walls, cpus = [], []
    for i in range(runs + 1):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if i:  # the first run warms the caches
            walls.append(wall * 1000)
            cpus.append(cpu * 1000)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--walship", default=shutil.which("walship"))
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--keep", help="build the site in this (new) directory and keep it")
    args = ap.parse_args()
    if not args.walship:
        raise SystemExit("no walship executable: give --walship")
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="walship-startup-"))
    site = build(root, args.walship)
    try:
        for kind in ("fast", "cold", "fetch"):
            cmd = site[kind]
            assert isinstance(cmd, list)
            if args.keep:
                print(
                    f"{kind}: cd {site['cwd']} && WALSHIP_CONFIG={site[kind + '_config']} "
                    + " ".join(f"'{c}'" for c in cmd)
                )
                continue
            wall, cpu = timed(cmd, str(site["cwd"]), str(site[kind + "_config"]), args.runs)
            print(f"{kind:5}  wall {wall:6.1f} ms  cpu {cpu:6.1f} ms  (median of {args.runs})")
    finally:
        if not args.keep:
            subprocess.run([args.walship, "push", "--help"], capture_output=True)
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
