"""backup-push and backup-list against real PostgreSQL servers (docs/backups.md)."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime

import pytest
from backupkit import (
    file_bytes,
    manifests,
    one_line,
    run_walship,
    scan,
    server_env,
    sha256,
    start_walship,
)
from e2e import archiving_primary, sha256_file
from pgharness import Cluster, Workdir, walship_config

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
        for directory, subdirs, names in os.walk(primary.datadir):
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
