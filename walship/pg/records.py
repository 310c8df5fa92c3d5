"""Pure-Python reader of PostgreSQL WAL segments (PostgreSQL 12 to 18).

What it extracts is what recovery targets depend on (walship.pg.types): commit
and abort records (also of prepared transactions) with their xids and
timestamps, PREPARE records, named restore points, checkpoints, XLOG_SWITCH,
end-of-recovery and backup-end records, and the LSN range of valid WAL.

Layout handled (docs: ../shared/docs/postgres-wal-reference.md, section 4)::

    segment  = pages of XLOG_BLCKSZ (8192) bytes
    page     = header + body; the first page of a segment has the 40-byte long
               header (magic, info, tli, pageaddr, rem_len, sysid, seg_size,
               blcksz), every other page the 24-byte short one
    record   = 24-byte XLogRecord header (tot_len, xid, prev, info, rmid, crc)
               + block-reference headers + block images/data + main data;
               records start MAXALIGNed (8); a record that does not fit goes
               on right after the next page's header, which then carries
               XLP_FIRST_IS_CONTRECORD and xlp_rem_len (bytes still to come),
               possibly across pages and across segments

The reader first validates every page header (magic of the segment's version,
known flag bits, long header only on page 0, ``xlp_pageaddr`` equal to the
page's own LSN, non-decreasing ``xlp_tli``) and joins the page bodies of the
valid prefix into one "logical" byte string. Page headers are multiples of 8
bytes, so MAXALIGN in logical offsets equals MAXALIGN in LSNs and the record
walk is a simple loop over that string. Each record is checked for a sane
``xl_tot_len``, a known rmgr id, ``xl_prev`` equal to the previous record's
start, and, where it crosses pages, the CONTRECORD flag and ``xlp_rem_len`` of
every page it continues on. The first failing check ends the valid WAL, as it
does for PostgreSQL ("invalid record length ... got 0"); ``end_reason`` says
which check it was. After an XLOG_SWITCH the rest of the segment is skipped.

CRC strategy: CRC-32C (Castagnoli) is verified for every record the reader
decodes (the records of interest above: they are small) and, with
``crc="all"``, for every record (tests, ``verify --deep``); the CRC itself is
:mod:`walship.pg.crc`.
A record of interest with a bad CRC ends the valid WAL like any other failed
check; the structural checks above catch end-of-WAL garbage for the others.

Records crossing a segment boundary: a segment is often scanned alone (at push
time only that file is at hand). ``scan_segment`` then returns a
:class:`Spill` (the head of the record that starts in this segment and goes
on in the next one, with its bytes when the record is of interest or its
header is cut before the rmgr id) and a :class:`Continuation` (the
``xlp_rem_len`` bytes that finish the previous segment's last record, kept
when small). :func:`join` puts a spill and the next segment's continuation
together and decodes the record with its CRC checked, so per-segment scans
joined give exactly what a sequential read gives. A sequential reader can
instead pass the previous scan's spill as ``carry`` and gets the finished
record back in the earlier scan's summary (:func:`read_segments`).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from ..errors import InvalidWalError
from . import (
    PAGE_MAGIC_VERSIONS,
    XLOG_BLCKSZ,
    FileKind,
    check_segment_header,
    classify,
    format_lsn,
    parse_long_header,
    parse_segment_name,
)
from .crc import crc32c, record_crc
from .types import (
    ABORT,
    ABORT_PREPARED,
    BACKUP_END,
    CHECKPOINT_ONLINE,
    CHECKPOINT_SHUTDOWN,
    COMMIT,
    COMMIT_PREPARED,
    END_OF_RECOVERY,
    PREPARE,
    RESTORE_POINT,
    SWITCH,
    XACT_END_KINDS,
    SegmentSummary,
    WalEvent,
)

# --- layout constants -----------------------------------------------------------

SHORT_PHD = 24
LONG_PHD = 40
REC_HDR = 24
FIRST_BODY = XLOG_BLCKSZ - LONG_PHD  # logical bytes on page 0 of a segment
BODY = XLOG_BLCKSZ - SHORT_PHD  # logical bytes on every other page

XLP_FIRST_IS_CONTRECORD = 0x0001
XLP_LONG_HEADER = 0x0002
XLP_FIRST_IS_OVERWRITE_CONTRECORD = 0x0008
XLP_ALL_FLAGS = 0x000F

RM_XLOG_ID = 0
RM_XACT_ID = 1
RM_MAX_BUILTIN = 21  # LogicalMessage, the same list in 12..18
RM_MIN_CUSTOM = 128  # PG15+

MAX_RECORD = 0x3FD00000  # XLogRecordMaxSize (1020 MB): longer is garbage

PG_EPOCH_US = 946_684_800 * 1_000_000  # 2000-01-01 in Unix microseconds

#: keep a spilled record head of interest up to this size
SPILL_KEEP = 1 << 20
#: keep a segment's leading continuation bytes up to this size
CONT_KEEP = 32 << 10

_PAGE = struct.Struct("<HHIQI")
_REC = struct.Struct("<IIQBB")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_I64 = struct.Struct("<q")
_U64 = struct.Struct("<Q")

# XLOG rmgr opcodes (xl_info & 0xF0)
XLOG_CHECKPOINT_SHUTDOWN = 0x00
XLOG_CHECKPOINT_ONLINE = 0x10
XLOG_SWITCH = 0x40
XLOG_BACKUP_END = 0x50
XLOG_RESTORE_POINT = 0x70
XLOG_END_OF_RECOVERY = 0x90
XLOG_OVERWRITE_CONTRECORD = 0xD0

# Transaction rmgr opcodes (xl_info & 0x70)
XLOG_XACT_COMMIT = 0x00
XLOG_XACT_PREPARE = 0x10
XLOG_XACT_ABORT = 0x20
XLOG_XACT_COMMIT_PREPARED = 0x30
XLOG_XACT_ABORT_PREPARED = 0x40
XLOG_XACT_OPMASK = 0x70
XLOG_XACT_HAS_INFO = 0x80

XACT_XINFO_HAS_DBINFO = 1 << 0
XACT_XINFO_HAS_SUBXACTS = 1 << 1
XACT_XINFO_HAS_RELFILENODES = 1 << 2
XACT_XINFO_HAS_INVALS = 1 << 3
XACT_XINFO_HAS_TWOPHASE = 1 << 4
XACT_XINFO_HAS_ORIGIN = 1 << 5
XACT_XINFO_HAS_GID = 1 << 7
XACT_XINFO_HAS_DROPPED_STATS = 1 << 8

_XLOG_KINDS = {
    XLOG_CHECKPOINT_SHUTDOWN: CHECKPOINT_SHUTDOWN,
    XLOG_CHECKPOINT_ONLINE: CHECKPOINT_ONLINE,
    XLOG_SWITCH: SWITCH,
    XLOG_BACKUP_END: BACKUP_END,
    XLOG_RESTORE_POINT: RESTORE_POINT,
    XLOG_END_OF_RECOVERY: END_OF_RECOVERY,
}
_XACT_KINDS = {
    XLOG_XACT_COMMIT: COMMIT,
    XLOG_XACT_PREPARE: PREPARE,
    XLOG_XACT_ABORT: ABORT,
    XLOG_XACT_COMMIT_PREPARED: COMMIT_PREPARED,
    XLOG_XACT_ABORT_PREPARED: ABORT_PREPARED,
}

#: (rmid << 8 | info) of every record of interest, for a cheap membership test
_INTERESTING = frozenset(
    [(RM_XLOG_ID << 8) | (op | low) for op in _XLOG_KINDS for low in range(16)]
    + [
        (RM_XACT_ID << 8) | (op | flags)
        for op in _XACT_KINDS
        for flags in (0x00, 0x80)
        for low in range(16)
        for flags in (flags | low,)
    ]
)


def is_interesting(rmid: int, info: int) -> bool:
    """Whether the reader decodes records of this rmgr/xl_info."""
    return (rmid << 8 | info) in _INTERESTING


# --- value types ----------------------------------------------------------------


class Spill(NamedTuple):
    """A record that starts in a segment and continues in the next one.

    ``head`` holds the record's first ``head_len`` logical bytes when the
    record is of interest (or its header is cut before the rmgr id, so that
    is unknown) and not larger than :data:`SPILL_KEEP`; otherwise ``None``.
    """

    lsn: int
    tot_len: int
    head_len: int
    head: bytes | None
    interesting: bool | None  # None: header cut before xl_rmid


class Continuation(NamedTuple):
    """The end of a record from the previous segment, at this segment's start."""

    rem_len: int  # xlp_rem_len of the first page
    data: bytes | None  # the rem_len bytes, when they are all here and <= CONT_KEEP
    end_lsn: int | None  # MAXALIGNed LSN after them (None: the whole segment continues)
    overwrite: bool = False  # XLP_FIRST_IS_OVERWRITE_CONTRECORD: previous record abandoned


class SegmentScan(NamedTuple):
    """Result of :func:`scan_segment`."""

    summary: SegmentSummary
    spill: Spill | None  # record continuing into the next segment
    cont: Continuation | None  # continuation at this segment's start
    end_reason: str | None  # why valid WAL ended early (None: ran to the end or a switch)
    first_lsn: int | None  # start of the first record starting here
    first_prev: int | None  # its xl_prev
    last_lsn: int | None  # start of the last record starting here (the spill's if any)
    records: int  # records starting (and ending) in this segment
    sysid: int
    pg_version: int


# --- page and record level --------------------------------------------------------


def _pages(
    data: bytes | memoryview, start: int, magic: int, tli_max: int | None
) -> tuple[int, list[int], list[int], str | None]:
    """Validate page headers; return (#valid pages, infos, rem_lens, reason invalid)."""
    npages = len(data) // XLOG_BLCKSZ
    infos = [0] * npages
    rems = [0] * npages
    _magic, info0, tli0, _, rem0 = _PAGE.unpack_from(data, 0)
    infos[0], rems[0] = info0, rem0
    last_tli = tli0
    unpack = _PAGE.unpack_from
    for k in range(1, npages):
        pos = k * XLOG_BLCKSZ
        m, info, tli, addr, rem = unpack(data, pos)
        if m != magic or addr != start + pos or info & ~XLP_ALL_FLAGS or info & XLP_LONG_HEADER:
            if m == 0 and addr == 0:
                why = f"page at {format_lsn(start + pos)} is zeroed"
            elif m != magic:
                why = f"page at {format_lsn(start + pos)} has magic {m:#06x}"
            elif addr != start + pos:
                why = f"page at {format_lsn(start + pos)} has address {format_lsn(addr)}"
            else:
                why = f"page at {format_lsn(start + pos)} has invalid flags {info:#06x}"
            return k, infos, rems, why
        if tli < last_tli or (tli_max is not None and tli > tli_max):
            return k, infos, rems, f"page at {format_lsn(start + pos)} has timeline {tli}"
        last_tli = tli
        infos[k], rems[k] = info, rem
    return npages, infos, rems, None


def _lsn_at(start: int, off: int) -> int:
    """LSN of logical offset ``off`` (a byte position, not an end pointer)."""
    if off < FIRST_BODY:
        return start + LONG_PHD + off
    k, r = divmod(off - FIRST_BODY, BODY)
    return start + (k + 1) * XLOG_BLCKSZ + SHORT_PHD + r


def _end_lsn_at(start: int, end_off: int) -> int:
    """MAXALIGNed LSN just past logical offset ``end_off - 1`` (xlogreader's EndRecPtr)."""
    return (_lsn_at(start, end_off - 1) + 1 + 7) & ~7


class _Version:
    __slots__ = (
        "bimg_compressed",
        "magic",
        "major",
        "prepare_gid_off",
        "prepare_gidlen_off",
        "stats_item",
    )

    def __init__(self, magic: int) -> None:
        major = PAGE_MAGIC_VERSIONS.get(magic)
        if major is None:
            raise InvalidWalError(f"unsupported WAL page magic {magic:#06x}")
        self.magic = magic
        self.major = major
        # bimg_info compression bits
        self.bimg_compressed = 0x02 if major <= 14 else 0x04 | 0x08 | 0x10
        # xl_xact_stats_item: kind, dboid, objoid (PG15-17) / objid_lo, objid_hi (PG18)
        self.stats_item = 12 if major <= 17 else 16
        # xl_xact_prepare: PG15 added ncommitstats/nabortstats before ninvalmsgs
        self.prepare_gidlen_off = 46 if major <= 14 else 54
        self.prepare_gid_off = 64 if major <= 14 else 72


_VERSIONS: dict[int, _Version] = {}


def _version(magic: int) -> _Version:
    v = _VERSIONS.get(magic)
    if v is None:
        v = _VERSIONS[magic] = _Version(magic)
    return v


def main_data(rec: bytes | memoryview, version: _Version) -> tuple[memoryview, int | None]:
    """Main data of a whole record, and its PG14+ top-level xid block if present.

    Walks the block-reference headers (XLR_BLOCK_ID_*); raises InvalidWalError
    when they do not add up to ``xl_tot_len``.
    """
    mv = memoryview(rec)
    tot = len(mv)
    pos = REC_HDR
    payload = 0
    main_len = 0
    toplevel: int | None = None
    last_block = -1
    while pos < tot:
        bid = mv[pos]
        pos += 1
        if bid == 255:  # XLR_BLOCK_ID_DATA_SHORT
            main_len = mv[pos]
            pos += 1
            break
        if bid == 254:  # XLR_BLOCK_ID_DATA_LONG
            main_len = _U32.unpack_from(mv, pos)[0]
            pos += 4
            break
        if bid == 253:  # XLR_BLOCK_ID_ORIGIN
            pos += 2
        elif bid == 252 and version.major >= 14:  # XLR_BLOCK_ID_TOPLEVEL_XID
            toplevel = _U32.unpack_from(mv, pos)[0]
            pos += 4
        elif bid <= 32 and bid > last_block:
            last_block = bid
            fork_flags = mv[pos]
            data_len = _U16.unpack_from(mv, pos + 1)[0]
            pos += 3
            payload += data_len
            if fork_flags & 0x10:  # BKPBLOCK_HAS_IMAGE
                bimg_len, _hole_off = struct.unpack_from("<HH", mv, pos)
                bimg_info = mv[pos + 4]
                pos += 5
                payload += bimg_len
                if bimg_info & 0x01 and bimg_info & version.bimg_compressed:
                    pos += 2  # hole_length
            if not fork_flags & 0x80:  # not BKPBLOCK_SAME_REL
                pos += 12
            pos += 4  # BlockNumber
        else:
            raise InvalidWalError(f"invalid block id {bid} in record")
    if pos + payload + main_len != tot:
        raise InvalidWalError("record block headers do not add up to its length")
    return mv[tot - main_len :], toplevel


def _cstring(raw: bytes | memoryview) -> str:
    data = bytes(raw)
    nul = data.find(b"\0")
    return (data if nul < 0 else data[:nul]).decode("utf-8", "replace")


def decode_record(
    rec: bytes | memoryview, lsn: int, end_lsn: int, version: _Version, *, check_crc: bool = True
) -> WalEvent | None:
    """Decode one whole record (logical bytes) into a WalEvent, None if not of interest.

    Raises InvalidWalError on a CRC mismatch or a malformed record.
    """
    tot, xid, _prev, info, rmid = _REC.unpack_from(rec, 0)
    if tot != len(rec):
        raise InvalidWalError(f"record at {format_lsn(lsn)}: length {len(rec)} != xl_tot_len {tot}")
    if check_crc:
        stored = _U32.unpack_from(rec, 20)[0]
        if record_crc(rec) != stored:
            raise InvalidWalError(f"incorrect CRC in record at {format_lsn(lsn)}")
    if not is_interesting(rmid, info):
        return None
    try:
        data, _top = main_data(rec, version)
        if rmid == RM_XACT_ID:
            return _decode_xact(data, info, xid, lsn, end_lsn, version)
        return _decode_xlog(data, info, lsn, end_lsn)
    except (struct.error, IndexError, ValueError):
        raise InvalidWalError(
            f"record at {format_lsn(lsn)} (rmgr {rmid}, info {info:#04x}) is malformed"
        ) from None
    except InvalidWalError as exc:
        raise InvalidWalError(f"record at {format_lsn(lsn)}: {exc.message}") from None


def _decode_xact(
    data: memoryview, info: int, xid: int, lsn: int, end_lsn: int, version: _Version
) -> WalEvent:
    op = info & XLOG_XACT_OPMASK
    if op == XLOG_XACT_PREPARE:
        pxid = _U32.unpack_from(data, 8)[0]
        prepared_at = _I64.unpack_from(data, 16)[0]
        gidlen = _U16.unpack_from(data, version.prepare_gidlen_off)[0]
        gid_at = version.prepare_gid_off
        if gid_at + gidlen > len(data):
            raise ValueError("gid beyond record")
        return WalEvent(
            PREPARE, lsn, end_lsn, pxid, prepared_at + PG_EPOCH_US, _cstring(data[gid_at:][:gidlen])
        )
    xact_time = _I64.unpack_from(data, 0)[0]
    pos = 8
    xinfo = 0
    if info & XLOG_XACT_HAS_INFO:
        xinfo = _U32.unpack_from(data, pos)[0]
        pos += 4
    if xinfo & XACT_XINFO_HAS_DBINFO:
        pos += 8
    if xinfo & XACT_XINFO_HAS_SUBXACTS:
        pos += 4 + 4 * _count(data, pos)
    if xinfo & XACT_XINFO_HAS_RELFILENODES:
        pos += 4 + 12 * _count(data, pos)
    if xinfo & XACT_XINFO_HAS_DROPPED_STATS:
        pos += 4 + version.stats_item * _count(data, pos)
    if op in (XLOG_XACT_COMMIT, XLOG_XACT_COMMIT_PREPARED):
        if xinfo & XACT_XINFO_HAS_INVALS:
            pos += 4 + 16 * _count(data, pos)
    twophase: int | None = None
    gid: str | None = None
    if xinfo & XACT_XINFO_HAS_TWOPHASE:
        twophase = _U32.unpack_from(data, pos)[0]
        pos += 4
        if xinfo & XACT_XINFO_HAS_GID:
            raw = bytes(data[pos:])
            nul = raw.find(b"\0")
            if nul < 0:
                raise ValueError("unterminated gid")
            gid = raw[:nul].decode("utf-8", "replace")
            pos += nul + 1
    if xinfo & XACT_XINFO_HAS_ORIGIN:
        pos += 16
    if pos > len(data):
        raise ValueError("xact record shorter than its xinfo says")
    kind = _XACT_KINDS[op]
    if op in (XLOG_XACT_COMMIT_PREPARED, XLOG_XACT_ABORT_PREPARED):
        if twophase is None:
            raise ValueError("prepared-transaction record without a two-phase xid")
        xid = twophase
    return WalEvent(kind, lsn, end_lsn, xid, xact_time + PG_EPOCH_US, gid)


def _count(data: memoryview, pos: int) -> int:
    n: int = struct.unpack_from("<i", data, pos)[0]
    if n < 0 or n > len(data):
        raise ValueError("bad item count")
    return n


def _decode_xlog(data: memoryview, info: int, lsn: int, end_lsn: int) -> WalEvent:
    op = info & 0xF0
    kind = _XLOG_KINDS[op]
    if op in (XLOG_CHECKPOINT_SHUTDOWN, XLOG_CHECKPOINT_ONLINE):
        if len(data) < 84:
            raise ValueError("short checkpoint record")
        redo, tli, prev_tli = struct.unpack_from("<QII", data, 0)
        next_xid = _U64.unpack_from(data, 24)[0]
        seconds = _I64.unpack_from(data, 64)[0]
        oldest_active = _U32.unpack_from(data, 80)[0]
        extra: dict[str, Any] = {
            "redo": redo,
            "tli": tli,
            "prev_tli": prev_tli,
            "next_xid": next_xid,
            "oldest_active_xid": oldest_active,
        }
        return WalEvent(kind, lsn, end_lsn, None, seconds * 1_000_000, None, extra)
    if op == XLOG_SWITCH:
        return WalEvent(kind, lsn, end_lsn)
    if op == XLOG_BACKUP_END:
        return WalEvent(kind, lsn, end_lsn, extra={"backup_start": _U64.unpack_from(data, 0)[0]})
    if op == XLOG_RESTORE_POINT:
        rp_time = _I64.unpack_from(data, 0)[0]
        if len(data) < 9:
            raise ValueError("short restore point record")
        return WalEvent(kind, lsn, end_lsn, None, rp_time + PG_EPOCH_US, _cstring(data[8:72]))
    # XLOG_END_OF_RECOVERY
    end_time, tli, prev_tli = struct.unpack_from("<qII", data, 0)
    return WalEvent(
        kind, lsn, end_lsn, None, end_time + PG_EPOCH_US, None, {"tli": tli, "prev_tli": prev_tli}
    )


# --- segment scanning ----------------------------------------------------------------


def scan_segment(
    data: bytes | bytearray | memoryview,
    name: str | None = None,
    *,
    crc: str = "events",
    carry: Spill | None = None,
    keep_cont: bool = False,
    sha256: str | None = None,
) -> SegmentScan:
    """Read one WAL segment (or ``.partial``) file's bytes.

    ``name`` is the archive file name (it gives the timeline and is checked
    against the page address); without it the timeline of the first page is
    used. ``crc`` is ``"events"`` (verify decoded records) or ``"all"``.
    ``carry`` is the previous segment's :class:`Spill`: only used when this
    whole segment continues that record (the result's spill then extends it).
    ``keep_cont`` keeps the leading continuation bytes whatever their size.

    Raises InvalidWalError when the file is not a WAL segment at all (bad
    long header, size mismatch); damage further in ends the valid WAL
    (``end_reason``) instead.
    """
    if crc not in ("events", "all"):
        raise ValueError(f"crc must be 'events' or 'all', not {crc!r}")
    check_all = crc == "all"
    mv = memoryview(data).cast("B")
    head = parse_long_header(bytes(mv[:LONG_PHD]))
    seg_size = head.seg_size
    if len(mv) != seg_size:
        raise InvalidWalError(
            f"{name or 'WAL segment'}: {len(mv)} bytes but its header says segments are "
            f"{seg_size} bytes",
            hint="the file is truncated or not a complete WAL segment",
        )
    version = _version(head.magic)
    if name is not None:
        kind = classify(name)
        if kind not in (FileKind.SEGMENT, FileKind.PARTIAL):
            raise InvalidWalError(f"{name} is not a WAL segment name")
        check_segment_header(name, head)
        tli = parse_segment_name(name, seg_size).tli
        if head.tli > tli:
            raise InvalidWalError(f"{name}: first page is on timeline {head.tli}, above the name's")
    else:
        tli = head.tli
    if head.info & ~XLP_ALL_FLAGS:
        raise InvalidWalError(f"{name or 'WAL segment'}: invalid page flags {head.info:#06x}")
    start = head.pageaddr
    segno = start // seg_size
    seg_name = name or f"{tli:08X}{segno // (0x1_0000_0000 // seg_size):08X}" + (
        f"{segno % (0x1_0000_0000 // seg_size):08X}"
    )

    npages, infos, rems, page_reason = _pages(mv, start, head.magic, tli if name else None)
    full = npages * XLOG_BLCKSZ == seg_size
    parts = [mv[LONG_PHD:XLOG_BLCKSZ]]
    parts.extend(mv[k * XLOG_BLCKSZ + SHORT_PHD : (k + 1) * XLOG_BLCKSZ] for k in range(1, npages))
    body = b"".join(parts)
    n = len(body)

    events: list[WalEvent] = []
    cont: Continuation | None = None
    spill: Spill | None = None
    end_reason: str | None = None
    off = 0
    expected_prev: int | None = None
    info0 = infos[0]

    # --- the start: continuation of the previous segment's last record
    if info0 & XLP_FIRST_IS_OVERWRITE_CONTRECORD:
        cont = Continuation(rems[0], None, start + LONG_PHD, True)
    elif info0 & XLP_FIRST_IS_CONTRECORD:
        rem = rems[0]
        if rem == 0 or rem > MAX_RECORD:
            end_reason = f"invalid contrecord length {rem} at {format_lsn(start)}"
            cont = Continuation(rem, None, None)
        elif rem > n:
            # the whole (valid part of the) segment continues one record
            cont = Continuation(rem, None, None)
            end_reason = _check_cont_pages(infos, rems, 0, rem - FIRST_BODY, npages) or page_reason
            if end_reason is None and carry is not None and carry.tot_len - carry.head_len == rem:
                spill = Spill(
                    carry.lsn,
                    carry.tot_len,
                    carry.head_len + n,
                    None if carry.head is None else carry.head + body,
                    carry.interesting,
                )
            off = 0 if end_reason else n
        else:
            end_reason = _check_cont_pages(infos, rems, 0, rem - FIRST_BODY, npages)
            keep = rem <= CONT_KEEP or keep_cont
            cont = Continuation(rem, bytes(body[:rem]) if keep else None, _end_lsn_at(start, rem))
            off = 0 if end_reason else (rem + 7) & ~7

    # --- the record walk (hot loop: keep it lean)
    unpack = _REC.unpack_from
    u32 = _U32.unpack_from
    i64 = _I64.unpack_from
    crcf = crc32c
    interesting = _INTERESTING
    append = events.append
    # page tracking: logical offsets [pb - page body, pb) are on page pg; lsn = off + delta
    pg = 0
    pb = FIRST_BODY
    delta = start + LONG_PHD
    first_lsn: int | None = None
    first_prev: int | None = None
    last_lsn: int | None = None
    records = 0
    switch = False
    max_rmid = RM_MAX_BUILTIN
    expect = -1 if expected_prev is None else expected_prev
    limit = n - 18  # a record header (up to xl_rmid) must fit
    while end_reason is None:
        if off > limit:
            break
        tot, _xid, prev, info, rmid = unpack(body, off)
        while off >= pb:
            pg += 1
            pb += BODY
            delta += SHORT_PHD
        lsn = off + delta
        end = off + tot
        if tot < REC_HDR or tot > MAX_RECORD or end > n or (prev != expect and expect >= 0):
            break  # end of WAL or a spill: sorted out below
        if rmid > max_rmid and (rmid < RM_MIN_CUSTOM or version.major < 15):
            end_reason = f"invalid resource manager ID {rmid} at {format_lsn(lsn)}"
            break
        if end > pb:
            bad = _check_cont_pages(infos, rems, pg, end - pb, npages)
            if bad:
                end_reason = bad
                break
            end_lsn = _end_lsn_at(start, end)
        else:
            end_lsn = (end + delta + 7) & ~7
        key = rmid << 8 | info
        if key in interesting:
            if (
                key == 0x100  # COMMIT without xinfo: the common case, decoded inline
                and tot == 34
                and body[off + 24] == 255
                and body[off + 25] == 8
            ):
                if (
                    crcf(body[off : off + 20], crcf(body[off + 24 : end], 0))
                    != u32(body, off + 20)[0]
                ):
                    end_reason = (
                        f"incorrect resource manager data checksum in record at {format_lsn(lsn)}"
                    )
                    break
                append(WalEvent(COMMIT, lsn, end_lsn, _xid, i64(body, off + 26)[0] + PG_EPOCH_US))
            else:
                try:
                    event = decode_record(body[off:end], lsn, end_lsn, version)
                except InvalidWalError as exc:
                    end_reason = exc.message
                    break
                if event is not None:
                    append(event)
                    if event.kind == SWITCH:
                        switch = True
        elif check_all:
            if crcf(body[off : off + 20], crcf(body[off + 24 : end], 0)) != u32(body, off + 20)[0]:
                end_reason = (
                    f"incorrect resource manager data checksum in record at {format_lsn(lsn)}"
                )
                break
        if first_lsn is None:
            first_lsn, first_prev = lsn, prev
        last_lsn = lsn
        records += 1
        expect = lsn
        off = (end + 7) & ~7
        if switch:
            break

    # why the loop stopped, when it was not a switch or a check above
    if end_reason is None and not switch and off < n:
        while off >= pb:
            pg += 1
            pb += BODY
            delta += SHORT_PHD
        lsn = off + delta
        tot = u32(body, off)[0]
        end = off + tot
        hdr = unpack(body, off) if off <= limit else None
        if tot < REC_HDR or tot > MAX_RECORD:
            end_reason = f"invalid record length at {format_lsn(lsn)}: wanted 24, got {tot}"
        elif hdr is not None and hdr[2] != expect and expect >= 0:
            end_reason = _bad_prev(lsn, hdr[2], expect)
        elif end <= n:
            end_reason = f"record at {format_lsn(lsn)} could not be read"  # not reached
        elif not full:
            end_reason = page_reason
        else:
            # the record goes on in the next segment
            spilled_interest: bool | None = None
            if hdr is not None:
                if _bad_rmid(hdr[4]):
                    end_reason = f"invalid resource manager ID {hdr[4]} at {format_lsn(lsn)}"
                spilled_interest = (hdr[4] << 8 | hdr[3]) in interesting
            if end_reason is None and n > pb:
                end_reason = _check_cont_pages(infos, rems, pg, end - pb, npages)
            if end_reason is None:
                keep = spilled_interest is not False and tot <= SPILL_KEEP
                head_bytes = bytes(body[off:n]) if keep else None
                spill = Spill(lsn, tot, n - off, head_bytes, spilled_interest)
                if first_lsn is None and hdr is not None:
                    first_lsn, first_prev = lsn, hdr[2]
                last_lsn = lsn
    elif end_reason is None and not switch and not full:
        end_reason = page_reason

    if switch:
        end_lsn = events[-1].end_lsn
    elif end_reason is None:
        end_lsn = start + seg_size
    else:
        end_lsn = _end_lsn_at(start, off) if off else start + LONG_PHD
    summary = SegmentSummary(
        name=seg_name,
        tli=tli,
        segno=segno,
        seg_size=seg_size,
        start_lsn=start,
        end_lsn=end_lsn,
        events=tuple(events),
        switch=switch,
        pending=spill is not None and spill.interesting is not False,
        sha256=sha256,
        pg_version=version.major,
        first_lsn=first_lsn,
        first_prev=first_prev,
        last_lsn=last_lsn,
        end_reason=end_reason,
        **xact_stats(events),
    )
    return SegmentScan(
        summary,
        spill,
        cont,
        end_reason,
        first_lsn,
        first_prev,
        last_lsn,
        records,
        head.system_identifier,
        version.major,
    )


def _bad_prev(lsn: int, prev: int, expected: int) -> str:
    return (
        f"record with incorrect prev-link {format_lsn(prev)} at {format_lsn(lsn)} "
        f"(expected {format_lsn(expected)})"
    )


def _bad_rmid(rmid: int) -> bool:
    return RM_MAX_BUILTIN < rmid < RM_MIN_CUSTOM


def _check_cont_pages(
    infos: list[int], rems: list[int], pg: int, remaining: int, npages: int
) -> str | None:
    """Pages after ``pg`` must carry the rest of a record (``remaining`` bytes at pg+1)."""
    k = pg + 1
    while remaining > 0 and k < npages:
        if not infos[k] & XLP_FIRST_IS_CONTRECORD:
            return f"there is no contrecord flag on the page {k} of the segment"
        if rems[k] != remaining:
            return f"invalid contrecord length {rems[k]} (expected {remaining}) on page {k}"
        remaining -= BODY
        k += 1
    return None


def xact_stats(events: Iterable[WalEvent]) -> dict[str, Any]:
    """The SegmentSummary xact_* fields for these events."""
    times: list[int] = []
    xids: list[int] = []
    for e in events:
        if e.kind in XACT_END_KINDS:
            if e.time is not None:
                times.append(e.time)
            if e.xid is not None:
                xids.append(e.xid)
    count = sum(1 for e in events if e.kind in XACT_END_KINDS)
    return {
        "xact_count": count,
        "xact_time_min": min(times) if times else None,
        "xact_time_max": max(times) if times else None,
        "xact_first_time": times[0] if times else None,
        "xact_last_time": times[-1] if times else None,
        "xid_min": min(xids) if xids else None,
        "xid_max": max(xids) if xids else None,
    }


def join(spill: Spill, cont: Continuation, magic_or_major: int) -> WalEvent | None:
    """Finish a spilled record with the next segment's continuation bytes.

    Returns the record's event (None if it is not of interest); raises
    InvalidWalError when the two do not fit together or the CRC fails.
    """
    version = _version_any(magic_or_major)
    if cont.overwrite:
        raise InvalidWalError(f"record at {format_lsn(spill.lsn)} was overwritten (abandoned)")
    if cont.rem_len != spill.tot_len - spill.head_len:
        raise InvalidWalError(
            f"record at {format_lsn(spill.lsn)}: continuation of {cont.rem_len} bytes does not "
            f"fit ({spill.tot_len - spill.head_len} expected)"
        )
    if spill.interesting is False:
        return None
    if spill.head is None or cont.data is None or cont.end_lsn is None:
        raise InvalidWalError(f"record at {format_lsn(spill.lsn)}: bytes not kept")
    return decode_record(spill.head + cont.data, spill.lsn, cont.end_lsn, version)


def _version_any(magic_or_major: int) -> _Version:
    if magic_or_major in PAGE_MAGIC_VERSIONS:
        return _version(magic_or_major)
    for magic, major in PAGE_MAGIC_VERSIONS.items():
        if major == magic_or_major:
            return _version(magic)
    raise InvalidWalError(f"unsupported PostgreSQL version {magic_or_major}")


def read_segments(
    files: Iterable[tuple[str, bytes | bytearray | memoryview]], *, crc: str = "events"
) -> Iterator[SegmentScan]:
    """Scan consecutive segments of one timeline in order, joining spanning records.

    A yielded scan's summary includes the record that started in it and
    finished in a following file; the last scan keeps its spill pending.
    """
    waiting: list[SegmentScan] = []  # scans whose spill is still being continued
    for name, data in files:
        carry = waiting[-1].spill if waiting else None
        if carry is not None:
            prev = waiting[-1].summary
            if parse_segment_name(name, prev.seg_size).segno != prev.segno + 1:
                carry = None
        scan = scan_segment(data, name, crc=crc, carry=carry, keep_cont=True)
        if waiting:
            if (
                carry is not None
                and scan.spill is not None
                and scan.cont is not None
                and (scan.cont.end_lsn is None)
            ):
                waiting.append(scan)  # the record goes on: resolve when it ends
                continue
            owner = waiting[0]
            if carry is not None and owner.spill is not None:
                owner = resolve(owner, waiting[-1].spill or owner.spill, scan.cont)
            yield owner
            yield from waiting[1:]
            waiting = []
        if scan.spill is not None:
            waiting = [scan]
        else:
            yield scan
    yield from waiting


def resolve(scan: SegmentScan, spill: Spill, cont: Continuation | None) -> SegmentScan:
    """``scan`` with its spilled record finished by ``cont`` (from a later segment).

    ``spill`` is the record's head as accumulated up to that segment. The
    summary gains the record's event and loses ``pending`` when the join
    succeeds; it stays pending otherwise.
    """
    if cont is None or scan.spill is None:
        return scan
    try:
        event = join(spill, cont, scan.pg_version)
    except InvalidWalError:
        return scan
    s = scan.summary
    events = s.events + ((event,) if event is not None else ())
    switch = s.switch or (event is not None and event.kind == SWITCH)
    summary = s._replace(events=events, pending=False, switch=switch, **xact_stats(events))
    return scan._replace(summary=summary)
