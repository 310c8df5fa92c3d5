"""PostgreSQL's ``backup_manifest`` file (PostgreSQL 13+), written byte for byte. No I/O.

``pg_basebackup`` leaves a ``backup_manifest`` in every backup and
``pg_verifybackup`` checks a restored copy against it: every file's size and
checksum, the WAL needed to make the copy consistent, and the manifest's own
SHA-256. backup-fetch writes one so that a walship restore verifies the same
way. The text is what ``src/backend/backup/backup_manifest.c`` writes:

    { "PostgreSQL-Backup-Manifest-Version": 1,
    "Files": [
    { "Path": "base/1/1255", "Size": 8192, "Last-Modified": "2026-12-02 01:02:03 GMT", \
"Checksum-Algorithm": "SHA256", "Checksum": "ab..." },
    ...
    ],
    "WAL-Ranges": [
    { "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }
    ],
    "Manifest-Checksum": "<sha256 of all the text before this line>"}

PostgreSQL 17 and later write version 2, with ``"System-Identifier"`` after
the version (``pg_verifybackup`` 17+ checks it against the backup's
``pg_control``). A path that is not valid UTF-8 is written hex-encoded as
``"Encoded-Path"``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Sequence

#: the first major version whose manifests are version 2 (with System-Identifier)
MANIFEST_V2_MAJOR = 17

_JSON_ESCAPES = {
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    '"': '\\"',
    "\\": "\\\\",
}


def _major(pg_version: int) -> int:
    """15, or a server_version_num (150004) -> 15; 9.6-style numbers are not supported."""
    major = pg_version // 10000 if pg_version >= 10000 else pg_version
    if major < 13:
        raise ValueError(
            f"PostgreSQL {major} has no backup manifests (they exist from PostgreSQL 13)"
        )
    return major


def escape_json(text: str) -> str:
    """A JSON string literal as PostgreSQL's escape_json writes it (non-ASCII as is)."""
    out = ['"']
    for ch in text:
        esc = _JSON_ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
        elif ch < " ":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def format_lsn(lsn: int) -> str:
    """``%X/%X``, as the manifest writes LSNs."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def _path_field(path: str | bytes) -> str:
    # a str path holds a non-UTF-8 name as surrogate escapes (os.fsdecode on Linux)
    raw = path if isinstance(path, bytes) else path.encode("utf-8", "surrogateescape")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return f'"Encoded-Path": "{raw.hex()}"'
    if "\0" in text:
        raise ValueError(f"file name {text!r} contains a NUL byte")
    return f'"Path": {escape_json(text)}'


def _last_modified(mtime: float) -> str:
    # PostgreSQL stores st_mtime (whole seconds) and prints it in GMT
    return time.strftime("%Y-%m-%d %H:%M:%S GMT", time.gmtime(int(mtime // 1)))


def file_entry(path: str | bytes, size: int, mtime: float, sha256: str) -> str:
    """One ``Files`` entry (without the separator before it)."""
    if size < 0:
        raise ValueError(f"negative size {size} for {path!r}")
    digest = sha256.lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"{sha256!r} is not a SHA-256 hex digest (file {path!r})")
    return (
        f"{{ {_path_field(path)}, "
        f'"Size": {size}, '
        f'"Last-Modified": "{_last_modified(mtime)}", '
        f'"Checksum-Algorithm": "SHA256", "Checksum": "{digest}" }}'
    )


def render(
    files: Iterable[tuple[str | bytes, int, float, str]],
    wal_ranges: Sequence[tuple[int, int, int]],
    *,
    pg_version: int,
    system_identifier: int,
) -> bytes:
    """The ``backup_manifest`` PostgreSQL would write for these files and WAL ranges.

    ``files``: (path relative to the data directory as PostgreSQL names it --
    ``base/5/16384``, ``pg_tblspc/16400/PG_15_202209061/5/16401`` --, size,
    mtime in epoch seconds, SHA-256 hex digest of the contents), in the order
    they are to be listed. ``wal_ranges``: (timeline, start LSN, end LSN),
    newest timeline first as PostgreSQL lists them (one range unless the
    timeline changed during the backup). ``pg_version``: the major version (15)
    or server_version_num (150004): 17 and later write manifest version 2 with
    ``system_identifier``.
    """
    major = _major(pg_version)
    if not wal_ranges:
        raise ValueError("a backup manifest needs at least one WAL range")
    if major >= MANIFEST_V2_MAJOR:
        head = (
            '{ "PostgreSQL-Backup-Manifest-Version": 2,\n'
            f'"System-Identifier": {system_identifier},\n'
            '"Files": ['
        )
    else:
        head = '{ "PostgreSQL-Backup-Manifest-Version": 1,\n"Files": ['
    parts = [head]
    first = True
    for path, size, mtime, digest in files:
        parts.append("\n" if first else ",\n")
        parts.append(file_entry(path, size, mtime, digest))
        first = False
    parts.append('\n],\n"WAL-Ranges": [\n')
    for i, (tli, start, end) in enumerate(wal_ranges):
        if start > end:
            raise ValueError(
                f"WAL range of timeline {tli} starts after it ends "
                f"({format_lsn(start)} > {format_lsn(end)})"
            )
        parts.append(
            f"{'' if i == 0 else ',' + chr(10)}"
            f'{{ "Timeline": {tli}, "Start-LSN": "{format_lsn(start)}", '
            f'"End-LSN": "{format_lsn(end)}" }}'
        )
    parts.append("\n],\n")
    body = "".join(parts).encode("utf-8", "surrogateescape")
    checksum = hashlib.sha256(body).hexdigest()
    return body + f'"Manifest-Checksum": "{checksum}"}}\n'.encode("ascii")
