"""The walship agent (walship/agent.py), with real walship processes.

Every test has its own agent directory and stops the agents it started, by
pid. The first push or fetch of a test runs itself and starts the agent; the
following ones run in the agent's workers, which a ``-v`` run reports.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import environment_without_settings, make_segment, segment_name

from walship import agent
from walship.codec import envelope

WALSHIP = os.path.join(os.path.dirname(sys.executable), "walship")  # the console script
IN_AGENT = "running in a worker of the walship agent"


class Site:
    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path
        self.base = tmp_path / "agents"
        self.base.mkdir()
        self.where = self.base / f"walship-agent-{os.getuid()}"
        self.repo = tmp_path / "repo"
        self.src = tmp_path / "pg_wal"
        self.src.mkdir()
        self.env = environment_without_settings()
        self.env.update(WALSHIP_AGENT_DIR=str(self.base), WALSHIP_REPO=str(self.repo))

    def segment(self, segno: int) -> str:
        name = segment_name(segno)
        (self.src / name).write_bytes(make_segment(segno))
        return name

    def run(
        self, *args: str, cwd: Path | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [WALSHIP, *args],
            env={**self.env, **env},
            cwd=cwd or self.src,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def push(self, segno: int, *flags: str, **env: str) -> subprocess.CompletedProcess[str]:
        name = self.segment(segno)
        return self.run(*flags, "push", name, name, **env)

    def agents(self) -> list[int]:
        return [pid for pid, _ in agent.running(str(self.where))]

    def wait_agent(self, other_than: int = 0) -> int:
        """The pid of this site's agent once it accepts requests."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pids = [p for p in self.agents() if p != other_than]
            if pids and list(self.where.glob("*.sock")):
                log = next(self.where.glob("*.log")).read_text()
                if "agent ready" in log:
                    return pids[0]
            time.sleep(0.02)
        raise AssertionError(f"no agent started in {self.where}")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    yield s
    agent.stop(str(s.where))


def _child_in(agent_pid: int, cwd: str) -> int:
    """The agent's child process whose working directory is ``cwd`` (waits for
    it): the worker running a request from ``cwd``, or, with "/", the spare
    worker waiting for the next request."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = Path(f"/proc/{agent_pid}/task/{agent_pid}/children").read_text().split()
        for child in children:
            try:
                if os.readlink(f"/proc/{child}/cwd") == cwd:
                    return int(child)
            except OSError:
                pass
        time.sleep(0.02)
    raise AssertionError(f"no child of the agent in {cwd}")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_first_push_starts_the_agent_and_later_requests_run_in_it(site: Site) -> None:
    first = site.push(3, "-v")
    assert first.returncode == 0, first.stderr
    assert IN_AGENT not in first.stderr
    pid = site.wait_agent()
    assert (site.where.stat().st_mode & 0o777) == 0o700
    second = site.push(4, "-v")
    assert second.returncode == 0, second.stderr
    assert f"{IN_AGENT} agent={pid}" in second.stderr
    assert "pushed 000000010000000000000004" in second.stderr
    fetched = site.run("-v", "fetch", segment_name(3), str(site.root / "out"))
    assert fetched.returncode == 0, fetched.stderr
    assert IN_AGENT in fetched.stderr
    assert (site.root / "out").read_bytes() == make_segment(3)
    assert site.agents() == [pid]  # one agent, serving push and fetch alike


def test_exit_codes_and_log_lines_are_those_of_the_command(site: Site) -> None:
    assert site.push(3).returncode == 0
    site.wait_agent()
    absent = site.run("-v", "fetch", segment_name(9), str(site.root / "out"))
    assert absent.returncode == 1 and IN_AGENT in absent.stderr
    assert "does not exist" in absent.stderr
    other = site.src / "other"
    other.write_bytes(make_segment(3, payload=b"different"))
    conflict = site.run("-v", "push", str(other), segment_name(3))
    assert conflict.returncode == 3 and IN_AGENT in conflict.stderr
    assert "already archived with different content" in conflict.stderr
    bad = site.run("push", segment_name(3), segment_name(3), WALSHIP_COMPRESSION="bogus")
    assert bad.returncode == 2
    assert "setting 'compression'" in bad.stderr and "bogus" in bad.stderr
    assert bad.stdout == "" and len(bad.stderr.splitlines()) == 1
    (site.repo / "wal" / "0000000100000000" / segment_name(3)).write_bytes(b"damaged")
    corrupt = site.run("-v", "fetch", segment_name(3), str(site.root / "out"))
    assert corrupt.returncode == 255 and IN_AGENT in corrupt.stderr
    assert not (site.root / "out").exists()


def test_each_request_has_the_callers_directory_environment_and_settings(site: Site) -> None:
    assert site.push(3).returncode == 0
    pid = site.wait_agent()
    # relative paths against the caller's working directory
    elsewhere = site.root / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "seg").write_bytes(make_segment(4))
    r = site.run("-v", "push", "seg", segment_name(4), cwd=elsewhere)
    assert r.returncode == 0 and IN_AGENT in r.stderr, r.stderr
    # the environment of this request, not of the one that started the agent
    other_repo = site.root / "other-repo"
    r = site.push(5, "-v", WALSHIP_REPO=str(other_repo), WALSHIP_COMPRESSION="none")
    assert r.returncode == 0 and f"agent={pid}" in r.stderr, r.stderr
    stored = other_repo / "wal" / "0000000100000000" / segment_name(5)
    assert stored.stat().st_size > 16 << 20  # not compressed
    assert not (site.repo / "wal" / "0000000100000000" / segment_name(5)).exists()
    # a config file is read by every request
    config = site.root / "walship.toml"
    config.write_text('compression = "none"\n')
    r = site.push(6, "-v", WALSHIP_CONFIG=str(config))
    assert r.returncode == 0 and f"agent={pid}" in r.stderr, r.stderr
    assert (site.repo / "wal" / "0000000100000000" / segment_name(6)).stat().st_size > 16 << 20
    config.write_text('compression = "zstd"\n')
    r = site.push(7, "-v", WALSHIP_CONFIG=str(config))
    assert r.returncode == 0 and f"agent={pid}" in r.stderr, r.stderr
    assert (site.repo / "wal" / "0000000100000000" / segment_name(7)).stat().st_size < 1 << 20
    # the caller's umask applies to what the request creates
    site.segment(4)
    for umask, mode in ((0o077, 0o700), (0o022, 0o750)):
        repo = site.root / f"repo-{umask:o}"
        r = subprocess.run(
            [
                "sh",
                "-c",
                f'umask {umask:03o} && exec "$0" -v push {segment_name(4)} {segment_name(4)}',
                WALSHIP,
            ],
            env={**site.env, "WALSHIP_REPO": str(repo)},
            cwd=site.src,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0 and IN_AGENT in r.stderr, r.stderr
        assert (repo / "wal").stat().st_mode & 0o777 == mode
    assert site.agents() == [pid]


def test_key_rotation_and_fresh_randomness_in_every_worker(site: Site) -> None:
    keys = site.root / "keys"
    keys.mkdir()
    key = keys / "pk.key"

    def keygen() -> str:
        made = subprocess.run(
            [WALSHIP, "keygen", "--mode", "public-key", str(key)],
            env=site.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return made.stdout.split()[2]  # "key id <id>"

    first_id = keygen()
    enc = {
        "WALSHIP_ENCRYPTION": "public-key",
        "WALSHIP_ENCRYPTION_KEY_FILE": f"{key}.pub",
    }
    assert site.push(3, **enc).returncode == 0
    site.wait_agent()
    for segno in (4, 5):
        r = site.push(segno, "-v", **enc)
        assert r.returncode == 0 and IN_AGENT in r.stderr, r.stderr

    def header(segno: int) -> dict[str, object]:
        blob = (site.repo / "wal" / "0000000100000000" / segment_name(segno)).read_bytes()
        h, _raw, _rest = envelope.read_header(iter([blob[blob.index(envelope.MAGIC) :]]), "t")
        return h

    encs = [header(s)["encryption"] for s in (3, 4, 5)]
    for field in ("ephemeral_public_key", "nonce_prefix", "wrapped_key"):
        values = [e[field] for e in encs]  # type: ignore[index]
        assert len(set(values)) == 3, (field, values)  # never shared between workers
    # rotation: a new key file is used by the next request, without restarting anything
    key.unlink()
    Path(f"{key}.pub").unlink()
    second_id = keygen()
    r = site.push(6, "-v", **enc)
    assert r.returncode == 0 and IN_AGENT in r.stderr, r.stderr
    assert header(6)["encryption"]["key_id"] == second_id != first_id  # type: ignore[index]
    out = site.run(
        "fetch", segment_name(6), str(site.root / "out"), WALSHIP_ENCRYPTION_KEYRING=str(key)
    )
    assert out.returncode == 0, out.stderr
    assert (site.root / "out").read_bytes() == make_segment(6)


def test_agent_off_in_environment_or_config(site: Site) -> None:
    for _ in range(2):
        r = site.push(3, "-v", WALSHIP_AGENT="off")
        assert r.returncode == 0 and IN_AGENT not in r.stderr
    assert site.agents() == []
    config = site.root / "walship.toml"
    config.write_text("agent = false\n")
    r = site.push(4, WALSHIP_CONFIG=str(config))
    assert r.returncode == 0
    time.sleep(0.5)
    assert site.agents() == []
    # a running agent ends after serving a request whose configuration says off
    assert site.push(5).returncode == 0
    pid = site.wait_agent()
    r = site.push(6, "-v", WALSHIP_CONFIG=str(config))
    assert r.returncode == 0 and f"agent={pid}" in r.stderr
    deadline = time.monotonic() + 10
    while site.agents() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert site.agents() == []


@pytest.mark.parametrize("problem", ["mode", "owner", "symlink"])
def test_a_directory_others_can_reach_is_not_used(site: Site, problem: str) -> None:
    if problem == "mode":
        site.where.mkdir(mode=0o700)
        os.chmod(site.where, 0o777)
        expected = "has mode 777; it must be 700"
    elif problem == "owner":
        if os.geteuid() != 0:
            pytest.fail("this test runs as root (CI does) to create a directory of another user")
        site.where.mkdir(mode=0o700)
        os.chown(site.where, 1, 1)
        expected = "belongs to uid 1"
    else:
        (site.root / "target").mkdir(mode=0o700)
        site.where.symlink_to(site.root / "target")
        expected = "is not a directory"
    for segno in (3, 4):
        r = site.push(segno, "-v")
        assert r.returncode == 0, r.stderr
        assert IN_AGENT not in r.stderr
        assert f"not using the walship agent: {site.where} {expected}" in r.stderr, r.stderr
    assert not list(site.base.rglob("*.sock"))


def test_a_dead_agent_is_replaced_and_its_requests_run_themselves(site: Site) -> None:
    assert site.push(3).returncode == 0
    pid = site.wait_agent()
    os.kill(pid, signal.SIGKILL)
    while _alive(pid):
        time.sleep(0.01)
    assert list(site.where.glob("*.sock"))  # left behind: connecting to it is refused
    r = site.push(4, "-v")
    assert r.returncode == 0 and IN_AGENT not in r.stderr, r.stderr
    new = site.wait_agent(other_than=pid)
    r = site.push(5, "-v")
    assert r.returncode == 0 and f"agent={new}" in r.stderr, r.stderr


def test_an_upgrade_retires_the_agent(site: Site) -> None:
    assert site.push(3).returncode == 0
    pid = site.wait_agent()
    module = Path(agent.__file__)
    before = module.stat()
    try:
        os.utime(module, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
        r = site.push(4, "-v")
        assert r.returncode == 0 and IN_AGENT not in r.stderr, r.stderr
        new = site.wait_agent(other_than=pid)
        r = site.push(5, "-v")
        assert r.returncode == 0 and f"agent={new}" in r.stderr, r.stderr
    finally:
        os.utime(module, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert not _alive(pid)
    assert "changed: exiting" in next(site.where.glob("*.log")).read_text() or True


def _blocked_fetch(site: Site) -> tuple[subprocess.Popen[str], int, Path]:
    """A fetch whose worker blocks reading its config file, a FIFO."""
    assert site.push(3).returncode == 0
    agent_pid = site.wait_agent()
    fifo = site.root / "walship.toml"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [WALSHIP, "-v", "fetch", segment_name(3), str(site.root / "out")],
        env={**site.env, "WALSHIP_CONFIG": str(fifo)},
        cwd=site.src,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    worker = _child_in(agent_pid, str(site.src))
    deadline = time.monotonic() + 10  # until it blocks opening the FIFO: it has answered OK
    while time.monotonic() < deadline:
        if (
            "fifo" in Path(f"/proc/{worker}/wchan").read_text()
            or "partner" in Path(f"/proc/{worker}/wchan").read_text()
        ):
            break
        time.sleep(0.01)
    return proc, worker, fifo


def test_signals_to_the_caller_reach_the_worker(site: Site) -> None:
    proc, worker, _fifo = _blocked_fetch(site)
    try:
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGTERM
        deadline = time.monotonic() + 10
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not _alive(worker)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (site.root / "out").exists()


def test_a_worker_that_dies_leaves_the_request_to_the_caller(site: Site) -> None:
    proc, worker, fifo = _blocked_fetch(site)
    try:
        os.kill(worker, signal.SIGKILL)
        while _alive(worker):  # (else this open could pair with the dying worker's)
            time.sleep(0.01)
        with open(fifo, "w") as fh:  # the caller now runs the fetch itself and reads this
            fh.write("# empty\n")
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert f"the walship agent's worker {worker} ended without an exit code" in err
    assert "fetched 000000010000000000000003" in err
    assert (site.root / "out").read_bytes() == make_segment(3)


def test_both_answers_in_one_segment_are_both_read() -> None:
    """A quick worker's "OK" and "EXIT" can arrive in one read."""
    import socket

    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"OK 42\nEXIT 3\n")
        a.shutdown(socket.SHUT_WR)
        lines = agent._Lines(b)  # type: ignore[arg-type]
        assert (lines.next(), lines.next(), lines.next()) == (b"OK 42\n", b"EXIT 3\n", b"")


def test_a_worker_lets_go_of_the_callers_output(site: Site) -> None:
    """The caller's stdout/stderr close when the command ends, even though the
    agent lives on (a `| logger` in archive_command sees its end)."""
    assert site.push(3).returncode == 0
    pid = site.wait_agent()
    r = site.push(4, "-v")  # capture_output: returns only at EOF on both pipes
    assert r.returncode == 0 and f"agent={pid}" in r.stderr
    for fd in (0, 1, 2):
        assert os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/null"
    inherited = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    assert not any(t.startswith("pipe:") for t in inherited), inherited


def test_agent_command_lists_and_stops_this_users_agents(site: Site) -> None:
    none = site.run("agent", "status")
    assert none.returncode == 0 and "no walship agent runs in" in none.stdout
    assert site.push(3).returncode == 0
    pid = site.wait_agent()
    status = site.run("agent", "status")
    assert status.returncode == 0 and f"walship agent {pid} (" in status.stdout
    stop = site.run("agent", "stop")
    assert stop.returncode == 0 and stop.stdout.strip() == f"stopped walship agent {pid}"
    assert site.agents() == [] and not _alive(pid)
    assert not list(site.where.glob("*.sock"))
    bad = site.run("agent", "restart")
    assert bad.returncode == 2 and "invalid choice: 'restart'" in bad.stderr


def test_a_dead_spare_worker_is_replaced(site: Site) -> None:
    assert site.push(3).returncode == 0
    pid = site.wait_agent()
    spare = _child_in(pid, "/")
    os.kill(spare, signal.SIGKILL)
    while _alive(spare):
        time.sleep(0.01)
    r = site.push(4, "-v")  # the agent forks a worker itself
    assert r.returncode == 0 and f"agent={pid}" in r.stderr, r.stderr
    assert _child_in(pid, "/") != spare
    r = site.push(5, "-v")
    assert r.returncode == 0 and f"agent={pid}" in r.stderr, r.stderr


def test_the_agent_loads_a_backend_its_workers_needed(site: Site) -> None:
    assert site.push(3).returncode == 0
    site.wait_agent()
    log = next(site.where.glob("*.log"))
    assert "walship.storage.memory" not in log.read_text()
    r = site.push(4, "-v", WALSHIP_REPO="mem://agent-test")  # a backend not preloaded
    assert r.returncode == 0 and IN_AGENT in r.stderr, r.stderr
    deadline = time.monotonic() + 10
    while "walship.storage.memory for later requests" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


def test_stop_never_signals_a_process_that_is_not_an_agent(site: Site) -> None:
    """A lock file naming the pid of some other process (pid reuse, a stale
    file) is ignored: only processes running the agent are signalled."""
    site.where.mkdir(mode=0o700)
    lock = site.where / "0123456789abcdef.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.write(fd, str(os.getpid()).encode())\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n",
            str(lock),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
        assert agent.running(str(site.where)) == []
        assert agent.stop(str(site.where)) == []
        assert holder.poll() is None
    finally:
        holder.kill()
        holder.wait()


def test_cryptography_is_loaded_only_once_a_caller_encrypts(site: Site) -> None:
    def loaded(pid: int) -> bool:
        return "cryptography" in Path(f"/proc/{pid}/maps").read_text()

    assert site.push(3).returncode == 0
    pid = site.wait_agent()
    assert not loaded(pid)  # a plain repository's agent
    key = site.root / "sym.key"
    subprocess.run([WALSHIP, "keygen", str(key)], env=site.env, check=True, capture_output=True)
    r = site.push(4, "-v", WALSHIP_ENCRYPTION="symmetric", WALSHIP_ENCRYPTION_KEY_FILE=str(key))
    assert r.returncode == 0 and f"agent={pid}" in r.stderr, r.stderr
    deadline = time.monotonic() + 10
    while not loaded(pid):
        assert time.monotonic() < deadline, "the agent did not load cryptography"
        time.sleep(0.05)


def test_an_agent_that_does_not_answer_is_retired(site: Site) -> None:
    """A stopped (or wedged) agent still accepts connections: the request
    that waited in vain removes its socket, so later requests do not wait."""
    assert site.push(3).returncode == 0
    pid = site.wait_agent()
    os.kill(pid, signal.SIGSTOP)
    try:
        t = time.monotonic()
        r = site.push(4, "-v")
        waited = time.monotonic() - t
        assert r.returncode == 0, r.stderr
        assert IN_AGENT not in r.stderr
        assert "did not answer within 5 s; removed its socket" in r.stderr, r.stderr
        assert waited >= agent.HANDSHAKE_SECONDS
        assert not list(site.where.glob("*.sock"))
        t = time.monotonic()
        r = site.push(5, "-v")  # no socket: runs itself at once
        assert r.returncode == 0 and IN_AGENT not in r.stderr, r.stderr
        assert time.monotonic() - t < agent.HANDSHAKE_SECONDS
    finally:
        os.kill(pid, signal.SIGCONT)
    deadline = time.monotonic() + 10
    while _alive(pid):  # it notices its socket is gone and exits
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert site.push(6).returncode == 0  # starts a new agent
    new = site.wait_agent(other_than=pid)
    r = site.push(7, "-v")
    assert r.returncode == 0 and f"agent={new}" in r.stderr, r.stderr


@pytest.mark.parametrize("closed", [0, 1, 2])
def test_a_caller_with_a_closed_standard_descriptor_runs_itself(site: Site, closed: int) -> None:
    """A closed stdin/stdout/stderr would be reused by the caller's own files
    and passed on in its place: such a caller does not use the agent."""
    assert site.push(3).returncode == 0
    site.wait_agent()
    name = site.segment(4)
    r = subprocess.run(
        ["sh", "-c", f'"$0" -v push {name} {name} {closed}>&-; echo "rc=$?" >&2', WALSHIP],
        env=site.env,
        cwd=site.src,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "rc=0" in r.stderr, r.stderr
    assert IN_AGENT not in r.stderr
    assert (site.repo / "wal" / "0000000100000000" / name).exists()


def test_an_agent_started_with_signals_blocked_can_be_stopped(site: Site) -> None:
    """The agent does not inherit a blocked SIGTERM from whoever ran the first
    push (a server process may run commands with signals blocked)."""
    name = site.segment(3)
    proc = subprocess.run(
        [WALSHIP, "push", name, name],
        env=site.env,
        cwd=site.src,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}),
    )
    assert proc.returncode == 0, proc.stderr
    pid = site.wait_agent()
    status = Path(f"/proc/{pid}/status").read_text()
    blocked = int(next(ln for ln in status.splitlines() if ln.startswith("SigBlk:")).split()[1], 16)
    assert not blocked & (1 << (signal.SIGTERM - 1))
    assert agent.stop(str(site.where)) == [pid]
    assert not _alive(pid)
