"""Streaming compression: ``zstd`` (zstandard) or ``none``.

Both directions work on bounded chunks; decompression output is bounded per
read (a highly compressible chunk never expands into one huge buffer).
"""

from __future__ import annotations

import sys

from ..errors import IntegrityError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Generator, Iterable, Iterator
    from types import ModuleType
    from typing import Any

CHUNK = 1 << 20
KINDS = ("zstd", "none")

_BACKEND = "zstandard.backend_c"


def _zstd() -> ModuleType:
    """The zstandard API: its C backend loaded directly when possible.

    ``zstandard/__init__`` imports ``platform`` and ``typing`` only to pick a
    backend, which costs more than a small push spends compressing. On CPython
    with the default import policy it picks ``backend_c`` and re-exports it,
    so the same extension module is loaded here without running the package;
    a later ``import zstandard`` finds it in ``sys.modules`` and reuses it.
    Anything unusual (already imported, another interpreter or import policy,
    no C extension) goes through ``import zstandard``.
    """
    module = sys.modules.get("zstandard") or sys.modules.get(_BACKEND)
    if module is None and _direct_ok():
        try:
            module = _load_backend_c()
        except Exception:
            sys.modules.pop(_BACKEND, None)
            module = None
    if module is None:
        import zstandard

        module = zstandard
    return module


def _direct_ok() -> bool:
    import os

    policy = os.environ.get("PYTHON_ZSTANDARD_IMPORT_POLICY", "default").strip()
    return sys.implementation.name == "cpython" and policy in ("default", "cext")


def _load_backend_c() -> ModuleType:
    from importlib.machinery import PathFinder

    package = PathFinder.find_spec("zstandard")
    locations = package.submodule_search_locations if package is not None else None
    if not locations:
        raise ImportError("zstandard not found")
    spec = PathFinder.find_spec(_BACKEND, list(locations))
    if spec is None or spec.loader is None:
        raise ImportError(f"{_BACKEND} not found")
    module = spec.loader.create_module(spec)
    if module is None:
        raise ImportError(f"{_BACKEND}: unexpected loader")
    module.__spec__ = spec
    module.__loader__ = spec.loader
    module.__package__ = "zstandard"
    sys.modules[_BACKEND] = module
    spec.loader.exec_module(module)
    return module


def compress_stream(
    kind: str, chunks: Iterable[bytes], level: int, threads: int
) -> Generator[bytes, None, None]:
    if kind == "none":
        yield from chunks
        return
    if kind != "zstd":
        raise ValueError(f"unknown compression {kind!r}")
    cobj = _zstd().ZstdCompressor(level=level, threads=threads).compressobj()
    for chunk in chunks:
        out = cobj.compress(chunk)
        if out:
            yield out
    yield cobj.flush()


def compress_whole(kind: str, data: bytes | memoryview, level: int) -> bytes:
    """``data`` compressed in one call (one zstd frame, with its content size)."""
    if kind != "zstd":
        raise ValueError(f"unknown compression {kind!r}")
    return bytes(_zstd().ZstdCompressor(level=level).compress(data))


class _ChunkReader:
    """``read(n)`` over an iterator of chunks for zstd's stream reader.

    Hands each chunk over as it is (a chunk is split, and so copied, only when
    it is longer than ``n``): an ``io.RawIOBase`` adapter copied every chunk
    three times, ~2 ms per 16 MiB segment.
    """

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._it = chunks
        self._rest = b""

    def read(self, n: int = -1) -> bytes:
        data = self._rest
        while not data:
            try:
                data = next(self._it)
            except StopIteration:
                return b""
        if n < 0 or len(data) <= n:
            self._rest = b""
            return data
        self._rest = data[n:]
        return data[:n]


def decompress_stream(kind: str, chunks: Iterator[bytes], where: str) -> Iterator[bytes]:
    if kind == "none":
        yield from chunks
        return
    if kind != "zstd":
        raise IntegrityError(
            f"{where}: unknown compression {kind!r}", hint="upgrade walship to read this object"
        )
    zstandard = _zstd()
    source: Any = _ChunkReader(chunks)
    reader = zstandard.ZstdDecompressor().stream_reader(
        source, read_size=CHUNK, read_across_frames=False
    )
    try:
        while True:
            try:
                data = reader.read(CHUNK)
            except zstandard.ZstdError as exc:
                raise IntegrityError(f"{where}: corrupt compressed data ({exc})") from None
            if not data:
                return
            yield data
    finally:
        reader.close()
