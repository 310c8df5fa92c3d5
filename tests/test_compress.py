"""zstd through compress._zstd: the direct C-backend load and the ``import zstandard`` path."""

from __future__ import annotations

import json
import subprocess
import sys
from types import ModuleType

import pytest

from walship.codec import compress
from walship.errors import IntegrityError

DATA = b"walship " * 50_000 + bytes(range(256)) * 100


def _round_trip() -> None:
    body = b"".join(compress.compress_stream("zstd", [DATA[:1000], DATA[1000:]], 3, 0))
    assert len(body) < len(DATA)
    out = b"".join(compress.decompress_stream("zstd", iter([body[:7], body[7:]]), "t"))
    assert out == DATA
    with pytest.raises(IntegrityError, match="corrupt compressed data"):
        b"".join(compress.decompress_stream("zstd", iter([body[:20] + b"x" * 50]), "t"))


_CHILD = """
import json, os, sys
from walship.codec import compress
api = compress._zstd()
before = {m: m in sys.modules for m in ("zstandard", "platform", "typing")}
c = b"".join(compress.compress_stream("zstd", [b"abc" * 1000], 3, 0))
assert b"".join(compress.decompress_stream("zstd", iter([c]), "t")) == b"abc" * 1000
import zstandard
print(json.dumps({
    "api": api.__name__,
    "before": before,
    "same": zstandard.ZstdCompressor is api.ZstdCompressor,
    "error": zstandard.ZstdError is api.ZstdError,
    "backend": zstandard.backend,
    "plain": zstandard.decompress(zstandard.compress(b"xyz")).decode(),
}))
"""


def _child(env: dict[str, str] | None = None) -> dict[str, object]:
    import os

    full = dict(os.environ, **(env or {}))
    out = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True, env=full
    ).stdout
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return result


def test_direct_backend_then_plain_import_still_works() -> None:
    result = _child()
    assert result["api"] == "zstandard.backend_c"
    assert result["before"] == {"zstandard": False, "platform": False, "typing": False}
    assert result["same"] and result["error"]
    assert result["backend"] == "cext"
    assert result["plain"] == "xyz"


def test_other_import_policy_uses_the_package() -> None:
    result = _child({"PYTHON_ZSTANDARD_IMPORT_POLICY": "cffi_fallback"})
    assert result["api"] == "zstandard"
    assert result["same"] and result["plain"] == "xyz"


def test_round_trip_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("zstandard", compress._BACKEND):
        monkeypatch.delitem(sys.modules, name, raising=False)
    calls: list[str] = []
    load = compress._load_backend_c

    def spy() -> ModuleType:
        calls.append("direct")
        return load()

    monkeypatch.setattr(compress, "_load_backend_c", spy)
    _round_trip()
    assert calls == ["direct"]


def test_round_trip_fallback_when_direct_load_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("zstandard", compress._BACKEND):
        monkeypatch.delitem(sys.modules, name, raising=False)

    def broken() -> object:
        sys.modules[compress._BACKEND] = object()  # type: ignore[assignment]
        raise ImportError("no C extension here")

    monkeypatch.setattr(compress, "_load_backend_c", broken)
    assert compress._zstd().__name__ == "zstandard"
    _round_trip()


def test_already_imported_package_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    import zstandard

    monkeypatch.setitem(sys.modules, "zstandard", zstandard)
    assert compress._zstd() is zstandard
