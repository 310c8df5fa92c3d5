"""End-to-end: real PostgreSQL archives through walship and recovers to a point in time.

PostgreSQL 16 runs it with ``agent = false`` (every push and fetch loads
walship itself); the other versions with the default walship agent."""

from __future__ import annotations

import os
import time

import pytest
from pgharness import (
    Cluster,
    Workdir,
    archive_command,
    restore_cluster,
    restore_command,
    walship_config,
)

pytestmark = pytest.mark.pg

VERSIONS = [15, 16, 18]


def _primary(major: int, work: Workdir, repo: str) -> tuple[Cluster, str]:
    settings: dict[str, object] = {"repo": repo}
    if major == 16:
        settings["agent"] = False
    cfg = walship_config(work, settings)
    primary = Cluster(major, work)
    primary.initdb(
        {"archive_mode": "on", "archive_command": archive_command(cfg), "archive_timeout": "0"}
    )
    primary.start()
    return primary, cfg


@pytest.mark.parametrize("major", VERSIONS)
def test_pitr_to_time_recovers_exactly(major: int, work: Workdir) -> None:
    repo = work.mkdir("repo")
    primary, cfg = _primary(major, work, repo)
    restored: Cluster | None = None
    try:
        primary.pgbench("-i", "-s", "2", "-q")
        backup = os.path.join(work.path, "backup")
        primary.basebackup(backup)
        primary.pgbench("-t", "300", "-c", "2", "-n")
        primary.psql("CREATE TABLE marker(batch int, note text)")
        primary.psql("INSERT INTO marker VALUES (1, 'before T')")
        expected = primary.psql(
            "SELECT sum(abalance)::text || ':' || count(*) FROM pgbench_accounts"
        )
        time.sleep(1.1)
        target = primary.psql("SELECT now()::text")
        time.sleep(1.1)
        primary.psql("INSERT INTO marker VALUES (2, 'after T')")
        primary.pgbench("-t", "200", "-c", "2", "-n")
        last = primary.switch_wal()
        primary.wait_archived(last)

        restored = restore_cluster(
            major,
            work,
            backup,
            "restored",
            {
                "restore_command": restore_command(cfg),
                "recovery_target_time": f"'{target}'",
                "recovery_target_action": "'promote'",
            },
        )
        restored.start()
        restored.wait_promoted()
        assert restored.psql("SELECT batch FROM marker ORDER BY batch") == "1"
        assert (
            restored.psql("SELECT sum(abalance)::text || ':' || count(*) FROM pgbench_accounts")
            == expected
        )
        assert "recovery stopping before commit" in restored.log()
    finally:
        if restored is not None:
            restored.stop("immediate")
        primary.stop("immediate")
