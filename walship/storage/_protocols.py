"""The Backend and ObjectStream protocols (see :mod:`walship.storage.base`).

Import them from :mod:`walship.storage.base`; they are kept here so that the
push/fetch path, which never needs them at run time, does not import ``typing``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol

from .base import CREATE, ObjectInfo


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
