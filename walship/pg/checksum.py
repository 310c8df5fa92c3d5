"""Data page checksums, as PostgreSQL computes and checks them. No I/O.

PostgreSQL (``initdb --data-checksums``; the default from 18) stores a 16-bit
checksum in every data page header (``pd_checksum``, bytes 8-9). The algorithm
(``src/include/storage/checksum_impl.h``) treats the page as rows of 32
32-bit words, folds each of the 32 columns into its own FNV-1a-like sum
(``h = (h ^ v) * FNV_PRIME ^ ((h ^ v) >> 17)``, a different start value per
column), mixes in two rounds of zeros, xors the 32 sums together, xors in the
block number and reduces to ``sum % 65535 + 1``. ``pd_checksum`` counts as
zero while computing.

:func:`page_checksum` is a plain-Python reference (one page at a time);
:func:`page_checksums` and :func:`failed_blocks` run the same algorithm over
many pages at once with numpy (the ``backup`` extra, imported when called).

Pages are in the byte order of the server that wrote them; this module reads
them in the native byte order, as backup-push runs on the database host.

Which files carry checksums (:func:`is_checksummed`) and where a segment file
starts (:func:`first_block`) follow ``basebackup.c``.
"""

from __future__ import annotations

import struct
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - types only
    import numpy as np
    import numpy.typing as npt

BLCKSZ = 8192
RELSEG_SIZE_BYTES = 1 << 30
N_SUMS = 32
FNV_PRIME = 16777619
MASK32 = 0xFFFFFFFF

#: checksumBaseOffsets: the start value of each of the 32 parallel sums.
BASE_OFFSETS: tuple[int, ...] = (
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A,
    0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
    0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA,
    0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
    0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE,
    0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
    0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E,
    0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
)  # fmt: skip

#: page header offsets (PageHeaderData)
PD_CHECKSUM_OFFSET = 8
PD_UPPER_OFFSET = 14

_NATIVE = "<" if sys.byteorder == "little" else ">"
#: the 32-bit word at byte 8 holds pd_checksum (and pd_flags); this mask clears
#: pd_checksum in it, in the native byte order
_CHECKSUM_WORD_MASK = 0xFFFF0000 if sys.byteorder == "little" else 0x0000FFFF

#: pages verified per numpy pass (16 MiB of 8 KiB pages: sums stay in cache)
_CHUNK_PAGES = 2048


def _check_block_size(block_size: int) -> None:
    if block_size < 1024 or block_size & (block_size - 1) or block_size % (4 * N_SUMS):
        raise ValueError(f"invalid PostgreSQL block size {block_size}")


def page_checksum(page: bytes | bytearray | memoryview, blkno: int) -> int:
    """pg_checksum_page: the checksum PostgreSQL stores for ``page`` at block ``blkno``.

    ``blkno`` is the block's number in the relation fork (segment number times
    blocks per segment plus the block's place in the segment file). The page
    size is ``len(page)``. Plain Python: the reference the vectorized
    :func:`page_checksums` is tested against.
    """
    size = len(page)
    _check_block_size(size)
    words = list(struct.unpack(f"{_NATIVE}{size // 4}I", page))
    words[PD_CHECKSUM_OFFSET // 4] &= _CHECKSUM_WORD_MASK
    sums = list(BASE_OFFSETS)
    for row in range(0, len(words), N_SUMS):
        for j in range(N_SUMS):
            tmp = sums[j] ^ words[row + j]
            sums[j] = ((tmp * FNV_PRIME) & MASK32) ^ (tmp >> 17)
    for _ in range(2):
        for j in range(N_SUMS):
            tmp = sums[j]
            sums[j] = ((tmp * FNV_PRIME) & MASK32) ^ (tmp >> 17)
    result = 0
    for s in sums:
        result ^= s
    result ^= blkno & MASK32
    return result % 65535 + 1


def _page_words(data: bytes | bytearray | memoryview, block_size: int) -> npt.NDArray[np.uint32]:
    """The whole pages of ``data`` as a (pages, rows, 32) array of native uint32."""
    import numpy as np

    _check_block_size(block_size)
    buf = memoryview(data).cast("B")
    npages = len(buf) // block_size
    words = np.frombuffer(buf, dtype=np.uint32, count=npages * block_size // 4)
    if not words.flags.aligned:  # a memoryview slice at an odd offset
        words = words.copy()
    return words.reshape(npages, block_size // (4 * N_SUMS), N_SUMS)


def _checksums(words: npt.NDArray[np.uint32], first_blkno: int) -> npt.NDArray[np.uint16]:
    """pg_checksum_page of every page of ``words`` (see :func:`_page_words`)."""
    import numpy as np

    npages, rows, _ = words.shape
    out = np.empty(npages, dtype=np.uint16)
    base = np.array(BASE_OFFSETS, dtype=np.uint32)
    prime = np.uint32(FNV_PRIME)
    shift = np.uint32(17)
    mask = np.uint32(_CHECKSUM_WORD_MASK)
    for start in range(0, npages, _CHUNK_PAGES):
        chunk = words[start : start + _CHUNK_PAGES]
        n = chunk.shape[0]
        sums = np.empty((n, N_SUMS), dtype=np.uint32)
        sums[:] = base
        tmp = np.empty_like(sums)
        high = np.empty_like(sums)
        first_row = chunk[:, 0, :].copy()
        first_row[:, PD_CHECKSUM_OFFSET // 4] &= mask
        for i in range(rows + 2):
            if i == 0:
                np.bitwise_xor(sums, first_row, out=tmp)
            elif i < rows:
                np.bitwise_xor(sums, chunk[:, i, :], out=tmp)
            else:  # two rounds of zeros
                tmp[:] = sums
            np.right_shift(tmp, shift, out=high)
            np.multiply(tmp, prime, out=sums)
            np.bitwise_xor(sums, high, out=sums)
        folded = np.bitwise_xor.reduce(sums, axis=1)
        blknos = (np.arange(n, dtype=np.uint64) + (first_blkno + start)) & MASK32
        folded ^= blknos.astype(np.uint32)
        out[start : start + n] = folded % np.uint32(65535) + np.uint32(1)
    return out


def page_checksums(
    data: bytes | bytearray | memoryview, first_blkno: int, block_size: int = BLCKSZ
) -> list[int]:
    """pg_checksum_page of every whole page in ``data``, the first being block ``first_blkno``."""
    return [int(c) for c in _checksums(_page_words(data, block_size), first_blkno)]


def failed_blocks(
    data: bytes | bytearray | memoryview,
    first_blkno: int,
    start_lsn: int,
    block_size: int = BLCKSZ,
) -> list[int]:
    """Block numbers of the whole pages in ``data`` whose stored checksum is wrong.

    ``data`` holds consecutive pages of one relation fork, the first being
    block ``first_blkno`` (see :func:`first_block`); a trailing partial page is
    ignored. Not reported, as in PostgreSQL's base backups:

    * new pages, all zeros (PostgreSQL extends relations with them; a page
      with a zero header but other bytes set is reported, as PostgreSQL's
      PageIsVerified rejects it too);
    * pages whose ``pd_lsn`` is at or past ``start_lsn`` (the backup's start):
      they changed during the backup, may be read half-written, and WAL replay
      rewrites them.

    A page read while PostgreSQL writes it can look corrupt: a caller should
    read a reported block once more before calling it corrupt (as
    ``basebackup.c`` does).
    """
    import numpy as np

    words = _page_words(data, block_size)
    if not words.shape[0]:
        return []
    computed = _checksums(words, first_blkno)
    halves = words.reshape(words.shape[0], -1).view(np.uint16)
    stored = halves[:, PD_CHECKSUM_OFFSET // 2]
    bad = np.flatnonzero(computed != stored)
    if not bad.size:
        return []
    lsn = (words[bad, 0, 0].astype(np.uint64) << np.uint64(32)) | words[bad, 0, 1]
    bad = bad[lsn < np.uint64(start_lsn)]
    return [
        (first_blkno + int(i)) & MASK32 for i in bad if words[i].any()
    ]  # all-zero pages are new


# --- which files carry checksums ---------------------------------------------

_FORKS = ("", "_fsm", "_vm", "_init")
_NO_CHECKSUM = frozenset(("pg_control", "pg_filenode.map", "pg_internal.init", "PG_VERSION"))


def _positive_number(text: str) -> int | None:
    """A decimal number without a leading zero, 1 to 2**32 - 1 (as PostgreSQL parses)."""
    if not text or not text.isascii() or not text.isdigit() or text[0] == "0":
        return None
    n = int(text)
    return n if n <= MASK32 else None


def parse_relation_file(name: str) -> tuple[int, str, int] | None:
    """``<relfilenode>[_fsm|_vm|_init][.<segno>]`` -> (relfilenode, fork, segno), else None.

    The rule of PostgreSQL's parse_filename_for_nontemp_relation: no leading
    zeros, numbers within 32 bits; temporary relations (``t3_16384``) and any
    other name are not relation files.
    """
    base, dot, seg_text = name.partition(".")
    segno = 0
    if dot:
        parsed = _positive_number(seg_text)
        if parsed is None:
            return None
        segno = parsed
    node_text, underscore, fork = base.partition("_")
    fork = underscore + fork
    if fork not in _FORKS:
        return None
    node = _positive_number(node_text)
    if node is None:
        return None
    return node, fork, segno


def is_checksummed(relpath: str) -> bool:
    """Whether a data directory file carries page checksums.

    ``relpath`` is relative to the data directory, as PostgreSQL names it in
    a backup manifest (``base/5/16384.1``, ``global/1262``,
    ``pg_tblspc/16400/PG_15_202209061/5/16401_fsm``). True for the relation
    files of the cluster catalog (``global/``), of each database
    (``base/<db>/``) and of each tablespace
    (``pg_tblspc/<oid>/<PG_version_dir>/<db>/``); false for everything else,
    among them ``pg_control``, ``pg_filenode.map``, ``pg_internal.init``,
    ``PG_VERSION`` and temporary relations.
    """
    parts = relpath.removeprefix("./").split("/")
    if parts[-1] in _NO_CHECKSUM or parse_relation_file(parts[-1]) is None:
        return False
    if len(parts) == 2:
        return parts[0] == "global"
    if len(parts) == 3:
        return parts[0] == "base" and parts[1].isascii() and parts[1].isdigit()
    if len(parts) == 5:
        return (
            parts[0] == "pg_tblspc"
            and parts[1].isascii()
            and parts[1].isdigit()
            and parts[2].startswith("PG_")
            and parts[3].isascii()
            and parts[3].isdigit()
        )
    return False


def first_block(
    relpath: str, block_size: int = BLCKSZ, segment_size: int = RELSEG_SIZE_BYTES
) -> int:
    """Block number of the first page of a relation segment file.

    ``16384.3`` with 1 GiB segments of 8 KiB pages starts at block
    3 * 131072; a file without a ``.N`` suffix (or not a relation file) at 0.
    """
    parsed = parse_relation_file(relpath.rsplit("/", 1)[-1])
    if parsed is None:
        return 0
    return parsed[2] * (segment_size // block_size)
