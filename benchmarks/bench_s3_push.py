"""Where a push to an S3 server spends its time: walship's CPU, the server's CPU, wall.

    .venv/bin/python benchmarks/bench_s3_push.py --wal DIR [--server seaweedfs|moto]
        [--mode profile|lookahead] [--concurrency N] [--segments N]

``--wal`` is a pg_wal directory holding finished segments (e.g. the ``pg_wal``
of a snapshot bench_drain.py kept with ``--keep``). No PostgreSQL runs here:

- ``profile``: every segment pushed once, one at a time in this process
  (``walship.archive.push.push`` on an ``s3://`` backend), under cProfile;
  prints the functions with the most own time and the CPU per segment of
  this process and of the server.
- ``lookahead``: the look-ahead machinery of the background process
  (``walship.background._Process``, ``push_concurrency`` pushes at once) run
  in this process on a copy of the directory whose segments are all
  ``.ready``, until every one has its record; prints seg/s and the CPU per
  segment of walship and of the server.

Both count the server's CPU from /proc (utime + stime of its process and its
waited-for children), so a slow test server shows as such.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """utime + stime (+ children's) of ``pid`` in seconds."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / TICK


def start_server(kind: str) -> tuple[object, str, int]:
    from servers import launch

    running = launch.start_seaweedfs() if kind == "seaweedfs" else launch.start_moto()
    return running, running.endpoint, running.servers[0].proc.pid


def make_config(endpoint: str, bucket: str, extra: dict[str, object]) -> object:
    from walship import config

    os.environ.update(
        AWS_ACCESS_KEY_ID="walship-test",
        AWS_SECRET_ACCESS_KEY="walship-test-secret",
        AWS_DEFAULT_REGION="us-east-1",
    )
    overrides: dict[str, object] = {
        "repo": f"s3://{bucket}/repo",
        "s3_endpoint_url": endpoint,
        "s3_force_path_style": True,
        "s3_region": "us-east-1",
        "log_level": "warning",
        **extra,
    }
    return config.load(config_path=None, overrides=overrides)


def new_bucket(endpoint: str, name: str) -> None:
    import boto3

    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="walship-test",
        aws_secret_access_key="walship-test-secret",
    ).create_bucket(Bucket=name)


def segments(wal: str, limit: int) -> list[str]:
    """The finished segments of ``wal``: those waiting as ``.ready`` when it has an
    archive_status (its other files are recycled ones PostgreSQL preallocated,
    which a push rightly refuses and the look-ahead would wait for forever)."""
    names = sorted(n for n in os.listdir(wal) if len(n) == 24 and n[:8] != "00000000")
    status = os.path.join(wal, "archive_status")
    if os.path.isdir(status):
        names = [n for n in names if os.path.exists(os.path.join(status, n + ".ready"))]
    return names[:limit] if limit else names


def run_profile(cfg: object, wal: str, names: list[str], server_pid: int, top: int) -> None:
    from walship.archive import push
    from walship.storage.registry import open_backend

    backend = open_backend(cfg.repo, cfg)  # type: ignore[attr-defined]
    push.push(cfg, backend, os.path.join(wal, names[0]), names[0])  # warm: identity, client
    prof = cProfile.Profile()
    s0, c0, w0 = proc_cpu(server_pid), time.process_time(), time.monotonic()
    prof.enable()
    for name in names[1:]:
        push.push(cfg, backend, os.path.join(wal, name), name)
    prof.disable()
    n = len(names) - 1
    wall, cpu, server = time.monotonic() - w0, time.process_time() - c0, proc_cpu(server_pid) - s0
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    print(out.getvalue())
    print(
        f"profile: {n} segments one at a time: {wall / n * 1000:.1f} ms wall, "
        f"walship CPU {cpu / n * 1000:.1f} ms, server CPU {server / n * 1000:.1f} ms per segment"
    )


def run_lookahead(cfg: object, wal: str, names: list[str], server_pid: int) -> dict[str, float]:
    from walship import background
    from walship.archive.lookahead import LOCK, Spool

    work = tempfile.mkdtemp(prefix="walship-s3push-")
    try:
        pg_wal = os.path.join(work, "pg_wal")
        os.makedirs(os.path.join(pg_wal, "archive_status"))
        for name in names:
            os.link(os.path.join(wal, name), os.path.join(pg_wal, name))
            open(os.path.join(pg_wal, "archive_status", name + ".ready"), "w").close()
        old = time.time() - 10  # settled: the records need a ctime before the read
        for name in names:
            os.utime(os.path.join(pg_wal, name), (old, old))
        time.sleep(0.1)
        spool = Spool(pg_wal, cfg)  # type: ignore[arg-type]
        os.makedirs(spool.records)
        spool.announce()  # as the calls do: push ahead with these settings
        open(os.path.join(spool.path, LOCK), "w").close()
        proc = background._Process(cfg, spool, lambda: cfg)  # type: ignore[arg-type]
        thread = threading.Thread(target=proc.run, daemon=True)
        import resource

        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        s0, c0, w0 = proc_cpu(server_pid), time.process_time(), time.monotonic()
        thread.start()
        while len([e for e in os.listdir(spool.records) if len(e) == 24]) < len(names):
            if not thread.is_alive():
                raise RuntimeError("the look-ahead stopped before every segment had a record")
            time.sleep(0.005)
        wall, cpu = time.monotonic() - w0, time.process_time() - c0
        server = proc_cpu(server_pid) - s0
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
        assert thread.ident is not None
        loop = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        os.unlink(os.path.join(spool.path, LOCK))  # it exits at its next check
        thread.join(5)
        n = len(names)
        row = {
            "seg_per_s": n / wall,
            "walship_cpu_ms": cpu / n * 1000,
            "server_cpu_ms": server / n * 1000,
            "workers": float(proc.push.workers),
            "loop_cpu_ms": loop / n * 1000,
            "page_faults": faults / n,
        }
        print(
            f"lookahead: {n} segments, {proc.push.workers} at once: {row['seg_per_s']:.1f} seg/s, "
            f"walship CPU {row['walship_cpu_ms']:.1f} ms, "
            f"server CPU {row['server_cpu_ms']:.1f} ms per segment "
            f"(walship's main loop: {row['loop_cpu_ms']:.1f} ms; "
            f"{row['page_faults']:.0f} page faults)"
        )
        return row
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wal", required=True, help="a directory of finished WAL segments")
    parser.add_argument("--server", choices=("seaweedfs", "moto"), default="seaweedfs")
    parser.add_argument("--mode", choices=("profile", "lookahead"), default="profile")
    parser.add_argument("--segments", type=int, default=0, help="at most this many (0: all)")
    parser.add_argument("--concurrency", type=int, default=0, help="push_concurrency")
    parser.add_argument("--repeat", type=int, default=1, help="lookahead runs (new bucket each)")
    parser.add_argument("--top", type=int, default=30, help="profile lines")
    parser.add_argument("--set", action="append", default=[], help="walship setting K=V")
    args = parser.parse_args()
    names = segments(args.wal, args.segments)
    extra: dict[str, object] = {"push_concurrency": args.concurrency}
    for item in args.set:
        k, _, v = item.partition("=")
        extra[k] = int(v) if v.isdigit() else v
    running, endpoint, pid = start_server(args.server)
    try:
        for i in range(args.repeat):
            bucket = f"bench-{os.getpid()}-{i}"
            new_bucket(endpoint, bucket)
            cfg = make_config(endpoint, bucket, extra)
            if args.mode == "profile":
                run_profile(cfg, args.wal, names, pid, args.top)
            else:
                run_lookahead(cfg, args.wal, names, pid)
    finally:
        running.stop()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
