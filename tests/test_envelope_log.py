"""The object header (versioned, self-describing) and the log line formats."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import environment_without_settings, make_segment, segment_name

from walship.codec import envelope
from walship.errors import IntegrityError

HEADER = {
    "name": "000000010000000000000003",
    "kind": "segment",
    "compression": "zstd",
    "raw_size": 5,
    "raw_sha256": "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
}


def _encoded(**changes: object) -> bytes:
    return b"".join(envelope.encode(dict(HEADER, **changes), [b"hello"]))


def _with_header(data: bytes, mutate: object) -> bytes:
    """Re-serialise the object's header through ``mutate(header_dict)``."""
    (length,) = struct.unpack(">I", data[8:12])
    header = json.loads(data[12 : 12 + length])
    mutate(header)  # type: ignore[operator]
    body = json.dumps(header).encode()
    return data[:8] + struct.pack(">I", len(body)) + body + data[12 + length :]


def _decode(data: bytes) -> tuple[dict[str, object], bytes]:
    header, raw = envelope.decode(iter([data]), "test-object")
    return header, b"".join(raw)


def test_header_is_self_describing_and_versioned() -> None:
    data = _encoded()
    assert data.startswith(envelope.MAGIC)
    header, raw = _decode(data)  # no configuration, no side knowledge
    assert raw == b"hello"
    assert header["format"] == envelope.FORMAT and header["encryption"] is None
    assert header["compression"] == "zstd" and header["raw_size"] == 5
    assert header["raw_sha256"] == HEADER["raw_sha256"]


def test_unknown_fields_are_ignored_and_unknown_formats_refused() -> None:
    data = _with_header(_encoded(), lambda h: h.update(added_by_a_later_version=[1, 2]))
    assert _decode(data)[1] == b"hello"
    future = _with_header(_encoded(), lambda h: h.update(format=2))
    with pytest.raises(IntegrityError, match="object format 2 is not supported") as info:
        _decode(future)
    assert "upgrade walship" in info.value.one_line()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: b"\x89WALSHIX" + d[8:], "bad magic"),
        (lambda d: d[:8] + struct.pack(">I", 1 << 20) + d[12:], "implausible header length"),
        (lambda d: d[:14], "truncated"),
        (lambda d: _with_header(d, lambda h: h.pop("raw_sha256")), "lacks 'raw_sha256'"),
        (lambda d: _with_header(d, lambda h: h.update(raw_size=6)), "truncated"),
        (lambda d: _with_header(d, lambda h: h.update(raw_sha256="0" * 64)), "digest mismatch"),
    ],
)
def test_damaged_objects_are_integrity_errors(damage: object, message: str) -> None:
    with pytest.raises(IntegrityError, match=message):
        _decode(damage(_encoded()))  # type: ignore[operator]


def test_raw_digest_is_in_metadata_for_a_head_request() -> None:
    meta = envelope.metadata_for(dict(HEADER))
    assert meta[envelope.META_SHA256] == HEADER["raw_sha256"]
    assert meta[envelope.META_SIZE] == "5"
    # and the serialised header is byte-for-byte what json would write
    head = envelope.serialize_header(dict(HEADER, format=1, encryption=None))
    assert head[12:].decode() == json.dumps(
        dict(HEADER, format=1, encryption=None), sort_keys=True, separators=(",", ":")
    )
    assert envelope.read_header(iter([head]), "x")[0] == json.loads(head[12:])


def _walship(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = environment_without_settings()
    env["WALSHIP_REPO"] = str(tmp_path / "repo")
    return subprocess.run(
        [sys.executable, "-m", "walship", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )


def test_log_lines_text_json_and_levels(tmp_path: Path) -> None:
    src = tmp_path / segment_name(3)
    src.write_bytes(make_segment(3))
    text = _walship(tmp_path, "push", str(src), src.name)
    assert text.returncode == 0
    lines = text.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("walship[") and "INFO pushed" in lines[0]

    again = _walship(tmp_path, "--log-format", "json", "push", str(src), src.name)
    records = [json.loads(line) for line in again.stderr.splitlines()]
    assert [r["event"] for r in records] == ["push.duplicate"]
    assert {"ts", "level", "pid", "msg", "sha256"} <= set(records[0])

    assert _walship(tmp_path, "-q", "push", str(src), src.name).stderr == ""
    verbose = _walship(tmp_path, "-v", "fetch", segment_name(9), str(tmp_path / "x"))
    assert verbose.returncode == 1
    assert "does not exist" in verbose.stderr
