"""End-to-end: a real recovery with fetch_prefetch on (and encryption, so the
helper process needs the key too) restores exactly, mostly from the spool,
and the spool is gone once the promoted server archives."""

from __future__ import annotations

import os
import time

import pytest
from e2e import archiving_primary, wait_for
from pgharness import (
    WALSHIP,
    Cluster,
    Workdir,
    archive_command,
    restore_cluster,
    restore_command,
    run,
    walship_config,
)

from walship.archive import prefetch

pytestmark = pytest.mark.pg


def _helpers_done(datadir: str) -> bool:
    """No prefetch helper holds a spool lock (they must not outlive the test)."""
    return not prefetch.helpers_running(os.path.join(datadir, "pg_wal"))


def test_recovery_with_prefetch_and_encryption(work: Workdir) -> None:
    repo = work.mkdir("repo")
    key = os.path.join(work.path, "sym.key")
    run([WALSHIP, "keygen", key])
    cfg = walship_config(
        work,
        {
            "repo": repo,
            "encryption": "symmetric",
            "encryption_key_file": key,
            "fetch_prefetch": 4,
            "log_level": "debug",
        },
    )
    primary = archiving_primary(15, work, cfg)
    restored: Cluster | None = None
    try:
        primary.pgbench("-i", "-s", "2", "-q")
        backup = os.path.join(work.path, "backup")
        primary.basebackup(backup)
        primary.pgbench("-t", "500", "-c", "2", "-n")
        # about 8 segments of WAL to replay
        primary.psql(
            "CREATE TABLE filler AS SELECT g, repeat('x', 100) AS pad "
            "FROM generate_series(1, 800000) g"
        )
        primary.psql("CREATE TABLE marker(note text)")
        primary.psql("INSERT INTO marker VALUES ('last')")
        expected = primary.psql(
            "SELECT sum(abalance)::text || ':' || count(*) FROM pgbench_accounts"
        )
        last = primary.switch_wal()
        primary.wait_archived(last)

        restored = restore_cluster(
            15,
            work,
            backup,
            "restored",
            {
                "restore_command": restore_command(cfg),
                "recovery_target_action": "'promote'",
                "archive_mode": "on",
                "archive_command": archive_command(cfg),
            },
        )
        restored.start()
        restored.wait_promoted()
        assert restored.psql("SELECT note FROM marker") == "last"
        assert restored.psql("SELECT count(*) FROM filler") == "800000"
        assert (
            restored.psql("SELECT sum(abalance)::text || ':' || count(*) FROM pgbench_accounts")
            == expected
        )
        log = restored.log()
        hits = log.count("(prefetched)")
        fetched = log.count("INFO fetched 0")
        assert hits >= 5, log[-4000:]
        assert hits >= fetched / 2, (hits, fetched)
        for problem in ("prefetch of", "prefetch helper failed", "not used", "cannot use"):
            assert problem not in log, log[-4000:]
        # promoted and archiving: its first push removes the spool
        wait_for(
            "the prefetch spool removed after promotion",
            lambda: (
                not os.path.exists(os.path.join(restored.datadir, "pg_wal", ".walship-prefetch"))
                and _helpers_done(restored.datadir)
            ),
            [restored],
        )
    finally:
        if restored is not None:
            restored.stop("immediate")
            deadline = time.monotonic() + 30
            while not _helpers_done(restored.datadir) and time.monotonic() < deadline:
                time.sleep(0.1)
        primary.stop("immediate")
