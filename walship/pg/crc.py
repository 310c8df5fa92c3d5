"""CRC-32C (Castagnoli), as PostgreSQL computes it for WAL records.

The CRC runs in C via ``google_crc32c`` (a walship dependency); a pure-Python
fallback (slicing-by-8, about 20 MB/s) keeps the reader working where that
wheel is unavailable.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

_CRC_POLY = 0x82F63B78


def _crc_tables() -> list[list[int]]:
    t0 = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ _CRC_POLY if c & 1 else c >> 1
        t0.append(c)
    tables = [t0]
    for _ in range(7):
        prev = tables[-1]
        tables.append([(prev[n] >> 8) ^ t0[prev[n] & 0xFF] for n in range(256)])
    return tables


_T: list[list[int]] = []  # built on first use (not needed when the C implementation loads)


def crc32c_py(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-32C of ``data``, continuing from ``crc`` (0 to start). Pure Python."""
    if not _T:
        _T.extend(_crc_tables())
    t0, t1, t2, t3, t4, t5, t6, t7 = _T
    c = crc ^ 0xFFFFFFFF
    mv = memoryview(data).cast("B")
    n = len(mv)
    head = n & ~7
    if head:
        for w in struct.unpack(f"<{head >> 3}Q", mv[:head]):
            x = c ^ w
            c = (
                t7[x & 0xFF]
                ^ t6[(x >> 8) & 0xFF]
                ^ t5[(x >> 16) & 0xFF]
                ^ t4[(x >> 24) & 0xFF]
                ^ t3[(x >> 32) & 0xFF]
                ^ t2[(x >> 40) & 0xFF]
                ^ t1[(x >> 48) & 0xFF]
                ^ t0[x >> 56]
            )
    for b in mv[head:]:
        c = t0[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _load_fast_crc() -> Callable[[bytes | bytearray | memoryview, int], int] | None:
    try:
        import importlib

        extend = importlib.import_module("google_crc32c.cext").extend
    except Exception:
        return None

    def fast(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
        value: int = extend(crc, bytes(data))
        return value

    return fast


_fast_crc = _load_fast_crc()

#: CRC-32C implementation in use: "c" (google_crc32c) or "python".
CRC_IMPLEMENTATION = "c" if _fast_crc is not None else "python"

crc32c: Callable[[bytes | bytearray | memoryview, int], int] = _fast_crc or crc32c_py


def record_crc(rec: bytes | memoryview) -> int:
    """The CRC PostgreSQL stores in ``xl_crc``: body after the header, then header[:20]."""
    return crc32c(rec[:20], crc32c(rec[24:], 0))
