"""walship delete: retention policies over in-memory and local repositories (fast)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
from retention_repo import (
    DAY,
    HOUR,
    SEG,
    cfg,
    history,
    identity,
    keys,
    pg_backup_file,
    seg_key,
    segments,
    start_lsn,
    walship_backup,
)

from walship.backup import retention
from walship.errors import UsageError
from walship.index.entries import entry_key
from walship.manifest import manifest_key
from walship.restore import planner
from walship.storage.local import LocalBackend
from walship.storage.memory import MemoryBackend

NOW = time.time()
US = 1_000_000


def now_us() -> int:
    return int(NOW * US)


@pytest.fixture
def mem() -> tuple[Any, MemoryBackend]:
    name = f"ret-{uuid.uuid4().hex[:8]}"
    c = cfg(f"mem://{name}")
    backend = MemoryBackend(name)
    identity(backend)
    return c, backend


def plan(c: Any, backend: Any, **policy: Any) -> retention.Plan:
    return retention.make_plan(c, backend, retention.Policy(**policy), now=now_us())


def run(c: Any, backend: Any, **policy: Any) -> retention.Plan:
    p = plan(c, backend, **policy)
    retention.execute(c, backend, p)
    return p


def wal_present(backend: Any, tli: int = 1) -> list[int]:
    prefix = f"wal/{tli:08X}"
    out = []
    for k in keys(backend, prefix):
        name = k.rsplit("/", 1)[-1]
        if len(name) == 24:
            out.append(int(name[8:16], 16) * 256 + int(name[16:], 16))
    return sorted(out)


def reachable(c: Any, backend: Any, tli: int, target: str = "latest") -> dict[str, str]:
    """Planner verdicts per backup on timeline ``tli`` (through the normal inventory)."""
    from walship.restore.inventory import load_inventory

    inv, _ = load_inventory(c, backend, summaries=False)
    assert not inv.backup_errors
    out = {}
    for b in inv.backups:
        inv2 = planner.Inventory(
            seg_size=inv.seg_size,
            segments=inv.segments,
            partials=inv.partials,
            histories=inv.histories,
            history_errors=inv.history_errors,
            backups=[b],
        )
        out[b.name] = planner.plan(inv2, planner.Target(target), timeline=tli).verdict
    return out


# --- pure ------------------------------------------------------------------------------


def test_durations() -> None:
    assert retention.parse_duration("7d") == 7 * DAY * US
    assert retention.parse_duration("36h") == 36 * HOUR * US
    assert retention.parse_duration("1d12h") == 36 * HOUR * US
    assert retention.parse_duration("1w") == 7 * DAY * US
    assert retention.parse_duration("90m") == 90 * 60 * US
    for bad in ("", "7", "d", "7 days", "-1d", "1d x"):
        with pytest.raises(retention.PolicyError, match="not a duration"):
            retention.parse_duration(bad)


# --- --retain ------------------------------------------------------------------------------


def test_retain_deletes_oldest_backup_and_only_its_wal(mem: Any) -> None:
    c, backend = mem
    segments(c, backend, range(1, 31), index=True)
    b1 = walship_backup(c, backend, 2, NOW - 3 * DAY, backup_file=True)
    b2 = walship_backup(c, backend, 10, NOW - 2 * DAY, backup_file=True)
    b3 = walship_backup(c, backend, 20, NOW - DAY)
    before = keys(backend)

    dry = plan(c, backend, retain=2)
    assert [x.name for x in dry.selection.drop] == [b1]
    assert dry.delete_segments == 9  # 1..9; segment 10 holds b2's start
    assert dry.index_entries == 9
    assert not dry.broken and dry.checks and all(ch.verdict == "reachable" for ch in dry.checks)
    assert keys(backend) == before  # a plan deletes nothing

    retention.execute(c, backend, dry)
    assert wal_present(backend) == list(range(10, 31))
    assert not keys(backend, f"basebackups/{b1}/")
    assert keys(backend, f"basebackups/{b2}/") and keys(backend, f"basebackups/{b3}/")
    # b1's .backup twin went with it, b2's stayed
    assert [k for k in keys(backend, "wal/") if k.endswith(".backup")] == [
        seg_key(10) + f".{start_lsn(10) % SEG:08X}.backup"
    ]
    assert entry_key(os.path.basename(seg_key(9))) not in keys(backend)
    assert entry_key(os.path.basename(seg_key(10))) in keys(backend)
    assert reachable(c, backend, 1) == {b2: "reachable", b3: "reachable"}
    assert reachable(c, backend, 1, "immediate") == {b2: "reachable", b3: "reachable"}

    again = plan(c, backend, retain=2)  # idempotent
    assert again.object_count() == 0


def test_timeline_switch_is_not_name_order(mem: Any) -> None:
    """WAL-G #636: after a timeline switch the newer timeline's names sort first by
    timeline, not by age. Here timeline 2 forked from timeline 1 at segment 5 (a restore
    of b1 promoted), and the old primary went on on timeline 1 and took b2 and b3: a
    name-order policy would call timeline 2 the newest WAL and timeline 1's the oldest."""
    c, backend = mem
    segments(c, backend, range(1, 26))
    history(c, backend, 2, [(1, 5 * SEG + 0x1000)])
    segments(c, backend, range(5, 9), tli=2)
    b1 = walship_backup(c, backend, 2, NOW - 3 * DAY)
    b2 = walship_backup(c, backend, 10, NOW - 2 * DAY)
    b3 = walship_backup(c, backend, 20, NOW - DAY)

    p = run(c, backend, retain=2)
    assert [x.name for x in p.selection.drop] == [b1]
    assert wal_present(backend, 1) == list(range(10, 26))
    # no kept backup reaches timeline 2, but it is newer than the newest backup's
    # timeline: nothing of it is deleted, nor its history file
    assert wal_present(backend, 2) == [5, 6, 7, 8]
    assert "wal/history/00000002.history" in keys(backend)
    assert any("timeline 2" in n for n in p.notes)
    assert reachable(c, backend, 1) == {b2: "reachable", b3: "reachable"}


def test_timeline_switch_after_a_kept_backup(mem: Any) -> None:
    """b2 (timeline 1) reaches timeline 2, which left timeline 1 after it; b3 is on
    timeline 2. --retain 2 keeps both and the WAL of both timelines from b2's start;
    --retain 1 then keeps b3's timeline-2 WAL from b3's start and drops timeline 1's
    WAL below it (the old primary's newer timeline-1 WAL stays)."""
    c, backend = mem
    segments(c, backend, range(1, 30))  # the old primary went on to segment 29
    history(c, backend, 2, [(1, 14 * SEG + 0x2000)])
    segments(c, backend, range(14, 31), tli=2)
    b1 = walship_backup(c, backend, 2, NOW - 3 * DAY)
    b2 = walship_backup(c, backend, 10, NOW - 2 * DAY)
    b3 = walship_backup(c, backend, 20, NOW - DAY, tli=2)

    p = run(c, backend, retain=2)
    assert [x.name for x in p.selection.drop] == [b1]
    assert p.rule.reach[b2] == [1, 2] and p.rule.reach[b3] == [2]
    assert wal_present(backend, 1) == list(range(10, 30))
    assert wal_present(backend, 2) == list(range(14, 31))
    assert reachable(c, backend, 2) == {b2: "reachable", b3: "reachable"}
    assert reachable(c, backend, 1)[b2] == "reachable"
    after = {tli: pt.backup for tli, pt in p.after.items()}
    assert after == {1: b2, 2: b2}

    p = run(c, backend, retain=1)
    assert [x.name for x in p.selection.drop] == [b2]
    assert wal_present(backend, 2) == list(range(20, 31))
    assert wal_present(backend, 1) == list(range(20, 30))  # at/after b3's start: kept
    assert "wal/history/00000002.history" in keys(backend)
    assert reachable(c, backend, 2) == {b3: "reachable"}


# --- --window, --wal-window, --before ------------------------------------------------------


def test_window_keeps_the_newest_backup_before_it(mem: Any) -> None:
    c, backend = mem
    segments(c, backend, range(1, 41))
    names = [
        walship_backup(c, backend, s, NOW - age)
        for s, age in ((2, 10 * DAY), (10, 5 * DAY), (20, 2 * DAY), (30, HOUR))
    ]
    p = run(c, backend, window=3 * DAY * US)
    assert [x.name for x in p.selection.drop] == [names[0]]
    assert "newest backup before" in p.selection.why[names[1]]
    assert wal_present(backend) == list(range(10, 41))
    # a window longer than the repository's age deletes nothing
    assert plan(c, backend, window=30 * DAY * US).object_count() == 0


def test_wal_window_keeps_older_backups_consistent_only(mem: Any) -> None:
    c, backend = mem
    segments(c, backend, range(1, 41))
    names = [
        walship_backup(c, backend, s, NOW - age)
        for s, age in ((2, 10 * DAY), (10, 5 * DAY), (20, 2 * DAY), (30, HOUR))
    ]
    p = run(c, backend, window=30 * DAY * US, wal_window=DAY * US)
    assert not p.selection.drop
    assert p.selection.consistency_only == {names[0], names[1]}
    # each older backup keeps its own WAL (start and stop segments); the rest goes
    assert wal_present(backend) == [2, 3, 10, 11, *range(20, 41)]
    assert reachable(c, backend, 1, "immediate") == dict.fromkeys(names, "reachable")
    assert reachable(c, backend, 1)[names[2]] == "reachable"
    assert p.after[1].backup == names[2]


def test_before_time_and_name(mem: Any) -> None:
    c, backend = mem
    segments(c, backend, range(1, 31))
    b1 = walship_backup(c, backend, 2, NOW - 3 * DAY)
    b2 = walship_backup(c, backend, 10, NOW - 2 * DAY)
    b3 = walship_backup(c, backend, 20, NOW - DAY)
    assert [x.name for x in plan(c, backend, before=b3).selection.drop] == [b1, b2]
    limit = planner.format_time(int((NOW - 2.5 * DAY) * US))
    assert limit is not None
    assert [x.name for x in plan(c, backend, before=limit).selection.drop] == [b1]


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"before": "20200101T000000Z"}, "no backup of that name"),
        ({"before": "nonsense"}, "no backup of that name"),
        ({"before": "2999-01-01 00:00:00+00"}, "in the future"),
        ({"before": "2026-01-01 00:00:00"}, "no time zone"),
        ({"retain": 2, "before": "2026-01-01 00:00:00+00"}, "cannot be combined"),
        ({"retain": 0}, "would delete every backup"),
        ({"window": 0}, "longer than 0"),
        ({"window": DAY * US, "wal_window": 2 * DAY * US}, "longer than --window"),
        ({}, "no retention policy"),
    ],
)
def test_bad_policies_delete_nothing(mem: Any, policy: dict[str, Any], message: str) -> None:
    c, backend = mem
    segments(c, backend, range(1, 31))
    walship_backup(c, backend, 2, NOW - 3 * DAY)
    walship_backup(c, backend, 20, NOW - DAY)
    before = keys(backend)
    with pytest.raises(UsageError, match=message):
        plan(c, backend, **policy)
    assert keys(backend) == before


def test_before_deleting_every_backup_is_refused(mem: Any) -> None:
    c, backend = mem
    segments(c, backend, range(1, 31))
    walship_backup(c, backend, 2, NOW - 3 * DAY)
    walship_backup(c, backend, 20, NOW - DAY)
    limit = planner.format_time(int((NOW - HOUR) * US))
    assert limit is not None
    with pytest.raises(UsageError, match="would delete every backup"):
        plan(c, backend, before=limit)


# --- backups of other tools -----------------------------------------------------------------


def test_backup_files_of_other_tools_count_as_backups(mem: Any) -> None:
    c, backend = mem
    segments(c, backend, range(1, 31))
    old = pg_backup_file(c, backend, 2, NOW - 3 * DAY)
    pg_backup_file(c, backend, 10, NOW - 2 * DAY)
    mine = walship_backup(c, backend, 20, NOW - DAY)
    p = run(c, backend, retain=2)
    assert [(x.name, x.kind) for x in p.selection.drop] == [(old, "postgresql")]
    assert not any(k.endswith(old) for k in keys(backend))
    assert wal_present(backend) == list(range(10, 31))
    assert mine in {x.name for x in p.selection.keep}


# --- garbage, interrupted deletes ---------------------------------------------------------


def test_garbage_only_when_old_enough(mem: Any) -> None:
    c, backend = mem
    segments(c, backend, range(1, 31))
    walship_backup(c, backend, 2, NOW - 3 * DAY)
    walship_backup(c, backend, 20, NOW - DAY)
    # an interrupted backup: parts, no manifest (written "now")
    backend.delete([manifest_key(walship_backup(c, backend, 25, NOW, name="20990101T000000Z"))])
    young = plan(c, backend, garbage=True)
    assert [(g.name, g.action) for g in young.garbage] == [("20990101T000000Z", "keep")]
    assert young.object_count() == 0  # --garbage alone deletes no WAL either
    old = retention.make_plan(
        c, backend, retention.Policy(garbage=True), now=int((NOW + 2 * DAY) * US)
    )
    assert [(g.name, g.action) for g in old.garbage] == [("20990101T000000Z", "delete")]
    retention.execute(c, backend, old)
    assert not keys(backend, "basebackups/20990101T000000Z/")
    assert len(wal_present(backend)) == 30


def test_backup_file_of_an_interrupted_push_is_garbage_not_a_backup(mem: Any) -> None:
    """backup-push killed after pg_backup_stop: PostgreSQL archived the .backup file, the
    manifest never came. That file is part of the leftovers, not another tool's backup:
    it must not count in --retain (which would then drop a real backup)."""
    c, backend = mem
    segments(c, backend, range(1, 31))
    b1 = walship_backup(c, backend, 2, NOW - 3 * DAY)
    b2 = walship_backup(c, backend, 10, NOW - 2 * DAY)
    name = walship_backup(c, backend, 20, NOW - DAY, name="20261101T000000Z")
    backend.delete([manifest_key(name)])
    pg_backup_file(c, backend, 20, NOW - DAY, label=f"walship {name}")
    later = int((NOW + 2 * DAY) * US)  # the leftovers are old enough by then
    p = retention.make_plan(c, backend, retention.Policy(retain=2, garbage=True), now=later)
    assert not p.selection.drop and {x.name for x in p.selection.keep} == {b1, b2}
    [g] = p.garbage
    assert g.name == name and g.action == "delete" and g.keys == 3  # 2 parts + .backup
    retention.execute(c, backend, p)
    assert not [k for k in keys(backend, "wal/") if k.endswith(".backup")]
    assert not keys(backend, f"basebackups/{name}/")


class _Crash(Exception):
    pass


class _CrashingBackend:
    """A real backend whose process "dies" after ``calls`` delete calls."""

    def __init__(self, inner: Any, calls: int) -> None:
        self.inner = inner
        self.url = inner.url
        self.calls = calls

    def delete(self, keys: Any) -> None:
        if self.calls == 0:
            raise _Crash
        self.calls -= 1
        self.inner.delete(list(keys))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _build(c: Any, backend: Any) -> list[str]:
    segments(c, backend, range(1, 31), index=True)
    return [
        walship_backup(c, backend, 2, NOW - 4 * DAY, parts=3, backup_file=True),
        walship_backup(c, backend, 8, NOW - 3 * DAY, parts=3),
        walship_backup(c, backend, 14, NOW - 2 * DAY),
        walship_backup(c, backend, 20, NOW - DAY),
    ]


@pytest.mark.parametrize("crash_after", [0, 1, 2, 3, 4, 5])  # 6 delete calls in all
def test_delete_interrupted_then_rerun(crash_after: int) -> None:
    ref_name, name = f"ref-{uuid.uuid4().hex[:8]}", f"crash-{uuid.uuid4().hex[:8]}"
    ref, crashed = MemoryBackend(ref_name), MemoryBackend(name)
    for b in (ref, crashed):
        identity(b)
        _build(cfg(b.url), b)
    run(cfg(ref.url), ref, retain=2)

    c = cfg(crashed.url)
    p = plan(c, crashed, retain=2)
    with pytest.raises(_Crash):
        retention.execute(c, _CrashingBackend(crashed, crash_after), p)  # type: ignore[arg-type]
    # whatever was deleted, no half-deleted backup is listed as complete
    from walship.backup import catalog

    for bname in catalog.scan(crashed).complete:
        assert keys(crashed, f"basebackups/{bname}/part-"), bname
    assert not _verify_errors(c, crashed)
    # the second run (same policy, no --garbage) finishes the job
    run(c, crashed, retain=2)
    assert keys(crashed) == keys(ref)
    assert not _verify_errors(c, crashed)


def _verify_errors(c: Any, backend: Any) -> list[str]:
    from walship.manifest import BACKUPS_PREFIX
    from walship.restore import verify
    from walship.restore.inventory import load_inventory

    inv, _ = load_inventory(c, backend, summaries=False)
    problems = verify.check(inv) + verify.check_parts(inv, list(backend.list(BACKUPS_PREFIX)))
    return [p.message for p in problems if p.severity == verify.ERROR]


def test_kept_backup_with_a_stale_tombstone(mem: Any) -> None:
    """Killed after the tombstone, before the manifest went: the backup is still
    complete; a run whose policy keeps it removes the tombstone, nothing else."""
    c, backend = mem
    segments(c, backend, range(1, 31))
    b1 = walship_backup(c, backend, 2, NOW - 3 * DAY)
    walship_backup(c, backend, 20, NOW - DAY)
    retention._tombstone(c, backend, b1)
    p = run(c, backend, retain=5)
    assert not p.selection.drop
    assert manifest_key(b1) in keys(backend)
    assert not any(k.endswith("/deleting") for k in keys(backend))


# --- the planner's check --------------------------------------------------------------------


def test_a_deletion_breaking_a_promise_is_refused(mem: Any) -> None:
    """promise_checks on a keep rule that would delete a kept backup's WAL (as a wrong
    rule would): the plan is broken and execute refuses before deleting anything."""
    c, backend = mem
    segments(c, backend, range(1, 31))
    walship_backup(c, backend, 2, NOW - 3 * DAY)
    b2 = walship_backup(c, backend, 10, NOW - 2 * DAY)
    walship_backup(c, backend, 20, NOW - DAY)
    p = plan(c, backend, retain=2)
    wrong = retention.KeepRule(SEG, {1: [(10, 11), (13, 1 << 40)]}, protect_from=20)
    wrong.finish()
    p.rule = wrong
    p.checks = retention.promise_checks(p.repo, p.selection, wrong)
    assert [(ch.backup, ch.target, ch.verdict) for ch in p.broken] == [(b2, "latest", "gap")]
    before = keys(backend)
    with pytest.raises(retention.Refused, match=f"refused: .*{b2}.*nothing was deleted"):
        retention.execute(c, backend, p)
    assert keys(backend) == before


def test_no_backup_means_no_wal_deleted(mem: Any) -> None:
    c, backend = mem
    segments(c, backend, range(1, 11))
    p = run(c, backend, retain=1)
    assert p.object_count() == 0 and len(wal_present(backend)) == 10


# --- the command ------------------------------------------------------------------------------


def _walship(repo: str, *args: str, env: dict[str, str] | None = None) -> Any:
    e = {k: v for k, v in os.environ.items() if not k.startswith("WALSHIP_")}
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "walship", "--config", os.devnull, "--repo", repo, *args],
        capture_output=True,
        text=True,
        env=e,
        timeout=120,
    )


@pytest.fixture
def local(tmp_path: Any) -> tuple[Any, str, list[str]]:
    root = str(tmp_path / "repo")
    backend = LocalBackend(root)
    c = cfg(root)
    identity(backend)
    segments(c, backend, range(1, 31))
    names = [
        walship_backup(c, backend, 2, NOW - 3 * DAY),
        walship_backup(c, backend, 10, NOW - 2 * DAY),
        walship_backup(c, backend, 20, NOW - DAY),
    ]
    return backend, root, names


def test_cli_dry_run_then_confirm(local: Any) -> None:
    backend, root, names = local
    before = keys(backend)
    proc = _walship(root, "delete", "--retain", "2")
    assert proc.returncode == 0, proc.stderr
    assert "dry run" in proc.stdout and f"delete {names[0]}" in proc.stdout
    assert "WAL: 9 segments" in proc.stdout
    assert "timeline 1:" in proc.stdout
    assert keys(backend) == before

    proc = _walship(root, "delete", "--retain", "2", "--json")
    doc = json.loads(proc.stdout)
    assert doc["dry_run"] is True and doc["wal"]["delete_segments"] == 9
    assert [b["action"] for b in doc["backups"]] == ["delete", "keep", "keep"]
    assert doc["timelines"][0]["before"]["backup"] == names[0]
    assert doc["timelines"][0]["after"]["backup"] == names[1]
    assert all(ch["verdict"] == "reachable" for ch in doc["checks"])

    proc = _walship(root, "delete", "--retain", "2", "--confirm", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["dry_run"] is False and doc["deleted"]["objects"] == doc["delete_objects"]
    assert wal_present(backend) == list(range(10, 31))


def test_cli_policy_from_settings(local: Any) -> None:
    backend, root, _names = local
    env = {"WALSHIP_RETENTION_RETAIN": "1"}
    proc = _walship(root, "delete", "--confirm", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "from settings" in proc.stdout
    assert wal_present(backend) == list(range(20, 31))
    proc = _walship(root, "delete", env={"WALSHIP_RETENTION_WINDOW": "soon"})
    assert proc.returncode == 2
    assert "retention_window 'soon' is not a duration" in proc.stderr
    proc = _walship(root, "delete", "--garbage", env={"WALSHIP_RETENTION_GARBAGE_AGE": "5m"})
    assert proc.returncode == 2 and "retention_garbage_age '5m' is too short" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--before", "20200101T000000Z"], "no backup of that name"),
        (["--before", "2999-01-01T00:00:00Z"], "is in the future"),
        (["--retain", "2", "--before", "2026-01-01T00:00:00Z"], "cannot be combined"),
        (["--retain", "0"], "would delete every backup"),
        (["--window", "3 days"], "is not a duration"),
        ([], "no retention policy given"),
    ],
)
def test_cli_bad_input_one_line(local: Any, args: list[str], message: str) -> None:
    backend, root, _names = local
    before = keys(backend)
    proc = _walship(root, "delete", "--confirm", *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert keys(backend) == before


def test_cli_before_every_backup(local: Any) -> None:
    backend, root, _names = local
    before = keys(backend)
    limit = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - HOUR))
    proc = _walship(root, "delete", "--confirm", "--before", limit)
    assert proc.returncode == 2, proc.stderr
    assert "would delete every backup (3)" in proc.stderr
    assert keys(backend) == before


def test_plan_memory_stays_compact() -> None:
    """A WalScan of 200,000 segments holds two 8-byte numbers per segment."""
    import tracemalloc

    scan = retention.WalScan(16 << 20)
    tracemalloc.start()
    for tli in (1, 2):
        for segno in range(100_000):
            name = f"{tli:08X}{segno // 256:08X}{segno % 256:08X}"
            scan.add(f"wal/{name[:16]}/{name}", 16 << 20, 0.0)
    current, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert scan.segment_count() == 200_000
    assert current < 200_000 * 24, current  # 16 bytes a segment, plus array slack
