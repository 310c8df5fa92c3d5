"""The backup catalog: complete backups (those with a manifest) and garbage.

One listing of ``basebackups/`` tells complete backups from leftovers:

* a backup is *complete* when ``basebackups/<name>/manifest.json`` exists
  (the manifest is written last, create-only);
* any other ``basebackups/<name>/`` prefix is an *incomplete* backup: one in
  progress, or the leftovers of an interrupted one. ``last_write`` (the newest
  object's mtime, when the store reports it) lets retention tell the two apart
  by age (``walship delete --garbage``).

Every command that shows or uses backups (backup-list, backup-fetch, plan-restore
through walship/restore/backups.py, delete, status, drill) goes through here or
through the same manifest format (walship/manifest.py).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..codec import objects
from ..errors import NotFound, UsageError, WalshipError
from ..manifest import (
    BACKUPS_PREFIX,
    MANIFEST_LEAF,
    Manifest,
    backup_prefix,
    manifest_key,
    split_key,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..config import Config
    from ..storage.base import Backend

READERS = 8


@dataclass
class Incomplete:
    """A ``basebackups/<name>/`` prefix without a manifest."""

    name: str
    keys: list[str] = field(default_factory=list)
    size: int = 0
    last_write: float | None = None  # newest object's mtime (None: store did not say)


@dataclass
class Scan:
    """One listing of ``basebackups/``."""

    complete: list[str] = field(default_factory=list)  # names with a manifest, sorted
    incomplete: dict[str, Incomplete] = field(default_factory=dict)
    stored_sizes: dict[str, int] = field(default_factory=dict)  # every object of a name


def scan(backend: Backend) -> Scan:
    out = Scan()
    seen: dict[str, Incomplete] = {}
    complete: set[str] = set()
    for info in backend.list(BACKUPS_PREFIX):
        parts = split_key(info.key)
        if parts is None:
            continue
        name, leaf = parts
        out.stored_sizes[name] = out.stored_sizes.get(name, 0) + info.size
        if leaf == MANIFEST_LEAF:
            complete.add(name)
            continue
        inc = seen.setdefault(name, Incomplete(name))
        inc.keys.append(info.key)
        inc.size += info.size
        if info.mtime is not None and (inc.last_write is None or info.mtime > inc.last_write):
            inc.last_write = info.mtime
    out.complete = sorted(complete)
    out.incomplete = {n: i for n, i in sorted(seen.items()) if n not in complete}
    return out


def read_manifest(cfg: Config, backend: Backend, name: str) -> Manifest:
    """The manifest of backup ``name``; NotFound when there is no complete backup of it."""
    key = manifest_key(name)
    with objects.open_object(cfg, backend, key) as obj:
        data = b"".join(obj.raw)
    return Manifest.from_json(data, f"{backend.url}/{key}")


def load(
    cfg: Config, backend: Backend, names: list[str] | None = None
) -> tuple[list[Manifest], dict[str, str]]:
    """Manifests of complete backups, oldest first (by stop time), and unreadable ones.

    ``names`` defaults to every complete backup of one :func:`scan`. A
    manifest that cannot be read (corrupt, missing key) is reported in the
    second value (name -> one-line reason), never silently dropped.
    """
    if names is None:
        names = scan(backend).complete

    def one(name: str) -> Manifest | WalshipError:
        try:
            return read_manifest(cfg, backend, name)
        except WalshipError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, min(READERS, len(names)))) as pool:
        results = list(pool.map(one, names))
    manifests: list[Manifest] = []
    errors: dict[str, str] = {}
    for name, res in zip(names, results, strict=True):
        if isinstance(res, WalshipError):
            errors[name] = res.one_line()
        else:
            manifests.append(res)
    manifests.sort(key=lambda m: (m.stop_time, m.name))
    return manifests, errors


def find(cfg: Config, backend: Backend, name: str) -> Manifest:
    """The complete backup ``name`` (or ``LATEST``), or a UsageError naming the choices."""
    if name.upper() == "LATEST":
        manifests, _errors = load(cfg, backend)
        if not manifests:
            raise UsageError(
                f"repository {backend.url} holds no complete base backup",
                hint="take one with `walship backup-push`",
            )
        return manifests[-1]
    try:
        return read_manifest(cfg, backend, name)
    except (NotFound, ValueError):
        pass
    names = scan(backend).complete
    shown = ", ".join(names[-5:]) if names else "none"
    raise UsageError(
        f"no complete backup named {name!r} in {backend.url} (newest: {shown})",
        hint="`walship backup-list` shows the names",
    )


def new_name(backend: Backend, when: float | None = None) -> str:
    """A fresh backup name from ``when`` (UTC, to the second), suffixed if taken."""
    base = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if when is None else when))
    for n in range(0, 10000):
        name = base if n == 0 else f"{base}-{n}"
        if next(iter(backend.list(backup_prefix(name))), None) is None:
            return name
    raise WalshipError(f"no free backup name for {base}")
