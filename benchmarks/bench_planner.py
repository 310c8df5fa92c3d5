"""plan-restore, wal-show and verify over a synthetic 10,000-segment archive.

What it measures (results go to docs/benchmarks.md, "Planner and verify"):
the wall time and the storage requests (counted by a wrapper around the real
backend) of

* ``plan-restore --time`` (needs the segment index: summaries + one segment's
  commit details), ``plan-restore --lsn`` and ``--latest``,
* ``verify`` (no object bodies read besides histories, backups and the index),

on a local directory repository and on S3 (moto server on 127.0.0.1).

The archive: timeline 1 with segments 1..6000, timeline 2 forking from it in
segment 5001 with segments 5001..9000 (10,000 segments), a .backup file every
1,000 segments, 20 commits and a restore point per segment in the index. The
segment objects are real envelopes around a few bytes (the planner never reads
segment bodies); the index entries are written with walship.index's own
functions and packed by ``update_index``.

Run it::

    .venv/bin/python benchmarks/bench_planner.py [--segments 10000] [--no-s3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from walship import repository  # noqa: E402
from walship.codec import objects  # noqa: E402
from walship.config import Config  # noqa: E402
from walship.index import build as index_build  # noqa: E402
from walship.pg import format_lsn, records, segment_file_name  # noqa: E402
from walship.pg.types import COMMIT, RESTORE_POINT, SegmentSummary, WalEvent  # noqa: E402
from walship.restore import planner, verify  # noqa: E402
from walship.restore.inventory import load_inventory  # noqa: E402
from walship.storage.base import Backend, ObjectInfo, ObjectStream  # noqa: E402
from walship.storage.registry import open_backend  # noqa: E402

S = 16 << 20
T0 = 1_795_000_000_000_000
COMMITS = 20


class Counting:
    """A Backend wrapper counting calls per method (list: calls and keys)."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.url = inner.url
        self.counts: dict[str, int] = {}

    def _n(self, what: str, k: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + k

    def head(self, key: str) -> ObjectInfo | None:
        self._n("head")
        return self.inner.head(key)

    def put(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        mode: str = "create",
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        self._n("put")
        return self.inner.put(key, chunks, mode=mode, metadata=metadata)

    def open(self, key: str) -> ObjectStream:
        self._n("get")
        return self.inner.open(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._n("list")
        for info in self.inner.list(prefix):
            self._n("listed keys")
            yield info

    def delete(self, keys: Iterable[str]) -> None:
        self._n("delete")
        self.inner.delete(keys)

    def close(self) -> None:
        self.inner.close()

    def reset(self) -> None:
        self.counts = {}


def layout_of(n: int) -> list[tuple[int, int]]:
    tl1 = int(n * 0.6)
    fork = tl1 - n // 10 + 1
    return [(1, s) for s in range(1, tl1 + 1)] + [(2, s) for s in range(fork, fork + n - tl1)]


def commit_time(tli: int, segno: int, i: int) -> int:
    return T0 + tli * 10**12 + segno * 60_000_000 + i * 1_000_000


def scan_for(tli: int, segno: int) -> Any:
    base = segno * S
    events = [
        WalEvent(
            COMMIT,
            base + 0x1000 * (i + 1),
            base + 0x1000 * (i + 1) + 0x40,
            tli * 100_000 + segno * COMMITS + i,
            commit_time(tli, segno, i),
        )
        for i in range(COMMITS)
    ]
    events.append(
        WalEvent(RESTORE_POINT, base + 0x100000, base + 0x100068, None, T0, f"rp-{tli}-{segno}")
    )
    name = segment_file_name(tli, segno, S)
    summary = SegmentSummary(
        name, tli, segno, S, base, base + S, tuple(events), **records.xact_stats(events)
    )
    return records.SegmentScan(
        summary, None, None, None, base + 0x28, base - 0x40, base + 0x100000, len(events), 42, 15
    )


def put_raw(cfg: Config, backend: Backend, name: str, kind: str, data: bytes) -> None:
    header = objects.new_header(name, kind, len(data), hashlib.sha256(data).hexdigest(), cfg)
    objects.put_object(cfg, backend, repository.key_for(name), header, [data])


def build(cfg: Config, backend: Backend, n: int) -> None:
    backend.put(repository.IDENTITY_KEY, [repository.Identity(42, S, 15).to_json()])
    segs = layout_of(n)
    fork = next(s for t, s in segs if t == 2)
    put_raw(
        cfg,
        backend,
        "00000002.history",
        "history",
        f"1\t{format_lsn(fork * S + 0x100)}\tno recovery target specified\n".encode(),
    )

    def one(item: tuple[int, int]) -> None:
        tli, segno = item
        name = segment_file_name(tli, segno, S)
        put_raw(cfg, backend, name, "segment", f"fake {name}".encode())
        index_build.write_scan(cfg, backend, scan_for(tli, segno))
        if segno % 1000 == 10 and (tli == 1) == (segno < fork):
            start = segno * S + 0x28
            label = (
                f"START WAL LOCATION: {format_lsn(start)} (file {name})\n"
                f"STOP WAL LOCATION: {format_lsn(start + 0x200)} (file {name})\n"
                f"CHECKPOINT LOCATION: {format_lsn(start + 0x60)}\n"
                f"START TIME: 2026-11-23 10:00:00 UTC\nLABEL: bench-{tli}-{segno}\n"
                f"START TIMELINE: {tli}\nSTOP TIME: 2026-11-23 10:00:01 UTC\n"
                f"STOP TIMELINE: {tli}\n"
            )
            put_raw(cfg, backend, f"{name}.00000028.backup", "backup", label.encode())

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, segs))
    index_build.update_index(cfg, backend)


def measure(cfg: Config, counting: Counting, n: int) -> list[tuple[str, float, dict[str, int]]]:
    segs = layout_of(n)
    last2 = max(s for t, s in segs if t == 2)
    t_end = planner.Target("time", commit_time(2, last2 - 3, 5) + 1)
    cases: list[tuple[str, planner.Target, str | None]] = [
        ("plan-restore --time (near the end)", t_end, None),
        ("plan-restore --time --backup <oldest>", t_end, "bench-1-10"),
        ("plan-restore --name (near the end)", planner.Target("name", f"rp-2-{last2 - 3}"), None),
        ("plan-restore --lsn", planner.Target("lsn", (last2 - 3) * S), None),
        ("plan-restore --latest --backup <oldest>", planner.Target("latest"), "bench-1-10"),
    ]
    out: list[tuple[str, float, dict[str, int]]] = []
    for label, target, only in cases:
        counting.reset()
        t = time.perf_counter()
        inv, _ = load_inventory(cfg, counting)  # type: ignore[arg-type]
        p = planner.plan(inv, target, backup=only)
        elapsed = time.perf_counter() - t
        assert p.reachable, (label, p.reason)
        counts = dict(counting.counts)
        counts["segments in plan"] = p.segment_count()
        out.append((label, elapsed, counts))
    counting.reset()
    t = time.perf_counter()
    inv, _ = load_inventory(cfg, counting)  # type: ignore[arg-type]
    problems = verify.check(inv)
    elapsed = time.perf_counter() - t
    assert not verify.has_errors(problems), problems
    out.append(("verify", elapsed, dict(counting.counts)))
    counting.reset()
    t = time.perf_counter()
    inv, _ = load_inventory(cfg, counting)  # type: ignore[arg-type]
    planner.overview(inv)
    out.append(("wal-show", time.perf_counter() - t, dict(counting.counts)))
    return out


def run_one(label: str, env: dict[str, str], n: int) -> list[str]:
    from cloudutil import config_from_env

    cfg = config_from_env(env)
    backend = open_backend(env["WALSHIP_REPO"], cfg)
    t = time.perf_counter()
    build(cfg, backend, n)
    built = time.perf_counter() - t
    rows = measure(cfg, Counting(backend), n)
    backend.close()
    lines = [
        f"**{label}** ({n} segments; building the archive and index took {built:.0f} s)",
        "",
        "| operation | time | GET | LIST calls | keys listed | other |",
        "|---|---|---|---|---|---|",
    ]
    for what, secs, counts in rows:
        other = ", ".join(
            f"{k} {v}" for k, v in counts.items() if k not in ("get", "list", "listed keys")
        )
        lines.append(
            f"| {what} | {secs * 1000:.0f} ms | {counts.get('get', 0)} | "
            f"{counts.get('list', 0)} | {counts.get('listed keys', 0)} | {other or '-'} |"
        )
    return [*lines, ""]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", type=int, default=10_000)
    parser.add_argument("--no-s3", action="store_true")
    parser.add_argument("--out", help="write the Markdown report here (default: stdout)")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="walship-bench-planner-")
    repo = os.path.join(tmp, "repo")
    os.makedirs(repo)
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}.",
        "",
    ]
    lines += run_one("local directory", {"WALSHIP_REPO": repo}, args.segments)
    if not args.no_s3:
        from servers import launch
        from servers.plugin import create_s3_bucket, s3_env, unique

        running = launch.start_moto()
        try:
            bucket = unique("plan")
            create_s3_bucket(running.endpoint, bucket)
            lines += run_one("S3 (moto server)", s3_env(running.endpoint, bucket), args.segments)
        finally:
            running.stop()
    report = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
