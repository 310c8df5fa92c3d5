"""The walship exception tree.

Every failure walship reports is one of these; the CLI turns each into a single
line on stderr and an exit code (see docs/exit-codes.md). Nothing outside a
storage backend module ever sees an SDK exception: backends translate them at
their boundary.

    WalshipError                  base; ``exit_code`` = 1, ``hint`` = what to do
    ├── UsageError                bad command line (exit 2)
    │   └── ConfigError           bad, unknown or missing setting (exit 2)
    ├── StorageError              the repository could not do what was asked
    │   ├── NotFound              this object is authoritatively absent
    │   ├── AlreadyExists         a create-only put found the key taken
    │   ├── ContainerNotFound     the bucket / container / directory is missing
    │   │                         (NOT a NotFound: fetch must never read it as
    │   │                         "segment absent")
    │   ├── RepositoryNotFound    no walship repository there: the directory, bucket
    │   │                         or container is missing, or holds no
    │   │                         repository.json (never a NotFound either)
    │   ├── PermissionDenied      credentials rejected or access refused
    │   └── Transient             worth retrying (timeouts, resets, 5xx, 429)
    ├── IntegrityError            an object is corrupt, truncated or tampered
    │   └── DecryptionError       authenticated decryption failed
    ├── KeyNotConfigured          an object needs a key id that is not configured
    ├── ConflictError             push refused: the name holds different content (exit 3)
    └── InvalidWalError           not a WAL file, or bad file name (exit 4)
        └── ForeignClusterError   WAL of another cluster / segment size (exit 4)

Messages never contain secrets: keys, passwords and connection strings are
not interpolated into any message.
"""

from __future__ import annotations


class WalshipError(Exception):
    """Base of every error walship raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.one_line()

    def one_line(self) -> str:
        """The message and hint as one line, safe for a server log."""
        text = self.message if not self.hint else f"{self.message}; {self.hint}"
        return " ".join(text.split())


class UsageError(WalshipError):
    """The command line is wrong."""

    exit_code = 2


class ConfigError(UsageError):
    """A setting is unknown, has a bad value, or a required one is missing."""


class StorageError(WalshipError):
    """The storage backend failed to do what was asked."""


class NotFound(StorageError):
    """The object does not exist (authoritative answer from the store)."""


class AlreadyExists(StorageError):
    """A create-only put found the key already present."""


class ContainerNotFound(StorageError):
    """The bucket, container or repository directory itself does not exist."""


class RepositoryNotFound(StorageError):
    """No walship repository at the configured location (see ``layout.repository_missing``).

    Reading commands raise it when the directory, bucket or container is
    missing, or holds no ``repository.json``; only the first push creates a
    repository. Not a :class:`NotFound`: fetch must never read it as "absent".
    """


class PermissionDenied(StorageError):
    """The store refused access (bad credentials or missing permission)."""


class Transient(StorageError):
    """A fault that may succeed when retried (timeout, reset, 5xx, throttling)."""


class IntegrityError(WalshipError):
    """An object is corrupt, truncated, tampered with, or fails its digest."""


class DecryptionError(IntegrityError):
    """Authenticated decryption failed (tampered, truncated or wrong key)."""


class KeyNotConfigured(WalshipError):
    """An object was encrypted with a key id that is not in the keyring."""


class ConflictError(WalshipError):
    """Push refused: the name is already archived with different content."""

    exit_code = 3


class InvalidWalError(WalshipError):
    """The file is not a WAL file walship accepts, or its name is invalid."""

    exit_code = 4


class ForeignClusterError(InvalidWalError):
    """The WAL belongs to another cluster than the repository's."""
