"""PostgreSQL-format backup_manifest (walship/pg/backup_manifest.py).

Against real pg_basebackup / pg_verifybackup of PostgreSQL 15 (manifest
version 1) and 18 (version 2): rendering the original's own entries gives the
original byte for byte; a manifest rendered from the backup directory's files
is accepted by pg_verifybackup, with and without WAL parsing; and a file
changed afterwards is reported.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator

import pytest
from pgharness import Cluster, Workdir, run

from walship.pg import parse_lsn
from walship.pg.backup_manifest import escape_json, render

SHA_A = hashlib.sha256(b"a").hexdigest()
# pg_verifybackup skips these by default; walship's restores do not list them either
NOT_LISTED = ("backup_manifest", "pg_wal")


# --- the format -------------------------------------------------------------


def test_version_1_layout_and_manifest_checksum() -> None:
    text = render(
        [("base/1/1255", 8192, 1764637323.9, SHA_A), ("PG_VERSION", 3, 0, SHA_A.upper())],
        [(1, 0x2000028, 0x2000100)],
        pg_version=15,
        system_identifier=7,
    )
    body, _, tail = text.rpartition(b'"Manifest-Checksum": "')
    assert tail == hashlib.sha256(body).hexdigest().encode() + b'"}\n'
    assert body.decode() == (
        '{ "PostgreSQL-Backup-Manifest-Version": 1,\n'
        '"Files": [\n'
        '{ "Path": "base/1/1255", "Size": 8192, "Last-Modified": "2025-12-02 01:02:03 GMT", '
        f'"Checksum-Algorithm": "SHA256", "Checksum": "{SHA_A}" }},\n'
        '{ "Path": "PG_VERSION", "Size": 3, "Last-Modified": "1970-01-01 00:00:00 GMT", '
        f'"Checksum-Algorithm": "SHA256", "Checksum": "{SHA_A}" }}\n'
        "],\n"
        '"WAL-Ranges": [\n'
        '{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }\n'
        "],\n"
    )
    assert json.loads(text)["Files"][0]["Size"] == 8192


def test_version_2_has_the_system_identifier_and_timelines_in_order() -> None:
    text = render(
        [],
        [(3, 0x5_0000_0000, 0x5_0000_0100), (2, 0x4_FFFF_FF00, 0x5_0000_0000)],
        pg_version=180001,
        system_identifier=7451234567890123456,
    ).decode()
    assert text.startswith(
        '{ "PostgreSQL-Backup-Manifest-Version": 2,\n'
        '"System-Identifier": 7451234567890123456,\n"Files": [\n],\n'
    )
    doc = json.loads(text)
    assert doc["WAL-Ranges"] == [
        {"Timeline": 3, "Start-LSN": "5/0", "End-LSN": "5/100"},
        {"Timeline": 2, "Start-LSN": "4/FFFFFF00", "End-LSN": "5/0"},
    ]
    assert (
        '"Version": 1' not in render([], [(1, 0, 1)], pg_version=16, system_identifier=1).decode()
    )


def test_names_are_escaped_or_hex_encoded_like_postgresql() -> None:
    assert escape_json('a"b\\c\n\t\x01é/') == '"a\\"b\\\\c\\n\\t\\u0001é/"'
    odd = os.fsdecode(b"odd\xffname")
    text = render(
        [(odd, 1, 0, SHA_A), (b"raw\xfe", 1, 0, SHA_A), ("café", 1, 0, SHA_A)],
        [(1, 0, 1)],
        pg_version=15,
        system_identifier=1,
    )
    files = json.loads(text)["Files"]
    assert files[0]["Encoded-Path"] == b"odd\xffname".hex()
    assert files[1]["Encoded-Path"] == b"raw\xfe".hex()
    assert files[2]["Path"] == "café"
    assert "café".encode() in text  # UTF-8, not \u escapes


@pytest.mark.parametrize(
    ("files", "ranges", "version", "message"),
    [
        ([("x", 1, 0, "abc")], [(1, 0, 1)], 15, "SHA-256"),
        ([("x", -1, 0, SHA_A)], [(1, 0, 1)], 15, "negative size"),
        ([], [], 15, "WAL range"),
        ([], [(1, 5, 4)], 15, "starts after it ends"),
        ([], [(1, 0, 1)], 12, "PostgreSQL 12 has no backup manifests"),
    ],
)
def test_bad_input(
    files: list[tuple[str, int, float, str]],
    ranges: list[tuple[int, int, int]],
    version: int,
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        render(files, ranges, pg_version=version, system_identifier=1)


# --- against pg_basebackup and pg_verifybackup ---------------------------------


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _directory_files(root: str) -> list[tuple[str, int, float, str]]:
    """(path, size, mtime, sha256) of every file a restore lists, as walship would."""
    found = []
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        rel_dir = os.path.relpath(dirpath, os.fsencode(root))
        if rel_dir == b".":
            dirnames[:] = [d for d in dirnames if os.fsdecode(d) not in NOT_LISTED]
        for name in filenames:
            path = os.path.join(dirpath, name)
            rel = os.fsdecode(os.path.normpath(os.path.join(rel_dir, name)))
            if rel in NOT_LISTED:
                continue
            st = os.stat(path)
            found.append((rel, st.st_size, st.st_mtime, _sha256(os.fsdecode(path))))
    found.sort()
    return found


def _system_identifier(cluster: Cluster) -> int:
    out = run([cluster.bin("pg_controldata"), "-D", cluster.datadir]).stdout
    return int(re.search(r"Database system identifier:\s+(\d+)", out).group(1))  # type: ignore[union-attr]


def _verifybackup(cluster: Cluster, backup: str, *args: str) -> tuple[int, str]:
    proc = run([cluster.bin("pg_verifybackup"), *args, backup], check=False)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture
def basebackup(request: pytest.FixtureRequest, work: Workdir) -> Iterator[tuple[Cluster, str]]:
    """A real plain-format pg_basebackup (WAL streamed into it) with a SHA-256 manifest."""
    cluster = Cluster(request.param, work)
    cluster.initdb()
    # names a manifest must escape or hex-encode (pg_basebackup copies unknown files)
    for name in (b"odd\xffname", b'quote" back\\slash', "café".encode()):
        path = os.path.join(os.fsencode(cluster.datadir), name)
        with open(path, "wb") as fh:
            fh.write(b"walship " + name)
        if os.geteuid() == 0:
            os.chown(path, os.stat(cluster.datadir).st_uid, -1)
    try:
        cluster.start()
        cluster.pgbench("-i", "-s", "1", "-q")
        dest = os.path.join(work.path, "backup")
        run(
            [
                cluster.bin("pg_basebackup"),
                "-h",
                cluster.sockdir,
                "-p",
                str(cluster.port),
                "-U",
                "postgres",
                "-D",
                dest,
                "-Fp",
                "-X",
                "stream",
                "-c",
                "fast",
                "--manifest-checksums=SHA256",
            ]
        )
    finally:
        cluster.stop()
    yield cluster, dest


def _last_modified(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S GMT")))


@pytest.mark.pg
@pytest.mark.slow
@pytest.mark.parametrize("basebackup", [15, 18], indirect=True)
def test_rendered_manifest_is_what_postgresql_writes(basebackup: tuple[Cluster, str]) -> None:
    cluster, dest = basebackup
    with open(os.path.join(dest, "backup_manifest"), "rb") as fh:
        original = fh.read()
    doc = json.loads(original)
    entries = [
        (
            f["Path"] if "Path" in f else bytes.fromhex(f["Encoded-Path"]),
            f["Size"],
            _last_modified(f["Last-Modified"]),
            f["Checksum"],
        )
        for f in doc["Files"]
    ]
    assert any("Encoded-Path" in f for f in doc["Files"])
    ranges = [
        (r["Timeline"], parse_lsn(r["Start-LSN"]), parse_lsn(r["End-LSN"]))
        for r in doc["WAL-Ranges"]
    ]
    sysid = _system_identifier(cluster)
    if cluster.major >= 17:
        assert doc["System-Identifier"] == sysid
    assert render(entries, ranges, pg_version=cluster.major, system_identifier=sysid) == original


@pytest.mark.pg
@pytest.mark.slow
@pytest.mark.parametrize("basebackup", [15, 18], indirect=True)
def test_pg_verifybackup_accepts_a_manifest_rendered_from_the_files(
    basebackup: tuple[Cluster, str],
) -> None:
    cluster, dest = basebackup
    manifest_path = os.path.join(dest, "backup_manifest")
    with open(manifest_path, "rb") as fh:
        original = json.loads(fh.read())
    ranges = [
        (r["Timeline"], parse_lsn(r["Start-LSN"]), parse_lsn(r["End-LSN"]))
        for r in original["WAL-Ranges"]
    ]
    files = _directory_files(dest)
    assert len(files) == len(original["Files"])
    rendered = render(
        files, ranges, pg_version=cluster.major, system_identifier=_system_identifier(cluster)
    )
    with open(manifest_path, "wb") as fh:
        fh.write(rendered)

    for args in (["--no-parse-wal"], []):
        rc, out = _verifybackup(cluster, dest, *args)
        assert rc == 0, out
        assert "successfully verified" in out

    # a file changed after the manifest was written is caught (size unchanged)
    victim = next(f for f, size, _m, _c in files if f.startswith("base/") and size >= 8192)
    with open(os.path.join(dest, victim), "r+b") as fh:
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 0xFF]))
    rc, out = _verifybackup(cluster, dest, "--no-parse-wal")
    assert rc != 0
    assert f'"{victim}"' in out and "checksum mismatch" in out
