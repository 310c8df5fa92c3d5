"""End-to-end: a real recovery with fetch_prefetch on (and encryption, so the
background process needs the key too) restores exactly, mostly from the
spool, and the read-ahead spool is gone once recovery ends."""

from __future__ import annotations

import fcntl
import glob
import os
import shutil
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

pytestmark = pytest.mark.pg


def _running(datadir: str) -> bool:
    """Whether a background process holds a spool lock in this data directory."""
    for lock in glob.glob(os.path.join(datadir, "pg_wal", ".walship", "*", "lock")):
        fd = os.open(lock, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)
    return False


def _read_ahead_spools(datadir: str) -> list[str]:
    return glob.glob(os.path.join(datadir, "pg_wal", ".walship", "*", "f*"))


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
        for problem in ("prefetch of", "background process failed", "not used", "cannot use"):
            assert problem not in log, log[-4000:]
        # recovery ended (the history file probe): the read-ahead spool is gone
        wait_for(
            "the read-ahead spool removed after promotion",
            lambda: _read_ahead_spools(restored.datadir) == [],
            [restored],
        )
    finally:
        if restored is not None:
            restored.stop("immediate")
            # the background process exits by itself once its spool is gone
            shutil.rmtree(os.path.join(restored.datadir, "pg_wal", ".walship"), True)
            deadline = time.monotonic() + 30
            while _running(restored.datadir) and time.monotonic() < deadline:
                time.sleep(0.1)
        primary.stop("immediate")
