"""End-to-end: real PostgreSQL archives through walship and recovers to a point in time.

PostgreSQL 16 runs it with ``agent = false`` (every push and fetch loads
walship itself); the other versions with the default walship agent."""

from __future__ import annotations

import os

import pytest
from e2e import archiving_primary, assert_at_target, mark_target_time, restore_to_time
from pgharness import Cluster, Workdir, walship_config

pytestmark = pytest.mark.pg

VERSIONS = [15, 16, 18]


def _primary(major: int, work: Workdir, repo: str) -> tuple[Cluster, str]:
    settings: dict[str, object] = {"repo": repo}
    if major == 16:
        settings["agent"] = False
    cfg = walship_config(work, settings)
    return archiving_primary(major, work, cfg), cfg


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
        target, expected, _last = mark_target_time(primary)
        restored = restore_to_time(major, work, backup, cfg, target)
        assert_at_target(restored, expected)
    finally:
        if restored is not None:
            restored.stop("immediate")
        primary.stop("immediate")
