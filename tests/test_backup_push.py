"""backup-push and backup-list against real PostgreSQL servers (docs/backups.md)."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime

import pytest
from backupkit import (
    as_server_user,
    file_bytes,
    load_config,
    manifests,
    one_line,
    run_walship,
    scan,
    server_env,
    sha256,
    start_walship,
    walship_cmd,
)
from e2e import archiving_primary, sha256_file
from pgharness import Cluster, Workdir, archive_command, free_port, run, walship_config

from walship import repository
from walship.backup.listing import needed_segments
from walship.codec import envelope
from walship.pg import format_lsn
from walship.storage.registry import open_backend

pytestmark = [pytest.mark.pg, pytest.mark.slow]

#: directories kept (empty) in every backup, by PostgreSQL's rules
EMPTY_DIRS = (
    "pg_wal",
    "pg_wal/archive_status",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
)


def _primary(major: int, work: Workdir, **settings: object) -> tuple[Cluster, str]:
    repo = work.mkdir("repo")
    cfg = walship_config(work, {"repo": repo, **settings})
    return archiving_primary(major, work, cfg), cfg


def _push(cluster: Cluster, cfg: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_walship(cfg, "backup-push", *args, env=server_env(cluster, **env))


def test_backup_while_pgbench_writes(work: Workdir) -> None:
    primary, cfg = _primary(15, work, backup_part_size=1 << 20, backup_workers=2)
    bench: subprocess.Popen[str] | None = None
    try:
        primary.pgbench("-i", "-s", "3", "-q")
        primary.psql("CHECKPOINT")
        bench = subprocess.Popen(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                primary.bin("pgbench"),
                "-h",
                primary.sockdir,
                "-p",
                str(primary.port),
                "-U",
                "postgres",
                "-T",
                "30",
                "-c",
                "2",
                "-n",
                "postgres",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        proc = _push(primary, cfg, "--label", "nightly", "--fast")
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == ""  # quiet when not on a terminal
        (line,) = proc.stdout.splitlines()
        (m,) = manifests(cfg)
        assert line.startswith(f"backup {m.name}: ")
        assert "consistent at LSN" in line and "archived)" in line
        assert m.label == "nightly"
        assert not m.from_standby and m.timeline == 1 == m.stop_timeline
        assert m.start_lsn <= m.stop_lsn
        assert m.backup_label.startswith("START WAL LOCATION")
        assert "LABEL: nightly" in m.backup_label
        assert m.pg_version // 10000 == 15
        paths = {f.path for f in m.files}
        dirs = {d.path for d in m.directories}
        for d in EMPTY_DIRS:
            assert d in dirs
            assert not any(p.startswith(d + "/") for p in paths), d
        for excluded in ("postmaster.pid", "postmaster.opts", "backup_label"):
            assert excluded not in paths
        assert not any(p.endswith("pg_internal.init") for p in paths)
        assert {"PG_VERSION", "global/pg_control", "postgresql.conf"} <= paths
        # every file of the data directory now, but the excluded and those created
        # since, is in the backup; files unchanged since have the same digest
        unchanged = 0
        started = datetime.fromisoformat(m.start_time).timestamp()
        by_path = {f.path: f for f in m.files}
        for directory, _subdirs, names in os.walk(primary.datadir):
            rel_dir = os.path.relpath(directory, primary.datadir)
            if rel_dir.split("/")[0] in EMPTY_DIRS:
                continue
            for name in names:
                rel = os.path.normpath(os.path.join(rel_dir, name))
                if name in ("postmaster.pid", "postmaster.opts") or "pg_internal.init" in name:
                    continue
                st = os.stat(os.path.join(directory, name))
                entry = by_path.get(rel)
                if entry is None:  # only a file created since the backup started
                    assert st.st_mtime >= started - 1, rel
                    continue
                if st.st_mtime == entry.mtime and st.st_size == entry.size:
                    assert sha256_file(os.path.join(directory, name)) == entry.sha256, rel
                    unchanged += 1
        assert unchanged > 100
        # a file split across parts comes back whole from its chunks
        big = max(m.files, key=lambda f: f.size)
        assert len(big.chunks) > 1
        assert sha256(file_bytes(cfg, m, big.path)) == big.sha256
        assert m.raw_size == sum(f.size for f in m.files)
        assert m.stored_size == sum(p.stored_size for p in m.parts) > 0
        assert [p.index for p in m.parts] == list(range(len(m.parts)))
    finally:
        if bench is not None:
            bench.kill()
            bench.wait()
        primary.stop("immediate")


def _wait(what: str, predicate: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(what)


def test_sigkill_midway_then_next_push_and_backup_list(work: Workdir) -> None:
    primary, cfg = _primary(15, work, backup_part_size=1 << 20, backup_workers=1)
    try:
        primary.pgbench("-i", "-s", "10", "-q")
        repo = os.path.join(work.path, "repo")
        parts_dir: list[str] = []

        def some_parts() -> bool:
            root = os.path.join(repo, "basebackups")
            if not os.path.isdir(root):
                return False
            names = os.listdir(root)
            if names:
                parts_dir[:] = [os.path.join(root, names[0])]
            return bool(names) and len(os.listdir(os.path.join(root, names[0]))) >= 3

        # zstd level 19: slow enough to be stopped midway. Ctrl-C first: it ends promptly
        slow = server_env(primary, WALSHIP_COMPRESSION_LEVEL="19")
        interrupted = start_walship(cfg, "backup-push", "--fast", env=slow)
        try:
            _wait("3 parts written", some_parts)
        finally:
            interrupted.send_signal(signal.SIGINT)
            _out, err = interrupted.communicate(timeout=120)
        assert interrupted.returncode == 130, err
        assert one_line(err).endswith("interrupted")
        assert len(scan(cfg).incomplete) == 1
        for leftover in parts_dir:
            subprocess.run(["rm", "-rf", leftover], check=True)
        parts_dir.clear()
        # the server ends the backup's session: the copy stops within seconds
        cut = start_walship(cfg, "backup-push", "--fast", env=slow)
        try:
            _wait("3 parts written", some_parts)
            primary.psql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'walship backup-push'"
            )
            terminated = time.monotonic()
        finally:
            _out, err = cut.communicate(timeout=300)
        assert time.monotonic() - terminated < 20
        assert cut.returncode == 1
        line = one_line(err)
        assert "lost the session holding the backup" in line and "not recorded" in line
        for leftover in parts_dir:
            subprocess.run(["rm", "-rf", leftover], check=True)
        parts_dir.clear()
        killed = start_walship(
            cfg, "backup-push", "--fast", env=server_env(primary, WALSHIP_COMPRESSION_LEVEL="19")
        )
        try:
            _wait("3 parts written", some_parts)
        finally:
            killed.send_signal(signal.SIGKILL)
            killed.communicate()
        assert killed.returncode == -signal.SIGKILL
        leftovers = scan(cfg)
        assert leftovers.complete == []
        assert len(leftovers.incomplete) == 1
        assert not any(k.endswith("manifest.json") for k in os.listdir(parts_dir[0]))
        listed = run_walship(cfg, "backup-list")
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout == (
            "no complete base backup\n1 incomplete backup (leftovers): walship delete --garbage\n"
        )
        # the server ended the aborted backup with its session: a new one starts at once
        _wait(
            "the killed session gone",
            lambda: (
                primary.psql(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                    "'walship backup-push'"
                )
                == "0"
            ),
        )
        proc = _push(primary, cfg, "--fast", "--label", "after the kill")
        assert proc.returncode == 0, proc.stderr
        (m,) = manifests(cfg)
        assert m.name not in leftovers.incomplete
        after = scan(cfg)
        assert after.complete == [m.name] and set(after.incomplete) == set(leftovers.incomplete)

        listed = run_walship(cfg, "backup-list")
        assert listed.returncode == 0, listed.stderr
        header, row, footer = listed.stdout.splitlines()
        assert header.split() == [
            "name",
            "label",
            "stop",
            "time",
            "start",
            "lsn",
            "stop",
            "lsn",
            "tli",
            "raw",
            "stored",
            "duration",
            "wal",
        ]
        assert row.startswith(m.name) and "after the kill" in row and row.endswith("ok")
        assert footer == "1 incomplete backup (leftovers): walship delete --garbage"
        as_json = run_walship(cfg, "backup-list", "--json")
        assert as_json.returncode == 0, as_json.stderr
        (doc,) = json.loads(as_json.stdout)
        assert {
            "name",
            "label",
            "start_time",
            "stop_time",
            "start_lsn",
            "stop_lsn",
            "timeline",
            "raw_size",
            "stored_size",
            "wal_ok",
        } <= set(doc)
        assert doc["name"] == m.name and doc["label"] == "after the kill"
        assert doc["wal_ok"] is True and doc["timeline"] == 1
        assert doc["raw_size"] == m.raw_size and doc["stored_size"] == m.stored_size
        assert doc["start_lsn"] == format_lsn(m.start_lsn)
        assert doc["stop_lsn"] == format_lsn(m.stop_lsn)
        # a segment it needs goes missing: wal_ok turns false
        first = needed_segments(m)[0]
        os.unlink(os.path.join(repo, "wal", first[:16], first))
        again = json.loads(run_walship(cfg, "backup-list", "--json").stdout)
        assert again[0]["wal_ok"] is False
    finally:
        primary.stop("immediate")


def test_tablespace_recorded(work: Workdir) -> None:
    primary, cfg = _primary(15, work)
    try:
        location = work.mkdir("ts_space")
        primary.psql(f"CREATE TABLESPACE extra LOCATION '{location}'")
        primary.psql(
            "CREATE TABLE far TABLESPACE extra AS SELECT g FROM generate_series(1, 50000) g"
        )
        primary.psql("CREATE UNLOGGED TABLE scratch AS SELECT g FROM generate_series(1, 5000) g")
        primary.psql("CHECKPOINT")
        unlogged = primary.psql("SELECT pg_relation_filepath('scratch')")
        oid = int(primary.psql("SELECT oid FROM pg_tablespace WHERE spcname = 'extra'"))
        relpath = primary.psql("SELECT pg_relation_filepath('far')")
        proc = _push(primary, cfg, "--fast")
        assert proc.returncode == 0, proc.stderr
        (m,) = manifests(cfg)
        assert [(t.oid, t.path, t.name) for t in m.tablespaces] == [(oid, location, "extra")]
        assert m.tablespace_map is not None and f"{oid} {location}" in m.tablespace_map
        assert relpath.startswith(f"pg_tblspc/{oid}/PG_15_")
        entry = next(f for f in m.files if f.path == relpath)
        assert entry.tablespace == oid
        real = os.path.join(location, relpath.split("/", 2)[2])
        assert entry.sha256 == sha256_file(real)
        dirs = {d.path: d for d in m.directories}
        assert dirs[f"pg_tblspc/{oid}"].tablespace == oid
        assert "pg_tblspc" in dirs
        # an unlogged relation: only its init fork (the server rebuilds the rest from it)
        paths = {f.path for f in m.files}
        assert os.path.exists(os.path.join(primary.datadir, unlogged))
        assert unlogged not in paths and f"{unlogged}_init" in paths
    finally:
        primary.stop("immediate")


def _switching(primary: Cluster, stop: threading.Event) -> None:
    while not stop.wait(0.5):
        try:
            primary.psql("INSERT INTO ticks VALUES (now()); SELECT pg_switch_wal()")
        except RuntimeError:
            pass


def test_standby_backup_and_wal_timeout(work: Workdir) -> None:
    primary, cfg = _primary(15, work, backup_wal_timeout=3)
    standby = Cluster(15, work, "standby")
    stop = threading.Event()
    switcher: threading.Thread | None = None
    try:
        primary.psql("CREATE TABLE ticks(t timestamptz)")
        primary.pgbench("-i", "-s", "1", "-q")
        primary.basebackup(standby.datadir, "-R", "-X", "stream")
        standby.configure({"hot_standby": "on"})
        standby.start()
        _wait(
            "standby streams",
            lambda: standby.psql("SELECT count(*) FROM pg_stat_wal_receiver") == "1",
        )
        # a checkpoint in a segment nobody completes: the standby's backup starts at its
        # restartpoint there and stops past it, so the wait names that segment and the fix
        primary.psql("INSERT INTO ticks VALUES (now()); CHECKPOINT")
        lsn = primary.psql("SELECT pg_current_wal_lsn()")
        _wait(
            "standby replayed the checkpoint",
            lambda: standby.psql(f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'") == "t",
        )
        proc = _push(standby, cfg, "--fast")
        assert proc.returncode == 1
        line = one_line(proc.stderr)
        assert "needed to make the backup consistent" in line
        assert "within 3 s" in line and "primary" in line and "pg_switch_wal()" in line
        assert scan(cfg).complete == []
        # the primary's data directory is the same cluster, but not this server's
        wrong = _push(standby, cfg, "--pgdata", primary.datadir)
        assert wrong.returncode == 1
        assert f"{primary.datadir} is not the server's data directory" in one_line(wrong.stderr)
        # with the primary switching segments, the standby's backup completes
        switcher = threading.Thread(target=_switching, args=(primary, stop), daemon=True)
        switcher.start()
        ok = run_walship(
            cfg, "backup-push", env=server_env(standby, WALSHIP_BACKUP_WAL_TIMEOUT="60")
        )
        assert ok.returncode == 0, ok.stderr
        (m,) = manifests(cfg)
        assert m.from_standby and "BACKUP FROM: standby" in m.backup_label
        assert m.timeline == m.stop_timeline == 1
        assert "pg_wal/archive_status" in {d.path for d in m.directories}
        # the standby is promoted while its backup is copied: the backup fails
        repo = os.path.join(work.path, "repo")
        before = set(os.listdir(os.path.join(repo, "basebackups")))
        slow = start_walship(
            cfg,
            "backup-push",
            "--fast",
            env=server_env(
                standby,
                WALSHIP_COMPRESSION_LEVEL="19",
                WALSHIP_BACKUP_WORKERS="1",
                WALSHIP_BACKUP_PART_SIZE=str(1 << 20),
            ),
        )
        try:
            _wait(
                "a part of the next backup",
                lambda: any(
                    os.listdir(os.path.join(repo, "basebackups", n))
                    for n in set(os.listdir(os.path.join(repo, "basebackups"))) - before
                ),
            )
            run([standby.bin("pg_ctl"), "-D", standby.datadir, "-w", "promote"])
            promoted = time.monotonic()
        finally:
            _out, err = slow.communicate(timeout=300)
        assert time.monotonic() - promoted < 20  # within seconds, not after the whole copy
        assert slow.returncode == 1, err
        line = one_line(err)
        assert "the standby was promoted during the backup" in line
        assert "the backup is not recorded" in line
        assert [b.name for b in manifests(cfg)] == [m.name]
    finally:
        stop.set()
        if switcher is not None:
            switcher.join()
        standby.stop("immediate")
        primary.stop("immediate")


@pytest.mark.cloud
def test_encrypted_backup_on_s3(
    work: Workdir, s3_repo_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from servers.plugin import write_config

    key = os.path.join(work.path, "backup.key")
    run_walship(os.devnull, "keygen", "--mode", "symmetric", key, env={})
    env = dict(s3_repo_env)
    env.update(
        WALSHIP_ENCRYPTION="symmetric",
        WALSHIP_ENCRYPTION_KEY_FILE=key,
        WALSHIP_BACKUP_PART_SIZE=str(32 << 20),
        WALSHIP_S3_PART_SIZE=str(8 << 20),
    )
    for k, v in env.items():
        if not k.startswith("WALSHIP_"):
            monkeypatch.setenv(k, v)  # the server's archive_command reads them too
    cfg = write_config(env, os.path.join(work.path, "s3.toml"))
    primary = archiving_primary(15, work, cfg)
    try:
        # ~20 MB of random bytes: stored as they are, a part larger than one S3 part
        primary.psql(
            "CREATE TABLE rnd AS SELECT g / 1000 AS k, decode(string_agg(md5(random()::text), ''), "
            "'hex') AS b FROM generate_series(1, 1300000) g GROUP BY g / 1000"
        )
        primary.psql("CHECKPOINT")
        aws = {k: v for k, v in env.items() if not k.startswith("WALSHIP_")}
        proc = _push(primary, cfg, "--fast", **aws)
        assert proc.returncode == 0, proc.stderr
        (m,) = manifests(cfg)
        assert max(p.stored_size for p in m.parts) > 8 << 20
        toast = primary.psql(
            "SELECT pg_relation_filepath(reltoastrelid) FROM pg_class WHERE relname = 'rnd'"
        )
        entry = next(f for f in m.files if f.path == toast)
        assert entry.size > 15 << 20
        assert sha256(file_bytes(cfg, m, toast)) == entry.sha256
        # every object of the backup is encrypted, the manifest too
        config = load_config(cfg)
        backend = open_backend(config.require("repo"), config)
        try:
            keys = [i.key for i in backend.list(f"basebackups/{m.name}/")]
            assert len(keys) == len(m.parts) + 1
            for k in keys:
                stream = backend.open(k)
                try:
                    header, _, _ = envelope.read_header(iter(stream), k)
                finally:
                    stream.close()
                assert header["encryption"] is not None, k
        finally:
            backend.close()
    finally:
        primary.stop("immediate")


def test_checksum_failure_detected(work: Workdir) -> None:
    repo = work.mkdir("repo")
    cfg = walship_config(work, {"repo": repo})
    primary = Cluster(15, work)
    run(
        [
            primary.bin("initdb"),
            "-D",
            primary.datadir,
            "-U",
            "postgres",
            "--auth=trust",
            "-N",
            "--data-checksums",
        ]
    )
    primary.configure(
        {
            "wal_level": "replica",
            "fsync": "off",
            "autovacuum": "off",
            "listen_addresses": "''",
            "archive_mode": "on",
            "archive_command": archive_command(cfg),
        }
    )
    try:
        primary.start()
        primary.psql(
            "CREATE TABLE victim AS SELECT g, repeat('v', 50) AS pad "
            "FROM generate_series(1, 20000) g"
        )
        primary.psql("CHECKPOINT")
        relpath = primary.psql("SELECT pg_relation_filepath('victim')")
        primary.stop()
        path = os.path.join(primary.datadir, relpath)
        with open(path, "r+b") as fh:  # block 2, past its header: the checksum no longer fits
            fh.seek(2 * 8192 + 4000)
            fh.write(b"\xff" * 16)
        primary.start()
        proc = _push(primary, cfg, "--fast")
        assert proc.returncode == 1
        line = one_line(proc.stderr)
        assert f"1 page(s) failed their checksum ({relpath} block 2)" in line
        assert "--allow-checksum-failures" in line
        assert scan(cfg).complete == []
        proc = _push(primary, cfg, "--fast", "--allow-checksum-failures")
        assert proc.returncode == 0, proc.stderr
        assert f"page checksum failure in {relpath} block 2" in proc.stderr
        (m,) = manifests(cfg)
        assert m.data_checksums
        assert m.checksum_failures == [{"path": relpath, "block": 2}]
    finally:
        primary.stop("immediate")


@pytest.mark.parametrize("major", [16, 18])
def test_backup_on_newer_versions(major: int, work: Workdir) -> None:
    primary, cfg = _primary(major, work)
    try:
        primary.pgbench("-i", "-s", "1", "-q")
        proc = _push(primary, cfg, "--fast")
        assert proc.returncode == 0, proc.stderr
        (m,) = manifests(cfg)
        assert m.pg_version // 10000 == major
        assert {"PG_VERSION", "global/pg_control"} <= {f.path for f in m.files}
        pg_control = next(f for f in m.files if f.path == "global/pg_control")
        assert pg_control.sha256 == sha256(file_bytes(cfg, m, "global/pg_control"))
        rows = json.loads(run_walship(cfg, "backup-list", "--json").stdout)
        assert [r["name"] for r in rows] == [m.name] and rows[0]["wal_ok"] is True
    finally:
        primary.stop("immediate")


def _refused(proc: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    return one_line(proc.stderr)


def test_bad_inputs_refused_before_copying(work: Workdir) -> None:
    primary, cfg = _primary(15, work)
    try:
        primary.psql("SELECT pg_switch_wal()")  # something archived: repository.json exists
        _wait(
            "repository.json",
            lambda: os.path.exists(os.path.join(work.path, "repo", "repository.json")),
        )

        # unreachable server
        line = _refused(
            run_walship(cfg, "backup-push", env={"PGHOST": work.path, "PGPORT": str(free_port())})
        )
        assert line.startswith("walship[") and "cannot connect to the PostgreSQL server" in line
        assert "PGHOST" in line

        # wrong password (over TCP with scram): the password is never echoed
        primary.psql("ALTER USER postgres PASSWORD 'right-secret-1'")
        hba = os.path.join(primary.datadir, "pg_hba.conf")
        with open(hba) as fh:
            rules = fh.read()
        with open(hba, "w") as fh:
            fh.write("host all all 127.0.0.1/32 scram-sha-256\n" + rules)
        primary.psql("ALTER SYSTEM SET listen_addresses = '127.0.0.1'")
        primary.stop()
        primary.start()
        tcp = {"PGHOST": "127.0.0.1", "PGPORT": str(primary.port), "PGUSER": "postgres"}
        line = _refused(run_walship(cfg, "backup-push", env={**tcp, "PGPASSWORD": "wrong-pw-77"}))
        assert "password authentication failed" in line and "wrong-pw-77" not in line
        # ... and from a pgpass file too
        pgpass = work.write("pgpass", f"127.0.0.1:{primary.port}:*:postgres:wrong-pw-88\n", 0o600)
        line = _refused(run_walship(cfg, "backup-push", env={**tcp, "PGPASSFILE": pgpass}))
        assert "password authentication failed" in line and "wrong-pw-88" not in line

        # not the data directory's owner: PGDATA unreadable
        open_cfg = walship_config(work, {"repo": os.path.join(work.path, "repo")}, "open.toml")
        os.chmod(open_cfg, 0o644)
        line = _refused(
            run_walship(open_cfg, "backup-push", env=server_env(primary), user="nobody")
        )
        assert f"cannot read {primary.datadir}" in line and "as user nobody" in line
        assert "postgres" in line

        # psycopg not installed
        blocked = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; sys.modules['psycopg'] = None; from walship.cli import main; "
                f"sys.exit(main(['--config', {cfg!r}, 'backup-push']))",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, **server_env(primary)},
            cwd="/tmp",
            **as_server_user(),  # type: ignore[arg-type]
        )
        line = _refused(blocked)
        assert "psycopg, which is not installed" in line and "walship[backup]" in line

        # a repository of another cluster
        other = work.mkdir("other")
        other_cfg = walship_config(work, {"repo": other}, "other.toml")
        config = load_config(other_cfg)
        backend = open_backend(other, config)
        repository.ensure_identity(backend, repository.Identity(42, 16 << 20, 15))
        backend.close()
        subprocess.run(["chown", "-R", "postgres:postgres", other], check=True)
        line = _refused(run_walship(other_cfg, "backup-push", env=server_env(primary)), 4)
        assert f"repository file://{other} belongs to database system 42" in line
        assert not os.path.exists(os.path.join(other, "basebackups"))

        # archive_command not walship
        primary.psql("ALTER SYSTEM SET archive_command = '/bin/true'")
        primary.psql("SELECT pg_reload_conf()")
        _wait("reload", lambda: primary.psql("SHOW archive_command") == "/bin/true")
        line = _refused(run_walship(cfg, "backup-push", env=server_env(primary)))
        assert "archive_command does not call `walship push`" in line
        assert "could never become consistent" in line

        # archive_mode off
        primary.psql("ALTER SYSTEM SET archive_mode = off")
        primary.stop()
        primary.start()
        line = _refused(run_walship(cfg, "backup-push", env=server_env(primary)))
        assert "archive_mode is off" in line and "could never become consistent" in line

        # nothing of a backup was written by any of them
        assert not os.path.exists(os.path.join(work.path, "repo", "basebackups"))
        sessions = "SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s'"
        assert primary.psql(sessions % "walship backup-push") == "0"
    finally:
        primary.stop("immediate")


def test_primary_wal_wait_timeout(work: Workdir) -> None:
    """archive_command pushes to another repository: the stop segment never arrives here."""
    primary, _cfg = _primary(15, work)
    try:
        elsewhere = work.mkdir("elsewhere")
        cfg = walship_config(work, {"repo": elsewhere, "backup_wal_timeout": 2}, "elsewhere.toml")
        proc = run_walship(cfg, "backup-push", "--fast", env=server_env(primary))
        line = _refused(proc)
        assert re.search(r"backup \S+: [0-9A-F]{24} \(needed to make the backup consistent\)", line)
        assert f"did not reach repository file://{elsewhere} within 2 s" in line
        assert "the backup is not recorded" in line
        assert "walship archive-status" in line and "backup_wal_timeout" in line
        leftovers = scan(cfg)
        assert leftovers.complete == [] and len(leftovers.incomplete) == 1
    finally:
        primary.stop("immediate")


def test_progress_on_a_terminal_and_bounded_memory(work: Workdir) -> None:
    primary, cfg = _primary(15, work)
    try:
        primary.pgbench("-i", "-s", "10", "-q")  # ~160 MB
        master, slave = pty.openpty()
        measure = (
            "import resource, subprocess, sys; subprocess.run(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
        )
        env = {**os.environ, **server_env(primary), "WALSHIP_COMPRESSION_LEVEL": "12"}
        proc = subprocess.Popen(
            [sys.executable, "-c", measure, *walship_cmd(cfg, "backup-push", "--fast")],
            stdout=subprocess.PIPE,
            stderr=slave,
            text=True,
            env=env,
            cwd="/tmp",
            **as_server_user(),  # type: ignore[arg-type]
        )
        os.close(slave)
        tty = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's last writer is gone
                break
            if not chunk:
                break
            tty += chunk
        os.close(master)
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0
        done, peak_kib = out.splitlines()
        assert done.startswith("backup ") and "consistent at LSN" in done
        text = tty.decode()
        assert re.search(r"MiB of [0-9.]+ MiB \(\d+%\), [0-9.]+ [KMG]?i?B/s, ETA \d+ s", text), text
        assert int(peak_kib) < 200 * 1024, f"peak RSS {int(peak_kib) // 1024} MiB"
    finally:
        primary.stop("immediate")
