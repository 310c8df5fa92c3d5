"""Unit tests of walship.pg.records on CRC vectors and synthetic WAL (tests/walbuilder.py)."""

from __future__ import annotations

import itertools
import os
import struct
import subprocess
import sys

import pytest
import walbuilder as wb

from walship.errors import InvalidWalError
from walship.pg import crc
from walship.pg import records as wr
from walship.pg.types import (
    ABORT,
    ABORT_PREPARED,
    CHECKPOINT_ONLINE,
    COMMIT,
    COMMIT_PREPARED,
    END_OF_RECOVERY,
    PREPARE,
    RESTORE_POINT,
    SWITCH,
)

T0 = 1_795_000_000_000_000  # some time in 2026, Unix µs
MiB = 1 << 20

# --- CRC-32C -------------------------------------------------------------------------


@pytest.mark.parametrize("impl", [crc.crc32c_py, crc.crc32c])
def test_crc32c_known_answers(impl: object) -> None:
    f = impl  # type: ignore[assignment]
    assert f(b"", 0) == 0  # type: ignore[operator]
    assert f(b"123456789", 0) == 0xE3069283  # type: ignore[operator]
    assert f(b"\0" * 32, 0) == 0x8A9136AA  # RFC 3720 B.4  # type: ignore[operator]
    assert f(b"\xff" * 32, 0) == 0x62A8AB43  # type: ignore[operator]
    assert f(bytes(range(32)), 0) == 0x46DD794E  # type: ignore[operator]
    assert f(b"15\n", 0) == 0x2247748A  # PG_VERSION in a backup manifest  # type: ignore[operator]


def test_crc32c_incremental_and_implementations_agree() -> None:
    data = os.urandom(10_007)
    whole = crc.crc32c_py(data)
    assert crc.crc32c_py(data[5000:], crc.crc32c_py(data[:5000])) == whole
    for cut in (0, 1, 7, 8, 9, 4095):
        assert crc.crc32c_py(data[cut:], crc.crc32c_py(data[:cut])) == whole
    assert crc.crc32c(data, 0) == whole
    assert crc.crc32c_py(memoryview(data)[3:99]) == crc.crc32c_py(data[3:99])


# --- decoding single segments ----------------------------------------------------------


def _events(scan: wr.SegmentScan) -> list[tuple[object, ...]]:
    return [(e.kind, e.lsn, e.xid, e.time, e.name) for e in scan.summary.events]


def test_decodes_every_kind_of_interest() -> None:
    w = wb.WalWriter()
    lsns = [
        w.add(wb.heap(100, xid=700)),
        w.add(wb.commit(700, T0 + 1)),
        w.add(wb.abort(701, T0 + 2)),
        w.add(wb.prepare(702, T0 + 3, "gx")),
        w.add(wb.commit_prepared(702, T0 + 4, gid="gx")),
        w.add(wb.commit_prepared(703, T0 + 5)),
        w.add(
            wb.main_data_record(
                1, 0x40 | 0x80, struct.pack("<qIII", wb.pg_time(T0 + 6), 0x10, 704, 0)
            )
        ),
        w.add(wb.restore_point("before-upgrade", T0 + 7)),
        w.add(wb.checkpoint(0x1000028, 1, 1, 1_795_000_000)),
        w.add(wb.end_of_recovery(T0 + 8, 2, 1)),
        w.add(
            wb.commit(
                705,
                T0 + 9,
                xinfo=(1 << 1) | (1 << 3),
                parts=struct.pack("<iII", 2, 706, 707) + struct.pack("<i", 1) + b"i" * 16,
            )
        ),
        w.add(wb.switch()),
    ]
    ((name, seg),) = w.segments()
    scan = wr.scan_segment(seg, name, crc="all")
    got = _events(scan)
    assert got == [
        (COMMIT, lsns[1], 700, T0 + 1, None),
        (ABORT, lsns[2], 701, T0 + 2, None),
        (PREPARE, lsns[3], 702, T0 + 3, "gx"),
        (COMMIT_PREPARED, lsns[4], 702, T0 + 4, "gx"),
        (COMMIT_PREPARED, lsns[5], 703, T0 + 5, None),
        (ABORT_PREPARED, lsns[6], 704, T0 + 6, None),
        (RESTORE_POINT, lsns[7], None, T0 + 7, "before-upgrade"),
        (CHECKPOINT_ONLINE, lsns[8], None, 1_795_000_000_000_000, None),
        (END_OF_RECOVERY, lsns[9], None, T0 + 8, None),
        (COMMIT, lsns[10], 705, T0 + 9, None),
        (SWITCH, lsns[11], None, None, None),
    ]
    ev = scan.summary.events
    assert ev[7].extra == {
        "redo": 0x1000028,
        "tli": 1,
        "prev_tli": 1,
        "next_xid": 1000,
        "oldest_active_xid": 999,
    }
    assert ev[8].extra == {"tli": 2, "prev_tli": 1}
    assert all(
        e.end_lsn == (end + 7) & ~7
        for e, end in zip(ev, [w.ends[i] for i in range(1, 12)], strict=True)
    )
    s = scan.summary
    assert s.switch and s.end_lsn == ev[-1].end_lsn and s.end_reason is None
    assert (s.xact_count, s.xid_min, s.xid_max) == (6, 700, 705)
    assert (s.xact_time_min, s.xact_time_max) == (T0 + 1, T0 + 9)
    assert s.first_lsn == lsns[0] and s.last_lsn == lsns[-1] and s.pg_version == 15
    assert scan.records == 12 and scan.spill is None and scan.cont is None


@pytest.mark.parametrize("major", [12, 14, 18])
def test_version_specific_layouts(major: int) -> None:
    w = wb.WalWriter(major=major)
    w.add(wb.prepare(42, T0, "g-" + str(major), major=major))
    stats_item = 16 if major >= 18 else 12
    parts = struct.pack("<II", 5, 1663)  # dbinfo
    if major >= 15:
        parts += struct.pack("<i", 1) + b"s" * stats_item  # one dropped-stats item
    parts += struct.pack("<I", 42)  # two-phase xid
    xinfo = 1 | (1 << 4) | ((1 << 8) if major >= 15 else 0)
    main = struct.pack("<qI", wb.pg_time(T0 + 1), xinfo) + parts
    w.add(wb.main_data_record(1, 0xB0, main))  # COMMIT_PREPARED | HAS_INFO
    ((name, seg),) = w.segments()
    scan = wr.scan_segment(seg, name)
    assert _events(scan) == [
        (PREPARE, w.lsns[0], 42, T0, f"g-{major}"),
        (COMMIT_PREPARED, w.lsns[1], 42, T0 + 1, None),
    ]
    assert scan.summary.pg_version == major


def test_records_across_pages_and_zeroed_tail() -> None:
    w = wb.WalWriter()
    for i in range(40):
        w.add(wb.heap(3000 + 37 * i, xid=i))
        w.add(wb.commit(i, T0 + i))
    big = wb.commit(99, T0 + 99, xinfo=1 << 3, parts=struct.pack("<i", 1200) + b"v" * 16 * 1200)
    w.add(big)  # 19 KiB commit spanning three pages
    ((name, seg),) = w.segments()
    scan = wr.scan_segment(seg, name, crc="all")
    assert [e.xid for e in scan.summary.events] == [*range(40), 99]
    assert scan.summary.events[-1].end_lsn == (w.ends[-1] + 7) & ~7
    assert scan.records == 81
    assert scan.summary.end_reason is not None and "got 0" in scan.summary.end_reason
    assert scan.summary.end_lsn == (w.ends[-1] + 7) & ~7


def _multi_segment_writer(n_commits: int = 4000) -> wb.WalWriter:
    w = wb.WalWriter(seg_size=MiB)
    xid = 1000
    for i in range(n_commits):
        w.add(wb.heap(200 + (i * 13) % 700, xid=xid))
        if i % 3 == 0:
            w.add(
                wb.commit(
                    xid,
                    T0 + i * 10,
                    xinfo=1 << 3,
                    parts=struct.pack("<i", i % 5) + b"q" * 16 * (i % 5),
                )
            )
        else:
            w.add(wb.commit(xid, T0 + i * 10))
        if i % 500 == 7:
            w.add(wb.restore_point(f"rp{i}", T0 + i * 10 + 1))
        xid += 1
    return w


def test_segment_boundaries_per_segment_join_equals_sequential() -> None:
    w = _multi_segment_writer()
    files = w.segments()
    assert len(files) >= 3
    seq = list(wr.read_segments(files, crc="all"))
    seq_events = [e for s in seq for e in s.summary.events]
    # every commit and restore point, in order, exactly once
    assert [e.xid for e in seq_events if e.kind == COMMIT] == list(range(1000, 1000 + 4000))
    assert len([e for e in seq_events if e.kind == RESTORE_POINT]) == 8
    assert [e.lsn for e in seq_events] == sorted(e.lsn for e in seq_events)
    assert sum(s.records for s in seq) + sum(1 for s in seq if s.spill) == len(w.lsns)
    # scanning each file alone, then joining spill + continuation, gives the same
    alone = [wr.scan_segment(data, name) for name, data in files]
    joined = []
    for a, b in zip(alone, [*alone[1:], None], strict=True):
        if a.spill is not None and b is not None:
            assert b.cont is not None and b.summary.first_prev in (None, a.spill.lsn)
            a = wr.resolve(a, a.spill, b.cont)
        joined.append(a)
    assert [s.summary for s in joined[:-1]] == [s.summary for s in seq[:-1]]
    # xl_prev chaining across the boundaries
    for a, b in itertools.pairwise(seq):
        assert b.summary.first_prev == a.summary.last_lsn


def test_record_split_inside_its_header_at_segment_end() -> None:
    # place a commit so that only 8 bytes of its header are in the first segment
    w = wb.WalWriter(seg_size=MiB)
    while True:
        room = MiB + w.start - w.pos
        if room <= 8 + 200:
            break
        w.add(wb.heap(min(room - 200, 6000)))
    while MiB + w.start - w.pos > 8:
        filler = MiB + w.start - w.pos - 8 - 24 - 6 - 16 - 2
        w.add(wb.heap(max(filler, 1)))
    assert MiB + w.start - w.pos == 8
    lsn = w.add(wb.commit(4242, T0))
    w.add(wb.commit(4243, T0 + 1))
    files = w.segments()
    a = wr.scan_segment(files[0][1], files[0][0])
    assert a.spill is not None and a.spill.lsn == lsn and a.spill.interesting is None
    assert a.spill.head is not None and len(a.spill.head) == 8 and a.summary.pending
    b = wr.scan_segment(files[1][1], files[1][0])
    done = wr.resolve(a, a.spill, b.cont)
    assert not done.summary.pending
    assert [(e.kind, e.xid, e.time) for e in done.summary.events][-1] == (COMMIT, 4242, T0)
    assert [e.xid for e in b.summary.events] == [4243]


def test_overwrite_contrecord_abandons_the_spilled_record() -> None:
    w = wb.WalWriter(seg_size=MiB)
    while MiB + w.start - w.pos > 4000:
        w.add(wb.heap(3000))
    w.add(wb.commit(1, T0, xinfo=1 << 3, parts=struct.pack("<i", 400) + b"z" * 6400))
    # the commit's tail never got written: PostgreSQL starts the next segment afresh
    w.buf = w.buf[:MiB]
    w.overwrite_contrecord_page(w.start + MiB)
    w.add(wb.main_data_record(0, 0xD0, struct.pack("<Qq", 0, 0)))
    w.add(wb.commit(2, T0 + 5))
    files = w.segments()
    a = wr.scan_segment(files[0][1], files[0][0])
    b = wr.scan_segment(files[1][1], files[1][0])
    assert a.spill is not None and a.summary.pending
    assert b.cont is not None and b.cont.overwrite
    assert wr.resolve(a, a.spill, b.cont).summary.pending  # cannot be joined
    assert [e.xid for e in b.summary.events] == [2]


# --- end of valid WAL and damage ---------------------------------------------------------


def _simple_segment() -> tuple[wb.WalWriter, str, bytearray]:
    w = wb.WalWriter()
    for i in range(20):
        w.add(wb.heap(500, xid=i))
        w.add(wb.commit(i, T0 + i))
    ((name, seg),) = w.segments()
    return w, name, bytearray(seg)


def test_bad_crc_in_a_commit_ends_the_wal_there() -> None:
    w, name, seg = _simple_segment()
    target = w.lsns[11]  # commit of xid 5
    seg[target - w.start + 30] ^= 0xFF
    scan = wr.scan_segment(bytes(seg), name)
    assert [e.xid for e in scan.summary.events] == [0, 1, 2, 3, 4]
    assert scan.summary.end_reason is not None and "checksum" in scan.summary.end_reason
    assert scan.summary.end_lsn == (w.ends[10] + 7) & ~7


def test_bad_crc_in_other_records_is_found_with_crc_all_only() -> None:
    w, name, seg = _simple_segment()
    target = w.lsns[10]  # heap record
    seg[target - w.start + 100] ^= 0x01
    assert len(wr.scan_segment(bytes(seg), name).summary.events) == 20
    deep = wr.scan_segment(bytes(seg), name, crc="all")
    assert len(deep.summary.events) == 5 and "checksum" in (deep.summary.end_reason or "")


def test_broken_prev_link_and_stale_page_end_the_wal() -> None:
    w, name, seg = _simple_segment()
    off = w.lsns[6] - w.start
    struct.pack_into("<Q", seg, off + 8, 12345)
    scan = wr.scan_segment(bytes(seg), name)
    assert [e.xid for e in scan.summary.events] == [0, 1, 2]
    assert "prev-link" in (scan.summary.end_reason or "")
    # a recycled page (old page address) after page 0
    w2, name2, seg2 = _simple_segment()
    struct.pack_into("<Q", seg2, 8192 + 8, 0x123456 * 8192)
    scan2 = wr.scan_segment(bytes(seg2), name2)
    assert scan2.summary.end_reason is not None and "address" in scan2.summary.end_reason
    assert all(e.end_lsn <= w2.start + 8192 for e in scan2.summary.events)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s[:1000],  # truncated
        lambda s: b"\0" * len(s),  # zeros
        lambda s: os.urandom(len(s)),  # noise
        lambda s: s[:2] + b"\x00\x00" + s[4:],  # no long-header flag
        lambda s: b"\x34\x12" + s[2:],  # unknown magic
    ],
)
def test_not_a_segment_is_a_clean_error(mangle: object) -> None:
    _, name, seg = _simple_segment()
    with pytest.raises(InvalidWalError):
        wr.scan_segment(mangle(bytes(seg)), name)  # type: ignore[operator]


def test_random_damage_never_raises_anything_else() -> None:
    _, name, seg = _simple_segment()
    import random

    rnd = random.Random(5)
    for _ in range(300):
        damaged = bytearray(seg)
        for _ in range(rnd.randint(1, 20)):
            damaged[rnd.randrange(40, 60000)] = rnd.randrange(256)
        try:
            scan = wr.scan_segment(bytes(damaged), name, crc=rnd.choice(["events", "all"]))
        except InvalidWalError:
            continue
        assert scan.summary.end_lsn <= scan.summary.start_lsn + len(seg)


def test_wrong_name_is_refused() -> None:
    _, _name, seg = _simple_segment()
    with pytest.raises(InvalidWalError):
        wr.scan_segment(bytes(seg), "000000010000000000000007")
    with pytest.raises(InvalidWalError):
        wr.scan_segment(bytes(seg), "00000001.history")


def test_walreader_is_not_imported_by_push() -> None:
    code = (
        "import walship.cli, walship.archive.push, sys; print('walship.pg.records' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
