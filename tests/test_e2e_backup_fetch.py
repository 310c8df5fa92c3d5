"""End-to-end: walship backup-push, then backup-fetch, then the restored server starts.

Real PostgreSQL 15, 16 and 18 (tests/pgharness.py). Every restore below is
left to walship alone: backup-fetch writes the files, the recovery settings
and the signal file, and the test only adds a port and ``archive_mode = off``
(after pg_verifybackup has checked the copy, since postgresql.conf is in its
manifest) and starts the server.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from typing import Any

import pytest
from e2e import archiving_primary, assert_at_target, mark_target_time, stop_all
from pgharness import WALSHIP, Cluster, Workdir, _as_postgres, run, walship_config

from walship.pg import parse_lsn, segment_file_name, segno_of_end_lsn, segno_of_lsn

pytestmark = [pytest.mark.slow, pytest.mark.pg]


def walship(cfg: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([WALSHIP, "--config", cfg, *args], check=check, timeout=600)


def settings_for(cluster: Cluster, repo: dict[str, Any]) -> dict[str, Any]:
    return {
        **repo,
        "conninfo": f"host={cluster.sockdir} port={cluster.port} user=postgres dbname=postgres",
    }


def backup_push(cluster: Cluster, cfg: str, label: str) -> dict[str, Any]:
    walship(cfg, "backup-push", "--pgdata", cluster.datadir, "--fast", "--label", label)
    rows = json.loads(walship(cfg, "backup-list", "--json").stdout)
    row = next(r for r in reversed(rows) if r["label"] == label)
    assert row["wal_ok"], row
    return dict(row)


def verify_copy(cluster: Cluster, cfg: str, dest: str, row: dict[str, Any], work: Workdir) -> None:
    """pg_verifybackup accepts the restored copy, without and with WAL parsing."""
    verify = cluster.bin("pg_verifybackup")
    run([verify, "--no-parse-wal", dest])
    waldir = work.mkdir(f"wal-{os.path.basename(dest)}")
    seg = 16 << 20
    first = segno_of_lsn(parse_lsn(row["start_lsn"]), seg)
    last = segno_of_end_lsn(parse_lsn(row["stop_lsn"]), seg)
    for segno in range(first, last + 1):
        name = segment_file_name(row["timeline"], segno, seg)
        walship(cfg, "fetch", name, os.path.join(waldir, name))
    run([verify, "-w", waldir, dest])


def start_restored(major: int, work: Workdir, name: str) -> Cluster:
    restored = Cluster(major, work, name)
    restored.configure({"archive_mode": "off"})
    restored.start()
    return restored


def auto_conf(dest: str) -> str:
    with open(os.path.join(dest, "postgresql.auto.conf")) as fh:
        return fh.read()


@pytest.mark.parametrize("major", [15, 16, 18])
def test_pitr_from_walship_backups_while_pgbench_writes(major: int, work: Workdir) -> None:
    repo = {"repo": work.mkdir("repo")}
    cfg = walship_config(work, {**repo, "index_on_push": True})
    primary = archiving_primary(major, work, cfg)
    cfg = walship_config(work, {**settings_for(primary, repo), "index_on_push": True})
    restored: Cluster | None = None
    try:
        primary.pgbench("-i", "-s", "2", "-q")
        load = subprocess.Popen(
            _as_postgres(
                [
                    primary.bin("pgbench"),
                    "-h",
                    primary.sockdir,
                    "-p",
                    str(primary.port),
                    "-U",
                    "postgres",
                    "-n",
                    "-c",
                    "2",
                    "-T",
                    "6",
                    "postgres",
                ]
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/tmp",
        )
        try:
            time.sleep(0.5)
            first = backup_push(primary, cfg, "first")
        finally:
            load.wait(timeout=120)
        assert load.returncode == 0
        target, expected, _last = mark_target_time(primary, after=100)
        second = backup_push(primary, cfg, "second")
        assert second["name"] != first["name"]
        # plan-restore, wal-show and verify (--deep re-reads the parts) see both backups
        shown = json.loads(walship(cfg, "wal-show", "--json").stdout)["backups"]
        ours = [b["name"] for b in shown if b["source"] == "walship"]
        assert ours == [first["name"], second["name"]], shown
        walship(cfg, "verify", "--deep")

        dest = os.path.join(work.path, "restored")
        out = walship(
            cfg,
            "backup-fetch",
            "LATEST",
            dest,
            "--target-time",
            target,
            "--target-action",
            "promote",
        ).stdout
        # the second backup's data is past the target: the planner picks the first
        assert "plan: reachable" in out and f"backup {first['name']}" in out, out
        assert "recovery_target_time = '" in auto_conf(dest)
        assert "restore_command = " in auto_conf(dest)
        assert os.path.exists(os.path.join(dest, "recovery.signal"))
        verify_copy(primary, cfg, dest, first, work)
        restored = start_restored(major, work, "restored")
        restored.wait_promoted()
        assert_at_target(restored, expected)
    finally:
        stop_all([c for c in (restored, primary) if c is not None])


def test_unreachable_target_is_refused_before_writing(work: Workdir) -> None:
    major = 16
    repo = {"repo": work.mkdir("repo")}
    primary = archiving_primary(major, work, walship_config(work, repo))
    cfg = walship_config(work, settings_for(primary, repo))
    try:
        primary.psql("CREATE TABLE t AS SELECT 1 AS x")
        before = primary.psql("SELECT now()::text")
        time.sleep(1.1)
        primary.psql("INSERT INTO t VALUES (2)")  # the commit that decides the target
        row = backup_push(primary, cfg, "only")  # its data is past the target
        # backup-push recorded where the server's configuration files are
        from walship import config
        from walship.backup import catalog
        from walship.storage.registry import open_backend

        settings = config.load(config_path=cfg)
        backend = open_backend(settings.require("repo"), settings)
        m = catalog.read_manifest(settings, backend, row["name"])
        data = os.path.realpath(primary.datadir)
        assert m.data_directory == data
        assert (m.config_file, m.hba_file, m.ident_file) == (
            f"{data}/postgresql.conf",
            f"{data}/pg_hba.conf",
            f"{data}/pg_ident.conf",
        )
        assert m.outside_config_files() == []
        primary.wait_archived(primary.switch_wal())
        dest = os.path.join(work.path, "restored")
        proc = walship(cfg, "backup-fetch", row["name"], dest, "--target-time", before, check=False)
        assert proc.returncode == 10, proc.stderr
        errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
        assert (
            len(errors) == 1 and "not reachable" in errors[0] and "nothing was written" in errors[0]
        )
        assert "plan:" not in proc.stdout, proc.stdout  # the reason once: in the error
        assert not os.path.exists(dest)
    finally:
        stop_all([primary])


def test_tablespace_with_and_without_relocation(work: Workdir) -> None:
    major = 16
    repo = {"repo": work.mkdir("repo")}
    primary = archiving_primary(major, work, walship_config(work, repo))
    cfg = walship_config(work, settings_for(primary, repo))
    ts_dir = work.mkdir("ts1")
    clusters: list[Cluster] = [primary]
    try:
        primary.psql(f"CREATE TABLESPACE ts1 LOCATION '{ts_dir}'")
        primary.psql(
            "CREATE TABLE spaced TABLESPACE ts1 AS SELECT g FROM generate_series(1, 5000) g"
        )
        oid = primary.psql("SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'")
        row = backup_push(primary, cfg, "ts")
        primary.psql("INSERT INTO spaced SELECT g FROM generate_series(1, 1000) g")
        primary.switch_wal()
        primary.wait_archived(primary.psql("SELECT pg_walfile_name(pg_current_wal_lsn())"))

        # relocated, while the original is in use by the primary
        moved = os.path.join(work.path, "ts1-moved")
        dest = os.path.join(work.path, "relocated")
        walship(cfg, "backup-fetch", row["name"], dest, "--tablespace-map", f"{oid}={moved}")
        assert os.readlink(os.path.join(dest, "pg_tblspc", oid)) == moved
        run([primary.bin("pg_verifybackup"), "--no-parse-wal", dest])
        restored = start_restored(major, work, "relocated")
        clusters.append(restored)
        restored.wait_promoted()
        assert restored.psql("SELECT count(*) FROM spaced") == "6000"
        assert restored.psql(f"SELECT pg_tablespace_location({oid})") == moved
        restored.stop()

        # the original path: refused while it holds the primary's tablespace ...
        dest2 = os.path.join(work.path, "original")
        proc = walship(cfg, "backup-fetch", row["name"], dest2, check=False)
        assert proc.returncode == 2 and "--tablespace-map" in proc.stderr
        assert not os.path.exists(dest2)
        # ... and restored into it once the primary and its tablespace are gone
        primary.stop()
        run(["mv", ts_dir, ts_dir + "-old"])
        walship(cfg, "backup-fetch", row["name"], dest2)
        assert os.readlink(os.path.join(dest2, "pg_tblspc", oid)) == ts_dir
        again = start_restored(major, work, "original")
        clusters.append(again)
        again.wait_promoted()
        assert again.psql("SELECT count(*) FROM spaced") == "6000"
    finally:
        stop_all(clusters)


def test_standby_backup_restores_to_a_point_in_time(work: Workdir) -> None:
    major = 18
    repo = {"repo": work.mkdir("repo")}
    primary = archiving_primary(major, work, walship_config(work, repo))
    clusters: list[Cluster] = [primary]
    try:
        primary.pgbench("-i", "-s", "1", "-q")
        standby = Cluster(major, work, "standby")
        primary.basebackup(standby.datadir, "-R")
        standby.configure({"archive_mode": "off", "hot_standby": "on"})
        standby.start()
        clusters.append(standby)
        cfg = walship_config(work, settings_for(standby, repo), name="standby.toml")

        stop = threading.Event()

        def switch() -> None:  # a standby cannot switch WAL: the primary does
            while not stop.wait(1.0):
                primary.psql("INSERT INTO pgbench_history VALUES (1, 1, 1, 0, now())")
                primary.switch_wal()

        switcher = threading.Thread(target=switch, daemon=True)
        switcher.start()
        try:
            row = backup_push(standby, cfg, "from-standby")
        finally:
            stop.set()
            switcher.join(timeout=30)
        target, expected, _last = mark_target_time(primary, after=50)
        dest = os.path.join(work.path, "restored")
        primary_cfg = walship_config(work, settings_for(primary, repo), name="primary.toml")
        out = walship(
            primary_cfg,
            "backup-fetch",
            row["name"],
            dest,
            "--target-time",
            target,
            "--target-action",
            "promote",
        ).stdout
        assert "plan: reachable" in out, out
        assert not os.path.exists(os.path.join(dest, "standby.signal"))
        run([primary.bin("pg_verifybackup"), "--no-parse-wal", dest])
        restored = start_restored(major, work, "restored")
        clusters.append(restored)
        restored.wait_promoted()
        assert_at_target(restored, expected)
    finally:
        stop_all(clusters)


def test_restore_as_a_standby_follows_the_archive(work: Workdir) -> None:
    major = 15
    repo = {"repo": work.mkdir("repo")}
    primary = archiving_primary(major, work, walship_config(work, repo))
    cfg = walship_config(work, settings_for(primary, repo))
    clusters: list[Cluster] = [primary]
    try:
        primary.psql("CREATE TABLE t AS SELECT 1 AS x")
        row = backup_push(primary, cfg, "for-standby")
        dest = os.path.join(work.path, "standby")
        walship(cfg, "backup-fetch", row["name"], dest, "--standby")
        assert os.path.exists(os.path.join(dest, "standby.signal"))
        standby = Cluster(major, work, "standby")
        standby.configure({"archive_mode": "off", "hot_standby": "on"})
        clusters.append(standby)
        standby.start()
        assert standby.is_in_recovery()
        primary.psql("INSERT INTO t VALUES (2)")
        primary.wait_archived(primary.switch_wal())
        deadline = time.monotonic() + 60
        while standby.psql("SELECT count(*) FROM t") != "2":
            assert time.monotonic() < deadline, standby.log()[-3000:]
            time.sleep(0.5)
        assert standby.is_in_recovery()
    finally:
        stop_all(clusters)
