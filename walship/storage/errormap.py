"""How a remote store's error answers map to walship's errors.

Each remote backend (s3.py, gcs.py, azure.py) holds ONE table,
``(HTTP status, service error code) -> outcome``, built with :func:`table`
from :data:`HTTP` and its own groups of :func:`codes`;
:meth:`walship.storage.client.RemoteBackend._answer_error` looks an answer up
with :func:`outcome` and raises the outcome's error. docs/storage.md
("Error mapping") shows the tables.

Lookup order: the exact ``(status, code)``; then ``(ANY_STATUS, code)`` (a
code that means the same whatever status a compatible store sends it with);
then ``(status, ANY_CODE)`` (the rule for a status whatever its code); then
``TRANSIENT`` for 5xx and ``ERROR`` for anything else.

:data:`EXISTS` is kept for the answers the store gives when a create-only
put's own condition fails (the key is taken): ``walship push`` then compares
digests, and a wrong ``EXISTS`` would end as a false conflict, so no other
answer may map to it.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..errors import AlreadyExists, StorageError

#: the create-only put's condition failed: the key is taken (AlreadyExists)
EXISTS = "exists"
#: the object is absent (NotFound)
NOT_FOUND = "not-found"
#: the bucket / container is absent (ContainerNotFound)
NO_CONTAINER = "no-container"
#: credentials refused or access denied (PermissionDenied)
DENIED = "denied"
#: worth retrying under the retry policy (Transient)
TRANSIENT = "transient"
#: the settings point at the wrong place, e.g. region (ConfigError)
CONFIG = "config"
#: final: the request cannot succeed as sent (StorageError)
ERROR = "error"

OUTCOMES = (EXISTS, NOT_FOUND, NO_CONTAINER, DENIED, TRANSIENT, CONFIG, ERROR)

ANY_STATUS = 0
ANY_CODE = "*"

Table = dict[tuple[int, str], str]

#: what HTTP itself says, shared by every store (a store's own entries win)
HTTP: Table = {
    (408, ANY_CODE): TRANSIENT,
    (429, ANY_CODE): TRANSIENT,
    (401, ANY_CODE): DENIED,
    (403, ANY_CODE): DENIED,
}


def codes(found: str, *names: str, status: int = ANY_STATUS) -> Table:
    """Entries mapping each code in ``names`` (at ``status``) to ``found``."""
    return {(status, name): found for name in names}


def table(*groups: Table) -> Table:
    """A store's table: :data:`HTTP`, then ``groups`` (later entries win)."""
    out = dict(HTTP)
    for group in groups:
        out.update(group)
    return out


def outcome(table: Table, status: int, code: str) -> str:
    """The outcome of an error answer with HTTP ``status`` and service ``code``."""
    found = table.get((status, code))
    if found is None:
        found = table.get((ANY_STATUS, code))
    if found is None:
        found = table.get((status, ANY_CODE))
    if found is None:
        found = TRANSIENT if status >= 500 else ERROR
    return found


def pinned_read(chunks: Iterator[bytes], where: str) -> Iterator[bytes]:
    """``chunks`` of a download pinned to one version of the object (S3
    ``If-Match``, Azure ``If-Match`` ETag), where a failed condition is the
    object having been replaced meanwhile, not "already exists"."""
    try:
        yield from chunks
    except AlreadyExists:
        raise StorageError(
            f"{where} was replaced while being read",
            hint="another walship process overwrote it; run the command again",
        ) from None
