"""fetch_prefetch: the read-ahead spool, driven through real ``walship`` processes.

A fake data directory (pg_wal/ and global/pg_control holding the system
identifier) stands in for PostgreSQL here; tests/test_e2e_prefetch.py runs a
real recovery with prefetch on. The spool is ``f/`` of
``pg_wal/.walship/<tag>/``, filled by the walship background process
(walship/background.py), which also pushes ahead.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    SYSID,
    environment_without_settings,
    imported_modules,
    lock_held,
    make_segment,
    remove_tree,
    run_bare_with_importtime,
    segment_name,
)

from walship.archive.lookahead import Spool
from walship.config import Config

WALSHIP = [sys.executable, "-m", "walship"]
LAST = 6  # segments 1..LAST are archived


@pytest.fixture
def site(tmp_path: Path) -> Iterator[dict[str, str]]:
    repo = tmp_path / "repo"
    pgdata = tmp_path / "data"
    (pgdata / "pg_wal").mkdir(parents=True)
    (pgdata / "global").mkdir()
    (pgdata / "global" / "pg_control").write_bytes(struct.pack("<Q", SYSID) + bytes(100))
    env = environment_without_settings()
    env.update(WALSHIP_REPO=str(repo), WALSHIP_LOG_LEVEL="debug")
    src = tmp_path / "src"
    src.mkdir()
    for segno in range(1, LAST + 1):
        path = src / segment_name(segno)
        path.write_bytes(make_segment(segno))
        subprocess.run(
            [*WALSHIP, "-q", "push", str(path), path.name], env=env, check=True, cwd=tmp_path
        )
    env["WALSHIP_FETCH_PREFETCH"] = "3"
    yield {"repo": str(repo), "pgdata": str(pgdata), **{f"env:{k}": v for k, v in env.items()}}
    # the background process exits by itself once its spool is gone
    lock = Path(Spool(str(pgdata / "pg_wal"), Config(repo=str(repo))).path, "lock")
    remove_tree(pgdata / "pg_wal" / ".walship")
    deadline = time.monotonic() + 30
    while lock_held(lock):
        assert time.monotonic() < deadline, "background process still running"
        time.sleep(0.05)


def _env(site: dict[str, str], **extra: str) -> dict[str, str]:
    env = {k[4:]: v for k, v in site.items() if k.startswith("env:")}
    env.update(extra)
    return env


def _spool(site: dict[str, str]) -> Path:
    """The read-ahead spool, ``f/`` (its parent holds the lock and the log)."""
    cfg = Config(repo=site["repo"], fetch_prefetch=3)
    return Path(Spool(os.path.join(site["pgdata"], "pg_wal"), cfg).readahead)


def _fetch(site: dict[str, str], segno: int, **extra: str) -> subprocess.CompletedProcess[str]:
    dest = Path(site["pgdata"], "pg_wal", "RECOVERYXLOG")
    dest.unlink(missing_ok=True)  # PostgreSQL removes it before restore_command
    return subprocess.run(
        [*WALSHIP, "fetch", segment_name(segno), "pg_wal/RECOVERYXLOG"],
        env=_env(site, **extra),
        cwd=site["pgdata"],
        capture_output=True,
        text=True,
    )


def _busy(spool: Path) -> list[str]:
    """A request waiting or being served, or a segment being fetched."""
    try:
        names = os.listdir(spool)
    except FileNotFoundError:
        return []
    return [n for n in names if n in ("want", "serving") or n.endswith(".part")]


def _wait_helper(spool: Path, timeout: float = 20) -> None:
    """Until the background process has served the latest request."""
    deadline = time.monotonic() + timeout
    while _busy(spool):
        assert time.monotonic() < deadline, f"read-ahead still busy: {_busy(spool)}"
        assert lock_held(spool.parent / "lock"), "no background process serves the request"
        time.sleep(0.02)


def _background_pid(site: dict[str, str]) -> int:
    """The background process serving this pg_wal (from /proc: it writes no pid file)."""
    pg_wal = os.path.join(site["pgdata"], "pg_wal").encode()
    for entry in os.listdir("/proc"):
        try:
            argv = Path("/proc", entry, "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"walship.background" in a for a in argv) and pg_wal in argv:
            return int(entry)
    raise AssertionError("no background process")


def _restored(site: dict[str, str]) -> bytes:
    return Path(site["pgdata"], "pg_wal", "RECOVERYXLOG").read_bytes()


def _spooled(spool: Path) -> set[str]:
    return {p.name for p in spool.iterdir() if len(p.name) == 24}


def test_helper_fills_the_window_and_fetch_claims_from_it(site: dict[str, str]) -> None:
    spool = _spool(site)
    first = _fetch(site, 1)
    assert first.returncode == 0, first.stderr
    assert "(prefetched)" not in first.stderr
    assert _restored(site) == make_segment(1)
    _wait_helper(spool)
    assert _spooled(spool) == {segment_name(n) for n in (2, 3, 4)}

    second = _fetch(site, 2)
    assert second.returncode == 0, second.stderr
    assert f"fetched {segment_name(2)} (prefetched)" in second.stderr
    assert _restored(site) == make_segment(2)
    _wait_helper(spool)
    assert _spooled(spool) == {segment_name(n) for n in (3, 4, 5)}

    for segno in (3, 4, 5, 6):
        result = _fetch(site, segno)
        assert result.returncode == 0, result.stderr
        assert "(prefetched)" in result.stderr
        assert _restored(site) == make_segment(segno)
        _wait_helper(spool)
    # the end of the archive: absent is answered by the repository, not the spool
    missing = _fetch(site, LAST + 1)
    assert missing.returncode == 1, missing.stderr
    assert _spooled(spool) == set()


def test_a_claimed_fetch_imports_no_storage_codec_or_hashing(site: dict[str, str]) -> None:
    # what the startup process waits for on every spooled segment: the checks and a
    # rename, not the repository's object format (which brings hashlib, json, ...)
    spool = _spool(site)
    assert _fetch(site, 1).returncode == 0
    _wait_helper(spool)
    Path(site["pgdata"], "pg_wal", "RECOVERYXLOG").unlink(missing_ok=True)
    result = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            *WALSHIP[1:],
            "fetch",
            segment_name(2),
            "pg_wal/RECOVERYXLOG",
        ],
        env=_env(site),
        cwd=site["pgdata"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and "(prefetched)" in result.stderr, result.stderr
    imported = imported_modules(result.stderr)
    assert "walship.archive.prefetch" in imported
    forbidden = [
        m
        for m in imported
        if m.split(".")[0] in ("zstandard", "cryptography")
        or m.startswith(("walship.storage", "walship.codec"))
        or m in ("walship.repository", "hashlib", "_hashlib", "json", "threading")
    ]
    assert forbidden == []
    assert _restored(site) == make_segment(2)
    # Without site (an editable install's finder imports re at start-up) and through
    # bin/walship, what is imported is the claim's own doing: not typing (walship.pg's
    # records are plain tuples for this: ~7 ms of a ~13 ms call), re, enum, collections.
    _wait_helper(spool)
    Path(site["pgdata"], "pg_wal", "RECOVERYXLOG").unlink(missing_ok=True)
    bare = run_bare_with_importtime(
        ["fetch", segment_name(3), "pg_wal/RECOVERYXLOG"], env=_env(site), cwd=site["pgdata"]
    )
    assert bare.returncode == 0 and "(prefetched)" in bare.stderr, bare.stderr
    imported = imported_modules(bare.stderr)
    assert "walship.pg" in imported
    heavy = {"typing", "re", "enum", "functools", "collections", "contextlib", "tomllib"}
    assert heavy & imported == set()
    assert _restored(site) == make_segment(3)


def test_the_threads_that_fetch_ahead_keep_the_callers_priority(site: dict[str, str]) -> None:
    # the startup process waits for them (each call claims what they fetched): unlike
    # the threads that push ahead, they are not niced
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert _fetch(site, 1).returncode == 0
    _wait_helper(_spool(site))
    pid = _background_pid(site)
    nice = {
        int(tid): int(
            Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()[16]
        )
        for tid in os.listdir(f"/proc/{pid}/task")
    }
    assert len(nice) >= 2 and set(nice.values()) == {base}, nice


def test_a_damaged_spooled_file_is_not_used(site: dict[str, str]) -> None:
    spool = _spool(site)
    assert _fetch(site, 1).returncode == 0
    _wait_helper(spool)
    (spool / segment_name(2)).write_bytes(make_segment(3))  # wrong position
    (spool / segment_name(3)).write_bytes(make_segment(3, sysid=SYSID + 1))  # other cluster
    (spool / segment_name(4)).write_bytes(make_segment(4)[:-1])  # truncated
    for segno, why in (
        (2, "does not match the file name"),
        (3, f"from database system {SYSID + 1}"),
        (4, "bytes, but its header says"),
    ):
        result = _fetch(site, segno)
        assert result.returncode == 0, result.stderr
        assert "not used" in result.stderr and why in result.stderr, result.stderr
        assert "(prefetched)" not in result.stderr
        assert _restored(site) == make_segment(segno)
        _wait_helper(spool)


def test_a_spooled_copy_that_cannot_be_moved_is_fetched_directly(site: dict[str, str]) -> None:
    """The spool on another file system (``f/`` a symlink to tmpfs): moving a
    spooled copy to %p fails with EXDEV, and the fetch falls back to the
    repository instead of failing recovery."""
    spool = _spool(site)
    elsewhere = Path(tempfile.mkdtemp(prefix="walship-f-", dir="/dev/shm"))
    try:
        assert os.stat(elsewhere).st_dev != os.stat(site["pgdata"]).st_dev
        spool.parent.mkdir(parents=True)
        os.symlink(elsewhere, spool)
        assert _fetch(site, 1).returncode == 0
        _wait_helper(spool)
        assert segment_name(2) in _spooled(spool)
        result = _fetch(site, 2)
        assert result.returncode == 0, result.stderr
        assert "not used (cannot move it" in result.stderr, result.stderr
        assert "(prefetched)" not in result.stderr and "Traceback" not in result.stderr
        assert _restored(site) == make_segment(2)
    finally:
        shutil.rmtree(elsewhere, ignore_errors=True)


def test_a_spooled_segment_is_never_served_for_another_timeline(
    site: dict[str, str], tmp_path: Path
) -> None:
    """Segments 2-4 of timeline 1 are spooled; recovery then asks for segment 3 of
    timeline 2 (after a promotion elsewhere): it gets timeline 2's segment from the
    repository, or "absent" from the repository, never timeline 1's copy."""
    spool = _spool(site)
    assert _fetch(site, 1).returncode == 0
    _wait_helper(spool)
    assert segment_name(3) in _spooled(spool)

    def fetch(name: str) -> subprocess.CompletedProcess[str]:
        Path(site["pgdata"], "pg_wal", "RECOVERYXLOG").unlink(missing_ok=True)
        return subprocess.run(
            [*WALSHIP, "fetch", name, "pg_wal/RECOVERYXLOG"],
            env=_env(site),
            cwd=site["pgdata"],
            capture_output=True,
            text=True,
        )

    absent = fetch(segment_name(4, tli=2))  # not archived on timeline 2
    assert absent.returncode == 1, absent.stderr
    assert "(prefetched)" not in absent.stderr
    assert not Path(site["pgdata"], "pg_wal", "RECOVERYXLOG").exists()
    other = tmp_path / "src" / segment_name(3, tli=2)
    other.write_bytes(make_segment(3, tli=2))
    subprocess.run([*WALSHIP, "-q", "push", str(other), other.name], env=_env(site), check=True)
    result = fetch(other.name)
    assert result.returncode == 0, result.stderr
    assert "(prefetched)" not in result.stderr
    assert _restored(site) == make_segment(3, tli=2) != make_segment(3)


def test_fetch_waits_for_the_segment_the_helper_is_fetching(site: dict[str, str]) -> None:
    spool = _spool(site)
    spool.mkdir(parents=True)
    name = segment_name(2)
    lock = os.open(spool.parent / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)  # this test plays the background process
    (spool / f"{name}.part").touch()

    def finish() -> None:
        time.sleep(0.5)
        (spool / "tmp").write_bytes(make_segment(2))
        (spool / "tmp").rename(spool / name)  # as the helper does: whole files only
        (spool / f"{name}.part").unlink()

    helper = threading.Thread(target=finish)
    helper.start()
    started = time.monotonic()
    result = _fetch(site, 2)
    helper.join()
    os.close(lock)
    assert result.returncode == 0, result.stderr
    assert "(prefetched)" in result.stderr
    assert time.monotonic() - started >= 0.5
    assert _restored(site) == make_segment(2)
    assert (spool / "want").read_text() == f"{name} {len(make_segment(2))} 3\n"  # 3, 4, 5


def test_a_dead_helper_is_not_waited_for(site: dict[str, str]) -> None:
    spool = _spool(site)
    spool.mkdir(parents=True)
    (spool / f"{segment_name(2)}.part").touch()  # its marker, but no lock holder
    result = _fetch(site, 2)
    assert result.returncode == 0, result.stderr
    assert "(prefetched)" not in result.stderr
    assert _restored(site) == make_segment(2)
    _wait_helper(spool)  # the background process that fetch started removed the marker
    assert _spooled(spool) == {segment_name(n) for n in (3, 4, 5)}


def test_no_prefetch_outside_pg_wal_or_when_off(site: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "elsewhere"
    out.mkdir()
    result = subprocess.run(
        [*WALSHIP, "fetch", segment_name(1), str(out / "x")],
        env=_env(site),
        cwd=site["pgdata"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert not (out / ".walship").exists()
    assert _fetch(site, 1, WALSHIP_FETCH_PREFETCH="0").returncode == 0
    assert not Path(site["pgdata"], "pg_wal", ".walship").exists()


def test_push_removes_a_spool_left_by_a_finished_recovery(
    site: dict[str, str], tmp_path: Path
) -> None:
    spool = _spool(site)
    assert _fetch(site, 1).returncode == 0
    _wait_helper(spool)
    assert _spooled(spool)
    new = tmp_path / "src" / segment_name(LAST + 1)
    new.write_bytes(make_segment(LAST + 1))
    Path(site["pgdata"], "standby.signal").touch()  # still in recovery: kept
    push = [*WALSHIP, "push", str(new), new.name]
    subprocess.run(push, env=_env(site), cwd=site["pgdata"], check=True)
    assert _spooled(spool)
    Path(site["pgdata"], "standby.signal").unlink()  # promoted: removed
    subprocess.run(push, env=_env(site), cwd=site["pgdata"], check=True)
    assert not spool.exists()


def test_bad_setting_is_a_clear_error(site: dict[str, str]) -> None:
    result = _fetch(site, 1, WALSHIP_FETCH_PREFETCH="lots")
    assert result.returncode == 255
    assert "WALSHIP_FETCH_PREFETCH" in result.stderr and "Traceback" not in result.stderr
    result = _fetch(site, 1, WALSHIP_FETCH_PREFETCH="1000")
    assert result.returncode == 255 and "fetch_prefetch" in result.stderr


def _fetch_history(site: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*WALSHIP, "fetch", "00000002.history", "pg_wal/RECOVERYHISTORY"],
        env=_env(site),
        cwd=site["pgdata"],
        capture_output=True,
        text=True,
    )


def test_the_end_of_recovery_discards_the_spool(site: dict[str, str]) -> None:
    """PostgreSQL probes for the next timeline's history file when recovery
    ends (a recovery target before the end of the archive leaves spooled
    segments nobody will ask for)."""
    spool = _spool(site)
    assert _fetch(site, 1).returncode == 0
    _wait_helper(spool)
    assert _spooled(spool)
    result = _fetch_history(site)
    assert result.returncode == 1, result.stderr  # absent, as at promotion
    assert not spool.exists()


def _object(site: dict[str, str], segno: int) -> Path:
    name = segment_name(segno)
    return Path(site["repo"], "wal", name[:16], name)


def test_the_end_of_recovery_ends_a_running_read_ahead_without_a_signal(
    site: dict[str, str],
) -> None:
    """The background process is fetching segment 2 (its object is a FIFO, so
    the fetch is certainly under way) when recovery ends: the spool goes at
    once, the fetch in flight finishes without putting anything back, and the
    process, never signalled, is still there (it may push for the promoted
    server)."""
    spool = _spool(site)
    obj = _object(site, 2)
    data = obj.read_bytes()
    obj.unlink()
    os.mkfifo(obj)
    assert _fetch(site, 1).returncode == 0
    deadline = time.monotonic() + 20
    while not (spool / f"{segment_name(2)}.part").exists():
        assert time.monotonic() < deadline, "the background process fetched nothing"
        time.sleep(0.02)
    pid = _background_pid(site)
    result = _fetch_history(site)
    assert result.returncode == 1, result.stderr  # absent, as at promotion
    assert not spool.exists()

    def feed() -> None:
        with open(obj, "wb") as fh:  # the whole, valid object: its fetch succeeds
            fh.write(data)

    writer = threading.Thread(target=feed)
    writer.start()
    writer.join(timeout=30)
    assert not writer.is_alive()
    time.sleep(1.0)  # its rename into f/ fails; the next request would find f/ gone
    assert not spool.exists()
    assert lock_held(spool.parent / "lock") and _background_pid(site) == pid
    log = spool.parent / "log"  # (the history fetch relayed what was there before)
    assert not log.exists() or "prefetch of" not in log.read_text(errors="replace")
    obj.unlink()


def test_a_pid_in_the_lock_file_is_never_signalled(site: dict[str, str]) -> None:
    """Nothing reads a pid anywhere: ending recovery signals no one."""
    spool = _spool(site)
    spool.mkdir(parents=True)
    (spool / segment_name(5)).write_bytes(b"x")
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    fd = os.open(spool.parent / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.pwrite(fd, str(bystander.pid).encode(), 0)
    try:
        result = _fetch_history(site)
        assert result.returncode == 1, result.stderr
        assert not spool.exists()  # removed, locked or not
        time.sleep(0.2)
        assert bystander.poll() is None  # not signalled
    finally:
        os.close(fd)
        bystander.kill()
        bystander.wait()


def test_the_helpers_warnings_reach_the_next_fetchs_stderr(site: dict[str, str]) -> None:
    spool = _spool(site)
    obj = _object(site, 3)
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 0xFF  # the helper will find segment 3 corrupt
    obj.write_bytes(bytes(data))
    assert _fetch(site, 1).returncode == 0
    _wait_helper(spool)
    assert _spooled(spool) == {segment_name(2)}  # it stopped at the corrupt one
    second = _fetch(site, 2)
    assert second.returncode == 0, second.stderr
    assert f"prefetch of {segment_name(3)} failed" in second.stderr, second.stderr
    _wait_helper(spool)
    third = _fetch(site, 3)  # the real error, from the repository: recovery stops
    assert third.returncode == 255, third.stderr
    assert "corrupt" in third.stderr or "digest" in third.stderr, third.stderr


def test_the_helper_does_not_hold_the_callers_output(site: dict[str, str]) -> None:
    """restore_command = '... | logger' must end when the fetch does.

    Segment 2's object is a FIFO here, so the helper blocks opening it and is
    certainly alive while its file descriptors are inspected.
    """
    spool = _spool(site)
    obj = _object(site, 2)
    obj.unlink()
    os.mkfifo(obj)
    dest = Path(site["pgdata"], "pg_wal", "RECOVERYXLOG")
    proc = subprocess.Popen(
        [*WALSHIP, "fetch", segment_name(1), "pg_wal/RECOVERYXLOG"],
        env=_env(site),
        cwd=site["pgdata"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _out, err = proc.communicate(timeout=30)  # EOF on both: nobody else holds them
        assert proc.returncode == 0, err
        assert dest.read_bytes() == make_segment(1)
        assert lock_held(spool.parent / "lock")  # blocked on the FIFO
        pid = _background_pid(site)
        for fd in (0, 1, 2):
            assert os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/null"
    finally:
        with open(obj, "wb"):  # unblock the helper: an empty object, which it rejects
            pass
        _wait_helper(spool)
    obj.unlink()  # (a fetch of segment 2 would now wait for a writer)
    relayed = _fetch(site, 3)  # the next fetch copies the helper's warning to its stderr
    assert relayed.returncode == 0, relayed.stderr
    assert f"prefetch of {segment_name(2)} failed" in relayed.stderr, relayed.stderr


def test_a_push_outside_recovery_removes_the_old_versions_spool(site: dict[str, str]) -> None:
    """walship before the one background process spooled into pg_wal/.walship-prefetch;
    nothing serves it now, so a push outside recovery removes it (never during one)."""
    pg_wal = Path(site["pgdata"], "pg_wal")
    legacy = pg_wal / ".walship-prefetch"
    legacy.mkdir()
    (legacy / segment_name(7)).write_bytes(b"x" * 1024)
    segment = pg_wal / segment_name(LAST + 1)
    segment.write_bytes(make_segment(LAST + 1))
    push = [*WALSHIP, "push", f"pg_wal/{segment.name}", segment.name]
    Path(site["pgdata"], "standby.signal").touch()
    env = _env(site, WALSHIP_ARCHIVE_LOOKAHEAD="0")
    result = subprocess.run(push, env=env, cwd=site["pgdata"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert legacy.is_dir()  # in recovery: left alone
    Path(site["pgdata"], "standby.signal").unlink()
    result = subprocess.run(push, env=env, cwd=site["pgdata"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert not legacy.exists()
