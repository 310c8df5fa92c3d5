"""Storage backend latency, throughput and import cost against the local servers.

What it measures (results go to docs/benchmarks.md, "Storage backends"):

* per backend (local directory, S3 on moto and on SeaweedFS, GCS on
  fake-gcs-server behind the test precondition proxy, Azure on Azurite):
  in-process ``put`` (create) and ``open`` + read of a 16 MiB random object,
  median wall time and MiB/s over ``--reps`` repetitions; a 64 MiB object
  uploaded in parts (S3 multipart / GCS resumable / Azure blocks, 16 MiB);
* whole-process ``walship push`` and ``walship fetch`` of a 16 MiB WAL
  segment (mostly zeros, like a switched segment), median over ``--reps``,
  exactly as PostgreSQL runs them (one cold process each, which loads the
  SDK; a push whose segment was not pushed ahead), and the fetch of a
  segment the background process has already spooled (``fetch_prefetch``, on
  by default), as in a recovery;
* the import cost each backend adds to a push: wall time of
  ``python -c "import walship.storage.<mod>"`` minus that of the local
  backend, median of 7 runs.

The servers are emulators on 127.0.0.1: the numbers compare walship's
per-request overhead across backends, not real cloud latency.

Run it (2-4 minutes)::

    .venv/bin/python benchmarks/bench_backends.py --out /tmp/bench-backends.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from cloudutil import backend_for, run_walship  # noqa: E402
from helpers import make_segment, segment_name  # noqa: E402
from servers import launch  # noqa: E402
from servers.plugin import (  # noqa: E402
    azure_env,
    create_azure_container,
    create_gcs_bucket,
    create_s3_bucket,
    gcs_env,
    s3_env,
    unique,
)

MIB = 1 << 20


def median_time(fn: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def import_cost(module: str, runs: int = 7) -> float:
    def once(mod: str) -> float:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {mod}"], check=True)
        return time.perf_counter() - t

    base = statistics.median(once("walship.storage.local") for _ in range(runs))
    return statistics.median(once(module) for _ in range(runs)) - base


def bench_backend(name: str, env: dict[str, str], reps: int, tmp: str) -> dict[str, Any]:
    env = {**env, "WALSHIP_RETRY_DEADLINE": "30", "WALSHIP_RETRY_ATTEMPT_TIMEOUT": "10"}
    backend = backend_for(env)
    data = os.urandom(16 * MIB)
    big = os.urandom(64 * MIB)
    counter = iter(range(10**6))

    def put() -> None:
        backend.put(
            f"bench/obj-{next(counter)}", [data[i : i + MIB] for i in range(0, len(data), MIB)]
        )

    put_s = median_time(put, reps)
    backend.put("bench/read", [data])

    def get() -> None:
        stream = backend.open("bench/read")
        n = sum(len(c) for c in stream)
        stream.close()
        assert n == len(data)

    get_s = median_time(get, reps)

    def put_big() -> None:
        backend.put(
            f"bench/big-{next(counter)}", [big[i : i + MIB] for i in range(0, len(big), MIB)]
        )

    big_s = median_time(put_big, max(1, reps // 2))
    backend.close()

    seg = make_segment(3)
    name_ = segment_name(3)
    src = os.path.join(tmp, f"{name}-{name_}")
    with open(src, "wb") as fh:
        fh.write(seg)
    pushes: list[float] = []
    fetches: list[float] = []
    for i in range(reps):
        repo_env = {**env, "WALSHIP_REPO": env["WALSHIP_REPO"] + f"/push-{i}"}
        t = time.perf_counter()
        proc = run_walship(repo_env, "push", src, name_)
        pushes.append(time.perf_counter() - t)
        assert proc.returncode == 0, proc.stderr
        dest = os.path.join(tmp, "RECOVERYXLOG")
        t = time.perf_counter()
        proc = run_walship(repo_env, "fetch", name_, dest, cwd=tmp)
        fetches.append(time.perf_counter() - t)
        assert proc.returncode == 0, proc.stderr
    claims = _read_ahead(name, env, reps, tmp, src)
    return {
        "name": name,
        "put_ms": put_s * 1000,
        "put_mibs": 16 / put_s,
        "get_ms": get_s * 1000,
        "get_mibs": 16 / get_s,
        "big_mibs": 64 / big_s,
        "push_ms": statistics.median(pushes) * 1000,
        "fetch_ms": statistics.median(fetches) * 1000,
        "claim_ms": statistics.median(claims) * 1000,
    }


def _read_ahead(name: str, env: dict[str, str], reps: int, tmp: str, src3: str) -> list[float]:
    """Whole-process fetch of a segment the background process already spooled.

    As in a recovery: the fetch of segment 3 into ``pg_wal`` starts the
    helper, which fetches segment 4 (and looks for 5..10); once segment 4 is
    spooled, the fetch PostgreSQL would run next is timed.
    """
    import glob
    import shutil

    src4 = os.path.join(tmp, f"{name}-{segment_name(4)}")
    with open(src4, "wb") as fh:
        fh.write(make_segment(4))
    data = tempfile.mkdtemp(prefix="data-", dir=tmp)
    wal = os.path.join(data, "pg_wal")
    os.makedirs(wal)
    out: list[float] = []
    for i in range(reps):
        repo_env = dict(env)
        repo_env["WALSHIP_REPO"] = env["WALSHIP_REPO"] + f"/ahead{i}"
        for path, seg in ((src3, segment_name(3)), (src4, segment_name(4))):
            proc = run_walship(repo_env, "push", path, seg)
            assert proc.returncode == 0, proc.stderr
        proc = run_walship(repo_env, "fetch", segment_name(3), "pg_wal/RECOVERYXLOG", cwd=data)
        assert proc.returncode == 0, proc.stderr
        os.unlink(os.path.join(wal, "RECOVERYXLOG"))
        deadline = time.monotonic() + 60
        while not glob.glob(os.path.join(wal, ".walship", "*", "f", segment_name(4))):
            assert time.monotonic() < deadline, "the background process did not spool segment 4"
            time.sleep(0.01)
        t = time.perf_counter()
        proc = run_walship(repo_env, "fetch", segment_name(4), "pg_wal/RECOVERYXLOG", cwd=data)
        out.append(time.perf_counter() - t)
        assert proc.returncode == 0 and "(prefetched)" in proc.stderr, proc.stderr
        os.unlink(os.path.join(wal, "RECOVERYXLOG"))
        time.sleep(0.5)  # it looks for 5..10 (absent); then its spool goes, and it exits
        shutil.rmtree(os.path.join(wal, ".walship"), ignore_errors=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="write the Markdown report here (default: stdout)")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    results: list[dict[str, Any]] = []
    tmp = tempfile.mkdtemp(prefix="walship-bench-backends-")
    local_root = os.path.join(tmp, "local-repo")
    os.makedirs(local_root)
    results.append(bench_backend("local directory", {"WALSHIP_REPO": local_root}, args.reps, tmp))

    servers: list[
        tuple[str, Callable[[], launch.Running], Callable[[launch.Running], dict[str, str]]]
    ] = [
        ("S3 (moto server)", launch.start_moto, _s3),
        ("S3 (SeaweedFS)", launch.start_seaweedfs, _s3),
        ("GCS (fake-gcs-server + proxy)", launch.start_fake_gcs, _gcs),
        ("Azure (Azurite)", launch.start_azurite, _azure),
    ]
    for label, start, make_env in servers:
        running = start()
        try:
            results.append(bench_backend(label, make_env(running), args.reps, tmp))
        finally:
            running.stop()

    imports = {
        mod: import_cost(f"walship.storage.{mod}") * 1000 for mod in ("s3", "gcs", "azure", "retry")
    }

    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; servers on 127.0.0.1; median of {args.reps}.",
        "",
        "| backend | put 16 MiB | put MiB/s | get 16 MiB | get MiB/s | put 64 MiB in parts, MiB/s "
        "| `walship push` | `walship fetch` | `walship fetch`, read ahead |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['name']} | {r['put_ms']:.0f} ms | {r['put_mibs']:.0f} | {r['get_ms']:.0f} ms | "
            f"{r['get_mibs']:.0f} | {r['big_mibs']:.0f} | {r['push_ms']:.0f} ms "
            f"| {r['fetch_ms']:.0f} ms | {r['claim_ms']:.0f} ms |"
        )
    lines += [
        "",
        "Import cost added to a push (over the local backend), median of 7 processes:",
        "",
        "| module | extra import time |",
        "|---|---|",
    ]
    for mod, ms in imports.items():
        lines.append(f"| `walship.storage.{mod}` | {ms:.0f} ms |")
    report = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(report)
    print(report)
    return 0


def _s3(r: launch.Running) -> dict[str, str]:
    bucket = unique("bench")
    create_s3_bucket(r.endpoint, bucket)
    return s3_env(r.endpoint, bucket)


def _gcs(r: launch.Running) -> dict[str, str]:
    bucket = unique("bench")
    create_gcs_bucket(r.endpoint, bucket)
    return gcs_env(r.endpoint, bucket)


def _azure(r: launch.Running) -> dict[str, str]:
    container = unique("bench")
    create_azure_container(r.endpoint, container)
    return azure_env(r.endpoint, container)


if __name__ == "__main__":
    sys.exit(main())
