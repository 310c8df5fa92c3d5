"""What walship's background processes must never do, shown with real processes.

- Import a module from the directory of the caller they serve (issue 10, item
  3): every module name the background process could import lazily, pushing
  ahead or reading ahead, is planted, as a file that leaves a marker when
  imported, in the working directory of ``walship push`` / ``walship fetch``
  (the data directory, as PostgreSQL runs them); no marker may appear.
- Signal a process that is not proven to be theirs (issue 10, item 4): the
  background process, orphaned to a subreaper when its starter exits, is
  reconfigured, its read-ahead ended by the end of recovery, its spool
  removed; the subreaper must receive no signal.

(The walship agent and the read-ahead helper these tests were first written
for were removed by issue 11; they now hold their successor, the one
background process, to the same rules.)

Only walship's command line and /proc are used, so that these tests hold for
any way of serving requests in the background.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    SYSID,
    environment_without_settings,
    lock_held,
    make_segment,
    remove_tree,
    segment_name,
)

WALSHIP = os.path.join(os.path.dirname(sys.executable), "walship")  # the console script


def _module_names() -> set[str]:
    """Every top-level module a walship process could import: the standard
    library's and those of the installed distributions (walship's own
    submodules are found through its package, never through sys.path)."""
    names = set(sys.stdlib_module_names) - set(sys.builtin_module_names)
    names.update(importlib.metadata.packages_distributions())
    names.update({"sitecustomize", "usercustomize"})
    return {n for n in names if n.isidentifier() and n != "walship"}


def _plant(directory: Path, markers: Path) -> None:
    for name in _module_names():
        (directory / f"{name}.py").write_text(
            f"open({str(markers / name)!r}, 'w').close()\n"  # open: a builtin
        )


class Site:
    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path
        self.repo = tmp_path / "repo"
        self.clean = tmp_path / "clean"  # a directory with nothing planted
        self.clean.mkdir()
        # the caller's directory: a data directory, with modules planted in it
        self.pgdata = tmp_path / "data"
        self.pg_wal = self.pgdata / "pg_wal"
        (self.pg_wal / "archive_status").mkdir(parents=True)
        (self.pgdata / "global").mkdir()
        (self.pgdata / "global" / "pg_control").write_bytes(struct.pack("<Q", SYSID) + bytes(100))
        self.markers = tmp_path / "markers"
        self.markers.mkdir()
        self.config = tmp_path / "walship.toml"
        self.config.write_text(f'repo = "{self.repo}"\nlog_level = "debug"\n')
        self.env = environment_without_settings()
        self.env.update(WALSHIP_CONFIG=str(self.config))

    def plant(self) -> None:
        _plant(self.pgdata, self.markers)

    def imported(self) -> list[str]:
        return sorted(p.name for p in self.markers.iterdir())

    def run(self, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [WALSHIP, *args],
            env={**self.env, **env},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def backlog(self, first: int, last: int) -> list[str]:
        names = []
        for segno in range(first, last + 1):
            name = segment_name(segno)
            (self.pg_wal / name).write_bytes(make_segment(segno))
            (self.pg_wal / "archive_status" / f"{name}.ready").touch()
            names.append(name)
        return names

    def archive(self, name: str) -> str:
        r = self.run("push", f"pg_wal/{name}", name, cwd=self.pgdata)
        assert self.imported() == [], "imported from the caller's directory"
        assert r.returncode == 0, r.stderr
        status = self.pg_wal / "archive_status"
        (status / f"{name}.ready").rename(status / f"{name}.done")
        return r.stderr

    def locks(self) -> list[Path]:
        return list((self.pg_wal / ".walship").glob("*/lock"))

    def background_running(self) -> bool:
        return any(lock_held(p) for p in self.locks())

    def wait_background_gone(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.background_running():
            assert time.monotonic() < deadline, "background process still running"
            time.sleep(0.05)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    yield s
    remove_tree(s.pg_wal / ".walship")
    s.wait_background_gone()


def test_the_background_process_imports_nothing_from_the_callers_directory(
    site: Site,
) -> None:
    site.plant()
    names = site.backlog(1, 5)
    site.archive(names[0])  # starts the background process from the planted directory
    deadline = time.monotonic() + 30
    while True:
        records = {p.name for p in (site.pg_wal / ".walship").glob("*/r/*")}
        if set(names[1:]) <= records:
            break
        assert site.imported() == [], "imported from the caller's directory"
        assert time.monotonic() < deadline, records
        time.sleep(0.02)
    for name in names[1:]:
        assert "(ahead)" in site.archive(name)
    assert site.imported() == [], "imported from the caller's directory"


def test_a_configuration_error_in_the_background_imports_nothing_from_the_callers_directory(
    site: Site,
) -> None:
    """Its "did you mean" loads difflib; the background process reloads its
    configuration while it runs and exits when it is no longer valid."""
    site.plant()
    names = site.backlog(1, 3)
    site.archive(names[0])
    assert site.background_running()
    site.config.write_text(f'repo = "{site.repo}"\ncompresion = "zstd"\n')
    site.wait_background_gone()
    assert site.imported() == [], "imported from the caller's directory"
    r = site.run("push", f"pg_wal/{names[1]}", names[1], cwd=site.pgdata)
    assert r.returncode == 2 and "did you mean 'compression'" in r.stderr, r.stderr


def test_the_read_ahead_helper_imports_nothing_from_the_callers_directory(site: Site) -> None:
    for segno in (1, 2, 3):
        path = site.root / segment_name(segno)
        path.write_bytes(make_segment(segno))
        assert site.run("push", str(path), path.name, cwd=site.clean).returncode == 0
    site.plant()
    out = site.run(
        "fetch", segment_name(1), "pg_wal/RECOVERYXLOG", cwd=site.pgdata,
        WALSHIP_FETCH_PREFETCH="3",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    # the background process that fetch started fills the window, from the same directory
    deadline = time.monotonic() + 30
    while not list((site.pg_wal / ".walship").glob(f"*/f/{segment_name(3)}")):
        assert site.imported() == [], "imported from the caller's directory"
        assert time.monotonic() < deadline, "the background process fetched nothing"
        time.sleep(0.02)
    assert site.imported() == [], "imported from the caller's directory"
    again = site.run(
        "fetch", segment_name(2), "pg_wal/RECOVERYXLOG", cwd=site.pgdata,
        WALSHIP_FETCH_PREFETCH="3",
    )  # fmt: skip
    assert again.returncode == 0 and "(prefetched)" in again.stderr, again.stderr
    assert site.imported() == [], "imported from the caller's directory"


#: run as a subreaper: orphans of its descendants become its children
_REAPER = textwrap.dedent(
    """
    import ctypes, fcntl, glob, json, os, shutil, signal, subprocess, sys, time

    PR_SET_CHILD_SUBREAPER = 36
    assert ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    received = []
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGUSR1):
        signal.signal(signum, lambda signum, frame: received.append(signum))
    p = json.loads(sys.argv[1])

    def walship(*args):
        return subprocess.run([p["walship"], *args], env=p["env"], cwd=p["pgdata"],
                              capture_output=True, text=True, timeout=60)

    def start(name):  # a call that starts the background process (or gives it work)
        if p["mode"] == "push":
            return walship("push", "pg_wal/" + name, name)
        return walship("fetch", name, "pg_wal/RECOVERYXLOG")

    def held(path):
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except OSError:
            return True
        finally:
            os.close(fd)

    assert start(p["names"][0]).returncode == 0  # starts the background process
    lock = glob.glob(os.path.join(p["pgdata"], "pg_wal", ".walship", "*", "lock"))[0]
    assert held(lock)
    time.sleep(0.5)
    orphaned = False
    for child in open("/proc/self/task/%d/children" % os.getpid()).read().split():
        cmd = open("/proc/%s/cmdline" % child, "rb").read()
        orphaned = orphaned or b"walship.background" in cmd
    if p["mode"] == "fetch":  # the end of recovery: its read-ahead spool goes
        assert walship("fetch", "00000002.history", "pg_wal/RECOVERYHISTORY").returncode == 1
        assert not glob.glob(os.path.join(os.path.dirname(lock), "f"))
        assert held(lock)
    # its configuration changes (it exits), then a new one starts and its spool goes
    with open(p["config"], "a") as fh:
        fh.write("compression_level = 3\\n")
    deadline = time.monotonic() + 30
    while held(lock):
        assert time.monotonic() < deadline, "background process did not exit"
        time.sleep(0.05)
    assert start(p["names"][1]).returncode == 0
    spool_root = os.path.join(p["pgdata"], "pg_wal", ".walship")
    for _ in range(600):  # the process may still be writing into it: retry
        shutil.rmtree(spool_root, ignore_errors=True)
        if not os.path.lexists(spool_root):
            break
        time.sleep(0.05)
    deadline = time.monotonic() + 30
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        assert time.monotonic() < deadline, "background process did not exit"
        time.sleep(0.05)
    time.sleep(0.3)  # a signal sent just before it exited has arrived
    print(json.dumps({"received": received, "orphaned": orphaned}))
    """
)


@pytest.mark.parametrize("mode", ["push", "fetch"])
def test_an_orphaned_background_process_never_signals_its_new_parent(site: Site, mode: str) -> None:
    """Started by a push (look-ahead) or by a fetch (read-ahead)."""
    env = dict(site.env)
    if mode == "push":
        names = site.backlog(1, 6)
    else:
        names = [segment_name(n) for n in (1, 2)]
        for segno in range(1, 6):
            path = site.root / segment_name(segno)
            path.write_bytes(make_segment(segno))
            assert site.run("push", str(path), path.name, cwd=site.clean).returncode == 0
        env["WALSHIP_FETCH_PREFETCH"] = "3"
    params = {
        "walship": WALSHIP,
        "env": env,
        "pgdata": str(site.pgdata),
        "config": str(site.config),
        "names": names,
        "mode": mode,
    }
    r = subprocess.run(
        [sys.executable, "-c", _REAPER, json.dumps(params)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["orphaned"], result
    assert result["received"] == [], "a walship process signalled the subreaper"
