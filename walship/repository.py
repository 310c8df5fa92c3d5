"""Where things live in a repository, and the repository identity record.

    repository.json                          identity (cluster, segment size)
    wal/<TLI+log, 16 hex>/<segment>          segments, .partial, .backup files
    wal/history/<TLI>.history                timeline history files

Segments of one timeline and 4 GiB log id share one prefix, so a range is one
listing. Every object but repository.json is an envelope (codec/envelope.py).
"""

from __future__ import annotations

import json
import time

from . import __version__
from .errors import (
    AlreadyExists,
    ContainerNotFound,
    ForeignClusterError,
    IntegrityError,
    NotFound,
    RepositoryNotFound,
    StorageError,
)
from .pg import FileKind, classify
from .storage.base import CREATE, read_all

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .storage.base import Backend

IDENTITY_KEY = "repository.json"
WAL_PREFIX = "wal/"
HISTORY_PREFIX = "wal/history/"


def key_for(name: str) -> str:
    """Object key of an archive file name (validates the name)."""
    kind = classify(name)
    if kind == FileKind.HISTORY:
        return HISTORY_PREFIX + name
    return f"{WAL_PREFIX}{name[:16]}/{name}"


def name_of(key: str) -> str | None:
    """Archive file name of an object key, or None for other objects."""
    if not key.startswith(WAL_PREFIX):
        return None
    name = key.rsplit("/", 1)[-1]
    try:
        classify(name)
    except Exception:
        return None
    return name if key_for(name) == key else None


class Identity:
    __slots__ = ("pg_version", "system_identifier", "wal_segment_size")

    def __init__(self, system_identifier: int, wal_segment_size: int, pg_version: int | None):
        self.system_identifier = system_identifier
        self.wal_segment_size = wal_segment_size
        self.pg_version = pg_version

    def to_json(self) -> bytes:
        return (
            json.dumps(
                {
                    "walship_repository": 1,
                    "system_identifier": str(self.system_identifier),
                    "wal_segment_size": self.wal_segment_size,
                    "pg_version": self.pg_version,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "created_by": f"walship {__version__}",
                },
                indent=2,
            ).encode()
            + b"\n"
        )


def read_identity(backend: Backend) -> Identity | None:
    try:
        data = read_all(backend.open(IDENTITY_KEY))
    except NotFound:
        return None
    try:
        doc = json.loads(data)
        return Identity(
            int(doc["system_identifier"]), int(doc["wal_segment_size"]), doc.get("pg_version")
        )
    except (ValueError, KeyError, TypeError):
        raise IntegrityError(
            f"{backend.url}/{IDENTITY_KEY} is corrupt",
            hint="restore it from a copy or recreate it with the cluster's system identifier",
        ) from None


def _where(url: str) -> tuple[str, str, str]:
    """(location as the user wrote it, what holds the repository, its name)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme == "file":
        path = rest if sep else url
        return path, "directory", path
    noun = {"s3": "bucket", "gs": "bucket", "az": "container"}.get(scheme, "store")
    return url, noun, rest.split("/", 1)[0]


def repository_missing(
    backend: Backend, missing: ContainerNotFound | None = None
) -> RepositoryNotFound:
    """The one error for "no repository here": ``missing`` when its container is absent.

    Three cases, told apart so the fix is clear: the local directory does
    not exist (the first push creates it); the bucket or container does not
    exist (walship never creates one); it exists but holds no
    ``repository.json`` (wrong path or prefix, or nothing archived yet).
    """
    where, noun, name = _where(backend.url)
    if missing is not None and noun == "directory":
        return RepositoryNotFound(
            f"repository {where} does not exist",
            hint="check `repo` / WALSHIP_REPO (and that its file system is mounted), "
            "or push a WAL file first to create it",
        )
    if missing is not None:
        hint = missing.hint or f"check `repo` / WALSHIP_REPO, or create the {noun}"
        return RepositoryNotFound(
            f"repository {where} does not exist: {noun} {name!r} does not exist",
            hint=f"{hint} (walship never creates a {noun}; the first push then creates "
            "the repository in it)",
        )
    if noun == "directory":
        held = "the directory exists but holds no walship repository: wrong path"
    else:
        held = f"{noun} {name!r} exists but holds no walship repository there: wrong prefix"
    return RepositoryNotFound(
        f"repository {where} has no {IDENTITY_KEY} ({held}, or nothing archived yet)",
        hint="check `repo` / WALSHIP_REPO, or push a WAL file first to create it",
    )


def require_identity(backend: Backend) -> Identity:
    """The repository identity; :class:`RepositoryNotFound` when there is no repository.

    Every command but push reads through this: only the first push creates
    a repository, a reading command must never report an absent one as empty.
    """
    try:
        identity = read_identity(backend)
    except ContainerNotFound as exc:
        raise repository_missing(backend, exc) from None
    if identity is None:
        raise repository_missing(backend)
    return identity


def ensure_identity(backend: Backend, mine: Identity) -> Identity:
    """Record ``mine`` as the repository identity on first use; else check it."""
    try:
        current = read_identity(backend)
    except ContainerNotFound:
        current = None  # a new local repository: put creates it
    if current is None:
        try:
            backend.put(IDENTITY_KEY, [mine.to_json()], mode=CREATE)
            return mine
        except AlreadyExists:
            current = read_identity(backend)
            if current is None:
                raise StorageError(
                    f"{backend.url}/{IDENTITY_KEY}: the store answered 'already exists' but "
                    "holds no object under that name",
                    hint="the store's answer was about something else (a lease, an operation "
                    "in progress); check the object in the store (docs/storage.md)",
                ) from None
    check_identity(backend, current, mine)
    return current


def check_identity(backend: Backend, repo: Identity, mine: Identity) -> None:
    if repo.system_identifier != mine.system_identifier:
        raise ForeignClusterError(
            f"WAL is from database system {mine.system_identifier} but repository "
            f"{backend.url} belongs to system {repo.system_identifier}",
            hint="use a separate repository (repo setting) for each cluster",
        )
    if repo.wal_segment_size != mine.wal_segment_size:
        raise ForeignClusterError(
            f"WAL segment size {mine.wal_segment_size} differs from repository "
            f"{backend.url}'s {repo.wal_segment_size}",
            hint="use a separate repository for each cluster",
        )
