"""The files a base backup copies: a walk of the data directory and its tablespaces.

What is left out is PostgreSQL's rule (walship/pg/basebackup.py); this module
only reads directories. Sizes, modes and mtimes are those seen now, at the
walk, which runs after pg_backup_start: the copy then reads exactly that
many bytes of each file (WAL replay repairs what changed meanwhile).

Links to files are followed (configuration files may be links), and so is a
``pg_wal`` link; other links to directories are not (they could loop) and
are reported as skipped. Each link of ``pg_tblspc`` is a tablespace,
recorded with its location and copied under ``pg_tblspc/<oid>/<version
dir>/``. A file or
directory that disappears during the walk is skipped, as pg_basebackup does.
"""

from __future__ import annotations

import os
import stat

from ..errors import WalshipError
from ..manifest import DirEntry
from ..pg import basebackup


class Source:
    """One regular file to copy."""

    __slots__ = ("abspath", "mode", "mtime", "path", "size", "tablespace")

    def __init__(self, path: str, abspath: str, st: os.stat_result, tablespace: int | None) -> None:
        self.path = path
        self.abspath = abspath
        self.size = st.st_size
        self.mode = stat.S_IMODE(st.st_mode)
        self.mtime = st.st_mtime
        self.tablespace = tablespace


class Walk:
    """Files, directories and tablespace links found under a data directory."""

    def __init__(self, version_dir: str) -> None:
        self.version_dir = version_dir  # what PostgreSQL creates in a tablespace location
        self.files: list[Source] = []
        self.directories: list[DirEntry] = []
        self.links: dict[int, str] = {}  # tablespace oid -> location (the link's target)
        self.skipped: list[str] = []  # special files and unknown links, for a warning

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


def _unreadable(path: str) -> WalshipError:
    return WalshipError(
        f"cannot read {path} as user {_user()}: backup-push reads the data directory",
        hint="run it as the user that owns the data directory (usually postgres), e.g. "
        "`sudo -u postgres walship backup-push`",
    )


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return str(os.geteuid())


def _scandir(path: str) -> list[os.DirEntry[str]] | None:
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda e: e.name)
    except FileNotFoundError:
        return None
    except PermissionError:
        raise _unreadable(path) from None


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
    except PermissionError:
        raise _unreadable(path) from None


def walk(pgdata: str, version_dir: str) -> Walk:
    """Walk ``pgdata`` (and each tablespace's ``version_dir``) by PostgreSQL's rules."""
    out = Walk(version_dir)
    _walk_dir(out, pgdata, "", None)
    return out


def _walk_dir(out: Walk, absdir: str, reldir: str, tablespace: int | None) -> None:
    entries = _scandir(absdir)
    if entries is None:
        return
    skip_rel: set[str] = set()
    if basebackup.is_database_dir(reldir):
        skip_rel = basebackup.skipped_relation_files([e.name for e in entries])
    for entry in entries:
        name = entry.name
        if basebackup.excluded_name(name):
            continue
        rel = f"{reldir}/{name}" if reldir else name
        if reldir == "pg_tblspc" and tablespace is None and entry.is_symlink():
            _walk_tablespace(out, entry.path, rel, name)
            continue
        st = _stat(entry.path)
        if st is None:
            continue
        if stat.S_ISDIR(st.st_mode):
            if entry.is_symlink() and rel != "pg_wal":
                out.skipped.append(rel)  # a linked directory: not followed (it may loop)
                continue
            out.directories.append(DirEntry(rel, stat.S_IMODE(st.st_mode), tablespace))
            if reldir == "" and basebackup.contents_excluded(name):
                if name == "pg_wal":
                    for sub in basebackup.WAL_SUBDIRS:
                        sst = _stat(os.path.join(entry.path, sub))
                        if sst is not None and stat.S_ISDIR(sst.st_mode):
                            out.directories.append(
                                DirEntry(f"{rel}/{sub}", stat.S_IMODE(sst.st_mode), None)
                            )
                continue
            _walk_dir(out, entry.path, rel, tablespace)
        elif stat.S_ISREG(st.st_mode):
            if basebackup.excluded_file(name) or name in skip_rel:
                continue
            out.files.append(Source(rel, entry.path, st, tablespace))
        else:
            out.skipped.append(rel)


def _walk_tablespace(out: Walk, link: str, rel: str, name: str) -> None:
    if not name.isdigit():
        out.skipped.append(rel)
        return
    oid = int(name)
    try:
        location = os.readlink(link)
    except FileNotFoundError:
        return
    st = _stat(link)
    if st is None or not stat.S_ISDIR(st.st_mode):
        out.skipped.append(rel)  # a dangling link: the tablespace was dropped meanwhile
        return
    out.links[oid] = location
    out.directories.append(DirEntry(rel, stat.S_IMODE(st.st_mode), oid))
    version = out.version_dir
    vst = _stat(os.path.join(link, version))
    if vst is None:
        return
    out.directories.append(DirEntry(f"{rel}/{version}", stat.S_IMODE(vst.st_mode), oid))
    _walk_dir(out, os.path.join(link, version), f"{rel}/{version}", oid)
