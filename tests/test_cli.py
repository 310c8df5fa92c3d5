"""The real ``walship`` executable, as PostgreSQL runs it: exit codes and stderr.

Every case runs the console script of the current venv in a subprocess with a
clean ``WALSHIP_*`` environment and checks the exit code PostgreSQL reacts to
(docs/exit-codes.md), that a failure is one line on stderr (never a
traceback), and that a failed fetch leaves nothing at DEST.
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
from helpers import SEG, SYSID, environment_without_settings, make_segment, segment_name

WALSHIP = os.path.join(os.path.dirname(sys.executable), "walship")


class Result:
    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.code = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.lines = [line for line in proc.stderr.splitlines() if line.strip()]

    def __repr__(self) -> str:
        return f"exit {self.code}\nstdout: {self.stdout!r}\nstderr: {self.stderr!r}"


def walship(
    *args: str,
    cwd: Path | str,
    config: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Result:
    full_env = environment_without_settings()
    full_env.update(env or {})
    cmd = [WALSHIP]
    if config is not None:
        cmd += ["--config", str(config)]
    proc = subprocess.run(
        [*cmd, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=60
    )
    return Result(proc)


def one_line_error(result: Result, *fragments: str) -> None:
    """A failure is exactly one ERROR line on stderr, naming what went wrong."""
    assert "Traceback" not in result.stderr, result
    assert len(result.lines) == 1, result
    assert " ERROR " in result.lines[0], result
    for fragment in fragments:
        assert fragment in result.lines[0], (fragment, result)


def write_config(path: Path, **settings: str) -> Path:
    path.write_text("".join(f'{k} = "{v}"\n' for k, v in settings.items()))
    return path


class Site:
    """A data-directory-like cwd (pg_wal/, global/pg_control) and a local repository."""

    def __init__(self, root: Path, sysid: int = SYSID) -> None:
        self.root = root
        self.repo = root / "repo"
        self.pgdata = root / "pgdata"
        (self.pgdata / "pg_wal").mkdir(parents=True)
        (self.pgdata / "global").mkdir()
        # pg_control starts with the system identifier (little-endian uint64)
        (self.pgdata / "global" / "pg_control").write_bytes(struct.pack("<Q", sysid) + b"\0" * 8184)
        self.config = write_config(root / "walship.toml", repo=str(self.repo))

    def wal(self, name: str, data: bytes) -> str:
        """Put a file in pg_wal/ and return its path relative to the data dir (like %p)."""
        (self.pgdata / "pg_wal" / name).write_bytes(data)
        return f"pg_wal/{name}"

    def push(self, source: str, name: str, **kw: object) -> Result:
        return walship("push", source, name, cwd=self.pgdata, config=self.config, **kw)  # type: ignore[arg-type]

    def fetch(self, name: str, dest: str = "pg_wal/RECOVERYXLOG", **kw: object) -> Result:
        kw.setdefault("config", self.config)
        return walship("fetch", name, dest, cwd=self.pgdata, **kw)  # type: ignore[arg-type]

    def object_path(self, name: str) -> Path:
        if name.endswith(".history"):
            return self.repo / "wal" / "history" / name
        return self.repo / "wal" / name[:16] / name

    def leftovers(self) -> list[str]:
        """Files in pg_wal/ other than the WAL files the test put there."""
        return sorted(
            p.name
            for p in (self.pgdata / "pg_wal").iterdir()
            if p.name == "RECOVERYXLOG" or p.name == "RECOVERYHISTORY" or "tmp" in p.name
        )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flip_middle(path: Path, count: int = 64) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    for i in range(mid, mid + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


NAME = segment_name(3)
HISTORY = "00000002.history"
HISTORY_TEXT = b"1\t0/3000060\tno recovery target specified\n"


# --- push ------------------------------------------------------------------------


def test_push_ok_relative_source_and_fetch_back(site: Site) -> None:
    data = make_segment(3)
    r = site.push(site.wal(NAME, data), NAME)
    assert r.code == 0, r
    assert "Traceback" not in r.stderr and len(r.lines) == 1 and f"pushed {NAME}" in r.lines[0]
    assert site.object_path(NAME).is_file()

    r = site.fetch(NAME, "pg_wal/RECOVERYXLOG")
    assert r.code == 0, r
    assert (site.pgdata / "pg_wal" / "RECOVERYXLOG").read_bytes() == data
    assert [p.name for p in (site.pgdata / "pg_wal").iterdir() if "tmp" in p.name] == []


def test_push_duplicate_is_success_and_leaves_object_alone(site: Site) -> None:
    source = site.wal(NAME, make_segment(3))
    assert site.push(source, NAME).code == 0
    obj = site.object_path(NAME)
    before = (digest(obj), obj.stat().st_ino, obj.stat().st_mtime_ns)
    r = site.push(source, NAME)
    assert r.code == 0, r
    assert "already archived with identical content" in r.stderr, r
    assert (digest(obj), obj.stat().st_ino, obj.stat().st_mtime_ns) == before


def test_push_conflict_exits_3_and_keeps_the_archived_object(site: Site) -> None:
    original = make_segment(3)
    assert site.push(site.wal(NAME, original), NAME).code == 0
    obj = site.object_path(NAME)
    before = digest(obj)
    other = make_segment(3, payload=os.urandom(4096))  # same header, different payload
    (site.root / "clone").mkdir()
    clone = site.root / "clone" / NAME
    clone.write_bytes(other)
    r = site.push(str(clone), NAME)
    assert r.code == 3, r
    one_line_error(
        r,
        NAME,
        hashlib.sha256(original).hexdigest(),
        hashlib.sha256(other).hexdigest(),
    )
    assert digest(obj) == before
    r = site.fetch(NAME)
    assert r.code == 0, r
    assert (site.pgdata / "pg_wal" / "RECOVERYXLOG").read_bytes() == original


def test_history_files_are_never_overwritten(site: Site) -> None:
    assert site.push(site.wal(HISTORY, HISTORY_TEXT), HISTORY).code == 0
    assert site.push(f"pg_wal/{HISTORY}", HISTORY).code == 0  # identical again
    (site.root / "h").write_bytes(HISTORY_TEXT.replace(b"3000060", b"3000070"))
    r = site.push(str(site.root / "h"), HISTORY)
    assert r.code == 3, r
    one_line_error(r, HISTORY)
    r = site.fetch(HISTORY, "pg_wal/RECOVERYHISTORY")
    assert r.code == 0, r
    assert (site.pgdata / "pg_wal" / "RECOVERYHISTORY").read_bytes() == HISTORY_TEXT


@pytest.mark.parametrize(
    "name, data, fragment",
    [
        (NAME, os.urandom(SEG), NAME),  # not WAL at all
        (NAME, make_segment(3, magic=0x1234), NAME),  # unknown page magic
        (NAME, make_segment(4), NAME),  # a WAL segment under the wrong name
        (NAME, make_segment(3)[: SEG // 2], NAME),  # truncated
        ("000000010000000000000003.tmp", make_segment(3), "not a WAL file name"),
        ("00000001000000000000000g", make_segment(3), "not a WAL file name"),
    ],
    ids=["random", "magic", "wrong-name", "truncated", "bad-suffix", "lower-case"],
)
def test_push_refuses_what_is_not_wal_with_exit_4(
    site: Site, name: str, data: bytes, fragment: str
) -> None:
    (site.root / "x").write_bytes(data)
    r = site.push(str(site.root / "x"), name)
    assert r.code == 4, r
    one_line_error(r, fragment)
    assert not (site.repo / "wal").exists() or not any(
        p.is_file() for p in (site.repo / "wal").rglob("*")
    )


def test_push_foreign_cluster_exits_4(site: Site) -> None:
    assert site.push(site.wal(NAME, make_segment(3)), NAME).code == 0
    other = segment_name(4)
    r = site.push(site.wal(other, make_segment(4, sysid=SYSID + 1)), other)
    assert r.code == 4, r
    one_line_error(r, str(SYSID + 1), str(SYSID))
    assert not site.object_path(other).exists()


def test_push_missing_source_exits_1_so_postgres_retries(site: Site) -> None:
    r = site.push("pg_wal/" + NAME, NAME)
    assert r.code == 1, r
    one_line_error(r, "does not exist")


def test_push_bad_config_is_a_usage_error(site: Site) -> None:
    bad = write_config(site.root / "bad.toml", repo=str(site.repo), compresion="zstd")
    source = site.wal(NAME, make_segment(3))
    r = walship("push", source, NAME, cwd=site.pgdata, config=bad)
    assert r.code == 2, r
    one_line_error(r, "compresion", "compression")
    r = walship("push", source, NAME, cwd=site.pgdata)  # no repo anywhere
    if not os.path.exists("/etc/walship/walship.toml"):
        assert r.code == 2, r
        one_line_error(r, "repo")


def test_push_unwritable_repository_exits_1(site: Site) -> None:
    if os.geteuid() == 0:
        # root ignores permissions: use a file where the repository directory should be
        site.repo.write_text("not a directory")
    else:
        site.repo.mkdir()
        site.repo.chmod(0o500)
    try:
        r = site.push(site.wal(NAME, make_segment(3)), NAME)
        assert r.code == 1, r
        one_line_error(r)
    finally:
        if site.repo.is_dir():
            site.repo.chmod(0o700)


# --- fetch -----------------------------------------------------------------------


@pytest.fixture
def archived(site: Site) -> Site:
    assert site.push(site.wal(NAME, make_segment(3)), NAME).code == 0
    os.unlink(site.pgdata / "pg_wal" / NAME)
    return site


def assert_nothing_left(site: Site) -> None:
    assert site.leftovers() == [], "fetch left a file behind at or beside DEST"


def test_fetch_absent_exits_1_quietly(archived: Site) -> None:
    for name in (segment_name(9), "00000005.history", "00000001.history"):
        r = archived.fetch(name)
        assert r.code == 1, r
        assert "Traceback" not in r.stderr and " ERROR " not in r.stderr, r
        assert_nothing_left(archived)


def test_fetch_corrupt_object_exits_255_and_leaves_no_dest(archived: Site) -> None:
    flip_middle(archived.object_path(NAME))
    r = archived.fetch(NAME)
    assert r.code == 255, r
    one_line_error(r, NAME)
    assert_nothing_left(archived)


def test_fetch_truncated_object_exits_255(archived: Site) -> None:
    obj = archived.object_path(NAME)
    obj.write_bytes(obj.read_bytes()[: obj.stat().st_size // 2])
    r = archived.fetch(NAME)
    assert r.code == 255, r
    one_line_error(r, NAME, "truncated")
    assert_nothing_left(archived)


def test_fetch_object_under_another_name_exits_255(archived: Site) -> None:
    other = segment_name(4)
    target = archived.object_path(other)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(archived.object_path(NAME).read_bytes())
    r = archived.fetch(other)
    assert r.code == 255, r
    one_line_error(r, other)
    assert_nothing_left(archived)


def test_fetch_into_a_foreign_data_directory_exits_255(tmp_path: Path) -> None:
    a = Site(tmp_path / "a")
    assert a.push(a.wal(NAME, make_segment(3)), NAME).code == 0
    b = Site(tmp_path / "b", sysid=SYSID + 7)
    r = b.fetch(NAME, config=a.config)
    assert r.code == 255, r
    one_line_error(r, str(SYSID), str(SYSID + 7))
    assert_nothing_left(b)


def test_fetch_missing_repository_is_not_absent(tmp_path: Path) -> None:
    site = Site(tmp_path)  # repository directory never created
    r = site.fetch(NAME)
    assert r.code == 255, r
    one_line_error(r, str(site.repo))


@pytest.mark.parametrize(
    "config_text",
    ['repo = "/x"\ncompresion = "zstd"\n', "repo = [\n", 'fetch_error_exit = "sometimes"\n'],
    ids=["unknown-setting", "bad-toml", "bad-choice"],
)
def test_fetch_with_bad_config_exits_255(archived: Site, config_text: str) -> None:
    bad = archived.root / "bad.toml"
    bad.write_text(config_text)
    r = archived.fetch(NAME, config=bad)
    assert r.code == 255, r
    one_line_error(r, str(bad))
    r = archived.fetch(NAME, config=archived.root / "absent.toml")
    assert r.code == 255, r
    one_line_error(r, "absent.toml")


def test_fetch_usage_error_exits_255(archived: Site) -> None:
    r = walship("fetch", NAME, cwd=archived.pgdata, config=archived.config)
    assert r.code == 255, r
    one_line_error(r)


def test_fetch_missing_dest_directory_exits_255(archived: Site) -> None:
    r = archived.fetch(NAME, "no-such-dir/RECOVERYXLOG")
    assert r.code == 255, r
    one_line_error(r, "no-such-dir")


def test_fetch_error_exit_missing_turns_errors_into_1(archived: Site) -> None:
    flip_middle(archived.object_path(NAME))
    cfg = write_config(
        archived.root / "standby.toml", repo=str(archived.repo), fetch_error_exit="missing"
    )
    r = archived.fetch(NAME, config=cfg)
    assert r.code == 1, r
    one_line_error(r, NAME)  # still logged loudly
    assert_nothing_left(archived)
    # the environment variable works too, and also when the config file is broken
    r = archived.fetch(NAME, env={"WALSHIP_FETCH_ERROR_EXIT": "missing"})
    assert r.code == 1, r
    r = archived.fetch(
        NAME, config=archived.root / "absent.toml", env={"WALSHIP_FETCH_ERROR_EXIT": "missing"}
    )
    assert r.code == 1, r


def test_fetch_error_exit_auto_follows_standby_signal(archived: Site) -> None:
    flip_middle(archived.object_path(NAME))
    cfg = write_config(
        archived.root / "auto.toml", repo=str(archived.repo), fetch_error_exit="auto"
    )
    r = archived.fetch(NAME, config=cfg)
    assert r.code == 255, r  # archive recovery: abort
    (archived.pgdata / "recovery.signal").touch()
    assert archived.fetch(NAME, config=cfg).code == 255
    (archived.pgdata / "standby.signal").touch()
    r = archived.fetch(NAME, config=cfg)
    assert r.code == 1, r  # standby: it retries / streams
    one_line_error(r, NAME)
    # pgdata can also be named explicitly when the cwd is elsewhere
    r = walship(
        "fetch",
        NAME,
        str(archived.pgdata / "pg_wal" / "RECOVERYXLOG"),
        cwd=archived.root,
        config=cfg,
        env={"WALSHIP_PGDATA": str(archived.pgdata)},
    )
    assert r.code == 1, r
    # absent stays 1 in every mode
    assert archived.fetch(segment_name(9), config=cfg).code == 1
    assert_nothing_left(archived)


def test_fetch_does_not_touch_an_existing_dest_on_failure(archived: Site) -> None:
    dest = archived.pgdata / "pg_wal" / "RECOVERYXLOG"
    dest.write_bytes(b"previous")
    flip_middle(archived.object_path(NAME))
    r = archived.fetch(NAME)
    assert r.code == 255, r
    assert dest.read_bytes() == b"previous"
    assert [p.name for p in dest.parent.iterdir() if "tmp" in p.name] == []


# --- general -----------------------------------------------------------------------


def test_version_and_help(tmp_path: Path) -> None:
    r = walship("--version", cwd=tmp_path)
    assert r.code == 0 and r.stdout.startswith("walship "), r
    r = walship(cwd=tmp_path)
    assert r.code == 2, r
    r = walship("push", cwd=tmp_path)
    assert r.code == 2, r
    one_line_error(r)
    r = walship("frobnicate", cwd=tmp_path)
    assert r.code == 2, r
    one_line_error(r)
