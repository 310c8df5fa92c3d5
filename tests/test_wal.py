"""Unit tests: file names, LSN math, page headers, history files."""

from __future__ import annotations

import re
import struct

import pytest
from helpers import SEG, SYSID, make_segment
from hypothesis import given
from hypothesis import strategies as st

from walship import pg
from walship.errors import InvalidWalError
from walship.pg import history


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("000000010000000000000001", pg.FileKind.SEGMENT),
        ("00000002.history", pg.FileKind.HISTORY),
        ("000000010000000000000008.partial", pg.FileKind.PARTIAL),
        ("000000010000000000000003.00000028.backup", pg.FileKind.BACKUP),
    ],
)
def test_classify_valid(name: str, kind: str) -> None:
    assert pg.classify(name) == kind


@pytest.mark.parametrize(
    "name",
    [
        "",
        "00000001000000000000000",  # 23 digits
        "0000000100000000000000001",  # 25
        "00000001000000000000000a",  # lower case
        "00000002.HISTORY",
        "../000000010000000000000001",
        "000000010000000000000001.partial.x",
        "000000010000000000000003.28.backup",
        "RECOVERYXLOG",
    ],
)
def test_classify_rejects(name: str) -> None:
    with pytest.raises(InvalidWalError) as info:
        pg.classify(name)
    assert "expected" in info.value.one_line()


@pytest.mark.parametrize(
    ("lsn", "seg_size", "name", "offset"),
    [
        ("0/1524F40", 16 << 20, "000000010000000000000001", 0x524F40),
        ("1/2C3D5B58", 16 << 20, "00000001000000010000002C", 0x3D5B58),
        ("1/2C3D5B58", 64 << 20, "00000001000000010000000B", 0x3D5B58),
        ("1/2C3D5B58", 1 << 30, "000000010000000100000000", 0x2C3D5B58),
        ("1/2C3D5B58", 1 << 20, "0000000100000001000002C3", 0xD5B58),
    ],
)
def test_lsn_to_segment(lsn: str, seg_size: int, name: str, offset: int) -> None:
    value = pg.parse_lsn(lsn)
    segno = pg.segno_of_lsn(value, seg_size)
    assert pg.segment_file_name(1, segno, seg_size) == name
    assert value % seg_size == offset
    assert pg.parse_segment_name(name, seg_size) == pg.SegmentName(1, segno)


def test_lsn_parse_format_roundtrip() -> None:
    assert pg.parse_lsn("0/01524F40") == pg.parse_lsn("0/1524F40")
    assert pg.format_lsn(pg.parse_lsn("1/2C3D5B58")) == "1/2C3D5B58"
    with pytest.raises(ValueError):
        pg.parse_lsn("nonsense")


def test_end_pointer_rule() -> None:
    seg = 16 << 20
    boundary = 3 * seg
    assert pg.segno_of_lsn(boundary, seg) == 3
    assert pg.segno_of_end_lsn(boundary, seg) == 2


def test_segment_name_validates_against_size() -> None:
    with pytest.raises(InvalidWalError):
        pg.parse_segment_name("000000010000000000000100", 16 << 20)  # seg part 0x100 >= 256
    assert pg.parse_segment_name("000000010000000000000100", 1 << 20).segno == 0x100


@pytest.mark.parametrize("bad", [0, 3 << 20, 2 << 30, 512 * 1024])
def test_bad_seg_sizes(bad: int) -> None:
    with pytest.raises(InvalidWalError):
        pg.check_seg_size(bad)


def test_long_header_parsed() -> None:
    page = pg.parse_long_header(make_segment(3)[:8192])
    assert page.system_identifier == SYSID
    assert page.seg_size == SEG
    assert page.pg_version == 15
    assert page.pageaddr == 3 * SEG
    pg.check_segment_header("000000010000000000000003", page)
    with pytest.raises(InvalidWalError, match="does not match the file name"):
        pg.check_segment_header("000000010000000000000004", page)


@pytest.mark.parametrize(("magic", "version"), sorted(pg.PAGE_MAGIC_VERSIONS.items()))
def test_every_supported_magic(magic: int, version: int) -> None:
    assert pg.parse_long_header(make_segment(1, magic=magic)[:64]).pg_version == version


def test_header_rejects_non_wal() -> None:
    with pytest.raises(InvalidWalError, match="supported PostgreSQL"):
        pg.parse_long_header(b"hello world, this is not WAL at all!!!!!!!!!")
    with pytest.raises(InvalidWalError, match="too short"):
        pg.parse_long_header(b"\x10\xd1")
    short = struct.pack("<HHIQI4xQII", 0xD110, 0, 1, 0, 0, 1, SEG, 8192)
    with pytest.raises(InvalidWalError, match="long page header"):
        pg.parse_long_header(short)
    bad_size = struct.pack("<HHIQI4xQII", 0xD110, 2, 1, 0, 0, 1, 3 << 20, 8192)
    with pytest.raises(InvalidWalError, match="segment size"):
        pg.parse_long_header(bad_size)


def test_history_parsing() -> None:
    text = '1\t0/5000260\tat restore point "rp2"\n\n2\t0/8000300\tbefore 2026-11-23 10:00:00+00\n\n'
    entries = history.parse_history(text, 3)
    assert entries == [
        history.HistoryEntry(1, 0x5000260, 'at restore point "rp2"'),
        history.HistoryEntry(2, 0x8000300, "before 2026-11-23 10:00:00+00"),
    ]
    assert history.parse_history("# comment\n", 2) == []
    with pytest.raises(InvalidWalError):
        history.parse_history("garbage line\n", 2)
    with pytest.raises(InvalidWalError, match="not below"):
        history.parse_history("2\t0/1\tx\n", 2)
    with pytest.raises(InvalidWalError, match="increase"):
        history.parse_history("2\t0/1\tx\n1\t0/2\ty\n", 3)


def test_backup_history_parsing() -> None:
    text = (
        "START WAL LOCATION: 0/3000028 (file 000000010000000000000003)\n"
        "STOP WAL LOCATION: 0/3000138 (file 000000010000000000000003)\n"
        "LABEL: x\n"
    )
    fields = history.parse_backup_history(text)
    assert fields["LABEL"] == "x"
    with pytest.raises(InvalidWalError):
        history.parse_backup_history("hello\n")


_SPEC = [
    (pg.FileKind.SEGMENT, r"[0-9A-F]{24}"),
    (pg.FileKind.HISTORY, r"[0-9A-F]{8}\.history"),
    (pg.FileKind.PARTIAL, r"[0-9A-F]{24}\.partial"),
    (pg.FileKind.BACKUP, r"[0-9A-F]{24}\.[0-9A-F]{8}\.backup"),
]


@given(
    st.one_of(
        st.text(alphabet="0123456789ABCDEFabcdef.xyhistorypartialbackup/ ", max_size=45),
        st.from_regex(r"[0-9A-F]{24}(\.partial|\.[0-9A-F]{8}\.backup)?", fullmatch=True),
        st.from_regex(r"[0-9A-F]{8}\.history", fullmatch=True),
    )
)
def test_classify_agrees_with_the_documented_patterns(name: str) -> None:
    expected = next((k for k, rx in _SPEC if re.fullmatch(rx, name)), None)
    if expected is None:
        with pytest.raises(InvalidWalError):
            pg.classify(name)
    else:
        assert pg.classify(name) == expected
