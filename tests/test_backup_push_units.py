"""backup-push without a server: PostgreSQL's exclusion rules, backup_label, the part writer."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import pytest

from walship.backup import files, writer
from walship.codec import objects
from walship.config import Config
from walship.manifest import Manifest, part_key
from walship.pg import basebackup
from walship.storage.memory import MemoryBackend

LABEL = """START WAL LOCATION: 0/9000028 (file 000000010000000000000009)
CHECKPOINT LOCATION: 0/9000060
BACKUP METHOD: streamed
BACKUP FROM: standby
START TIME: 2026-12-02 00:30:00 UTC
LABEL: nightly: with a colon
START TIMELINE: 3
"""


def test_parse_backup_label() -> None:
    b = basebackup.parse_backup_label(LABEL)
    assert b.start_lsn == 0x9000028 and b.checkpoint_lsn == 0x9000060
    assert b.start_segment == "000000010000000000000009"
    assert b.start_timeline == 3 and b.backup_from == "standby"
    assert b.label == "nightly: with a colon" and b.start_time == "2026-12-02 00:30:00 UTC"


def test_parse_backup_label_names_what_is_missing() -> None:
    with pytest.raises(ValueError, match="no 'START TIMELINE' line"):
        basebackup.parse_backup_label(LABEL.replace("START TIMELINE: 3\n", ""))
    with pytest.raises(ValueError, match="bad START WAL LOCATION"):
        basebackup.parse_backup_label(LABEL.replace("0/9000028 (file", "0/9000028 (segment"))


def test_backup_history_file_name() -> None:
    assert (
        basebackup.backup_history_file_name(1, 0x9000028, 16 << 20)
        == "000000010000000000000009.00000028.backup"
    )


def test_unlogged_and_temporary_relations_skipped() -> None:
    names = [
        "16384",
        "16384_fsm",
        "16385",
        "16385.1",
        "16385_init",
        "16385_fsm",
        "t3_16390",
        "t3_16390_fsm",
        "PG_VERSION",
        "pg_filenode.map",
    ]
    assert basebackup.skipped_relation_files(names) == {
        "16385",
        "16385.1",
        "16385_fsm",
        "t3_16390",
        "t3_16390_fsm",
    }


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def pgdata(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    for rel, data in {
        "PG_VERSION": b"15\n",
        "global/pg_control": b"\x01" * 8192,
        "global/pg_internal.init": b"cache",
        "base/5/16384": os.urandom(3 << 20) + b"\x00" * 8192,
        "base/5/16384_fsm": b"f" * 8192,
        "base/5/16385": b"u" * 8192,
        "base/5/16385_init": b"i" * 8192,
        "base/5/t3_16386": b"t" * 8192,
        "base/5/pg_internal.init.123": b"cache",
        "base/pgsql_tmp/pgsql_tmp123.0": b"tmp",
        "pg_wal/000000010000000000000001": b"w" * 1000,
        "pg_wal/archive_status/000000010000000000000001.ready": b"",
        "pg_replslot/s1/state": b"slot",
        "pg_stat_tmp/x.stat": b"s",
        "postmaster.pid": b"123",
        "postmaster.opts": b"postgres",
        "backup_label.old": b"old",
        "postgresql.conf": b"# conf\n",
        "current_logfiles": b"stderr log/x\n",
        "empty": b"",
    }.items():
        _write(d / rel, data)
    (d / "pg_notify").mkdir()
    (d / "pg_tblspc").mkdir()
    location = tmp_path / "ts"
    _write(location / "PG_15_202209061" / "5" / "16401", b"T" * 16384)
    _write(location / "PG_14_202107181" / "5" / "16401", b"old version")
    (d / "pg_tblspc" / "16400").symlink_to(location)
    (d / "pg_wal").rename(tmp_path / "wal")  # pg_wal as a link (initdb -X): followed
    (d / "pg_wal").symlink_to(tmp_path / "wal")
    (d / "linked_conf.conf").symlink_to(d / "postgresql.conf")
    (d / "log").symlink_to(tmp_path)  # a link to a directory: not followed (here it loops)
    return d


def test_walk_applies_postgresql_rules(pgdata: Path, tmp_path: Path) -> None:
    found = files.walk(str(pgdata), "PG_15_202209061")
    paths = {f.path for f in found.files}
    assert paths == {
        "PG_VERSION",
        "global/pg_control",
        "base/5/16384",
        "base/5/16384_fsm",
        "base/5/16385_init",
        "postgresql.conf",
        "linked_conf.conf",
        "current_logfiles",
        "empty",
        "pg_tblspc/16400/PG_15_202209061/5/16401",
    }
    dirs = {d.path for d in found.directories}
    assert {"pg_wal", "pg_wal/archive_status", "pg_replslot", "pg_stat_tmp", "pg_notify"} <= dirs
    assert not any(d.startswith(("pg_replslot/", "base/pgsql_tmp")) for d in dirs)
    assert {"pg_tblspc", "pg_tblspc/16400", "pg_tblspc/16400/PG_15_202209061/5"} <= dirs
    assert found.links == {16400: str(tmp_path / "ts")}
    assert found.skipped == ["log"]
    ts = next(f for f in found.files if f.path.startswith("pg_tblspc/"))
    assert ts.tablespace == 16400


def _copy(
    pgdata: Path, found: files.Walk, part_size: int
) -> tuple[Config, MemoryBackend, Manifest, writer.Context]:
    name = f"units-{uuid.uuid4().hex}"
    cfg = Config(repo=f"mem://{name}")
    backend = MemoryBackend(name)
    ctx = writer.Context(
        cfg, backend, "20261202T003000Z", part_size, writer.Progress(found.size), None
    )
    m = Manifest(
        "20261202T003000Z",
        "",
        150000,
        1,
        16 << 20,
        8192,
        0,
        0,
        0,
        1,
        1,
        "",
        "",
        False,
        False,
        "",
        None,
    )
    for job in writer.plan(found.files, part_size):
        res = writer.run_job(ctx, job)
        m.files += res.files
        m.parts += res.parts
    return cfg, backend, m, ctx


def _restore(cfg: Config, backend: MemoryBackend, m: Manifest, path: str) -> bytes:
    entry = next(f for f in m.files if f.path == path)
    out = b""
    for index, offset, length in entry.chunks:
        with objects.open_object(cfg, backend, part_key(m.name, index)) as obj:
            out += b"".join(obj.raw)[offset : offset + length]
    return out


def test_parts_bundle_small_files_and_split_large_ones(pgdata: Path) -> None:
    found = files.walk(str(pgdata), "PG_15_202209061")
    cfg, backend, m, ctx = _copy(pgdata, found, 1 << 20)
    assert [p.index for p in sorted(m.parts, key=lambda p: p.index)] == list(range(len(m.parts)))
    big = next(f for f in m.files if f.path == "base/5/16384")
    assert len(big.chunks) == 4 and sum(c[2] for c in big.chunks) == big.size
    small_parts = {f.chunks[0][0] for f in m.files if 0 < f.size < 1 << 20}
    assert len(small_parts) == 1  # all small files in one part
    for f in m.files:
        data = _restore(cfg, backend, m, f.path)
        if not f.path.startswith("pg_tblspc/"):
            assert data == (pgdata / f.path).read_bytes(), f.path
        assert hashlib.sha256(data).hexdigest() == f.sha256
    assert ctx.progress.done == found.size == sum(f.size for f in m.files)


def test_changed_files_copied_at_their_walk_size(pgdata: Path) -> None:
    found = files.walk(str(pgdata), "PG_15_202209061")
    with open(pgdata / "base/5/16384_fsm", "r+b") as fh:
        fh.truncate(100)  # shrank: padded with zeros
    with open(pgdata / "postgresql.conf", "ab") as fh:
        fh.write(b"grown = after the walk\n")  # grew: cut at the walk's size
    os.unlink(pgdata / "current_logfiles")  # vanished: left out
    cfg, backend, m, ctx = _copy(pgdata, found, 1 << 20)
    assert _restore(cfg, backend, m, "base/5/16384_fsm") == b"f" * 100 + bytes(8192 - 100)
    assert _restore(cfg, backend, m, "postgresql.conf") == b"# conf\n"
    assert "current_logfiles" not in {f.path for f in m.files}
    assert ctx.vanished == ["current_logfiles"]


def test_part_size_is_whole_mebibytes() -> None:
    assert writer.effective_part_size((3 << 20) + 12345) == 3 << 20
    assert writer.effective_part_size(1) == 1 << 20


def _manifest(name: str, start_lsn: int, stop_lsn: int, stop_time: str) -> Manifest:
    return Manifest(
        name,
        f"label {name}",
        150004,
        77,
        16 << 20,
        8192,
        start_lsn,
        stop_lsn,
        start_lsn + 0x60,
        1,
        1,
        "2026-12-02T00:30:00.000000Z",
        stop_time,
        False,
        False,
        "START WAL LOCATION: x",
        None,
    )


def _listing(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    from walship import cli

    code = cli.main(["--config", os.devnull, "--repo", REPO, "backup-list", *extra])
    out, err = capsys.readouterr()
    return code, out, err


REPO = f"mem://list-{uuid.uuid4().hex}"


def test_backup_list_rows_wal_ok_and_leftovers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from walship import repository
    from walship.backup.push import write_manifest
    from walship.codec import objects as objs

    cfg = Config(repo=REPO)
    backend = MemoryBackend(REPO.removeprefix("mem://"))
    code, out, err = _listing(capsys)
    assert code == 1 and "has no repository.json" in err  # not an empty list
    repository.ensure_identity(backend, repository.Identity(77, 16 << 20, 15))
    code, out, err = _listing(capsys)
    assert (code, out, err) == (0, "no complete base backup\n", "")

    newer = _manifest("20261202T010000Z", 0x5000028, 0x6000100, "2026-12-02T01:00:09.500000Z")
    older = _manifest("20261202T003000Z", 0x2000028, 0x2000100, "2026-12-02T00:30:04.000000Z")
    for m in (newer, older):
        write_manifest(cfg, backend, m)
    # the WAL of the older one only (segment 2); segment 6 of the newer one is missing
    for seg in ("000000010000000000000002", "000000010000000000000005"):
        header = objs.new_header(seg, "segment", 1, "0" * 64, cfg)
        objs.put_object(cfg, backend, repository.key_for(seg), header, [b"x"])
    backend.put("basebackups/20261202T020000Z/part-000000", [b"leftover"])

    code, out, err = _listing(capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["name", "label", "stop"]
    assert lines[1].startswith("20261202T003000Z  label 20261202T003000Z  2026-12-02 00:30:04Z")
    assert lines[1].split()[-1] == "ok" and lines[1].split()[-2] == "4s"
    assert lines[2].startswith("20261202T010000Z") and lines[2].endswith("MISSING")
    assert lines[3] == "1 incomplete backup (leftovers): walship delete --garbage"

    code, out, err = _listing(capsys, "--json")
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["20261202T003000Z", "20261202T010000Z"]
    assert rows[0] | {"duration_s": 4.0} == rows[0]
    assert {k: rows[1][k] for k in ("start_lsn", "stop_lsn", "timeline", "wal_ok")} == {
        "start_lsn": "0/5000028",
        "stop_lsn": "0/6000100",
        "timeline": 1,
        "wal_ok": False,
    }
    assert rows[1]["stop_time"] == "2026-12-02T01:00:09.500000Z"

    # an unreadable manifest: reported, exit 1, the others still listed
    backend.put("basebackups/20261202T020000Z/manifest.json", [b"not an envelope"])
    code, out, err = _listing(capsys, "--json")
    assert code == 1 and len(json.loads(out)) == 2
    assert "backup 20261202T020000Z:" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("label", ["two\nlines", "x" * 1024])
def test_label_checked_before_connecting(label: str, capsys: pytest.CaptureFixture[str]) -> None:
    from walship import cli

    code = cli.main(["--config", os.devnull, "--repo", REPO, "backup-push", "--label", label])
    _out, err = capsys.readouterr()
    assert code == 2 and "--label must be one line of at most 1023 bytes" in err


def _page(blkno: int, lsn: int, fill: int) -> bytes:
    import struct

    from walship.pg.checksum import page_checksum

    page = bytearray(struct.pack("<II", lsn >> 32, lsn & 0xFFFFFFFF) + bytes(8184))
    page[24:8192] = bytes([fill]) * (8192 - 24)
    struct.pack_into("<H", page, 8, page_checksum(page, blkno))
    return bytes(page)


def test_page_checksums_verified_while_copying(tmp_path: Path) -> None:
    """Corrupt pages are found by absolute block number (a .1 segment starts at 131072);
    pages changed since the backup started (LSN at or past it) and new zero pages are not."""
    d = tmp_path / "data"
    start = 0x5000000
    seg1 = [_page(131072 + i, 0x100, i + 1) for i in range(4)]
    seg1[2] = seg1[2][:5000] + b"\xee" * 8 + seg1[2][5008:]  # corrupt: block 131074
    newer = bytearray(_page(131075, start + 8, 9))
    newer[6000] ^= 0xFF  # torn, but written after the backup started: not an error
    seg1[3] = bytes(newer)
    _write(d / "base" / "5" / "16384.1", b"".join(seg1) + bytes(8192))  # + a new page
    _write(d / "base" / "5" / "16390", _page(0, 0x100, 7))
    _write(d / "PG_VERSION", b"15\n")
    found = files.walk(str(d), "PG_15_202209061")
    name = f"units-{uuid.uuid4().hex}"
    cfg = Config(repo=f"mem://{name}")
    ctx = writer.Context(
        cfg,
        MemoryBackend(name),
        "20261202T003000Z",
        1 << 20,
        writer.Progress(found.size),
        writer.Checker(start, 8192),
    )
    entries = []
    for job in writer.plan(found.files, 1 << 20):
        entries += writer.run_job(ctx, job).files
    assert ctx.checksum_failures == [{"path": "base/5/16384.1", "block": 131074}]
    assert {e.path for e in entries} == {"base/5/16384.1", "base/5/16390", "PG_VERSION"}
