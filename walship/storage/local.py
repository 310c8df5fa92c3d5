"""Local-directory backend (``file:///path`` or ``/path``): the embedded default.

Crash safety: an object is written to a temporary file in its final
directory, fsynced, then linked to its final name with ``link(2)`` (which
fails if the name exists: the no-overwrite decision is the kernel's, not a
check-then-write), and the directory is fsynced. A crash at any instant leaves
either no object or a whole one, plus at worst a stray ``.walship-tmp-*`` file
that listings ignore.

A delete removes the directories it leaves empty (``wal/<16hex>/``,
``basebackups/<name>/``); a put whose directory vanishes between its makedirs
and creating its temporary file makes it again.

On disk an object is ``b"WSL1"``, a 4-byte big-endian length, the metadata as
JSON, then the body; metadata thus lives and dies atomically with the body.

Ownership: run as root in a repository whose root directory belongs to
another user (postgres), what is created (directories, objects) is given to
that user and group before it appears under its name, so that root running
``walship index`` or ``plan-restore`` never leaves directories the
repository's owner cannot list or write.
"""

from __future__ import annotations

import errno
import json
import os
import struct

from ..errors import (
    AlreadyExists,
    ConfigError,
    ContainerNotFound,
    IntegrityError,
    NotFound,
    PermissionDenied,
    StorageError,
)
from .base import CREATE, IterStream, ObjectInfo, Store, check_key

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import BinaryIO

    from ..config import Config
    from .base import ObjectStream

MAGIC = b"WSL1"
TMP_PREFIX = ".walship-tmp-"
CHUNK = 1 << 20
MAX_META = 1 << 16
#: makedirs + create attempts of a put whose directory a concurrent delete removes
RECREATE_ATTEMPTS = 5


def _os_error(exc: OSError, what: str) -> StorageError:
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return PermissionDenied(
            f"{what}: {exc.strerror}",
            hint="check ownership and permissions (PostgreSQL runs walship as the postgres user)",
        )
    if exc.errno == errno.ENOSPC:
        return StorageError(f"{what}: no space left on device", hint="free space in the repository")
    return StorageError(f"{what}: {exc.strerror or exc}")


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_existing(path: str) -> None:
    """fsync a file someone else wrote (nothing to do when it went away meanwhile)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBackend(Store):
    def __init__(self, root: str) -> None:
        if not os.path.isabs(root):
            raise ConfigError(
                f"local repository path {root!r} is not absolute",
                hint="use an absolute path such as /var/lib/walship/main "
                "(PostgreSQL runs walship in the data directory)",
            )
        self.root = os.path.normpath(root)
        self.url = f"file://{self.root}"
        self._owner: tuple[int, int] | None = None
        self._owner_known = False

    def _give_to(self) -> tuple[int, int] | None:
        """``(uid, gid)`` of the repository root when running as root in a repository
        that belongs to another user: what root creates there is given to that user
        (else ``walship index`` or plan-restore run as root would leave root-owned
        0750 directories its owner, e.g. postgres, can no longer list)."""
        if not self._owner_known:
            if os.geteuid() == 0:
                try:
                    st = os.stat(self.root)
                except OSError:
                    return None  # no root yet: the write fails and says so
                if st.st_uid != 0:
                    self._owner = (st.st_uid, st.st_gid)
            self._owner_known = True
        return self._owner

    # --- helpers ---------------------------------------------------------
    def _path(self, key: str) -> str:
        check_key(key)
        return os.path.join(self.root, *key.split("/"))

    def _check_root(self) -> None:
        if not os.path.isdir(self.root):
            raise ContainerNotFound(
                f"repository directory {self.root} does not exist",
                hint="check the repo setting, or that the file system is mounted",
            )

    def _makedirs(self, directory: str) -> None:
        """Create ``directory`` and parents, making each new entry durable."""
        missing: list[str] = []
        d = directory
        while not os.path.isdir(d):
            missing.append(d)
            parent = os.path.dirname(d)
            if parent == d:
                break
            d = parent
        for d in reversed(missing):
            try:
                os.mkdir(d, 0o750)
            except FileExistsError:
                pass
            else:
                owner = self._give_to()
                if owner is not None:
                    os.chown(d, *owner)
            _fsync_dir(os.path.dirname(d))

    def _create_in(self, directory: str, tmp: str) -> int:
        """Make ``directory`` and create ``tmp`` in it. A delete removes directories it
        empties: when one vanishes between the makedirs and the create, make it again
        (once ``tmp`` is in it, it is not empty and no rmdir can remove it)."""
        for attempt in range(RECREATE_ATTEMPTS):
            try:
                self._makedirs(directory)  # (a parent may vanish under it too)
                return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            except FileNotFoundError:
                if attempt == RECREATE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def _read_meta(fh: BinaryIO, where: str) -> dict[str, str]:
        head = fh.read(8)
        if len(head) != 8 or head[:4] != MAGIC:
            raise IntegrityError(f"{where} is not a walship local object (bad magic)")
        (length,) = struct.unpack(">I", head[4:])
        if length > MAX_META:
            raise IntegrityError(f"{where} has an implausible metadata length")
        raw = fh.read(length)
        try:
            meta = json.loads(raw)
        except ValueError:
            raise IntegrityError(f"{where} has corrupt metadata") from None
        if not isinstance(meta, dict):
            raise IntegrityError(f"{where} has corrupt metadata")
        return {str(k): str(v) for k, v in meta.items()}

    def _info(self, key: str, path: str, fh: BinaryIO) -> ObjectInfo:
        meta = self._read_meta(fh, f"{self.url}/{key}")
        st = os.fstat(fh.fileno())
        return ObjectInfo(key, st.st_size - fh.tell(), meta, st.st_mtime)

    # --- protocol --------------------------------------------------------
    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            with open(path, "rb") as fh:
                return self._info(key, path, fh)
        except FileNotFoundError:
            self._check_root()
            return None
        except NotADirectoryError:
            return None
        except OSError as exc:
            raise _os_error(exc, f"cannot read {path}") from None

    def _put(
        self, key: str, chunks: Iterable[bytes], mode: str, meta: dict[str, str]
    ) -> ObjectInfo:
        path = self._path(key)
        directory, base = os.path.split(path)
        tmp = os.path.join(directory, f"{TMP_PREFIX}{base}-{os.getpid()}-{os.urandom(4).hex()}")
        header = json.dumps(meta, sort_keys=True).encode()
        size = 0
        try:
            fd = self._create_in(directory, tmp)
            try:
                with open(fd, "wb", closefd=True) as fh:
                    owner = self._give_to()
                    if owner is not None:  # before the link: never visible as root's
                        os.fchown(fh.fileno(), *owner)
                    fh.write(MAGIC + struct.pack(">I", len(header)) + header)
                    for chunk in chunks:
                        fh.write(chunk)
                        size += len(chunk)
                    fh.flush()
                    os.fsync(fh.fileno())
                if mode == CREATE:
                    try:
                        os.link(tmp, path)
                    except FileExistsError:
                        # what a caller then reads may be acknowledged ("identical
                        # content"): make durable what its creator may not have (killed
                        # between its link and its fsync of the directory)
                        _fsync_existing(path)
                        _fsync_dir(directory)
                        raise AlreadyExists(f"{self.url}/{key} already exists") from None
                else:
                    os.replace(tmp, path)
                    tmp = ""
                _fsync_dir(directory)
            finally:
                if tmp:
                    try:
                        os.unlink(tmp)
                    except FileNotFoundError:
                        pass
        except OSError as exc:
            raise _os_error(exc, f"cannot write {path}") from None
        return ObjectInfo(key, size, meta, None)

    def open(self, key: str) -> ObjectStream:
        path = self._path(key)
        try:
            fh = open(path, "rb")
        except (FileNotFoundError, NotADirectoryError):
            self._check_root()
            raise NotFound(f"{self.url}/{key} does not exist") from None
        except OSError as exc:
            raise _os_error(exc, f"cannot read {path}") from None
        try:
            info = self._info(key, path, fh)
        except BaseException:
            fh.close()
            raise

        def chunks() -> Iterator[bytes]:
            try:
                while True:
                    try:
                        data = fh.read(CHUNK)
                    except OSError as exc:
                        raise _os_error(exc, f"cannot read {path}") from None
                    if not data:
                        return
                    yield data
            finally:
                fh.close()

        return IterStream(info, chunks(), fh.close)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._check_root()
        slash = prefix.rfind("/")
        dir_key, name_prefix = prefix[: slash + 1], prefix[slash + 1 :]
        start = os.path.join(self.root, *dir_key.split("/")[:-1]) if dir_key else self.root
        yield from self._walk(start, dir_key, name_prefix)

    def _walk(self, directory: str, key_prefix: str, name_prefix: str) -> Iterator[ObjectInfo]:
        try:
            with os.scandir(directory) as it:
                entries = [
                    (e.name + "/" if e.is_dir(follow_symlinks=False) else e.name, e)
                    for e in it
                    if e.name.startswith(name_prefix) and not e.name.startswith(TMP_PREFIX)
                ]
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise _os_error(exc, f"cannot list {directory}") from None
        for sort_name, entry in sorted(entries, key=lambda item: item[0]):
            key = key_prefix + entry.name
            if sort_name.endswith("/"):
                yield from self._walk(entry.path, key + "/", "")
            else:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                yield ObjectInfo(key, st.st_size, None, st.st_mtime)

    def delete(self, keys: Iterable[str]) -> None:
        touched: set[str] = set()
        for key in keys:
            path = self._path(key)
            try:
                os.unlink(path)
                touched.add(os.path.dirname(path))
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise _os_error(exc, f"cannot delete {path}") from None
        parents: set[str] = set()
        for directory in touched:
            try:
                _fsync_dir(directory)
            except FileNotFoundError:
                continue  # a concurrent delete removed it already
            parents |= self._remove_empty(directory)
        for directory in parents:
            try:
                _fsync_dir(directory)
            except FileNotFoundError:
                pass

    def _remove_empty(self, directory: str) -> set[str]:
        """Remove ``directory`` and then its parents while they are empty, never the
        repository's root nor its top-level directories (``wal/``, ``basebackups/``).
        rmdir(2) refuses a directory that is not empty, so an object a concurrent
        push links (its temporary file is already there) keeps its directory.
        Returns the directories whose entries changed (to fsync)."""
        changed: set[str] = set()
        d = directory
        while os.path.dirname(d) != self.root and d.startswith(self.root + os.sep):
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.EBUSY):
                    break
                raise _os_error(exc, f"cannot remove the empty directory {d}") from None
            d = os.path.dirname(d)
            changed.add(d)
        changed.discard(directory)
        return changed

    def close(self) -> None:
        pass


def open_backend(url: str, config: Config) -> LocalBackend:
    path = url[len("file://") :] if url.lower().startswith("file://") else url
    return LocalBackend(path)
