"""End-to-end, scenario 2: a promotion starts a new timeline and walship keeps up.

Two ways to reach timeline 2, on every PostgreSQL version the tests have:

* a point-in-time restore promoted at a restore point (no ``.partial``: the
  fork segment came from the archive);
* a streaming standby (``archive_mode = always``) promoted after its primary
  died mid-segment: PostgreSQL renames the old timeline's last segment to
  ``.partial`` and archives it.

In both, ``00000002.history`` (and the ``.partial``) must reach the
repository, new work on timeline 2 is archived, the old primary's later
timeline-1 segments are archived beside it without conflict, and a fresh
restore of the original base backup with ``recovery_target_timeline =
'latest'`` follows timeline 2 to its end.
"""

from __future__ import annotations

import os

import pytest
from e2e import (
    archiver_failures,
    current_timeline,
    fetch,
    history_parents,
    history_switchpoint,
    key_for,
    repo_files,
    stop_all,
    wait_for,
    wait_in_repo,
)
from pgharness import (
    Cluster,
    Workdir,
    archive_command,
    restore_cluster,
    restore_command,
    run,
    walship_config,
)

pytestmark = pytest.mark.pg

VERSIONS = [15, 16, 18]
SEG = 16 << 20


def batches(cluster: Cluster) -> str:
    return cluster.psql("SELECT string_agg(DISTINCT batch::text, ',') FROM ev")


def start_primary(major: int, work: Workdir, cfg: str) -> Cluster:
    primary = Cluster(major, work, "primary")
    primary.initdb(
        {
            "archive_mode": "on",
            "archive_command": archive_command(cfg),
            "archive_timeout": "0",
            # keep WAL around so nothing is recycled under the tests' feet
            "wal_keep_size": "'256MB'",
        }
    )
    primary.start()
    primary.psql("CREATE TABLE ev(batch int, note text)")
    primary.psql("INSERT INTO ev SELECT 1, 'base ' || g FROM generate_series(1, 1000) g")
    return primary


def restore_latest_and_check(
    major: int, work: Workdir, backup: str, cfg: str, expected_batches: str
) -> Cluster:
    """Fresh restore of the original backup following the newest timeline to its end."""
    fresh = restore_cluster(
        major,
        work,
        backup,
        "fresh",
        {
            "restore_command": restore_command(cfg),
            "recovery_target_timeline": "'latest'",
            "primary_conninfo": "''",
        },
    )
    fresh.start()
    fresh.wait_promoted()
    log = fresh.log()
    assert batches(fresh) == expected_batches, log[-4000:]
    assert 'restored log file "00000002.history" from archive' in log, log[-4000:]
    # it ended on timeline 2 and promoted to 3, whose history descends from 1 and 2
    assert current_timeline(fresh) == 3, log[-4000:]
    with open(os.path.join(fresh.datadir, "pg_wal", "00000003.history")) as fh:
        assert history_parents(fh.read()) == [1, 2]
    return fresh


@pytest.mark.parametrize("major", VERSIONS)
def test_pitr_promotion_history_reaches_repo_and_latest_follows(major: int, work: Workdir) -> None:
    repo = work.mkdir("repo")
    cfg = walship_config(work, {"repo": repo})
    primary = start_primary(major, work, cfg)
    clusters = [primary]
    try:
        backup = os.path.join(work.path, "backup")
        primary.basebackup(backup)
        primary.psql("INSERT INTO ev VALUES (2, 'before the fork')")
        primary.psql("SELECT pg_create_restore_point('fork')")
        primary.psql("INSERT INTO ev VALUES (3, 'timeline 1 after the fork')")
        primary.wait_archived(primary.switch_wal())

        copy = restore_cluster(
            major,
            work,
            backup,
            "copy",
            {
                "restore_command": restore_command(cfg),
                "recovery_target_name": "'fork'",
                "recovery_target_action": "'promote'",
                "archive_mode": "on",
                "archive_command": archive_command(cfg),
                "wal_keep_size": "'256MB'",
            },
        )
        clusters.append(copy)
        copy.start()
        copy.wait_promoted()
        assert current_timeline(copy) == 2
        assert batches(copy) == "1,2"

        wait_in_repo(repo, ["00000002.history"], clusters)
        history = fetch(work, cfg, "00000002.history").decode()
        with open(os.path.join(copy.datadir, "pg_wal", "00000002.history")) as fh:
            assert history == fh.read()
        assert history_parents(history) == [1]
        assert 'at restore point "fork"' in history

        copy.psql("INSERT INTO ev VALUES (4, 'timeline 2')")
        tl2_segment = copy.switch_wal()
        assert tl2_segment.startswith("00000002"), tl2_segment
        copy.wait_archived(tl2_segment)
        assert key_for(tl2_segment) in repo_files(repo)

        # the old primary goes on writing timeline 1: other names, never a conflict
        primary.psql("INSERT INTO ev VALUES (5, 'timeline 1 later')")
        tl1_segment = primary.switch_wal()
        primary.wait_archived(tl1_segment)
        assert key_for(tl1_segment) in repo_files(repo)
        assert archiver_failures(primary) == 0, primary.log()[-3000:]
        assert archiver_failures(copy) == 0, copy.log()[-3000:]
        # a PITR that took the fork segment from the archive makes no .partial
        assert not [k for k in repo_files(repo) if k.endswith(".partial")]
        copy.stop()
        primary.stop()

        clusters.append(restore_latest_and_check(major, work, backup, cfg, "1,2,4"))
    finally:
        stop_all(clusters)


@pytest.mark.parametrize("major", VERSIONS)
def test_standby_promotion_archives_history_and_partial(major: int, work: Workdir) -> None:
    repo = work.mkdir("repo")
    cfg = walship_config(work, {"repo": repo})
    primary = start_primary(major, work, cfg)
    clusters = [primary]
    try:
        backup = os.path.join(work.path, "backup")
        primary.basebackup(backup)

        standby = Cluster(major, work, "standby")
        run(
            [
                primary.bin("pg_basebackup"),
                "-h",
                primary.sockdir,
                "-p",
                str(primary.port),
                "-U",
                "postgres",
                "-D",
                standby.datadir,
                "-Fp",
                "-X",
                "stream",
                "-c",
                "fast",
                "-R",
            ]
        )
        standby.configure(
            {
                # a standby that archives too: it pushes again what the primary pushed
                "archive_mode": "always",
                "archive_command": archive_command(cfg),
                "restore_command": restore_command(cfg),
                "hot_standby": "on",
                "wal_keep_size": "'256MB'",
            }
        )
        clusters.append(standby)
        standby.start()
        assert standby.is_in_recovery()

        primary.psql("INSERT INTO ev VALUES (2, 'streamed, segment completed')")
        completed = primary.switch_wal()
        primary.psql("INSERT INTO ev VALUES (3, 'streamed, segment still open')")
        open_segment = primary.psql("SELECT pg_walfile_name(pg_current_wal_lsn())")
        primary_lsn = primary.psql("SELECT pg_current_wal_lsn()")
        wait_for(
            "standby replay",
            lambda: standby.psql(f"SELECT pg_last_wal_replay_lsn() >= '{primary_lsn}'") == "t",
            clusters,
        )
        primary.wait_archived(completed)
        # the standby archives the same completed segment: identical, so success
        wait_for(
            f"standby archiving {completed}",
            lambda: os.path.exists(
                os.path.join(standby.datadir, "pg_wal", "archive_status", f"{completed}.done")
            ),
            clusters,
        )
        assert archiver_failures(standby) == 0, standby.log()[-3000:]
        # whichever of the two came second was told "identical" and succeeded
        duplicate = f"{completed} was already archived with identical content"
        assert duplicate in standby.log() + primary.log()

        primary.stop("immediate")  # the primary is lost mid-segment
        run([standby.bin("pg_ctl"), "-D", standby.datadir, "-w", "-t", "120", "promote"])
        standby.wait_promoted()
        assert current_timeline(standby) == 2
        assert batches(standby) == "1,2,3"

        partial = f"{open_segment}.partial"
        wait_in_repo(repo, ["00000002.history", partial], clusters)
        history = fetch(work, cfg, "00000002.history").decode()
        assert history_parents(history) == [1]
        fork = history_switchpoint(history, 1)
        assert fork // SEG == int(open_segment[8:16], 16) * 0x100 + int(open_segment[16:], 16)

        standby.psql("INSERT INTO ev VALUES (4, 'timeline 2')")
        tl2_segment = standby.switch_wal()
        assert tl2_segment.startswith("00000002"), tl2_segment
        standby.wait_archived(tl2_segment)
        assert archiver_failures(standby) == 0, standby.log()[-3000:]

        # the .partial is the old timeline's segment: its bytes up to the fork are
        # exactly those timeline 2 copied into its first segment
        partial_bytes = fetch(work, cfg, partial)
        tl2_first = fetch(work, cfg, f"00000002{open_segment[8:]}")
        assert len(partial_bytes) == len(tl2_first) == SEG
        upto = fork % SEG
        assert upto > 0
        assert partial_bytes[:upto] == tl2_first[:upto]
        standby.stop()

        clusters.append(restore_latest_and_check(major, work, backup, cfg, "1,2,3,4"))
    finally:
        stop_all(clusters)
