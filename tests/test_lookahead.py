"""Push look-ahead through real ``walship`` processes on a fake pg_wal.

tests/test_e2e_lookahead.py drains a real PostgreSQL backlog (and kills
walship processes during it); here the record rules are tested one by one.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
from helpers import (
    imported_modules,
    make_segment,
    remove_tree,
    run_bare_with_importtime,
    segment_name,
)
from lookahead_site import WALSHIP, Site

from walship.archive import lookahead
from walship.codec import objects
from walship.config import Config
from walship.storage.registry import open_backend


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    yield s
    s.stop_background()


def stored_sha256(repo: Path, name: str) -> str:
    cfg = Config(repo=str(repo))
    backend = open_backend(str(repo), cfg)
    try:
        with objects.open_object(cfg, backend, f"wal/{name[:16]}/{name}") as obj:
            digest = hashlib.sha256()
            for chunk in obj.raw:
                digest.update(chunk)
            return digest.hexdigest()
    finally:
        backend.close()


def test_a_backlog_is_pushed_ahead_and_acknowledged_from_records(site: Site) -> None:
    names = site.add(1, 12)
    # the first call finds 11 more waiting: it starts the background process and
    # hands its own file over to it (one push of it, one storage SDK loaded)
    results = site.archive(1)
    assert "started the walship background process" in results[0].stderr
    assert f"pushed {names[0]} (ahead)" in results[0].stderr, results[0].stderr
    site.wait_recorded(names[1:])
    results += site.archive()
    for name, result in zip(names, results, strict=True):
        assert f"pushed {name} (ahead)" in result.stderr, result.stderr
    everything = "".join(r.stderr for r in results) + site.log()
    assert "already archived" not in everything  # nothing was pushed twice
    for segno, name in enumerate(names, start=1):
        expected = hashlib.sha256(make_segment(segno)).hexdigest()
        assert stored_sha256(site.repo, name) == expected
    # nothing waits any more: the records are removed (bounded spool), the
    # archive_status files are PostgreSQL's, untouched but for our renames above
    deadline = time.monotonic() + 10
    while site.records() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert site.records() == set()
    assert sorted(p.name for p in site.status.iterdir()) == sorted(f"{n}.done" for n in names)


def test_a_call_while_the_background_process_runs_hands_its_file_over(site: Site) -> None:
    """Steady state: the background process is up (idle) and one new segment comes.
    The call neither pushes it a second time nor loads the storage layer."""
    _pushed_ahead(site, last=2)
    site.archive()
    assert site.background_running()
    (name,) = site.add(3, 3)
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *WALSHIP, "push", f"pg_wal/{name}", name],
        cwd=site.pgdata,
        env=site.env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and f"pushed {name} (ahead)" in result.stderr, result.stderr
    imported = imported_modules(result.stderr)
    assert not [m for m in imported if m.startswith(("walship.storage", "walship.codec"))]
    assert "zstandard" not in imported
    assert stored_sha256(site.repo, name) == hashlib.sha256(make_segment(3)).hexdigest()
    assert "already archived" not in result.stderr + site.log()


def test_a_process_not_asked_for_look_ahead_is_not_handed_files(site: Site) -> None:
    """A background process started by a fetch (read-ahead during recovery, with
    restore_command's configuration) has no ``r/``: it pushes nothing ahead.
    After promotion the calls push their files themselves, at once (no wait for
    a process that will not take them), and do not ask that process to push
    with a configuration that is not archive_command's."""
    _pushed_ahead(site, last=2)
    site.archive()
    assert site.background_running()
    for spool in site.spools():
        remove_tree(spool / "r")  # as a process a fetch started has it
    names = site.add(3, 5)
    for name in names:
        started = time.monotonic()
        result = site.push(name)
        assert result.returncode == 0, result.stderr
        assert time.monotonic() - started < lookahead.TAKE_SECONDS, result.stderr
        assert f"pushed {name} raw_size=" in result.stderr, result.stderr
        (site.status / f"{name}.ready").rename(site.status / f"{name}.done")
        assert (
            stored_sha256(site.repo, name)
            == hashlib.sha256(make_segment(int(name[-8:], 16))).hexdigest()
        )
    assert not any((spool / "r").exists() for spool in site.spools())


def test_a_call_does_not_hand_over_a_file_whose_record_no_longer_matches(site: Site) -> None:
    """A segment pushed ahead whose ctime changed since (a ``chmod``): its record
    no longer acknowledges it, and the background process, which recorded it,
    will not push it again; the call pushes it itself, without waiting."""
    names = _pushed_ahead(site, last=3)
    site.archive(2)
    os.chmod(site.pg_wal / names[2], 0o600)
    started = time.monotonic()
    result = site.push(names[2])
    assert result.returncode == 0, result.stderr
    assert "(ahead)" not in result.stderr
    assert "already archived with identical content" in result.stderr
    assert time.monotonic() - started < lookahead.TAKE_SECONDS


def test_a_call_pushes_its_file_itself_when_the_background_process_does_not_take_it(
    site: Site,
) -> None:
    """The background process refuses a file (here: in the repository with other
    content) and will not retry it soon: the call waits a bounded time, then
    pushes the file itself under the normal rules and reports the refusal."""
    _pushed_ahead(site, last=2)
    site.archive()
    assert site.background_running()
    other = site.root / segment_name(3)
    other.write_bytes(make_segment(3, payload=b"from another server"))
    subprocess.run(
        [*WALSHIP, "push", str(other), other.name], env=site.env, check=True, capture_output=True
    )
    (name,) = site.add(3, 3)
    deadline = time.monotonic() + 30
    while "not pushed ahead" not in site.log():  # the background tried and refused
        assert time.monotonic() < deadline, site.log()
        time.sleep(0.05)
    started = time.monotonic()
    result = site.push(name)
    assert result.returncode == 3, result.stderr
    assert "already archived with different content" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < lookahead.TAKE_SECONDS + 5


def test_backlog_is_reported(site: Site) -> None:
    site.add(1, 3)
    os.utime(site.status / f"{segment_name(1)}.ready", (time.time() - 90, time.time() - 90))
    cmd = [*WALSHIP, "archive-status", "--pgdata", str(site.pgdata)]
    line = subprocess.run(cmd, env=site.env, capture_output=True, text=True, check=True).stdout
    assert line.startswith(f"ready=3 oldest={segment_name(1)} oldest_age_s=9"), line
    assert "pushed_ahead=0 background=stopped" in line
    out = subprocess.run(
        [*cmd, "--json"], env=site.env, capture_output=True, text=True, check=True
    ).stdout
    doc = json.loads(out)
    assert doc["ready"] == 3 and doc["oldest"] == segment_name(1)
    assert 89 <= doc["oldest_age_s"] < 200
    bad = subprocess.run(
        [*WALSHIP, "archive-status", "--pgdata", str(site.root)],
        env=site.env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "not a PostgreSQL data directory" in bad.stderr
    assert "Traceback" not in bad.stderr
    # each push logs the backlog at debug level
    result = site.push(segment_name(1))
    assert "archive backlog ready=3" in result.stderr, result.stderr


def _pushed_ahead(site: Site, last: int = 3) -> list[str]:
    names = site.add(1, last)
    site.archive(1)
    site.wait_recorded(names[1:])
    return names


def test_a_segment_replaced_after_it_was_pushed_ahead_is_not_acknowledged(site: Site) -> None:
    names = _pushed_ahead(site)
    # a new file under the same name, with the same bytes: a new inode
    path = site.pg_wal / names[1]
    tmp = site.pg_wal / "replacement"
    tmp.write_bytes(path.read_bytes())
    tmp.rename(path)
    result = site.push(names[1])
    assert result.returncode == 0, result.stderr
    assert "(ahead)" not in result.stderr
    assert "already archived with identical content" in result.stderr
    # ... and with other bytes: refused as a normal push refuses it
    other = make_segment(3, payload=b"other bytes")
    tmp.write_bytes(other)
    tmp.rename(site.pg_wal / names[2])
    result = site.push(names[2])
    assert result.returncode == 3, result.stderr
    assert "already archived with different content" in result.stderr
    assert "(ahead)" not in result.stderr


def test_a_segment_changed_in_place_after_it_was_pushed_ahead_is_not_acknowledged(
    site: Site,
) -> None:
    names = _pushed_ahead(site)
    path = site.pg_wal / names[1]
    time.sleep(0.05)  # at least one timestamp tick after the record was taken
    with open(path, "r+b") as fh:  # same inode, same size, same mtime set back below
        fh.seek(1 << 20)
        fh.write(b"changed")
    record = lookahead.Record.parse(next(site.spools()[0].glob(f"r/{names[1]}")).read_text())
    assert record is not None
    os.utime(path, ns=(record.stat[3], record.stat[3]))  # mtime restored: ctime is not
    result = site.push(names[1])
    assert "(ahead)" not in result.stderr
    assert result.returncode == 3, result.stderr


def test_a_damaged_or_forged_record_is_not_trusted(site: Site) -> None:
    names = _pushed_ahead(site, last=5)
    site.stop_background()
    for name in names[2:]:  # only names[1] waits: no background process is started
        (site.status / f"{name}.ready").rename(site.status / f"{name}.done")
    with mock.patch.dict(os.environ, site.env, clear=True):  # the calls' environment
        spool = lookahead.Spool(str(site.pg_wal), Config(repo=str(site.repo)))
        assert spool.fingerprint  # digested in that environment
    os.makedirs(spool.records)
    record_path = Path(spool.record_path(names[1]))
    stat = lookahead.stat_of(str(site.pg_wal / names[1]))
    good = lookahead.Record(spool.tag, spool.fingerprint, names[1], "0" * 64, "1", stat).line()
    for text in (
        good[:-1],  # truncated (no newline)
        good.replace(spool.tag, "0" * 16),  # another repository's
        good.replace(spool.fingerprint, "0" * 32),  # pushed with other settings
        good.replace(lookahead.MAGIC, "walship-record/1"),  # an older walship's
        good.replace(names[1], names[2]),  # another file's
        good.replace(" ".join(map(str, stat)), " ".join(map(str, (*stat[:4], stat[4] - 1)))),
        "garbage\n",
        "",
    ):
        record_path.write_text(text)
        result = site.push(names[1])
        assert "(ahead)" not in result.stderr, text
        assert result.returncode == 0
    record_path.write_text(good)  # well-formed and matching: believed (see docs)
    result = site.push(names[1])
    assert "(ahead)" in result.stderr


def test_another_repository_does_not_use_the_records(site: Site, tmp_path: Path) -> None:
    names = _pushed_ahead(site)
    other = tmp_path / "other-repo"
    result = site.push(names[1], WALSHIP_REPO=str(other))
    assert result.returncode == 0, result.stderr
    # stored in the other repository (by the call, or by that repository's own
    # background process, which it may hand the file to), not taken from the records
    assert stored_sha256(other, names[1]) == hashlib.sha256(make_segment(2)).hexdigest()
    assert len(site.spools()) == 2


def test_calls_with_other_settings_do_not_use_a_process_or_records_of_the_old_ones(
    site: Site,
) -> None:
    """archive_command's settings change (here the compression level, through the
    environment, as a new --config or a restart with other variables would) while
    a background process with the old ones runs: the calls trust none of its
    records, hand it nothing, and it stops pushing ahead and exits; the next
    process has the new settings."""
    names = _pushed_ahead(site, last=6)
    new = {"WALSHIP_COMPRESSION_LEVEL": "7"}
    result = site.push(names[1], **new)
    assert result.returncode == 0, result.stderr
    assert "(ahead)" not in result.stderr
    assert "already archived with identical content" in result.stderr
    deadline = time.monotonic() + 10
    while site.background_running():
        assert time.monotonic() < deadline, site.log()
        time.sleep(0.05)
    assert "archive_command's settings are not this process's" in site.log()
    (site.status / f"{names[1]}.ready").rename(site.status / f"{names[1]}.done")
    # the next call starts a process with the new settings, and its records serve them
    result = site.push(names[2], **new)
    assert result.returncode == 0, result.stderr
    assert "started the walship background process" in result.stderr
    (site.status / f"{names[2]}.ready").rename(site.status / f"{names[2]}.done")
    site.wait_recorded(names[3:])
    for name in names[3:]:
        result = site.push(name, **new)
        assert f"pushed {name} (ahead)" in result.stderr, result.stderr
        (site.status / f"{name}.ready").rename(site.status / f"{name}.done")
        # ... and not to a call with the old ones
    assert (
        lookahead.Spool(str(site.pg_wal), Config(repo=str(site.repo))).fingerprint
        != (
            lookahead.Spool(str(site.pg_wal), Config(repo=str(site.repo), compression_level=7))
        ).fingerprint
    )


def test_the_fingerprint_covers_what_a_push_uses_and_not_the_other_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    key = tmp_path / "wal.key"
    key.write_bytes(b"k" * 32)
    base = {"repo": str(tmp_path / "repo"), "encryption_key_file": "wal.key"}

    def fp(**changes: object) -> str:
        return lookahead.fingerprint_of(Config(**{**base, **changes}))

    first = fp()
    assert fp() == first
    # other commands' settings, and the process's own, do not count
    assert fp(fetch_prefetch=16, check_archive_wait=5.0, retention_retain=3) == first
    assert fp(log_level="debug", background_idle=10.0, conninfo="host=x") == first
    # what a push stores with, or where, does
    assert fp(compression_level=7) != first
    assert fp(encryption="symmetric") != first
    assert fp(s3_endpoint_url="http://127.0.0.1:9") != first
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")  # boto3 reads it
    assert fp() != first
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    assert fp() == first
    # the key file: replaced in place, or the relative path resolved elsewhere
    replacement = tmp_path / "new.key"
    replacement.write_bytes(b"n" * 32)
    replacement.rename(key)
    replaced = fp()
    assert replaced != first
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "wal.key").write_bytes(b"n" * 32)
    monkeypatch.chdir(elsewhere)
    assert fp() != replaced


def test_archive_status_counts_what_is_pushed_ahead_whatever_its_settings(site: Site) -> None:
    """An operator's shell need not have the server's settings or environment."""
    names = _pushed_ahead(site, last=3)
    cmd = [*WALSHIP, "archive-status", "--pgdata", str(site.pgdata)]
    for extra in ({}, {"WALSHIP_COMPRESSION_LEVEL": "7", "AWS_PROFILE": "operator"}):
        line = subprocess.run(
            cmd, env={**site.env, **extra}, capture_output=True, text=True, check=True
        ).stdout
        assert f"ready=2 oldest={names[1]}" in line and "pushed_ahead=2 " in line, line


def test_records_stay_bounded_while_calls_push_their_files_themselves(tmp_path: Path) -> None:
    """No background process runs (it went idle) and the server archives one file
    at a time: each call records its file, and removes the records of files that
    are no longer waiting."""
    site = Site(tmp_path, background_idle="1")
    try:
        names = _pushed_ahead(site, last=3)
        site.archive()
        deadline = time.monotonic() + 20
        while site.background_running():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for segno in range(4, 12):
            (name,) = site.add(segno, segno)
            result = site.push(name)
            assert result.returncode == 0 and "(ahead)" not in result.stderr, result.stderr
            (site.status / f"{name}.ready").rename(site.status / f"{name}.done")
            assert len(site.records()) <= 1, site.records()
        assert not site.background_running()
        assert names
    finally:
        site.stop_background()


def test_a_spool_removed_and_made_again_has_one_process(site: Site) -> None:
    """``rm -r pg_wal/.walship`` while the process runs, and a call makes the spool
    again before the process looked: the old process sees that its lock file is
    not the spool's any more and exits; one process serves the new spool."""
    names = _pushed_ahead(site, last=3)
    remove_tree(site.pg_wal / ".walship")
    more = site.add(4, 6)
    result = site.push(names[0])
    assert result.returncode == 0, result.stderr
    assert "started the walship background process" in result.stderr
    deadline = time.monotonic() + 10
    while len(_background_pids(site)) != 1:
        assert time.monotonic() < deadline, _background_pids(site)
        time.sleep(0.05)
    assert site.background_running()
    site.wait_recorded(more)


def _background_pids(site: Site) -> list[int]:
    """The background processes serving this pg_wal (from /proc: no pid file)."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            argv = Path("/proc", entry, "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"walship.background" in a for a in argv) and str(site.pg_wal).encode() in argv:
            pids.append(int(entry))
    return pids


@pytest.mark.parametrize("missing", [(), ("_sha256",), ("_sha256", "_sha2")])
def test_the_spool_tag_digest_is_sha256_on_every_python(
    missing: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The built-in SHA-256 module is _sha256 in 3.11 and _sha2 from 3.12; a build
    may have neither (then hashlib). Each absence is simulated here."""
    for name in missing:
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    assert lookahead.sha256_hex(b"walship") == hashlib.sha256(b"walship").hexdigest()


def test_a_refusal_while_pushing_ahead_is_reported_by_the_call_itself(
    site: Site, tmp_path: Path
) -> None:
    """Segment 3 is in the repository with other content (a split brain)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    other = elsewhere / segment_name(3)
    other.write_bytes(make_segment(3, payload=b"from another server"))
    subprocess.run(
        [*WALSHIP, "push", str(other), other.name], env=site.env, check=True, capture_output=True
    )
    names = site.add(1, 5)
    site.archive(1)
    site.wait_recorded([names[1], names[3], names[4]])
    assert names[2] not in site.records()
    ahead = site.push(names[1])  # copies the background's warning to the server log
    assert ahead.returncode == 0
    result = site.push(names[2])
    assert result.returncode == 3, result.stderr
    assert "already archived with different content" in result.stderr
    seen = ahead.stderr + result.stderr + site.log()
    assert f"not pushed ahead: {names[2]} is already archived" in seen, seen


def test_off_outside_pg_wal_and_when_disabled(site: Site, tmp_path: Path) -> None:
    names = site.add(1, 4)
    result = site.push(names[0], WALSHIP_ARCHIVE_LOOKAHEAD="0")
    assert result.returncode == 0, result.stderr
    assert not (site.pg_wal / ".walship").exists()
    assert "archive backlog ready=4" in result.stderr, result.stderr  # each push logs it
    copy = tmp_path / names[1]
    copy.write_bytes((site.pg_wal / names[1]).read_bytes())
    result = subprocess.run(
        [*WALSHIP, "push", str(copy), names[1]],
        env=site.env,
        cwd=site.pgdata,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert not (site.pg_wal / ".walship").exists()
    assert "archive backlog ready=4" in result.stderr, result.stderr  # the data directory's
    # ... and a push that fails logs it too
    result = site.push(names[2], WALSHIP_ARCHIVE_LOOKAHEAD="0", WALSHIP_REPO="s3://")
    assert result.returncode != 0 and "archive backlog ready=" in result.stderr, result.stderr


def test_the_fast_path_imports_no_storage_compression_or_crypto(site: Site) -> None:
    names = _pushed_ahead(site)
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *WALSHIP, "push", f"pg_wal/{names[1]}", names[1]],
        cwd=site.pgdata,
        env=site.env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and "(ahead)" in result.stderr, result.stderr
    imported = imported_modules(result.stderr)
    assert "walship.archive.lookahead" in imported
    forbidden = [
        m
        for m in imported
        if m.split(".")[0] in ("zstandard", "boto3", "botocore", "cryptography", "google", "azure")
        or m.startswith(("walship.storage", "walship.codec", "walship.archive.push"))
        or m in ("hashlib", "_hashlib", "json", "typing", "tomllib", "threading")
    ]
    assert forbidden == []
    # The launcher pip writes for a console-script entry point imports re (and
    # with it enum, functools, collections: ~5 ms a call); bin/walship does not.
    # Without site (-S: an editable install's finder imports re at start-up),
    # walship found through PYTHONPATH, what is imported is the command's doing.
    bare = run_bare_with_importtime(
        ["push", f"pg_wal/{names[2]}", names[2]], env=site.env, cwd=str(site.pgdata)
    )
    assert bare.returncode == 0 and "(ahead)" in bare.stderr, bare.stderr
    imported = imported_modules(bare.stderr)
    heavy = {"re", "enum", "functools", "collections", "contextlib", "runpy", "importlib.util"}
    assert heavy & imported == set()


def test_the_background_process_imports_nothing_from_the_callers_directory(
    site: Site,
) -> None:
    """Modules the background process imports lazily, planted in the data
    directory (the archiver's working directory): none may run."""
    marker = site.root / "planted-ran"
    planted = (
        "difflib",
        "json",
        "concurrent",
        "hashlib",
        "zstandard",
        "threading",
        "shutil",
        "tomllib",
        "queue",
        "weakref",
    )
    for module in planted:
        (site.pgdata / f"{module}.py").write_text(
            f"open({str(marker)!r}, 'a').write({module!r} + '\\n')\n"
        )
    names = _pushed_ahead(site, last=4)
    assert not marker.exists(), marker.read_text()
    cmdlines = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdlines.append(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"))
            except OSError:
                pass
    ours = [c for c in cmdlines if str(site.pg_wal).encode() in c and b"-c" in c]
    assert ours and all(c[1] == b"-I" for c in ours), ours
    site.archive()
    assert not marker.exists()
    assert names


def test_the_background_process_exits_when_idle(tmp_path: Path) -> None:
    site = Site(tmp_path, background_idle="1")
    try:
        site.add(1, 3)
        site.archive()
        deadline = time.monotonic() + 20
        while site.background_running():
            assert time.monotonic() < deadline, site.log()
            time.sleep(0.1)
        assert "idle for 1 s: exiting" in site.log()
    finally:
        site.stop_background()


def _background_pids(site: Site) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"walship.background" in a for a in argv) and str(site.pg_wal).encode() in argv:
            pids.append(int(entry))
    return pids


def _thread_nice(pid: int) -> dict[int, int]:
    """Each thread's niceness (Linux keeps one per thread): tid -> nice."""
    nice = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        nice[int(tid)] = int(stat.rsplit(")", 1)[1].split()[16])
    return nice


def test_only_the_threads_that_push_ahead_run_at_a_lower_priority(site: Site) -> None:
    # the archiver's calls come first (nice +5 on the pushing threads); the process
    # itself, and the threads that fetch ahead, keep the caller's priority
    # the archiver's current file, when handed over, is pushed at the caller's
    # priority: its call waits for that push (a thread of its own)
    base = os.getpriority(os.PRIO_PROCESS, 0)
    _pushed_ahead(site)
    (pid,) = _background_pids(site)
    nice = _thread_nice(pid)
    assert nice[pid] == base, nice
    assert base + 5 in nice.values(), nice
    assert list(nice.values()).count(base) == 2, nice  # the main thread, the head push


def test_the_background_process_runs_with_two_malloc_arenas(site: Site) -> None:
    # each pushing thread's own glibc arena kept its freed segment buffers: the
    # peak memory grew by ~8 MiB per push at once (docs/benchmarks.md)
    assert "MALLOC_ARENA_MAX" not in site.env
    _pushed_ahead(site)
    pids = _background_pids(site)
    assert len(pids) == 1
    environ = Path(f"/proc/{pids[0]}/environ").read_bytes().split(b"\0")
    assert b"MALLOC_ARENA_MAX=2" in environ
    assert f"MALLOC_MMAP_THRESHOLD_={4 << 20}".encode() in environ


def test_pushes_ahead_recheck_the_repository_identity_at_least_every_ttl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the background process confirms repository.json once per ConfirmedIdentities.TTL
    # (not with one GET per push); a repository re-made by another cluster is seen
    # at the next check, and a push without the cache (every call's own) at once
    from helpers import SYSID

    from walship import repository
    from walship.archive import push
    from walship.errors import ForeignClusterError

    cfg = Config(repo=str(tmp_path / "repo"))
    backend = open_backend(cfg.repo, cfg)
    paths = []
    for segno in range(1, 5):
        path = tmp_path / segment_name(segno)
        path.write_bytes(make_segment(segno))
        paths.append(path)
    ids = push.ConfirmedIdentities()
    push.push(cfg, backend, str(paths[0]), paths[0].name, ids)
    foreign = repository.Identity(SYSID + 1, len(make_segment(1)), 15)
    backend.put(repository.IDENTITY_KEY, [foreign.to_json()], mode="overwrite")
    push.push(cfg, backend, str(paths[1]), paths[1].name, ids)  # confirmed moments ago
    with pytest.raises(ForeignClusterError):
        push.push(cfg, backend, str(paths[2]), paths[2].name)
    now = time.monotonic()
    monkeypatch.setattr(push.time, "monotonic", lambda: now + push.ConfirmedIdentities.TTL + 1)
    with pytest.raises(ForeignClusterError):
        push.push(cfg, backend, str(paths[3]), paths[3].name, ids)


def test_no_background_log_line_is_lost_while_calls_take_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The background process appends lines to the spool's log while calls take it
    (rename, read, unlink) to copy it into the server log: every line must reach
    one call, once (a line written into a file already taken was lost)."""
    import io
    import threading

    from walship import background

    path = str(tmp_path / "log")
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    writers = [background._FileLog(path) for _ in range(2)]
    lines = 3000
    done = threading.Event()

    def write(w: int) -> None:
        for i in range(lines):
            writers[w].write(f"writer {w} line {i}\n")

    threads = [threading.Thread(target=write, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    reader = threading.Thread(
        target=lambda: [lookahead.relay_log(path) for _ in iter(done.is_set, True)]
    )
    reader.start()
    for t in threads:
        t.join()
    done.set()
    reader.join()
    lookahead.relay_log(path)
    got = out.getvalue().splitlines()
    expected = [f"writer {w} line {i}" for w in range(2) for i in range(lines)]
    assert sorted(got) == sorted(expected)
    assert os.listdir(tmp_path) == []
