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


def test_a_part_of_several_pieces_is_read_in_place_not_joined() -> None:
    head, body = b"H" * 300, os.urandom(3 * MIB + 11)
    part = PartReader([head, body]).read(4 * MIB)
    reader = part.body()
    # a reader over the pieces (botocore sizes it by len() and reads it in
    # blocks), not one bytes object made by copying the whole part
    assert not isinstance(reader, bytes)
    assert len(reader) == part.size == len(head) + len(body)  # type: ignore[arg-type]
    expected = head + body
    blocks = []
    while block := reader.read(16384):
        assert len(block) <= 16384
        blocks.append(block)
    assert b"".join(blocks) == expected
    assert reader.read() == b"" and len(reader) == 0  # type: ignore[arg-type]
    # seek and tell, as an SDK rewinding for a hash or a retry uses them
    for pos in (0, 1, 299, 300, 301, len(expected) - 1, len(expected)):
        assert reader.seek(pos) == pos and reader.tell() == pos
        assert reader.read(1000) == expected[pos : pos + 1000]
    assert reader.seek(-5, 2) == len(expected) - 5 and reader.read() == expected[-5:]
    reader.seek(10)
    assert reader.seek(290, 1) == 300 and reader.read(2) == expected[300:302]
    target = bytearray(500)
    reader.seek(200)
    assert reader.readinto(target) == 500 and bytes(target) == expected[200:700]
    with pytest.raises(ValueError):
        reader.seek(-1)
    # every attempt gets a rewound reader; the digests and blocks see every piece
    assert part.body().read() == expected  # type: ignore[union-attr]
    assert part.md5() == hashlib.md5(expected).digest()
    assert b"".join(part.iter_bytes(step=MIB, start=299)) == expected[299:]
    assert b"".join(part.stream(5, head=b"<", tail=b">")) == b"<" + expected[5:] + b">"
    assert part.data == expected  # joined only when asked for one bytes
