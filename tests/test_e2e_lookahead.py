"""End-to-end push look-ahead with real PostgreSQL: a backlog of WAL drains
through archive_command with the background process pushing ahead, every
segment is stored with its digest, a restore reproduces the data; and
SIGKILL of walship processes (callers and the background process) at random
moments during a drain loses nothing, acknowledges nothing unstored, leaves
no lying record, and archiving resumes by itself."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import threading
import time
from collections.abc import Iterator

import pytest
from e2e import sha256_file, wait_for
from pgharness import (
    Cluster,
    Workdir,
    archive_command,
    restore_cluster,
    restore_command,
    walship_config,
)

from walship import config as walship_config_module
from walship.archive import lookahead
from walship.codec import objects
from walship.storage.registry import open_backend

pytestmark = [pytest.mark.pg, pytest.mark.slow]
MAJOR = 15
BALANCES = "SELECT sum(abalance)::text || ':' || count(*) FROM pgbench_accounts"


def _primary(work: Workdir, cfg: str) -> Cluster:
    primary = Cluster(MAJOR, work)
    primary.initdb(
        {
            "archive_mode": "on",
            "archive_command": archive_command(cfg),
            "archive_timeout": "0",
            # no checkpoint recycles the segments under test: their bytes are compared
            "max_wal_size": "'50GB'",
            "checkpoint_timeout": "'1h'",
        }
    )
    primary.start()
    return primary


def _pause_archiving(primary: Cluster) -> None:
    primary.psql("ALTER SYSTEM SET archive_command = ''")
    primary.psql("SELECT pg_reload_conf()")
    time.sleep(0.5)


def _resume_archiving(primary: Cluster, cfg: str) -> None:
    primary.psql("ALTER SYSTEM RESET archive_command")
    primary.psql("SELECT pg_reload_conf()")


def _make_wal(primary: Cluster, segments: int, rows: int = 20000) -> None:
    primary.psql("CREATE TABLE IF NOT EXISTS t(g int, h text)")
    primary.psql(
        f"DO $$ BEGIN FOR i IN 1..{segments} LOOP "
        f"INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, {rows}) g; "
        "PERFORM pg_switch_wal(); END LOOP; END $$"
    )


def _ready(primary: Cluster) -> list[str]:
    status = os.path.join(primary.datadir, "pg_wal", "archive_status")
    return sorted(n[: -len(".ready")] for n in os.listdir(status) if n.endswith(".ready"))


def _wait_drained(primary: Cluster, last: str, timeout: float = 180) -> None:
    def drained() -> bool:
        done = os.path.join(primary.datadir, "pg_wal", "archive_status", f"{last}.done")
        return os.path.exists(done) and not [n for n in _ready(primary) if n <= last]

    wait_for(f"the backlog up to {last} archived", drained, [primary], timeout=timeout)


def _stored(cfg_path: str, names: list[str]) -> dict[str, str | None]:
    cfg = walship_config_module.load(config_path=cfg_path, env={})
    backend = open_backend(cfg.require("repo"), cfg)
    try:
        return {
            n: objects.stored_digest(cfg, backend, f"wal/{n[:16]}/{n}")
            for n in names
            if not n.endswith((".history", ".backup"))
        }
    finally:
        backend.close()


def _restore_and_compare(work: Workdir, backup: str, cfg: str, expected: tuple[str, str]) -> None:
    restored = restore_cluster(
        MAJOR,
        work,
        backup,
        "restored",
        {"restore_command": restore_command(cfg), "recovery_target_action": "'promote'"},
    )
    try:
        restored.start()
        restored.wait_promoted(timeout=300)
        assert restored.psql(BALANCES) == expected[0]
        assert (
            restored.psql("SELECT count(*)::text || ':' || md5(string_agg(h, '')) FROM t")
            == (expected[1])
        )
    finally:
        restored.stop("immediate")


def _drain(work: Workdir, settings: dict[str, object], segments: int) -> None:
    cfg = walship_config(work, {**settings, "log_level": "debug"})
    primary = _primary(work, cfg)
    try:
        primary.pgbench("-i", "-s", "2", "-q")
        backup = os.path.join(work.path, "backup")
        primary.basebackup(backup)
        _pause_archiving(primary)
        _make_wal(primary, segments)
        primary.pgbench("-t", "300", "-c", "2", "-n")
        last = primary.switch_wal()
        backlog = _ready(primary)
        assert len(backlog) >= segments, backlog
        pg_wal = os.path.join(primary.datadir, "pg_wal")
        digests = {n: sha256_file(os.path.join(pg_wal, n)) for n in backlog if len(n) == 24}
        expected = (
            primary.psql(BALANCES),
            primary.psql("SELECT count(*)::text || ':' || md5(string_agg(h, '')) FROM t"),
        )
        started = time.monotonic()
        _resume_archiving(primary, cfg)
        _wait_drained(primary, last)
        seconds = time.monotonic() - started
        stored = _stored(cfg, list(digests))
        assert stored == digests
        log = primary.log()
        ahead = log.count(" (ahead) ")
        print(f"drained {len(backlog)} files in {seconds:.1f} s, {ahead} acknowledged from records")
        assert ahead >= len(digests) // 2, log[-4000:]
        walship_errors = [
            line for line in log.splitlines() if "walship[" in line and " ERROR " in line
        ]
        assert walship_errors == []
        assert "lookahead.error" not in log and "not pushed ahead" not in log
        assert "background process failed" not in log
        _restore_and_compare(work, backup, cfg, expected)
    finally:
        primary.stop("immediate")


def test_a_backlog_drains_with_look_ahead(work: Workdir) -> None:
    _drain(work, {"repo": work.mkdir("repo")}, segments=70)


@pytest.mark.cloud
def test_a_backlog_drains_with_look_ahead_to_s3(work: Workdir, s3_repo_env: dict[str, str]) -> None:
    settings: dict[str, object] = {}
    for k, v in s3_repo_env.items():
        if k.startswith("WALSHIP_"):
            settings[k[len("WALSHIP_") :].lower()] = v == "true" if v in ("true", "false") else v
        else:
            os.environ[k] = v  # credentials: inherited by the server and walship
    _drain(work, settings, segments=64)  # the proof asks for >= 64, local and S3


# ---------------------------------------------------------------- kill -9


def _our_walship_processes(markers: list[str]) -> list[int]:
    """Python processes running walship for this test: a caller (its command line
    names this test's config file) or the background process (it names this
    test's pg_wal). Nothing else is ever signalled."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if not argv or b"python" not in os.path.basename(argv[0]):
            continue
        if any(m.encode() in argv for m in markers) or any(
            m.encode() in a for a in argv for m in markers
        ):
            pids.append(int(entry))
    return pids


def _is_background(pid: int, pg_wal: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return pg_wal.encode() in fh.read().split(b"\0")
    except OSError:
        return False


def _check_records(pg_wal: str, cfg_path: str, rng: random.Random) -> int:
    """Every record that would be believed names a stored object with its digest,
    and (for a sample) the file's bytes hash to it. Returns the records seen."""
    root = os.path.join(pg_wal, lookahead.SPOOL)
    seen = 0
    believed: list[tuple[str, lookahead.Record]] = []
    for tag in os.listdir(root) if os.path.isdir(root) else []:
        rdir = os.path.join(root, tag, lookahead.RECORDS)
        for name in os.listdir(rdir) if os.path.isdir(rdir) else []:
            try:
                with open(os.path.join(rdir, name)) as fh:
                    record = lookahead.Record.parse(fh.read())
            except OSError:
                continue
            if name.startswith(lookahead.TMP) or name.endswith(lookahead.BUSY):
                continue
            seen += 1
            assert record is not None, f"unreadable record {name}"
            try:
                matches = lookahead.stat_of(os.path.join(pg_wal, name)) == record.stat
            except OSError:
                matches = False
            if matches:
                believed.append((name, record))
    if believed:
        stored = _stored(cfg_path, [n for n, _ in believed])
        for name, record in believed:
            if name in stored:
                assert stored[name] == record.sha256, f"record of {name} lies"
        for name, record in rng.sample(believed, min(2, len(believed))):
            assert sha256_file(os.path.join(pg_wal, name)) == record.sha256, name
    return seen


class _Producer(threading.Thread):
    """Keeps PostgreSQL writing WAL (and switching segments) during the trials."""

    def __init__(self, primary: Cluster, limit: int) -> None:
        super().__init__(daemon=True)
        self.primary = primary
        self.limit = limit
        self.stop = threading.Event()
        self.made = 0

    def run(self) -> None:
        while not self.stop.is_set() and self.made < self.limit:
            _make_wal(self.primary, 4, rows=5000)
            self.made += 4
            time.sleep(0.05)


@pytest.fixture
def rng() -> Iterator[random.Random]:
    seed = int(os.environ.get("WALSHIP_TEST_SEED", time.time_ns() % 1_000_000))
    print(f"seed {seed} (WALSHIP_TEST_SEED)")
    yield random.Random(seed)


def test_kill_9_during_a_drain_loses_nothing(work: Workdir, rng: random.Random) -> None:
    cfg = walship_config(
        work, {"repo": work.mkdir("repo"), "archive_lookahead": 16, "log_level": "debug"}
    )
    primary = _primary(work, cfg)
    pg_wal = os.path.join(primary.datadir, "pg_wal")
    producer = _Producer(primary, limit=160)
    try:
        primary.psql("SELECT 1")
        first = primary.switch_wal()
        _pause_archiving(primary)
        _make_wal(primary, 40, rows=5000)
        _resume_archiving(primary, cfg)
        producer.start()
        kills = {"callers": 0, "background": 0, "records": 0}
        trials = 0
        deadline = time.monotonic() + 200
        while trials < 24 and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.02, 0.4))
            # The archiver exits when its command is killed; the postmaster starts
            # a new one when its loop next wakes, which a connection makes it do.
            primary.psql("SELECT 1")
            victims = _our_walship_processes([cfg, pg_wal])
            background = [p for p in victims if _is_background(p, pg_wal)]
            callers = [p for p in victims if p not in background]
            # A killed caller makes PostgreSQL's archiver exit, and the postmaster
            # takes up to a minute to start another: a few of those, many of the rest.
            if callers and kills["callers"] < 3 and rng.random() < 0.3:
                chosen = callers if rng.random() < 0.5 else [rng.choice(callers)]
                chosen += background if rng.random() < 0.5 else []
            elif background:
                chosen = background
            else:
                continue
            for pid in chosen:
                try:  # a pidfd: the process checked is the process signalled
                    pidfd = os.pidfd_open(pid)
                except OSError:
                    continue  # it finished meanwhile
                try:
                    if pid not in _our_walship_processes([cfg, pg_wal]):
                        continue
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                    kills["background" if pid in background else "callers"] += 1
                except OSError:
                    pass
                finally:
                    os.close(pidfd)
            trials += 1
            kills["records"] += _check_records(pg_wal, cfg, rng)
        producer.stop.set()
        producer.join(timeout=60)
        print(f"{trials} trials: {kills}, {producer.made} switches produced")
        assert trials >= 20 and kills["background"] >= 3 and kills["callers"] >= 3, (
            kills,
            "\n".join(line for line in primary.log().splitlines() if "walship[" not in line)[
                -6000:
            ],
        )
        last = primary.switch_wal()
        _wait_drained(primary, last, timeout=240)  # nobody helps: archiving resumes itself
        _check_records(pg_wal, cfg, rng)
        segments = sorted(n for n in os.listdir(pg_wal) if len(n) == 24 and first <= n <= last)
        assert len(segments) >= 100
        stored = _stored(cfg, segments)
        missing = [n for n in segments if stored[n] is None]
        assert missing == []
        wrong = [n for n in segments if stored[n] != sha256_file(os.path.join(pg_wal, n))]
        assert wrong == []
        # every stored object decodes and matches its digest (sample)
        conf = walship_config_module.load(config_path=cfg, env={})
        backend = open_backend(conf.require("repo"), conf)
        try:
            for name in rng.sample(segments, 8):
                digest = hashlib.sha256()
                with objects.open_object(conf, backend, f"wal/{name[:16]}/{name}") as obj:
                    for chunk in obj.raw:
                        digest.update(chunk)
                assert digest.hexdigest() == sha256_file(os.path.join(pg_wal, name))
        finally:
            backend.close()
    finally:
        producer.stop.set()
        primary.stop("immediate")
