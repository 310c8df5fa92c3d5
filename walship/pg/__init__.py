"""PostgreSQL knowledge, no I/O: file names, LSN math, the long page header.

This module is what every ``walship push`` and ``walship fetch`` checks a
file with, so it is the package itself (one module to import on the hot
path). The rest of the package is imported only where it is used:

* :mod:`walship.pg.history` -- timeline history and ``.backup`` files
* :mod:`walship.pg.types` -- WalEvent, SegmentSummary: values shared by the
  record reader, the segment index and the restore planner
* :mod:`walship.pg.crc` -- CRC-32C as PostgreSQL computes it
* :mod:`walship.pg.records` -- the WAL page and record reader
* :mod:`walship.pg.checksum` -- data page checksums (numpy), which files carry them
* :mod:`walship.pg.backup_manifest` -- PostgreSQL's ``backup_manifest`` file
* :mod:`walship.pg.recovery` -- recovery settings and signal files (restores)

Nothing in this package imports from walship but :mod:`walship.errors`. See
docs/ and the PostgreSQL WAL reference for the rules these implement.
"""

from __future__ import annotations

import struct

from ..errors import InvalidWalError

XLOG_BLCKSZ = 8192
SIZE_OF_LONG_PHD = 40
XLP_LONG_HEADER = 0x0002
MIN_SEG_SIZE = 1 << 20
MAX_SEG_SIZE = 1 << 30

#: XLOG_PAGE_MAGIC -> PostgreSQL major version.
PAGE_MAGIC_VERSIONS: dict[int, int] = {
    0xD101: 12,
    0xD106: 13,
    0xD10D: 14,
    0xD110: 15,
    0xD113: 16,
    0xD116: 17,
    0xD118: 18,
}


class FileKind:
    """The four kinds of file PostgreSQL archives (plain strings: cheap to import)."""

    SEGMENT = "segment"
    PARTIAL = "partial"
    HISTORY = "history"
    BACKUP = "backup"


_HEX = frozenset("0123456789ABCDEF")


def _is_hex(text: str) -> bool:
    """Upper-case hex digits only (PostgreSQL's names never use lower case)."""
    return all(c in _HEX for c in text)


def _kind(name: str) -> str | None:
    # plain string tests instead of regexes: this runs in every push and fetch,
    # and compiling patterns at import costs more than the whole check
    n = len(name)
    if n == 24 and _is_hex(name):
        return FileKind.SEGMENT
    if n == 16 and name.endswith(".history") and _is_hex(name[:8]):
        return FileKind.HISTORY
    if n == 32 and name.endswith(".partial") and _is_hex(name[:24]):
        return FileKind.PARTIAL
    if (
        n == 40
        and name.endswith(".backup")
        and name[24] == "."
        and _is_hex(name[:24])
        and _is_hex(name[25:33])
    ):
        return FileKind.BACKUP
    return None


def classify(name: str) -> str:
    """Return the kind of an archive file name, or raise InvalidWalError."""
    kind = _kind(name)
    if kind is not None:
        return kind
    raise InvalidWalError(
        f"{name!r} is not a WAL file name",
        hint="expected a 24-hex-digit segment, TTTTTTTT.history, <segment>.partial "
        "or <segment>.XXXXXXXX.backup (upper-case hex, as PostgreSQL passes in %f)",
    )


def timeline_of(name: str) -> int:
    """Timeline id of any archive file name."""
    classify(name)
    return int(name[:8], 16)


# The two records below are tuple subclasses written out, not typing.NamedTuple:
# importing typing costs walship fetch and push ~7 ms, a third of a call served
# from the read-ahead spool or the look-ahead record (docs/benchmarks.md).


class SegmentName(tuple[int, int]):
    """A WAL segment: timeline and segment number (needs the segment size)."""

    __slots__ = ()

    def __new__(cls, tli: int, segno: int) -> SegmentName:
        return tuple.__new__(cls, (tli, segno))

    @property
    def tli(self) -> int:
        return self[0]

    @property
    def segno(self) -> int:
        return self[1]

    def __repr__(self) -> str:
        return f"SegmentName(tli={self[0]}, segno={self[1]})"

    def _asdict(self) -> dict[str, int]:
        return {"tli": self[0], "segno": self[1]}

    def name(self, seg_size: int) -> str:
        return segment_file_name(self.tli, self.segno, seg_size)


def segs_per_xlogid(seg_size: int) -> int:
    check_seg_size(seg_size)
    return 0x1_0000_0000 // seg_size


def check_seg_size(seg_size: int) -> None:
    if not (MIN_SEG_SIZE <= seg_size <= MAX_SEG_SIZE) or seg_size & (seg_size - 1):
        raise InvalidWalError(
            f"invalid WAL segment size {seg_size}",
            hint="PostgreSQL segment sizes are powers of two from 1 MiB to 1 GiB",
        )


def segment_file_name(tli: int, segno: int, seg_size: int) -> str:
    per = segs_per_xlogid(seg_size)
    return f"{tli:08X}{segno // per:08X}{segno % per:08X}"


def parse_segment_name(name: str, seg_size: int) -> SegmentName:
    """Parse a 24-hex-digit segment name (a ``.partial`` suffix is allowed)."""
    base = name[:-8] if name.endswith(".partial") else name
    if len(base) != 24 or not _is_hex(base):
        raise InvalidWalError(f"{name!r} is not a WAL segment name")
    per = segs_per_xlogid(seg_size)
    log, seg = int(base[8:16], 16), int(base[16:24], 16)
    if seg >= per:
        raise InvalidWalError(
            f"{name!r} is not valid for {seg_size}-byte segments (segment part >= {per:#x})"
        )
    return SegmentName(int(base[:8], 16), log * per + seg)


def parse_lsn(text: str) -> int:
    """Parse ``HI/LO`` hex text (``0/1524F40`` or ``0/01524F40``)."""
    import re  # here, not at the top: ``re`` costs push and fetch ~3 ms to import

    m = re.fullmatch(r"\s*([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})\s*", text)
    if not m:
        raise ValueError(f"invalid LSN {text!r}: expected the form 0/1524F40")
    return (int(m.group(1), 16) << 32) | int(m.group(2), 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def segno_of_lsn(lsn: int, seg_size: int) -> int:
    """Segment holding the byte at ``lsn``."""
    return lsn // seg_size


def segno_of_end_lsn(lsn: int, seg_size: int) -> int:
    """Segment holding the byte just before ``lsn`` (end-pointer rule)."""
    return (lsn - 1) // seg_size


_HEADER_FIELDS = (
    "magic",
    "info",
    "tli",
    "pageaddr",
    "system_identifier",
    "seg_size",
    "xlog_blcksz",
)


class LongPageHeader(tuple[int, int, int, int, int, int, int]):
    """The long page header at the start of a segment (fields as in PostgreSQL)."""

    __slots__ = ()

    def __new__(
        cls,
        magic: int,
        info: int,
        tli: int,
        pageaddr: int,
        system_identifier: int,
        seg_size: int,
        xlog_blcksz: int,
    ) -> LongPageHeader:
        return tuple.__new__(
            cls, (magic, info, tli, pageaddr, system_identifier, seg_size, xlog_blcksz)
        )

    @property
    def magic(self) -> int:
        return self[0]

    @property
    def info(self) -> int:
        return self[1]

    @property
    def tli(self) -> int:
        return self[2]

    @property
    def pageaddr(self) -> int:
        return self[3]

    @property
    def system_identifier(self) -> int:
        return self[4]

    @property
    def seg_size(self) -> int:
        return self[5]

    @property
    def xlog_blcksz(self) -> int:
        return self[6]

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in zip(_HEADER_FIELDS, self, strict=True))
        return f"LongPageHeader({fields})"

    def _asdict(self) -> dict[str, int]:
        return dict(zip(_HEADER_FIELDS, self, strict=True))

    @property
    def pg_version(self) -> int | None:
        return PAGE_MAGIC_VERSIONS.get(self.magic)


def parse_long_header(data: bytes) -> LongPageHeader:
    """Parse and sanity-check the long page header at the start of a segment."""
    if len(data) < SIZE_OF_LONG_PHD:
        raise InvalidWalError("file is too short to be a WAL segment")
    magic, info, tli, pageaddr, _rem, sysid, seg_size, blcksz = struct.unpack_from(
        "<HHIQI4xQII", data
    )
    if magic not in PAGE_MAGIC_VERSIONS:
        raise InvalidWalError(
            f"not a WAL segment of a supported PostgreSQL version (page magic {magic:#06x})",
            hint="walship supports PostgreSQL 12 to 18",
        )
    if not info & XLP_LONG_HEADER:
        raise InvalidWalError("WAL segment does not start with a long page header")
    if blcksz != XLOG_BLCKSZ:
        raise InvalidWalError(f"unsupported WAL page size {blcksz} (expected {XLOG_BLCKSZ})")
    check_seg_size(seg_size)
    if pageaddr % seg_size:
        raise InvalidWalError(f"first page address {format_lsn(pageaddr)} is not segment-aligned")
    return LongPageHeader(magic, info, tli, pageaddr, sysid, seg_size, blcksz)


def check_segment_header(name: str, header: LongPageHeader) -> None:
    """The page header must agree with the file name (position in the WAL stream)."""
    seg = parse_segment_name(name, header.seg_size)
    if header.pageaddr // header.seg_size != seg.segno:
        raise InvalidWalError(
            f"{name}: contents are segment at {format_lsn(header.pageaddr)}, "
            "which does not match the file name",
            hint="the file was renamed or copied under the wrong name",
        )
