"""The storage Backend protocol: the one contract every store implements.

A backend stores opaque objects under ``/``-separated keys relative to the
repository root it was opened on. Semantics (checked by tests/test_contract.py
for every backend):

``head(key) -> ObjectInfo | None``
    ``None`` when absent; metadata included, no body transferred.
``put(key, chunks, *, mode="create", metadata=None) -> ObjectInfo``
    Atomic: readers see either no object or the whole object, never a part.
    ``mode="create"`` is conditional and decided by the store itself
    (no check-then-write): if the key exists, raise :class:`AlreadyExists`
    and leave the stored object untouched. ``mode="overwrite"`` replaces.
    ``chunks`` is consumed once; memory use must not grow with object size.
``open(key) -> ObjectStream``
    Raises :class:`NotFound` *before* returning when the key is absent; the
    returned stream yields the body in bounded chunks and must be closed.
``list(prefix) -> Iterator[ObjectInfo]``
    Every key starting with ``prefix`` (a plain string prefix), lazily and
    in ascending byte order of the key; paginated by the backend.
``delete(keys)``
    Removes keys; absent keys are not an error. Backends batch requests.

Metadata keys are lower-case ``[a-z0-9-]``; values are short ASCII strings.
Errors are walship's own (:mod:`walship.errors`): a missing bucket or
directory is :class:`ContainerNotFound`, never :class:`NotFound`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol

CREATE = "create"
OVERWRITE = "overwrite"
PUT_MODES = (CREATE, OVERWRITE)


class ObjectInfo:
    """What a store knows about one object."""

    __slots__ = ("key", "metadata", "mtime", "size")

    def __init__(
        self,
        key: str,
        size: int,
        metadata: Mapping[str, str] | None = None,
        mtime: float | None = None,
    ) -> None:
        self.key = key
        self.size = size
        self.metadata: dict[str, str] = dict(metadata or {})
        self.mtime = mtime

    def __repr__(self) -> str:
        return f"ObjectInfo(key={self.key!r}, size={self.size}, metadata={self.metadata!r})"


class ObjectStream(Protocol):
    """A readable object body: iterate for chunks, then close."""

    info: ObjectInfo

    def __iter__(self) -> Iterator[bytes]: ...

    def close(self) -> None: ...


class Backend(Protocol):
    """A repository store (see :mod:`walship.storage.base` for the contract)."""

    #: Human-readable location for messages, e.g. ``s3://bucket/prefix``.
    url: str

    def head(self, key: str) -> ObjectInfo | None: ...

    def put(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        mode: str = CREATE,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo: ...

    def open(self, key: str) -> ObjectStream: ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    def delete(self, keys: Iterable[str]) -> None: ...

    def close(self) -> None: ...


class Store:
    """What every built-in backend shares: :meth:`put` checks the key and the
    mode once, then the backend's ``_put`` writes (see the module docstring)."""

    url: str

    def put(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        mode: str = CREATE,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        check_key(key)
        check_mode(mode)
        return self._put(key, chunks, mode, {str(k): str(v) for k, v in (metadata or {}).items()})

    def _put(
        self, key: str, chunks: Iterable[bytes], mode: str, meta: dict[str, str]
    ) -> ObjectInfo:
        raise NotImplementedError


class IterStream:
    """An :class:`ObjectStream` over an iterator, with a close callback."""

    def __init__(self, info: ObjectInfo, chunks: Iterator[bytes], on_close: object = None) -> None:
        self.info = info
        self._chunks = chunks
        self._on_close = on_close

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        if callable(self._on_close):
            self._on_close()

    def __enter__(self) -> IterStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_key(key: str) -> None:
    """Keys are relative, '/'-separated, with no empty, '.' or '..' parts."""
    from ..errors import UsageError

    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise UsageError(f"invalid object key {key!r}")


def check_mode(mode: str) -> None:
    if mode not in PUT_MODES:
        raise ValueError(f"put mode must be one of {PUT_MODES}, not {mode!r}")


def read_all(stream: ObjectStream) -> bytes:
    try:
        return b"".join(stream)
    finally:
        stream.close()
