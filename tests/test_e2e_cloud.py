"""End-to-end with real PostgreSQL through the cloud backends (local servers).

The same point-in-time recovery as test_e2e_pitr.py with an S3 repository
(moto server), and a restore through GCS (fake-gcs-server) and through Azure
(Azurite). archive_command/restore_command read the repository settings from
a config file readable by the server user; S3 credentials come from the
server's environment (boto3's standard chain).
"""

from __future__ import annotations

import os

import pytest
from e2e import archiving_primary, assert_at_target, mark_target_time, restore_to_time
from pgharness import (
    Cluster,
    Workdir,
    walship_config,
)

pytestmark = [pytest.mark.pg, pytest.mark.cloud]
MAJOR = 16


def _settings(env: dict[str, str]) -> dict[str, object]:
    """WALSHIP_* variables -> config-file settings; other variables go to os.environ."""
    out: dict[str, object] = {}
    for k, v in env.items():
        if not k.startswith("WALSHIP_"):
            os.environ[k] = v  # inherited by the PostgreSQL servers started below
            continue
        name = k[len("WALSHIP_") :].lower()
        if v in ("true", "false"):
            out[name] = v == "true"
        elif name.startswith("retry_"):
            out[name] = float(v)
        else:
            out[name] = v
    # in recovery a segment not yet archived is probed often: keep retries short
    out["retry_deadline"] = 10.0
    return out


def _pitr(work: Workdir, env: dict[str, str], *, exact: bool) -> None:
    cfg = walship_config(work, _settings(env))
    primary = archiving_primary(MAJOR, work, cfg)
    restored: Cluster | None = None
    try:
        primary.pgbench("-i", "-s", "1", "-q")
        backup = os.path.join(work.path, "backup")
        primary.basebackup(backup)
        primary.pgbench("-t", "200", "-c", "2", "-n")
        # a few segments to replay, so read-ahead (on by default) runs through this store
        primary.psql(
            "CREATE TABLE filler AS SELECT g, repeat('x', 100) AS pad "
            "FROM generate_series(1, 300000) g"
        )
        target, expected, _last = mark_target_time(primary, after=100)
        restored = restore_to_time(MAJOR, work, backup, cfg, target)
        log = restored.log()
        # the background process reads ahead from this store too
        assert "(prefetched)" in log, log[-4000:]
        assert "prefetch of" not in log and "background process failed" not in log, log[-4000:]
        if exact:
            assert_at_target(restored, expected)
        else:
            assert restored.psql("SELECT string_agg(batch::text, ',') FROM marker") == "1"
    finally:
        if restored is not None:
            restored.stop("immediate")
        primary.stop("immediate")


def test_pitr_through_s3(work: Workdir, s3_repo_env: dict[str, str]) -> None:
    _pitr(work, s3_repo_env, exact=True)


def test_restore_through_gcs(work: Workdir, gcs_repo_env: dict[str, str]) -> None:
    _pitr(work, gcs_repo_env, exact=False)


def test_restore_through_azure(work: Workdir, azure_repo_env: dict[str, str]) -> None:
    _pitr(work, azure_repo_env, exact=False)
