"""Encryptor/Decryptor protocols (import them from :mod:`walship.codec.envelope`).

Kept apart so that push and fetch, which never need them at run time, do not
import ``typing``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Encryptor(Protocol):
    """Encrypts one object body. Created per object by walship.codec.crypto."""

    def header(self) -> dict[str, Any]:
        """The JSON object stored as ``header["encryption"]``."""
        ...

    def start(self, aad: bytes) -> bytes:
        """Bind to the serialized header (associated data); returns leading bytes."""
        ...

    def update(self, data: bytes) -> bytes: ...

    def finalize(self) -> bytes: ...


class Decryptor(Protocol):
    def start(self, aad: bytes) -> None: ...

    def update(self, data: bytes) -> bytes: ...

    def finalize(self) -> bytes:
        """Return the remaining plaintext; raise DecryptionError if truncated."""
        ...


#: (encryption header, object name) -> Decryptor
DecryptorFactory = Callable[[dict[str, Any], str], Decryptor]
