"""Upload parts (walship/storage/parts.py): spooling, digests and request bodies."""

from __future__ import annotations

import hashlib
import os

import pytest

from walship.storage.parts import SPOOL_OVER, Part, PartReader

MIB = 1 << 20


def _spooled(data: bytes) -> Part:
    reader = PartReader(data[i : i + MIB] for i in range(0, len(data), MIB))
    part = reader.read(len(data))
    assert reader.exhausted and part.data is None and part.size == len(data)
    return part


def test_spooled_part_digest_is_taken_while_spooling() -> None:
    data = os.urandom(SPOOL_OVER + 3)
    part = _spooled(data)
    try:
        # the spool file now holds other bytes: a digest read back would differ
        part.body().write(b"\0" * 16)  # type: ignore[union-attr]
        assert part.md5() == hashlib.md5(data).digest()
        assert part.md5_hex() == hashlib.md5(data).hexdigest()
    finally:
        part.close()


def test_in_memory_part_digest() -> None:
    data = os.urandom(3 * MIB + 1)
    reader = PartReader([data])
    part = reader.read(4 * MIB)
    assert part.data == data
    assert part.md5() == hashlib.md5(data).digest()


@pytest.mark.parametrize("spooled", [False, True])
def test_part_body_has_a_length_and_restarts_on_every_iteration(spooled: bool) -> None:
    data = os.urandom(SPOOL_OVER + 5 if spooled else 3 * MIB + 5)
    part = _spooled(data) if spooled else PartReader([data]).read(len(data))
    try:
        for start in (0, 1, MIB + 7, len(data) - 1, len(data)):
            body = part.stream(start, head=b"HEAD", tail=b"TAIL")
            expected = b"HEAD" + data[start:] + b"TAIL"
            assert len(body) == len(expected)
            first = iter(body)
            next(first), next(first)  # a send that stopped half-way ...
            assert b"".join(body) == expected  # ... and the next one sends it all
            assert b"".join(body) == expected
            assert max(len(block) for block in body) <= MIB
        with pytest.raises(ValueError):
            part.stream(len(data) + 1)
    finally:
        part.close()
