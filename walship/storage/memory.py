"""In-memory backend (``mem://name``): fast tests, same contract as the others.

Stores with the same name share data within one process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from ..errors import AlreadyExists, NotFound
from .base import CREATE, IterStream, ObjectInfo, ObjectStream, Store, check_key

if TYPE_CHECKING:
    from ..config import Config

_STORES: dict[str, dict[str, tuple[bytes, ObjectInfo]]] = {}
_LOCK = threading.Lock()


class MemoryBackend(Store):
    def __init__(self, name: str = "", chunk_size: int = 1 << 20) -> None:
        self.url = f"mem://{name}"
        with _LOCK:
            self._objects = _STORES.setdefault(name, {})
        self._chunk = chunk_size

    def head(self, key: str) -> ObjectInfo | None:
        check_key(key)
        with _LOCK:
            entry = self._objects.get(key)
        return None if entry is None else entry[1]

    def _put(
        self, key: str, chunks: Iterable[bytes], mode: str, meta: dict[str, str]
    ) -> ObjectInfo:
        data = b"".join(chunks)  # staged privately: invisible until committed below
        info = ObjectInfo(key, len(data), meta, time.time())
        with _LOCK:
            if mode == CREATE and key in self._objects:
                raise AlreadyExists(f"{self.url}/{key} already exists")
            self._objects[key] = (data, info)
        return info

    def open(self, key: str) -> ObjectStream:
        check_key(key)
        with _LOCK:
            entry = self._objects.get(key)
        if entry is None:
            raise NotFound(f"{self.url}/{key} does not exist")
        data, info = entry
        step = self._chunk
        return IterStream(info, (data[i : i + step] for i in range(0, len(data), step)))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        with _LOCK:
            keys = sorted(k for k in self._objects if k.startswith(prefix))
        for key in keys:
            with _LOCK:
                entry = self._objects.get(key)
            if entry is not None:
                yield entry[1]

    def delete(self, keys: Iterable[str]) -> None:
        with _LOCK:
            for key in keys:
                self._objects.pop(key, None)

    def close(self) -> None:
        pass


def open_backend(url: str, config: Config) -> MemoryBackend:
    return MemoryBackend(url.partition("://")[2])


def reset(name: str | None = None) -> None:
    """Forget stored objects (tests)."""
    with _LOCK:
        if name is None:
            _STORES.clear()
        else:
            _STORES.pop(name, None)
