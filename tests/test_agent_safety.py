"""What walship's background processes must never do, shown with real processes.

- Import a module from the directory of the caller they serve (issue 10, item
  3): every module name a worker or the read-ahead helper could import lazily
  is planted, as a file that leaves a marker when imported, in the working
  directory of ``walship push`` / ``walship fetch``; no marker may appear.
- Signal a process that is not proven to be theirs (issue 10, item 4): a
  worker whose agent has exited is reparented to a subreaper, which must not
  receive the SIGTERM meant for the agent.

Only walship's command line and /proc are used, so that these tests hold for
any way of serving requests in the background.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import SYSID, environment_without_settings, make_segment, segment_name

WALSHIP = os.path.join(os.path.dirname(sys.executable), "walship")  # the console script
IN_AGENT = "running in a worker of the walship agent"


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
        self.base = tmp_path / "agents"
        self.base.mkdir()
        self.repo = tmp_path / "repo"
        self.clean = tmp_path / "clean"  # a directory with nothing planted
        self.clean.mkdir()
        # the caller's directory: a data directory, with modules planted in it
        self.pgdata = tmp_path / "data"
        (self.pgdata / "pg_wal").mkdir(parents=True)
        (self.pgdata / "global").mkdir()
        (self.pgdata / "global" / "pg_control").write_bytes(struct.pack("<Q", SYSID) + bytes(100))
        self.markers = tmp_path / "markers"
        self.markers.mkdir()
        self.env = environment_without_settings()
        self.env.update(WALSHIP_AGENT_DIR=str(self.base), WALSHIP_REPO=str(self.repo))

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

    def push(self, segno: int, cwd: Path, *flags: str, **env: str) -> str:
        path = self.root / segment_name(segno)
        path.write_bytes(make_segment(segno))
        r = self.run(*flags, "push", str(path), segment_name(segno), cwd=cwd, **env)
        assert self.imported() == [], "imported from the caller's directory"
        assert r.returncode == 0, r.stderr
        return r.stderr

    def agent_pid(self) -> int:
        """The agent's pid once it serves requests (pushes until one runs in it)."""
        deadline = time.monotonic() + 30
        segno = 40
        while time.monotonic() < deadline:
            status = self.run("agent", "status", cwd=self.clean).stdout
            found = re.search(r"walship agent (\d+) \(", status)
            if found:
                segno += 1
                if IN_AGENT in self.push(segno, self.clean, "-v"):
                    return int(found[1])
            time.sleep(0.05)
        raise AssertionError("no walship agent started")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    yield s
    s.run("agent", "stop", cwd=s.clean)


def _worker_in(agent_pid: int, cwd: Path) -> int:
    """The agent's child whose working directory is ``cwd``: the worker of a request."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = Path(f"/proc/{agent_pid}/task/{agent_pid}/children").read_text().split()
        for child in children:
            try:
                if os.readlink(f"/proc/{child}/cwd") == str(cwd):
                    return int(child)
            except OSError:
                pass
        time.sleep(0.02)
    raise AssertionError(f"no worker of the agent runs in {cwd}")


def test_workers_import_nothing_from_the_callers_directory(site: Site) -> None:
    site.push(1, site.clean)  # runs itself and starts the agent
    site.push(3, site.clean)
    site.agent_pid()
    site.plant()
    # push and fetch in the agent, from the planted directory
    assert IN_AGENT in site.push(2, site.pgdata, "-v")
    out = site.run(
        "-v", "fetch", segment_name(2), "pg_wal/RECOVERYXLOG", cwd=site.pgdata,
        WALSHIP_FETCH_PREFETCH="3",
    )  # fmt: skip
    assert site.imported() == [], "imported from the caller's directory"
    assert out.returncode == 0 and IN_AGENT in out.stderr, out.stderr
    # the read-ahead helper, a fork of that worker, fills its window in the same directory
    spool = site.pgdata / "pg_wal" / ".walship-prefetch"
    deadline = time.monotonic() + 30
    while not any(p.name == segment_name(3) for p in spool.rglob("*")):
        assert site.imported() == [], "imported from the caller's directory"
        assert time.monotonic() < deadline, "the read-ahead helper fetched nothing"
        time.sleep(0.02)


def test_a_configuration_error_in_a_worker_imports_nothing_from_the_callers_directory(
    site: Site,
) -> None:
    """Its "did you mean" loads difflib; the request is proven to run in a worker."""
    site.push(1, site.clean)
    agent_pid = site.agent_pid()
    site.plant()
    fifo = site.root / "walship.toml"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [WALSHIP, "push", "x", "y"],
        env={**site.env, "WALSHIP_CONFIG": str(fifo)},
        cwd=site.pgdata,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _worker_in(agent_pid, site.pgdata)
        with open(fifo, "w") as fh:
            fh.write('compresion = "zstd"\n')
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert site.imported() == [], "imported from the caller's directory"
    assert proc.returncode == 2 and "did you mean 'compression'" in err, err


def test_an_agent_started_from_the_callers_directory_imports_nothing_from_it(
    site: Site,
) -> None:
    site.plant()
    site.push(1, site.pgdata)  # runs itself and starts the agent from there
    site.agent_pid()
    assert IN_AGENT in site.push(2, site.pgdata, "-v")
    r = site.run("push", "x", "y", cwd=site.pgdata, WALSHIP_COMPRESION="zstd")
    assert site.imported() == [], "imported from the caller's directory"
    assert r.returncode == 2 and "did you mean 'compression'" in r.stderr, r.stderr


def test_no_agent_when_pythonpath_depends_on_the_working_directory(site: Site) -> None:
    """A relative PYTHONPATH entry names another directory for every caller:
    such callers run their commands themselves (a fresh process, as before)."""
    (site.pgdata / "lib").mkdir()
    for segno in (1, 2, 3):
        assert IN_AGENT not in site.push(segno, site.pgdata, "-v", PYTHONPATH="lib")
        time.sleep(0.3)
    status = site.run("agent", "status", cwd=site.clean, PYTHONPATH="lib")
    assert "no walship agent runs in" in status.stdout, status.stdout
    assert list(site.base.rglob("*.sock")) == []


#: run as a subreaper: orphans of its descendants become its children
_REAPER = textwrap.dedent(
    """
    import ctypes, json, os, re, signal, subprocess, sys, time

    PR_SET_CHILD_SUBREAPER = 36
    assert ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    received = []
    signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    p = json.loads(sys.argv[1])
    walship, env, clean, fifo = p["walship"], p["env"], p["clean"], p["fifo"]

    def run(*args, **extra):
        return subprocess.run([walship, *args], env={**env, **extra}, cwd=clean,
                              capture_output=True, text=True, timeout=60)

    def push(segno, *flags, **extra):
        return run(*flags, "push", "seg%d" % segno, p["names"][str(segno)], **extra)

    assert push(1).returncode == 0  # runs itself, starts the agent: it becomes our child
    agent = 0
    deadline = time.monotonic() + 30
    while not agent:
        assert time.monotonic() < deadline, "no agent"
        status = re.search(r"walship agent (\\d+) \\(", run("agent", "status").stdout)
        if status and "agent=" in push(2, "-v").stderr:
            agent = int(status[1])
        time.sleep(0.05)
    # a request whose worker waits for its configuration (a FIFO)
    proc = subprocess.Popen([walship, "push", "seg1", p["names"]["1"]],
                            env={**env, "WALSHIP_CONFIG": fifo}, cwd=clean,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    worker = 0
    while not worker:
        assert time.monotonic() < deadline, "no worker"
        for child in Path("/proc/%d/task/%d/children" % (agent, agent)).read_text().split():
            try:
                if os.readlink("/proc/%s/cwd" % child) == clean:
                    worker = int(child)
            except OSError:
                pass
        time.sleep(0.02)
    # the agent exits while its worker runs: the worker is reparented to us
    assert run("agent", "stop").returncode == 0
    os.waitpid(agent, 0)
    stat = Path("/proc/%d/stat" % worker).read_text().rsplit(")", 1)[1].split()
    reparented = int(stat[1]) == os.getpid()
    with open(fifo, "w") as fh:
        fh.write("agent = false\\n")  # this request says: no agent
    _out, err = proc.communicate(timeout=30)
    os.waitpid(worker, 0)
    time.sleep(0.3)  # a signal sent just before the worker exited has arrived
    print(json.dumps({"received": received, "code": proc.returncode, "err": err,
                      "reparented": reparented}))
    """
)


def test_an_orphaned_worker_never_signals_its_new_parent(site: Site) -> None:
    fifo = site.root / "walship.toml"
    os.mkfifo(fifo)
    for n in (1, 2):
        (site.clean / f"seg{n}").write_bytes(make_segment(n))
    params = {
        "walship": WALSHIP,
        "env": site.env,
        "clean": str(site.clean),
        "fifo": str(fifo),
        "names": {str(n): segment_name(n) for n in (1, 2)},
    }
    r = subprocess.run(
        [sys.executable, "-c", _REAPER, json.dumps(params)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["reparented"], result
    assert result["code"] == 0, result["err"]
    assert result["received"] == [], "the worker signalled the subreaper it was orphaned to"
