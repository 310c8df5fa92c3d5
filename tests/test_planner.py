"""Restore planner and verify: pure logic over synthetic inventories, plus the CLI on mem://."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from walship import cli, repository
from walship.codec import objects
from walship.config import Config
from walship.pg import parse_lsn, segment_file_name
from walship.pg.history import HistoryEntry, parse_pg_time
from walship.pg.types import COMMIT, RESTORE_POINT, SegmentSummary, WalEvent
from walship.restore import planner, verify
from walship.restore.backups import Backup, PgBackupFileSource
from walship.restore.inventory import load_inventory
from walship.restore.planner import Inventory, Target
from walship.storage.memory import MemoryBackend

S = 16 << 20
T0 = 1_795_000_000_000_000  # µs since the epoch
SW1 = 4 * S + 0x500  # timeline 2 leaves timeline 1 in segment 4
SW2 = 7 * S + 0x100  # timeline 3 leaves timeline 2 in segment 7


def commit_time(tli: int, segno: int) -> int:
    return T0 + tli * 1_000_000_000 + segno * 60_000_000


def xid(tli: int, segno: int) -> int:
    return tli * 1000 + segno


def summary(tli: int, segno: int, extra: tuple[WalEvent, ...] = ()) -> SegmentSummary:
    lsn = segno * S + 0x1000
    ev = WalEvent(COMMIT, lsn, lsn + 0x40, xid(tli, segno), commit_time(tli, segno))
    events = tuple(sorted((ev, *extra), key=lambda e: e.lsn))
    return SegmentSummary(
        segment_file_name(tli, segno, S), tli, segno, S, segno * S, (segno + 1) * S, events
    )


def rp(name: str, lsn: int) -> WalEvent:
    return WalEvent(RESTORE_POINT, lsn, lsn + 0x68, None, T0, name)


def backup(name: str, segno: int, tli: int = 1, label: str = "") -> Backup:
    start = segno * S + 0x28
    return Backup(
        name=f"{segment_file_name(tli, segno, S)}.{0x28:08X}.backup",
        label=label or name,
        source="postgresql",
        key="",
        start_lsn=start,
        stop_lsn=start + 0x200,
        checkpoint_lsn=start + 0x60,
        start_tli=tli,
        stop_tli=tli,
        start_time=None,
        stop_time=None,
    )


def inventory(
    *, drop: tuple[tuple[int, int], ...] = (), index: bool = True, histories: bool = True
) -> Inventory:
    """TL1: 1..10, TL2 (from 1 at SW1): 4..8, TL3 (from 2 at SW2): 7..9; backups b1, b2."""
    segs = {1: list(range(1, 11)), 2: list(range(4, 9)), 3: list(range(7, 10))}
    for tli, segno in drop:
        segs[tli].remove(segno)
    extra = {
        (1, 3): (rp("rpA", 3 * S + 0x2000),),
        (2, 6): (rp("rpB", 6 * S + 0x2000),),
        (1, 8): (rp("rpX", 8 * S + 0x2000),),
    }
    sums = {
        (tli, s): summary(tli, s, extra.get((tli, s), ())) for tli, ss in segs.items() for s in ss
    }
    hist = {
        2: [HistoryEntry(1, SW1, "at restore point")],
        3: [HistoryEntry(1, SW1, "at restore point"), HistoryEntry(2, SW2, "no target")],
    }
    return Inventory(
        seg_size=S,
        segments=segs,
        histories=hist if histories else {},
        backups=[backup("b1", 2), backup("b2", 6)],
        summaries=sums if index else None,
    )


def plan(inv: Inventory, kind: str, value: int | str | None = None, **kw: object) -> planner.Plan:
    return planner.plan(inv, Target(kind, value), **kw)  # type: ignore[arg-type]


def ranges(p: planner.Plan) -> list[tuple[int, int, int]]:
    return [(r.tli, r.first, r.last) for r in p.segments]


# --- timelines and segment selection --------------------------------------------------


def test_latest_follows_newest_timeline_and_picks_segments_per_timeline() -> None:
    p = plan(inventory(), "latest")
    assert p.verdict == planner.REACHABLE and p.exit_code == 0
    assert p.path is not None and p.path.target_tli == 3
    assert p.path.describe() == "1 -> 2 at 0/4000500 -> 3 at 0/7000100"
    # b2 (timeline 1 after the fork) is not on timeline 3's path: b1 is chosen
    assert p.backup is not None and p.backup.label == "b1"
    assert ranges(p) == [(1, 2, 3), (2, 4, 6), (3, 7, 9)]
    assert p.settings["recovery_target_timeline"] == "'3'"
    assert "recovery_target_action" not in p.settings


def test_explicit_timeline_one_uses_newest_backup() -> None:
    p = plan(inventory(), "latest", timeline=1)
    assert p.reachable and p.backup is not None and p.backup.label == "b2"
    assert ranges(p) == [(1, 6, 10)]


def test_current_is_the_backups_timeline() -> None:
    p = plan(inventory(), "immediate", timeline="current")
    assert p.reachable and p.path is not None and p.path.target_tli == 1
    assert p.backup is not None and p.backup.label == "b2"
    assert p.settings["recovery_target"] == "'immediate'"


def test_immediate_with_latest_needs_a_backup_on_the_path() -> None:
    p = plan(inventory(), "immediate")
    assert p.reachable and p.backup is not None and p.backup.label == "b1"
    assert ranges(p) == [(1, 2, 2)]


def test_latest_probing_stops_at_a_missing_history() -> None:
    inv = inventory()
    del inv.histories[2]
    assert planner.newest_timeline(inv, 1) == 1
    p = plan(inv, "latest")
    assert p.path is not None and p.path.target_tli == 1


def test_switch_at_a_segment_boundary_reads_the_whole_parent_segment() -> None:
    inv = Inventory(
        seg_size=S,
        segments={1: [1, 2, 3], 2: [3, 4]},
        histories={2: [HistoryEntry(1, 3 * S, "x")]},
        backups=[backup("b", 1)],
    )
    p = plan(inv, "latest")
    assert ranges(p) == [(1, 1, 2), (2, 3, 4)]


def test_unknown_timeline_and_backup_not_a_child() -> None:
    p = plan(inventory(), "latest", timeline=7)
    assert p.verdict == planner.TIMELINE and p.exit_code == 13
    assert "00000007.history" in p.reason
    p = plan(inventory(), "latest", timeline=3, backup="b2")
    assert p.verdict == planner.TIMELINE
    assert "not on timeline 3's path" in p.reason


# --- targets ------------------------------------------------------------------------


def test_time_target_stops_before_first_later_commit() -> None:
    target = commit_time(1, 8) + 1
    p = plan(inventory(), "time", target, timeline=1)
    assert p.reachable and p.backup is not None and p.backup.label == "b2"
    assert p.stop is not None and p.stop.how == "before"
    assert p.stop.event is not None and p.stop.event.xid == xid(1, 9)
    assert ranges(p) == [(1, 6, 9)]
    assert p.settings["recovery_target_time"] == f"'{planner.format_time(target)}'"


def test_time_target_on_latest_path_stops_on_the_branch() -> None:
    # a time on timeline 1 after the fork: the latest path is on timeline 2 by then,
    # whose first commit is later than the target -> stop before it
    p = plan(inventory(), "time", commit_time(1, 8) + 1)
    assert p.reachable and p.path is not None and p.path.target_tli == 3
    assert p.stop is not None and p.stop.event is not None
    assert p.stop.event.xid == xid(2, 4) and p.stop.tli == 2


def test_time_after_archive_end_reports_latest_time() -> None:
    p = plan(inventory(), "time", commit_time(3, 9) + 1)
    assert p.verdict == planner.ARCHIVE_ENDS and p.exit_code == 12
    assert p.latest is not None and p.latest[1] == commit_time(3, 9)
    assert (planner.format_time(commit_time(3, 9)) or "") in p.reason


def test_time_before_every_backup_consistency() -> None:
    inv = inventory()
    # a commit inside b1's backup window, later than the target
    inv.summaries[(1, 2)] = summary(1, 2, (WalEvent(COMMIT, 2 * S + 0x100, 2 * S + 0x140, 77, T0),))  # type: ignore[index]
    p = plan(inv, "time", T0 - 1)
    assert p.verdict == planner.NO_BACKUP and p.exit_code == 10


def test_name_target_and_name_on_another_branch() -> None:
    p = plan(inventory(), "name", "rpB")
    assert p.reachable and p.stop is not None and p.stop.how == "after"
    assert p.stop.tli == 2 and ranges(p)[-1] == (2, 4, 6)
    p = plan(inventory(), "name", "rpX")  # on timeline 1 after timeline 2 left it
    assert p.verdict == planner.TIMELINE and p.hint == "use --timeline 1"
    p = plan(inventory(), "name", "rpX", timeline=1)
    assert p.reachable and p.backup is not None and p.backup.label == "b2"


def test_unknown_restore_point() -> None:
    p = plan(inventory(), "name", "nope")
    assert p.verdict == planner.UNKNOWN_NAME and p.exit_code == 14


def test_restore_point_before_the_only_usable_backup() -> None:
    p = plan(inventory(), "name", "rpA", backup="b2", timeline=1)
    assert p.verdict == planner.NO_BACKUP


def test_xid_target() -> None:
    p = plan(inventory(), "xid", xid(2, 8))  # after timeline 3 left timeline 2
    assert p.verdict == planner.TIMELINE and p.hint == "use --timeline 2"
    p = plan(inventory(), "xid", xid(2, 8), timeline=2)
    assert p.reachable and p.stop is not None and p.stop.event is not None
    assert p.stop.event.xid == xid(2, 8)
    assert ranges(p) == [(1, 2, 3), (2, 4, 8)]
    p = plan(inventory(), "xid", 999_999)
    assert p.verdict == planner.ARCHIVE_ENDS


def test_lsn_target() -> None:
    p = plan(inventory(), "lsn", 5 * S + 0x10, timeline=1)
    assert p.reachable and p.backup is not None and p.backup.label == "b1"
    assert ranges(p) == [(1, 2, 5)]
    assert p.settings["recovery_target_lsn"] == "'0/5000010'"
    p = plan(inventory(), "lsn", 2 * S + 0x30)  # inside b1's backup window
    assert p.verdict == planner.NO_BACKUP
    p = plan(inventory(), "lsn", 12 * S, timeline=1)
    assert p.verdict == planner.ARCHIVE_ENDS


def test_exclusive_time_target_stops_before_a_commit_at_the_target() -> None:
    target = commit_time(1, 8)  # a commit at exactly the target time
    inclusive = plan(inventory(), "time", target, timeline=1)
    assert inclusive.stop is not None and inclusive.stop.event is not None
    assert inclusive.stop.how == "before" and inclusive.stop.event.xid == xid(1, 9)
    assert ranges(inclusive) == [(1, 6, 9)]
    assert inclusive.settings["recovery_target_inclusive"] == "'on'"
    exclusive = planner.plan(inventory(), Target("time", target, False), timeline=1)
    assert exclusive.stop is not None and exclusive.stop.event is not None
    assert exclusive.stop.how == "before" and exclusive.stop.event.xid == xid(1, 8)
    assert ranges(exclusive) == [(1, 6, 8)]
    assert exclusive.settings["recovery_target_inclusive"] == "'off'"
    assert "(exclusive)" in exclusive.target.describe()
    # sparse summaries: the statistics must admit a commit at exactly the target
    sp = planner.plan(sparse(inventory()), Target("time", target, False), timeline=1)
    assert sp.stop is not None and sp.stop.event is not None
    assert sp.stop.event.xid == xid(1, 8)


def test_exclusive_xid_and_lsn_targets_stop_before() -> None:
    p = planner.plan(inventory(), Target("xid", xid(2, 8), False), timeline=2)
    assert p.reachable and p.stop is not None and p.stop.event is not None
    assert p.stop.how == "before" and p.stop.event.xid == xid(2, 8)
    assert p.stop.lsn == p.stop.event.lsn
    assert ranges(p) == [(1, 2, 3), (2, 4, 8)]  # the commit record is read to stop before it
    assert p.settings["recovery_target_inclusive"] == "'off'"
    p = planner.plan(inventory(), Target("lsn", 5 * S + 0x10, False), timeline=1)
    assert p.reachable and p.stop is not None and p.stop.how == "before"
    assert ranges(p) == [(1, 2, 5)]
    # name and immediate: PostgreSQL ignores the setting, so the plan does not set it
    p = plan(inventory(), "name", "rpB")
    assert "recovery_target_inclusive" not in p.settings


def test_targets_without_index() -> None:
    inv = inventory(index=False)
    p = plan(inv, "time", T0)
    assert p.verdict == planner.NEEDS_INDEX and p.exit_code == 15
    assert p.hint == "run walship index"
    assert plan(inv, "lsn", 5 * S, timeline=1).reachable
    assert plan(inv, "latest").reachable
    inv = inventory()
    assert inv.summaries is not None
    del inv.summaries[(2, 5)]
    p = plan(inv, "name", "rpB")
    assert p.verdict == planner.NEEDS_INDEX and "000000020000000000000005" in p.reason


# --- gaps ------------------------------------------------------------------------------


def test_gap_is_named_and_earlier_targets_stay_reachable() -> None:
    inv = inventory(drop=((2, 5),))
    p = plan(inv, "latest")
    assert p.verdict == planner.GAP and p.exit_code == 11
    assert p.missing == "000000020000000000000005"
    assert plan(inv, "name", "rpA").reachable
    assert plan(inv, "time", commit_time(2, 4) - 1).reachable
    p = plan(inv, "name", "rpB")
    assert p.verdict == planner.GAP and p.missing == "000000020000000000000005"
    # timeline 1's own path does not need timeline 2's segment
    assert plan(inv, "latest", timeline=1).reachable


def test_older_timeline_segment_does_not_fill_a_gap() -> None:
    # 000000010000000000000005 exists, but timeline 2 owns segment 5 on this path
    inv = inventory(drop=((2, 5),))
    assert inv.has(1, 5)
    p = plan(inv, "lsn", 5 * S + 0x2000)
    assert p.verdict == planner.GAP and p.missing == "000000020000000000000005"


def test_gap_inside_backup_makes_older_backup_needed() -> None:
    inv = inventory(drop=((1, 6),))
    p = plan(inv, "latest", timeline=1)
    assert p.verdict == planner.GAP and p.missing == "000000010000000000000006"
    p = plan(inv, "lsn", 5 * S, timeline=1)
    assert p.reachable and p.backup is not None and p.backup.label == "b1"


# --- verify ------------------------------------------------------------------------------


def kinds(problems: list[verify.Problem]) -> list[str]:
    return [p.kind for p in problems if p.severity == verify.ERROR]


def test_verify_clean_archive() -> None:
    assert kinds(verify.check(inventory())) == []


def test_verify_names_the_missing_segment() -> None:
    problems = verify.check(inventory(drop=((2, 5),)))
    gaps = [p for p in problems if p.kind == "gap"]
    assert len(gaps) == 1 and gaps[0].objects == ("000000020000000000000005",)
    assert "timeline(s) 2, 3" in gaps[0].message


def test_verify_backup_incomplete() -> None:
    problems = verify.check(inventory(drop=((1, 2),)))
    assert "backup" in kinds(problems)
    assert any("000000010000000000000002" in p.objects for p in problems if p.kind == "backup")


def test_verify_split_brain_and_missing_histories() -> None:
    inv = inventory()
    inv.histories[3] = [HistoryEntry(1, SW1 + 8, "x"), HistoryEntry(2, SW2, "y")]
    problems = verify.check(inv)
    assert "split-brain" in kinds(problems)
    inv = inventory()
    del inv.histories[2]
    messages = [p.message for p in verify.check(inv) if p.kind == "history"]
    assert any("latest" in m for m in messages)
    assert any("timeline 2 has archived WAL but no 00000002.history" in m for m in messages)


def test_verify_segment_before_timeline_start() -> None:
    inv = inventory()
    inv.segments[2].insert(0, 2)
    inv.__post_init__()
    assert "split-brain" in kinds(verify.check(inv))


def test_overview() -> None:
    infos = {t.tli: t for t in planner.overview(inventory(drop=((1, 6),)))}
    assert infos[1].ranges == [(1, 5), (7, 10)] and infos[1].gaps == [(6, 6)]
    assert infos[2].parent == 1 and infos[2].switchpoint == SW1
    assert infos[3].first_time == commit_time(3, 7)
    assert [r[0] for r in infos[2].restore_points] == ["rpB"]
    assert infos[1].children == [2]


# --- parsing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-23 14:30:00+00",
        "2026-11-23T14:30:00Z",
        "2026-11-23 16:30:00+02:00",
        "2026-11-23 14:30:00 UTC",
    ],
)
def test_parse_time(text: str) -> None:
    assert planner.format_time(planner.parse_time(text)) == "2026-11-23 14:30:00+00"


def test_parse_time_rejects_naive_and_junk() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        planner.parse_time("2026-11-23 14:30:00")
    with pytest.raises(ValueError, match="not a timestamp"):
        planner.parse_time("yesterday")
    assert planner.format_time(planner.parse_time("2026-11-23 14:30:00.25+00")) == (
        "2026-11-23 14:30:00.25+00"
    )


def test_backup_file_parsing() -> None:
    text = (
        "START WAL LOCATION: 0/3000028 (file 000000010000000000000003)\n"
        "STOP WAL LOCATION: 0/3000138 (file 000000010000000000000003)\n"
        "CHECKPOINT LOCATION: 0/3000098\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n"
        "START TIME: 2026-11-23 22:27:31 UTC\nLABEL: nightly\nSTART TIMELINE: 1\n"
        "STOP TIME: 2026-11-23 22:27:32 UTC\nSTOP TIMELINE: 1\n"
    )
    name = "000000010000000000000003.00000028.backup"
    b = PgBackupFileSource().parse(f"wal/0000000100000000/{name}", text.encode())
    assert (b.start_lsn, b.stop_lsn, b.checkpoint_lsn) == (
        parse_lsn("0/3000028"),
        parse_lsn("0/3000138"),
        parse_lsn("0/3000098"),
    )
    assert b.label == "nightly" and b.matches("nightly") and b.matches(name[:-7])
    assert planner.format_time(b.stop_time) == "2026-11-23 22:27:32+00"
    assert parse_pg_time("2026-11-23 22:27:32 CET") is None
    assert parse_pg_time("2026-11-23 22:27:32 +02") == parse_pg_time("2026-11-23 20:27:32 UTC")


# --- repository + CLI (mem://) ------------------------------------------------------------


def _put(cfg: Config, backend: MemoryBackend, name: str, data: bytes, kind: str) -> None:
    import hashlib

    header = objects.new_header(name, kind, len(data), hashlib.sha256(data).hexdigest(), cfg)
    objects.put_object(cfg, backend, repository.key_for(name), header, [data])


@pytest.fixture
def repo() -> Iterator[tuple[str, Config, MemoryBackend]]:
    import uuid

    url = f"mem://plan-{uuid.uuid4().hex}"
    cfg = Config(repo=url)
    backend = MemoryBackend(url[len("mem://") :])
    backend.put(repository.IDENTITY_KEY, [repository.Identity(42, S, 15).to_json()])
    for tli, segs in {1: range(1, 8), 2: range(4, 7)}.items():
        for s in segs:
            _put(cfg, backend, segment_file_name(tli, s, S), b"fake segment", "segment")
    _put(
        cfg, backend, "00000002.history", b"1\t0/4000500\tno recovery target specified\n", "history"
    )
    label = (
        "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n"
        "STOP WAL LOCATION: 0/2000138 (file 000000010000000000000002)\n"
        "CHECKPOINT LOCATION: 0/2000060\nSTART TIME: 2026-11-23 22:27:31 UTC\nLABEL: nightly\n"
        "START TIMELINE: 1\nSTOP TIME: 2026-11-23 22:27:32 UTC\nSTOP TIMELINE: 1\n"
    )
    _put(cfg, backend, "000000010000000000000002.00000028.backup", label.encode(), "backup")
    yield url, cfg, backend


def test_inventory_reads_repository(repo: tuple[str, Config, MemoryBackend]) -> None:
    _url, cfg, backend = repo
    inv, lst = load_inventory(cfg, backend, summaries=False)
    assert inv.seg_size == S and inv.system_identifier == 42
    assert inv.segments == {1: list(range(1, 8)), 2: [4, 5, 6]}
    assert inv.histories[2] == [HistoryEntry(1, SW1, "no recovery target specified")]
    assert [b.label for b in inv.backups] == ["nightly"]
    assert len(lst.segments) == 10


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_plan_restore(
    repo: tuple[str, Config, MemoryBackend], capsys: pytest.CaptureFixture[str]
) -> None:
    url = repo[0]
    code, out, _ = run_cli(capsys, "--repo", url, "plan-restore", "--latest")
    assert code == 0, out
    assert "REACHABLE" in out and "recovery_target_timeline = '2'" in out
    code, out, _ = run_cli(
        capsys,
        "--repo",
        url,
        "plan-restore",
        "--lsn",
        "0/6000010",
        "--timeline",
        "1",
        "--json",
        "--action",
        "promote",
    )
    doc = json.loads(out)
    assert code == 0 and doc["backup"]["label"] == "nightly"
    assert doc["settings"]["recovery_target_action"] == "'promote'"
    assert doc["segments"] == [
        {
            "timeline": 1,
            "first": "000000010000000000000002",
            "last": "000000010000000000000006",
            "count": 5,
        }
    ]
    code, out, err = run_cli(capsys, "--repo", url, "plan-restore", "--lsn", "0/1000000")
    assert code == 10 and "not reachable" in err


def test_cli_plan_needs_index_for_time(
    repo: tuple[str, Config, MemoryBackend], capsys: pytest.CaptureFixture[str]
) -> None:
    # no segment index in this repository
    code, out, _ = run_cli(
        capsys, "--repo", repo[0], "plan-restore", "--time", "2026-11-23 22:30:00+00"
    )
    assert code == 15 and "walship index" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--time", "2026-11-23 14:30:00"], "no time zone"),
        (["--time", "soon"], "not a timestamp"),
        (["--lsn", "0/1", "--xid", "5"], "not allowed with"),
        ([], "one of the arguments"),
        (["--latest", "--timeline", "sideways"], "--timeline 'sideways' is not valid"),
        (["--xid", "abc"], "not a number"),
        (["--lsn", "zz"], "invalid LSN"),
        (["--name", "x", "--inclusive", "off"], "applies only to --time, --lsn and --xid"),
        (["--latest", "--inclusive", "off"], "applies only to --time, --lsn and --xid"),
        (["--xid", "5", "--inclusive", "maybe"], "invalid choice"),
    ],
)
def test_cli_bad_input(
    repo: tuple[str, Config, MemoryBackend],
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    code, _out, err = run_cli(capsys, "--repo", repo[0], "plan-restore", *args)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_cli_wal_show_and_verify(
    repo: tuple[str, Config, MemoryBackend], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _cfg, backend = repo
    code, out, _ = run_cli(capsys, "--repo", url, "wal-show")
    assert code == 0 and "timeline 2, from timeline 1 at 0/4000500" in out
    code, out, _ = run_cli(capsys, "--repo", url, "wal-show", "--json")
    doc = json.loads(out)
    assert doc["timelines"][1]["ranges"][0]["first"] == "000000020000000000000004"
    code, out, _ = run_cli(capsys, "--repo", url, "verify", "--deep")
    assert code == 0, out
    assert "OK" in out
    backend.delete([repository.key_for("000000010000000000000003")])
    code, out, _err = run_cli(capsys, "--repo", url, "verify", "--json")
    doc = json.loads(out)
    assert code == 20 and not doc["ok"]
    gaps = [p for p in doc["problems"] if p["kind"] == "gap"]
    assert gaps[0]["objects"] == ["000000010000000000000003"]
    # corrupt one object: only --deep notices
    key = repository.key_for("000000010000000000000004")
    data = b"".join(backend.open(key))
    backend.put(key, [data[:-3] + b"xyz"], mode="overwrite")
    code, out, _ = run_cli(capsys, "--repo", url, "verify", "--deep", "--json")
    doc = json.loads(out)
    assert any(
        p["kind"] == "integrity" and p["objects"] == ["000000010000000000000004"]
        for p in doc["problems"]
    )


def sparse(inv: Inventory) -> Inventory:
    """The same inventory with index-style summaries: commits only counted, loaded on demand."""
    from walship.pg.records import xact_stats

    assert inv.summaries is not None
    full = dict(inv.summaries)
    inv.summaries = {
        k: s._replace(
            events=tuple(e for e in s.events if e.kind != COMMIT),
            sparse=True,
            **xact_stats(s.events),
        )
        for k, s in full.items()
    }
    inv.load_events = lambda s: full[(s.tli, s.segno)].events
    return inv


CASES = [
    ("time", commit_time(1, 8) + 1, {"timeline": 1}),
    ("time", commit_time(1, 8) + 1, {}),
    ("time", commit_time(3, 9) + 1, {}),
    ("time", commit_time(3, 8), {}),
    ("xid", xid(2, 8), {}),
    ("xid", xid(2, 8), {"timeline": 2}),
    ("xid", xid(1, 9), {"timeline": 1}),
    ("name", "rpB", {}),
    ("latest", None, {}),
]


@pytest.mark.parametrize("kind, value, kw", CASES)
def test_sparse_summaries_plan_like_full_ones(
    kind: str, value: object, kw: dict[str, object]
) -> None:
    full = plan(inventory(), kind, value, **kw)  # type: ignore[arg-type]
    inv = sparse(inventory())
    p = plan(inv, kind, value, **kw)  # type: ignore[arg-type]
    assert (p.verdict, p.reason, p.stop, p.segments, p.windows, p.latest) == (
        full.verdict,
        full.reason,
        full.stop,
        full.segments,
        full.windows,
        full.latest,
    )
    assert inv.events_loaded <= 6


def test_sparse_without_loader_needs_index() -> None:
    inv = sparse(inventory())
    inv.load_events = None
    p = plan(inv, "time", commit_time(1, 8) + 1, timeline=1)
    assert p.verdict == planner.NEEDS_INDEX


# --- an archive that ends inside a backup's WAL, or lost indexed segments -------------


def _tl1_only(segs: list[int], summaries: list[int]) -> Inventory:
    sums = {
        (1, s): summary(1, s, ((rp("late", s * S + 0x2000),) if s == 4 else ())) for s in summaries
    }
    return Inventory(seg_size=S, segments={1: segs}, backups=[backup("b", 3)], summaries=sums)


@pytest.mark.parametrize("kind", ["immediate", "latest"])
def test_archive_ending_before_the_backups_wal_is_a_gap(kind: str) -> None:
    # the backup starts in segment 3, but only 1 and 2 are archived
    p = plan(_tl1_only([1, 2], [1, 2, 3]), kind)
    assert not p.reachable
    assert p.verdict == planner.GAP and p.exit_code == 11
    assert p.missing == segment_file_name(1, 3, S)


def test_target_in_an_indexed_but_lost_segment_is_a_gap() -> None:
    p = plan(_tl1_only([1, 2, 3], [1, 2, 3, 4]), "name", "late")
    assert p.verdict == planner.GAP and p.exit_code == 11
    assert p.missing == segment_file_name(1, 4, S)
    assert "missing from the repository" in p.reason


def test_verify_reports_indexed_segments_that_vanished() -> None:
    problems = verify.check_index(_tl1_only([1, 2, 3], [1, 2, 3, 4]))
    errors = [pr for pr in problems if pr.severity == verify.ERROR]
    assert len(errors) == 1
    assert segment_file_name(1, 4, S) in errors[0].message


# --- backup choice: the first matching event of the whole history decides (issue 10) -----
#
# timeline 1, segments 1..12, one commit per segment at commit_time(1, s), xid xid(1, s);
# backups B1, B2, B3 start in segments 2, 5 and 8 (window: start .. start + 0x200, before
# that segment's commit) and started 30 s before their segment's commit.


def backup_at(name: str, segno: int, *, start_time: int | None = -1) -> Backup:
    b = backup(name, segno)
    t = commit_time(1, segno) - 30_000_000 if start_time == -1 else start_time
    return b._replace(start_time=t, stop_time=None if t is None else t + 2_000_000)


def three_backups(
    *,
    segs: tuple[int, ...] = tuple(range(1, 13)),
    extra: dict[int, tuple[WalEvent, ...]] | None = None,
    unindexed: tuple[int, ...] = (),
    b1_start_time: int | None = -1,
) -> Inventory:
    extra = extra or {}
    return Inventory(
        seg_size=S,
        segments={1: list(segs)},
        backups=[
            backup_at("B1", 2, start_time=b1_start_time),
            backup_at("B2", 5),
            backup_at("B3", 8),
        ],
        summaries={(1, s): summary(1, s, extra.get(s, ())) for s in segs if s not in unindexed},
    )


def window_commit(segno: int, x: int, t: int) -> WalEvent:
    """A commit inside the window of the backup starting in ``segno``."""
    lsn = segno * S + 0x100
    return WalEvent(COMMIT, lsn, lsn + 0x40, x, t)


def label(p: planner.Plan) -> str | None:
    return None if p.backup is None else p.backup.label


def stop_xid(p: planner.Plan) -> int | None:
    assert p.stop is not None and p.stop.event is not None
    return p.stop.event.xid


def test_time_before_newer_backups_is_served_by_the_older_one() -> None:
    # T between B1's end and B2's start: the commit of segment 4 decides; B3 (and B2)
    # already hold it, even though recovery from them would "stop" somewhere later
    p = plan(three_backups(), "time", commit_time(1, 3) + 1)
    assert p.verdict == planner.REACHABLE and label(p) == "B1"
    assert stop_xid(p) == xid(1, 4) and ranges(p) == [(1, 2, 4)]
    assert p.caution is None


def test_time_before_every_backup_is_no_backup_naming_the_oldest() -> None:
    p = plan(three_backups(), "time", commit_time(1, 1) - 1)  # segment 1's commit decides
    assert p.verdict == planner.NO_BACKUP and p.exit_code == 10 and p.backup is None
    assert "no backup is consistent before" in p.reason
    b1 = backup_at("B1", 2)
    assert f"the oldest backup, {b1.name}, became consistent at 0/2000228" in p.reason
    assert (planner.format_time(b1.stop_time) or "") in p.reason
    assert f"before {b1.name} starts" in p.reason
    # just after that commit: the next one (after B1's consistency) decides -> B1
    p = plan(three_backups(), "time", commit_time(1, 1) + 1)
    assert p.reachable and label(p) == "B1" and stop_xid(p) == xid(1, 2)


def test_event_inside_a_backup_window_needs_an_older_backup() -> None:
    tw = commit_time(1, 4) + 10_000_000  # a commit inside B2's window
    inv = three_backups(extra={5: (window_commit(5, 555, tw),)})
    p = plan(inv, "time", tw - 1)
    assert p.reachable and label(p) == "B1" and stop_xid(p) == 555
    p = plan(inv, "xid", 555)
    assert p.reachable and label(p) == "B1" and stop_xid(p) == 555
    p = plan(inv, "lsn", 5 * S + 0x100)
    assert p.reachable and label(p) == "B1"
    # only B2 and B3: nothing can serve; the reason says where recovery would stop
    p = plan(inv, "time", tw - 1, backup="B2")
    assert p.verdict == planner.NO_BACKUP and "inside the window of" in p.reason


def test_duplicate_restore_point_name_the_first_one_decides() -> None:
    extra = {3: (rp("dup", 3 * S + 0x2000),), 9: (rp("dup", 9 * S + 0x2000),)}
    p = plan(three_backups(extra=extra), "name", "dup")
    assert p.reachable and label(p) == "B1"
    assert p.stop is not None and p.stop.lsn == 3 * S + 0x2000 + 0x68
    # a restore point inside B2's window: B3 too new, B2 inconsistent, B1 serves
    extra = {5: (rp("in", 5 * S + 0x100),)}
    p = plan(three_backups(extra=extra), "name", "in")
    assert p.reachable and label(p) == "B1"
    # a name before B1 only: no backup
    extra = {1: (rp("early", 1 * S + 0x2000),)}
    p = plan(three_backups(extra=extra), "name", "early")
    assert p.verdict == planner.NO_BACKUP and "became consistent" in p.reason


def test_xid_and_lsn_targets_pick_the_backup_before_them() -> None:
    inv = three_backups()
    assert label(plan(inv, "xid", xid(1, 4))) == "B1"
    assert label(plan(inv, "xid", xid(1, 6))) == "B2"
    assert label(plan(inv, "xid", xid(1, 11))) == "B3"
    p = plan(inv, "xid", xid(1, 1))
    assert p.verdict == planner.NO_BACKUP and "became consistent" in p.reason
    assert label(plan(inv, "lsn", 4 * S)) == "B1"
    assert label(plan(inv, "lsn", 8 * S + 0x300)) == "B3"
    p = plan(inv, "lsn", 2 * S)  # before B1 starts
    assert p.verdict == planner.NO_BACKUP and "starts at 0/2000028, after the target" in p.reason
    p = plan(inv, "lsn", 2 * S + 0x100)  # inside B1's window
    assert p.verdict == planner.NO_BACKUP and "inside the window" in p.reason


def test_gap_before_the_middle_backup_makes_older_targets_unreachable() -> None:
    inv = three_backups(segs=(1, 2, 3, *range(5, 13)))  # segment 4 lost
    gone = segment_file_name(1, 4, S)
    # segment 4's commit decides: only B1 could serve, and its WAL has the gap
    for target in (commit_time(1, 3) + 1, backup_at("B2", 5).start_time or 0):
        p = plan(inv, "time", target)
        assert p.verdict == planner.GAP and p.exit_code == 11, p.reason
        assert p.missing == gone and label(p) == "B1"
    # just under a second after B2's START TIME: still cannot rule out segment 4's commits
    start2 = backup_at("B2", 5).start_time or 0
    assert plan(inv, "time", start2 + 999_999).verdict == planner.GAP
    assert plan(inv, "xid", xid(1, 4)).verdict == planner.GAP
    # a target before the gap stays reachable from B1
    p = plan(inv, "time", commit_time(1, 2) + 1)
    assert p.reachable and label(p) == "B1" and stop_xid(p) == xid(1, 3)


def test_gap_before_a_backup_decides_by_its_start_time_and_says_so() -> None:
    inv = three_backups(segs=(1, 2, 3, *range(5, 13)))
    gone = segment_file_name(1, 4, S)
    start2 = backup_at("B2", 5).start_time or 0
    p = plan(inv, "time", start2 + 1_000_000)
    assert p.reachable and label(p) == "B2" and stop_xid(p) == xid(1, 5)
    assert p.caution is not None and gone in p.caution
    assert (planner.format_time(start2) or "") in p.caution
    from walship.restore import report

    assert report.plan_json(p, inv)["caution"] == p.caution
    assert f"  caution    {p.caution}" in report.plan_text(p, inv)
    # restore point names cannot be decided by time: chosen, with the caution
    extra = {9: (rp("late", 9 * S + 0x2000),)}
    p = plan(three_backups(segs=(1, 2, 3, *range(5, 13)), extra=extra), "name", "late")
    assert p.reachable and label(p) == "B3"
    assert p.caution is not None and gone in p.caution and "'late'" in p.caution
    # no gap: no caution
    assert plan(three_backups(), "time", start2 + 1_000_000).caution is None


def test_wal_before_the_oldest_backup_not_archived() -> None:
    inv = three_backups(segs=tuple(range(2, 13)))  # archiving began with B1
    b1 = backup_at("B1", 2)
    assert b1.start_time is not None
    p = plan(inv, "time", b1.start_time - 1)
    assert p.verdict == planner.NO_BACKUP and p.exit_code == 10
    assert "the WAL before 000000010000000000000002 is not in the repository" in p.reason
    assert f"the oldest backup, {b1.name}, became consistent" in p.reason
    p = plan(inv, "time", b1.start_time + 1_000_000)
    assert p.reachable and label(p) == "B1" and stop_xid(p) == xid(1, 2)
    assert p.caution is not None and "not in the repository" in p.caution
    # a START TIME without a usable zone cannot vouch for anything
    inv = three_backups(segs=tuple(range(2, 13)), b1_start_time=None)
    p = plan(inv, "time", b1.start_time + 1_000_000)
    assert p.verdict == planner.NO_BACKUP and "no usable time zone" in p.reason
    # an LSN target does not depend on earlier WAL
    assert plan(inv, "lsn", 3 * S).caution is None


def test_unindexed_wal_before_a_backup() -> None:
    inv = three_backups(unindexed=(3,))
    start2 = backup_at("B2", 5).start_time or 0
    p = plan(inv, "time", start2 + 1_000_000)  # decided by B2's START TIME, and flagged
    assert p.reachable and label(p) == "B2" and p.caution is not None
    assert "000000010000000000000003 is not indexed" in p.caution
    assert p.unindexed == segment_file_name(1, 3, S)
    # the commit of segment 4 decides, visible: B2 and B3 are too new; B1 needs the index
    p = plan(inv, "time", commit_time(1, 3) + 1)
    assert p.verdict == planner.NEEDS_INDEX
    # an xid ending after B3's start ends nowhere else: no index needed before it
    p = plan(inv, "xid", xid(1, 11))
    assert p.reachable and label(p) == "B3" and p.unindexed is None
    p = plan(inv, "xid", 999_999)  # might have ended in segment 3
    assert p.verdict == planner.NEEDS_INDEX


@pytest.mark.parametrize(
    "kind, value, segs, verdict, chosen",
    [
        ("time", commit_time(1, 3) + 1, tuple(range(1, 13)), planner.REACHABLE, "B1"),
        ("time", commit_time(1, 1) - 1, tuple(range(1, 13)), planner.NO_BACKUP, None),
        ("time", commit_time(1, 3) + 1, (1, 2, 3, *range(5, 13)), planner.GAP, "B1"),
        ("time", commit_time(1, 5) - 29_000_000, (1, 2, 3, *range(5, 13)), planner.REACHABLE, "B2"),
        ("xid", xid(1, 4), tuple(range(1, 13)), planner.REACHABLE, "B1"),
    ],
)
def test_backup_choice_with_sparse_summaries(
    kind: str, value: int, segs: tuple[int, ...], verdict: str, chosen: str | None
) -> None:
    full = plan(three_backups(segs=segs), kind, value)
    assert (full.verdict, label(full)) == (verdict, chosen)
    p = plan(sparse(three_backups(segs=segs)), kind, value)
    assert (p.verdict, label(p), p.reason, p.stop, p.segments, p.caution, p.missing) == (
        full.verdict,
        label(full),
        full.reason,
        full.stop,
        full.segments,
        full.caution,
        full.missing,
    )


def test_no_backup_hints_name_backup_push_and_backup_list() -> None:
    """The hints name walship's own backup commands (they used to suggest only
    pg_basebackup, and wal-show to list backups)."""
    inv = inventory()
    inv.backups = []
    p = plan(inv, "latest")
    assert p.verdict == planner.NO_BACKUP
    assert "`walship backup-push`" in (p.hint or ""), p.hint
    assert "pg_basebackup" in (p.hint or "")  # still the alternative
    p = plan(inventory(), "latest", backup="nosuch")
    assert p.verdict == planner.NO_BACKUP and "`walship backup-list`" in (p.hint or ""), p.hint
    assert "wal-show" not in (p.hint or "")
