"""WAL reader and segment index costs (docs/benchmarks.md, "WAL reader and index").

    python benchmarks/bench_walindex.py scan  DIR        # reader CPU per segment
    python benchmarks/bench_walindex.py push  DIR        # walship push, index_on_push off/on
    python benchmarks/bench_walindex.py load  [N]        # load_summaries for N segments

DIR holds archived WAL segments (e.g. copied by ``archive_command = 'cp %p DIR/%f'``
while pgbench runs). CPU times come from the process clock, so they hold up on
a loaded machine better than wall times; both are printed.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from walship.config import Config
from walship.index import build as index_build
from walship.index import entries
from walship.index import load as index_load
from walship.pg import crc, records
from walship.storage.registry import open_backend

WALSHIP = os.path.join(os.path.dirname(sys.executable), "walship")


def _segments(directory: str) -> list[str]:
    return sorted(os.path.join(directory, f) for f in os.listdir(directory) if len(f) == 24)


def scan(directory: str) -> None:
    print(f"reader: CRC-32C implementation {crc.CRC_IMPLEMENTATION}")
    for path in _segments(directory):
        with open(path, "rb") as fh:
            data = fh.read()
        for mode in ("events", "all"):
            c0, w0 = time.process_time(), time.perf_counter()
            s = records.scan_segment(data, os.path.basename(path), crc=mode)
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            wal_mb = (s.summary.end_lsn - s.summary.start_lsn) / 1e6
            print(
                f"{os.path.basename(path)} crc={mode:6} records={s.records:6} "
                f"events={len(s.summary.events):6} wal={wal_mb:5.1f}MB cpu={cpu * 1000:6.1f}ms "
                f"wall={wall * 1000:6.1f}ms ({s.records / max(cpu, 1e-9) / 1e3:.0f}k rec/s)"
            )


def _push_run(paths: list[str], index: bool) -> tuple[list[float], list[float]]:
    repo = tempfile.mkdtemp(prefix="walship-bench-")
    env = dict(os.environ, WALSHIP_REPO=repo, WALSHIP_INDEX_ON_PUSH="1" if index else "0")
    walls, cpus = [], []
    try:
        for path in paths:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run(
                [WALSHIP, "-q", "push", path, os.path.basename(path)], env=env, check=True
            )
            walls.append(time.perf_counter() - t0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    finally:
        shutil.rmtree(repo, ignore_errors=True)
    return walls, cpus


def push(directory: str) -> None:
    paths = _segments(directory)
    for index in (False, True, False, True):
        walls, cpus = _push_run(paths, index)
        print(
            f"push index_on_push={index!s:5} segments={len(paths)} "
            f"median wall={statistics.median(walls) * 1000:.0f}ms "
            f"median cpu={statistics.median(cpus) * 1000:.0f}ms "
            f"max cpu={max(cpus) * 1000:.0f}ms"
        )


def load(n: int) -> None:
    """Index entries for n segments (copies of a synthetic busy-segment entry), then load."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    import walbuilder as wb

    w = wb.WalWriter(seg_size=1 << 20)
    for i in range(3000):
        w.add(wb.heap(150, xid=i))
        w.add(wb.commit(i, 1_795_000_000_000_000 + i))
        if i % 1000 == 0:
            w.add(wb.checkpoint(w.pos, 1, 1, 1_795_000_000))
    name, data = w.segments()[0]
    base = records.scan_segment(data, name)
    entry, xact = entries.entry_from_scan(base)
    repo = tempfile.mkdtemp(prefix="walship-bench-")
    try:
        cfg = Config(repo=repo)
        backend = open_backend(repo, cfg)
        state = index_load.State()
        t0 = time.perf_counter()
        for segno in range(1, n + 1):
            nm = f"00000001{segno // 4096:08X}{segno % 4096:08X}"
            s = entry.summary._replace(name=nm, segno=segno)  # LSNs kept: timing only
            e = entries.Entry(s, None, None, True, entry.sysid)
            state.entries[nm] = e
            full = base.summary._replace(name=nm, segno=segno)
            scan = base._replace(summary=full, spill=None, cont=None)
            index_build.write_scan(cfg, backend, scan)
        print(
            f"wrote {n} loose entries ({len(xact)} commits each) in {time.perf_counter() - t0:.1f}s"
        )
        t0 = time.perf_counter()
        loose = index_load.load_summaries(cfg, backend)
        print(
            f"load_summaries, {len(loose)} loose objects, no packs: {time.perf_counter() - t0:.2f}s"
        )
        report = index_build.IndexReport()
        state = index_load.load_state(cfg, backend, None, read_loose=True)
        index_build._write_packs(cfg, backend, state, report)
        print(f"packs written: {report.packs_written}")
        for _ in range(3):
            c0, t0 = time.process_time(), time.perf_counter()
            out = index_load.load_summaries(cfg, backend)
            print(
                f"load_summaries with packs: {len(out)} summaries in "
                f"{time.perf_counter() - t0:.2f}s wall, {time.process_time() - c0:.2f}s cpu"
            )
        import cProfile
        import pstats

        cProfile.runctx(
            "index_load.load_summaries(cfg, backend)", globals(), locals(), "/tmp/wi.prof"
        )
        pstats.Stats("/tmp/wi.prof").sort_stats("tottime").print_stats(8)
        t0 = time.perf_counter()
        events = index_load.load_events(cfg, backend, out[n // 2])
        print(
            f"load_events of one segment: {len(events)} events in "
            f"{(time.perf_counter() - t0) * 1000:.0f}ms"
        )
        size = sum(
            os.path.getsize(os.path.join(d, f))
            for d, _, fs in os.walk(os.path.join(repo, "index"))
            for f in fs
        )
        print(f"index size on disk: {size / 1e6:.1f} MB")
    finally:
        shutil.rmtree(repo, ignore_errors=True)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "load"
    if what == "scan":
        scan(sys.argv[2])
    elif what == "push":
        push(sys.argv[2])
    else:
        load(int(sys.argv[2]) if len(sys.argv) > 2 else 10_000)
