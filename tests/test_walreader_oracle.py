"""walship.pg.records and walship.index against pg_waldump, on WAL of real PostgreSQL.

Per major version (15, 16, 18): a primary archives through ``cp`` (for
pg_waldump) and ``walship push`` with ``index_on_push`` (for the index), runs
pgbench, savepoints, an explicit ROLLBACK, prepared transactions (COMMIT
PREPARED and ROLLBACK PREPARED), restore points, a CHECKPOINT, a base backup
(BACKUP_END) and pg_switch_wal; a point-in-time restore to a restore point is
paused, then promoted with ``pg_ctl promote`` (END_OF_RECOVERY, timeline 2)
and writes more WAL. Then, per timeline, every record pg_waldump prints must
match what the reader reports: the same commit/abort/prepare records with the
same xids and microsecond timestamps, the same restore points, checkpoints,
switches, end-of-recovery and backup-end records at the same LSNs, the same
number of records (all CRCs verified), and the index must give the same.
"""

from __future__ import annotations

import os
import time

import pytest
import waloracle as wo
from pgharness import Cluster, Workdir, restore_cluster, run, walship_config

from walship.config import Config
from walship.index import load
from walship.pg import records
from walship.pg.types import (
    BACKUP_END,
    CHECKPOINT_ONLINE,
    CHECKPOINT_SHUTDOWN,
    END_OF_RECOVERY,
    RESTORE_POINT,
    SWITCH,
)
from walship.storage.registry import open_backend

pytestmark = pytest.mark.pg

VERSIONS = [15, 16, 18]
WALSHIP = os.path.join(os.path.dirname(__import__("sys").executable), "walship")


def _archive_command(arch: str, cfg: str) -> str:
    return f"'cp %p {arch}/%f && {WALSHIP} --config {cfg} push %p %f'"


def _now_us(c: Cluster) -> int:
    return int(c.psql("SELECT (extract(epoch from clock_timestamp()) * 1000000)::bigint"))


def _workload(c: Cluster) -> dict[str, object]:
    c.pgbench("-t", "150", "-c", "2", "-n")
    c.psql("CREATE TABLE t(id int primary key, v text)")
    c.psql(
        "BEGIN; INSERT INTO t VALUES (1, 'a'); SAVEPOINT s1; INSERT INTO t VALUES (2, 'b'); "
        "ROLLBACK TO s1; SAVEPOINT s2; INSERT INTO t VALUES (3, 'c'); RELEASE s2; COMMIT"
    )
    c.psql("BEGIN; INSERT INTO t VALUES (10, 'x'); ROLLBACK")
    c.psql("BEGIN; INSERT INTO t VALUES (20, 'p'); PREPARE TRANSACTION 'walship gid 1'")
    c.psql("COMMIT PREPARED 'walship gid 1'")
    c.psql("BEGIN; INSERT INTO t VALUES (21, 'q'); PREPARE TRANSACTION 'gid2'")
    c.psql("ROLLBACK PREPARED 'gid2'")
    before = _now_us(c)
    c.psql("SELECT pg_create_restore_point('rp one')")
    after = _now_us(c)
    c.psql("CHECKPOINT")
    c.pgbench("-t", "100", "-c", "2", "-n")
    c.psql("SELECT pg_create_restore_point('rp2')")
    c.psql("DROP TABLE t")
    return {"rp_window": (before, after)}


def _segments(arch: str, tli: int) -> list[str]:
    return sorted(f for f in os.listdir(arch) if len(f) == 24 and int(f[:8], 16) == tli)


def _compare_timeline(
    c: Cluster, arch: str, tli: int, kinds_seen: set[str]
) -> list[records.SegmentScan]:
    names = _segments(arch, tli)
    assert names, f"no segments of timeline {tli}"
    recs = wo.waldump(c.bindir, arch, names[0], names[-1])
    files = []
    for n in names:
        with open(os.path.join(arch, n), "rb") as fh:
            files.append((n, fh.read()))
    scans = list(records.read_segments(files, crc="all"))
    events = [e for s in scans for e in s.summary.events]
    # same record count (every record CRC-checked), same end of WAL
    n_records = sum(s.records for s in scans) + sum(1 for s in scans[:-1] if s.spill is not None)
    first_scan = scans[0]
    if first_scan.cont is not None:
        assert recs[0].lsn == first_scan.summary.first_lsn
    assert n_records == len(recs) - (1 if scans[-1].spill is not None else 0)
    expected = [e for e in map(wo.expected_event, recs) if e is not None]
    got = [
        (
            e.kind,
            e.lsn,
            e.xid,
            e.time
            if e.kind not in (RESTORE_POINT, CHECKPOINT_ONLINE, CHECKPOINT_SHUTDOWN)
            else None,
            e.name if e.kind in (RESTORE_POINT, "prepare") else None,
        )
        for e in events
    ]
    assert got == expected
    by_lsn = {r.lsn: i for i, r in enumerate(recs)}
    for e in events:
        i = by_lsn[e.lsn]
        rec = recs[i]
        kinds_seen.add(e.kind)
        if i + 1 < len(recs) and e.kind != SWITCH:
            nxt = recs[i + 1].lsn  # the next record starts at end_lsn (after a page header)
            assert nxt == e.end_lsn or (
                e.end_lsn % 8192 == 0 and nxt in (e.end_lsn + 24, e.end_lsn + 40)
            )
        if e.kind in (CHECKPOINT_ONLINE, CHECKPOINT_SHUTDOWN):
            assert e.extra is not None
            want = wo.checkpoint_fields(rec.desc)
            assert {k: e.extra[k] for k in want} == want
            assert e.time is not None and abs(e.time / 1e6 - time.time()) < 3600
        if e.kind == END_OF_RECOVERY:
            assert e.extra == wo.eor_fields(rec.desc)
        if e.kind == BACKUP_END:
            assert e.extra is not None and wo.lsn(rec.desc.split()[0]) == e.extra["backup_start"]
    for s in scans[:-1]:
        if not s.summary.switch:
            assert s.summary.end_reason is None and not s.summary.pending
    return scans


def _compare_index(cfg: Config, scans: list[records.SegmentScan], tli: int) -> None:
    backend = open_backend(str(cfg.repo), cfg)
    indexed = {s.name: s for s in load.load_summaries(cfg, backend, tli=tli)}
    for scan in scans[:-1]:
        s = indexed[scan.summary.name]
        full = scan.summary
        assert (s.start_lsn, s.end_lsn, s.switch, s.pending, s.xact_count) == (
            full.start_lsn,
            full.end_lsn,
            full.switch,
            full.pending,
            full.xact_count,
        )
        assert (s.xid_min, s.xid_max, s.xact_time_min, s.xact_time_max) == (
            full.xid_min,
            full.xid_max,
            full.xact_time_min,
            full.xact_time_max,
        )
        assert load.load_events(cfg, backend, s) == full.events


@pytest.mark.parametrize("major", VERSIONS)
def test_reader_matches_pg_waldump(major: int, work: Workdir) -> None:
    arch = work.mkdir("arch")
    repo = work.mkdir("repo")
    cfg_path = walship_config(work, {"repo": repo, "index_on_push": True})
    primary = Cluster(major, work)
    primary.initdb(
        {
            "archive_mode": "on",
            "archive_command": _archive_command(arch, cfg_path),
            "archive_timeout": "0",
        }
    )
    restored: Cluster | None = None
    try:
        primary.start()
        primary.pgbench("-i", "-s", "1", "-q")
        backup = os.path.join(work.path, "backup")
        primary.basebackup(backup)
        info = _workload(primary)
        last = primary.switch_wal()
        primary.wait_archived(last)
        primary.stop()

        restored = restore_cluster(
            major,
            work,
            backup,
            "restored",
            {
                "restore_command": f"'cp {arch}/%f %p'",
                "recovery_target_name": "'rp one'",
                "recovery_target_action": "'pause'",
                "archive_mode": "on",
                "archive_command": _archive_command(arch, cfg_path),
            },
        )
        restored.start()
        deadline = time.monotonic() + 120
        while restored.psql("SELECT pg_get_wal_replay_pause_state()") != "paused":
            assert time.monotonic() < deadline, restored.log()[-3000:]
            time.sleep(0.2)
        run([restored.bin("pg_ctl"), "-D", restored.datadir, "-w", "promote"])
        restored.wait_promoted()
        restored.psql("CREATE TABLE after_promote(x int)")
        restored.psql("INSERT INTO after_promote VALUES (1)")
        last2 = restored.switch_wal()
        restored.wait_archived(last2)
        restored.stop()

        kinds: set[str] = set()
        scans1 = _compare_timeline(primary, arch, 1, kinds)
        scans2 = _compare_timeline(primary, arch, 2, kinds)
        assert {
            "commit",
            "abort",
            "prepare",
            "commit_prepared",
            "abort_prepared",
            RESTORE_POINT,
            CHECKPOINT_ONLINE,
            CHECKPOINT_SHUTDOWN,
            SWITCH,
            END_OF_RECOVERY,
            BACKUP_END,
        } <= kinds
        rps = [e for s in scans1 for e in s.summary.events if e.kind == RESTORE_POINT]
        assert [e.name for e in rps] == ["rp one", "rp2"]
        lo, hi = info["rp_window"]  # type: ignore[misc]
        assert rps[0].time is not None and lo <= rps[0].time <= hi
        eor = [e for s in scans2 for e in s.summary.events if e.kind == END_OF_RECOVERY]
        assert len(eor) == 1 and eor[0].extra == {"tli": 2, "prev_tli": 1}
        assert eor[0].lsn > rps[0].lsn

        cfg = Config(repo=repo)
        _compare_index(cfg, scans1, 1)
        _compare_index(cfg, scans2, 2)
    finally:
        if restored is not None:
            restored.stop("immediate")
        primary.stop("immediate")
