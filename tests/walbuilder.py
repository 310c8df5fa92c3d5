"""Build synthetic WAL segments byte by byte, the way PostgreSQL lays them out.

Used by the unit tests of walship.pg.records / walship.index: records get real
headers, xl_prev links and CRC-32C, are MAXALIGNed, and continue across page
and segment boundaries with XLP_FIRST_IS_CONTRECORD / xlp_rem_len.
"""

from __future__ import annotations

import struct

from walship.pg.crc import crc32c_py

BLCKSZ = 8192
PG_EPOCH_US = 946_684_800 * 1_000_000
SYSID = 7312345678901234567

MAGIC = {12: 0xD101, 13: 0xD106, 14: 0xD10D, 15: 0xD110, 16: 0xD113, 17: 0xD116, 18: 0xD118}


def main_data_record(
    rmid: int, info: int, main: bytes, *, xid: int = 0, blocks: bytes = b""
) -> bytes:
    """A record with its header fields still unset (prev, crc); ``blocks`` = block headers+data."""
    dh = bytes([255, len(main)]) if len(main) < 256 else bytes([254]) + struct.pack("<I", len(main))
    body = blocks + dh + main
    tot = 24 + len(body)
    return struct.pack("<IIQBB2xI", tot, xid, 0, info, rmid, 0) + body


def pg_time(unix_us: int) -> int:
    return unix_us - PG_EPOCH_US


def commit(xid: int, unix_us: int, *, xinfo: int | None = None, parts: bytes = b"") -> bytes:
    main = struct.pack("<q", pg_time(unix_us))
    info = 0x00
    if xinfo is not None:
        info |= 0x80
        main += struct.pack("<I", xinfo) + parts
    return main_data_record(1, info, main, xid=xid)


def abort(xid: int, unix_us: int) -> bytes:
    return main_data_record(1, 0x20, struct.pack("<q", pg_time(unix_us)), xid=xid)


def commit_prepared(pxid: int, unix_us: int, *, major: int = 15, gid: str | None = None) -> bytes:
    xinfo = (1 << 0) | (1 << 4) | ((1 << 7) if gid else 0)  # DBINFO | TWOPHASE | GID
    parts = struct.pack("<II", 5, 1663) + struct.pack("<I", pxid)
    if gid:
        parts += gid.encode() + b"\0"
    main = struct.pack("<qI", pg_time(unix_us), xinfo) + parts
    return main_data_record(1, 0x30 | 0x80, main, xid=0)


def prepare(xid: int, unix_us: int, gid: str, *, major: int = 15) -> bytes:
    g = gid.encode() + b"\0"
    if major <= 14:
        hdr = struct.pack(
            "<IIIIqIiiiiBxHQq",
            0x57F94534,
            0,
            xid,
            5,
            pg_time(unix_us),
            10,
            0,
            0,
            0,
            0,
            0,
            len(g),
            0,
            0,
        )
    else:
        hdr = struct.pack(
            "<IIIIqIiiiiiiBxHQq",
            0x57F94534,
            0,
            xid,
            5,
            pg_time(unix_us),
            10,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            len(g),
            0,
            0,
        )
    pad = (-len(g)) % 8
    return main_data_record(1, 0x10, hdr + g + b"\0" * pad, xid=xid)


def restore_point(name: str, unix_us: int) -> bytes:
    main = struct.pack("<q64s", pg_time(unix_us), name.encode())
    return main_data_record(0, 0x70, main)


def checkpoint(redo: int, tli: int, prev_tli: int, unix_s: int, *, online: bool = True) -> bytes:
    main = bytearray(88)
    struct.pack_into("<QII", main, 0, redo, tli, prev_tli)
    struct.pack_into("<Q", main, 24, 1000)
    struct.pack_into("<q", main, 64, unix_s)
    struct.pack_into("<I", main, 80, 999)
    return main_data_record(0, 0x10 if online else 0x00, bytes(main))


def switch() -> bytes:
    return struct.pack("<IIQBB2xI", 24, 0, 0, 0x40, 0, 0)


def end_of_recovery(unix_us: int, tli: int, prev_tli: int) -> bytes:
    return main_data_record(0, 0x90, struct.pack("<qIIi", pg_time(unix_us), tli, prev_tli, 1))


def heap(size: int, xid: int = 0) -> bytes:
    """An uninteresting record (rmgr Heap) whose block carries ``size`` bytes of data."""
    blocks = bytes([0, 0x20]) + struct.pack("<H", size) + struct.pack("<III", 1663, 5, 16384)
    blocks += struct.pack("<I", 7) + bytes((i * 7) & 0xFF for i in range(size))
    return main_data_record(10, 0x00, b"\x01\x02", xid=xid, blocks=blocks)


class WalWriter:
    """Lays records out into segments of ``seg_size`` bytes starting at ``segno``."""

    def __init__(
        self, *, major: int = 15, seg_size: int = 1 << 20, tli: int = 1, segno: int = 1
    ) -> None:
        self.magic = MAGIC[major]
        self.seg_size = seg_size
        self.tli = tli
        self.start = segno * seg_size
        self.buf = bytearray()
        self.pos = self.start + 40
        self._page_header(self.start, 0, long=True)
        self.prev = 0
        self.lsns: list[int] = []
        self.ends: list[int] = []

    def _ensure(self, upto: int) -> None:
        need = upto - self.start
        if need > len(self.buf):
            self.buf.extend(b"\0" * (need - len(self.buf)))

    def _page_header(self, page: int, rem: int, *, long: bool = False, flags: int = 0) -> None:
        self._ensure(page + BLCKSZ)
        info = (0x0002 if long else 0) | (0x0001 if rem else 0) | 0x0004 | flags
        hdr = struct.pack("<HHIQI4x", self.magic, info, self.tli, page, rem)
        if long:
            hdr += struct.pack("<QII", SYSID, self.seg_size, BLCKSZ)
        off = page - self.start
        self.buf[off : off + len(hdr)] = hdr

    def _header_size(self, page: int) -> int:
        return 40 if page % self.seg_size == 0 else 24

    def add(self, rec: bytes, *, corrupt_crc: bool = False) -> int:
        """Append a record (prev and CRC filled in); returns its LSN."""
        rec = bytearray(rec)
        struct.pack_into("<Q", rec, 8, self.prev)
        crc = crc32c_py(bytes(rec[:20]), crc32c_py(bytes(rec[24:])))
        struct.pack_into("<I", rec, 20, crc ^ (1 if corrupt_crc else 0))
        if self.pos % BLCKSZ == 0:
            self._page_header(self.pos, 0, long=self.pos % self.seg_size == 0)
            self.pos += self._header_size(self.pos)
        lsn = self.pos
        data = bytes(rec)
        while data:
            page = self.pos - self.pos % BLCKSZ
            room = page + BLCKSZ - self.pos
            chunk = data[:room]
            self._ensure(self.pos + len(chunk))
            off = self.pos - self.start
            self.buf[off : off + len(chunk)] = chunk
            self.pos += len(chunk)
            data = data[len(chunk) :]
            if data:
                nxt = page + BLCKSZ
                self._page_header(nxt, len(data), long=nxt % self.seg_size == 0)
                self.pos = nxt + self._header_size(nxt)
        end = self.pos
        self.pos = (self.pos + 7) & ~7
        self.prev = lsn
        self.lsns.append(lsn)
        self.ends.append(end)
        if rec[17] == 0 and rec[16] & 0xF0 == 0x40:  # XLOG_SWITCH: rest of segment is zeros
            seg_end = (lsn // self.seg_size + 1) * self.seg_size
            self._ensure(seg_end)
            self.pos = seg_end
        return lsn

    def overwrite_contrecord_page(self, page: int) -> None:
        """Abandon the record being continued: ``page`` starts afresh, flagged OVERWRITE."""
        self._page_header(page, 0, long=page % self.seg_size == 0, flags=0x0008)
        self.pos = page + self._header_size(page)

    def segments(self, *, upto_segments: int | None = None) -> list[tuple[str, bytes]]:
        """The segment files written so far (the last one zero-padded)."""
        total = len(self.buf)
        nseg = -(-total // self.seg_size)
        out = []
        per = 0x1_0000_0000 // self.seg_size
        for k in range(nseg if upto_segments is None else upto_segments):
            seg = bytes(self.buf[k * self.seg_size : (k + 1) * self.seg_size])
            seg += b"\0" * (self.seg_size - len(seg))
            segno = self.start // self.seg_size + k
            out.append((f"{self.tli:08X}{segno // per:08X}{segno % per:08X}", seg))
        return out


def fill_until(w: WalWriter, left: int) -> None:
    """Add heap records until exactly ``left`` bytes (a multiple of 8) remain in the segment."""
    assert left % 8 == 0 and left >= 8
    while True:
        seg_end = (w.pos // w.seg_size + 1) * w.seg_size
        room = seg_end - w.pos
        if room - left < 2000 + 48:
            break
        w.add(heap(1500))
    size = room - left - 48
    assert size > 0
    w.add(heap(size))
    assert (w.pos // w.seg_size + 1) * w.seg_size - w.pos == left
