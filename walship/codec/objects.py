"""Encode/decode repository objects with the configured codec (shared by commands).

The encryption module is imported only when encryption is configured for
writing, or when an object being read is encrypted.
"""

from __future__ import annotations

import time

from .. import __version__
from ..errors import NotFound
from . import envelope

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import Any

    from ..config import Config
    from ..storage.base import Backend, ObjectInfo


def make_encryptor(cfg: Config) -> envelope.Encryptor | None:
    if getattr(cfg, "encryption", "none") in (None, "none"):
        return None
    from . import crypto

    return crypto.make_encryptor(cfg)


def decryptor_factory(cfg: Config) -> envelope.DecryptorFactory:
    def factory(enc: dict[str, Any], where: str) -> envelope.Decryptor:
        from . import crypto

        return crypto.make_decryptor(cfg, enc, where)

    return factory


def new_header(
    name: str, kind: str, raw_size: int, raw_sha256: str, cfg: Config, **extra: Any
) -> dict[str, Any]:
    header: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "compression": cfg.compression,
        "raw_size": raw_size,
        "raw_sha256": raw_sha256,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "writer": f"walship {__version__}",
    }
    header.update(extra)
    return header


def put_object(
    cfg: Config,
    backend: Backend,
    key: str,
    header: dict[str, Any],
    raw_chunks: Iterable[bytes],
    *,
    mode: str = "create",
    compressed: Iterable[bytes] | None = None,
) -> ObjectInfo:
    """Store an object; ``compressed`` is its body already compressed per ``header``."""
    encryptor = make_encryptor(cfg)
    body = envelope.encode(
        header,
        raw_chunks,
        level=cfg.compression_level,
        threads=cfg.compression_threads,
        encryptor=encryptor,
        compressed=compressed,
    )
    return backend.put(key, body, mode=mode, metadata=envelope.metadata_for(header))


class OpenedObject:
    """A decoding object stream: ``header`` and verified ``raw`` chunks."""

    def __init__(self, header: dict[str, Any], raw: Iterator[bytes], closer: Any) -> None:
        self.header = header
        self.raw = raw
        self._closer = closer

    def close(self) -> None:
        close = getattr(self.raw, "close", None)
        if close is not None:
            close()  # ends decoding helpers (read-ahead, hashing) of an unfinished read
        self._closer()

    def __enter__(self) -> OpenedObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_object(
    cfg: Config, backend: Backend, key: str, *, check_digest: bool = True
) -> OpenedObject:
    """Open and start decoding ``key``; raises NotFound before any byte.

    ``check_digest=False``: see :func:`walship.codec.envelope.decode`.
    """
    stream = backend.open(key)
    try:
        header, raw = envelope.decode(
            iter(stream),
            f"{backend.url}/{key}",
            decryptor_factory=decryptor_factory(cfg),
            check_digest=check_digest,
        )
    except BaseException:
        stream.close()
        raise
    return OpenedObject(header, raw, stream.close)


def stored_digest(cfg: Config, backend: Backend, key: str) -> str | None:
    """Raw SHA-256 of an existing object: from metadata, else from its header.

    ``None`` when there is no object under ``key`` (also when it disappears
    between the HEAD and the GET); an object that is not walship's raises
    IntegrityError.
    """
    info = backend.head(key)
    if info is None:
        return None
    digest = info.metadata.get(envelope.META_SHA256)
    if digest:
        return digest
    try:
        stream = backend.open(key)
    except NotFound:
        return None
    try:
        header, _, _ = envelope.read_header(iter(stream), f"{backend.url}/{key}")
    finally:
        stream.close()
    return str(header["raw_sha256"])
