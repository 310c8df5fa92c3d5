"""End-to-end, scenarios 3 and 4: re-pushes are harmless, conflicts and corruption are loud.

Scenario 3: PostgreSQL re-runs archive_command when it never saw the success
of an earlier run (a crash before the ``.done`` rename was durable). The
archive command here really loses the first acknowledgement of every file, so
PostgreSQL archives each file twice; walship must answer "identical, success"
the second time. Pushing a *different* file under an archived name (a cloned
server) is refused with exit 3 and the stored object is untouched; afterwards
a point-in-time restore is still exact.

Scenario 4: a stored segment object is corrupted. ``walship fetch`` exits 255,
so PostgreSQL stops with FATAL instead of ending recovery early and promoting
(silently losing every later transaction). After the object is repaired, the
same server resumes recovery and reaches the target.
"""

from __future__ import annotations

import hashlib
import os
import time

import pytest
from e2e import (
    assert_at_target,
    key_for,
    mark_target_time,
    repo_files,
    restore_to_time,
    sha256_file,
    stop_all,
)
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

VERSIONS = [15, 16, 18]


def repo_state(repo: str) -> dict[str, tuple[str, int, int]]:
    """Every object's digest, inode and mtime: any rewrite changes one of them."""
    out = {}
    for key in repo_files(repo):
        path = os.path.join(repo, key)
        st = os.stat(path)
        out[key] = (sha256_file(path), st.st_ino, st.st_mtime_ns)
    return out


def segments_done(cluster: Cluster) -> list[str]:
    """Segments PostgreSQL has archived and still keeps in pg_wal (read-only look)."""
    status = os.path.join(cluster.datadir, "pg_wal", "archive_status")
    names = sorted(f[: -len(".done")] for f in os.listdir(status) if f.endswith(".done"))
    return [n for n in names if len(n) == 24]


@pytest.mark.parametrize("major", VERSIONS)
def test_repush_is_harmless_conflict_refused_and_pitr_exact(major: int, work: Workdir) -> None:
    repo = work.mkdir("repo")
    cfg = walship_config(work, {"repo": repo})
    acks = work.mkdir("acks")
    # push for real, then "crash" before PostgreSQL sees the first success of each file
    lossy = work.write(
        "lossy-archive.sh",
        "#!/bin/sh\n"
        f'"{WALSHIP}" --config "{cfg}" push "$1" "$2" || exit $?\n'
        f'if [ ! -e "{acks}/$2" ]; then : > "{acks}/$2"; exit 1; fi\n',
        mode=0o755,
    )
    primary = Cluster(major, work, "primary")
    primary.initdb(
        {
            "archive_mode": "on",
            "archive_command": f"'{lossy} %p %f'",
            "archive_timeout": "0",
            "wal_keep_size": "'256MB'",
        }
    )
    clusters = [primary]
    try:
        primary.start()
        primary.pgbench("-i", "-s", "1", "-q")
        backup = os.path.join(work.path, "backup")
        primary.basebackup(backup)
        primary.pgbench("-t", "300", "-c", "2", "-n")
        target, expected, _last = mark_target_time(primary, timeout=120)

        log = primary.log()
        archived = sorted(os.listdir(acks))
        assert len([n for n in archived if len(n) == 24]) >= 3, archived
        for name in archived:
            # each file was pushed, "lost", pushed again and found identical: by the
            # duplicate check, or from the look-ahead record the first push left
            # (docs/push-fetch.md, "Look-ahead")
            assert (
                f"{name} was already archived with identical content" in log
                or f"pushed {name} (ahead)" in log
            ), log[-4000:]
            assert key_for(name) in repo_files(repo)
        assert "Traceback" not in log

        # an operator (or a replayed backup) pushes the archived segments yet again,
        # exactly as PostgreSQL would: relative %p, cwd = the data directory
        before = repo_state(repo)
        kept = segments_done(primary)
        assert kept, "no archived segment left in pg_wal"
        for name in kept:
            proc = run(
                [WALSHIP, "--config", cfg, "push", f"pg_wal/{name}", name],
                cwd=primary.datadir,
            )
            assert (
                "already archived with identical content" in proc.stderr
                or f"pushed {name} (ahead)" in proc.stderr
            ), proc.stderr

        # a different file under an archived name (a cloned server): refused, untouched
        victim = kept[-1]
        with open(os.path.join(primary.datadir, "pg_wal", victim), "rb") as fh:
            data = bytearray(fh.read())
        middle = len(data) // 2
        data[middle : middle + 16] = bytes(b ^ 0x5A for b in data[middle : middle + 16])
        clone = work.write(f"clone-{victim}", "")
        with open(clone, "wb") as fh:
            fh.write(data)
        proc = run([WALSHIP, "--config", cfg, "push", clone, victim], cwd=work.path, check=False)
        assert proc.returncode == 3, proc
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert victim in lines[0] and hashlib.sha256(data).hexdigest() in lines[0]
        assert repo_state(repo) == before
        primary.stop()

        # the archive still restores exactly to T
        restored = restore_to_time(major, work, backup, cfg, target)
        clusters.append(restored)
        assert_at_target(restored, expected)
    finally:
        stop_all(clusters)


@pytest.mark.parametrize("major", VERSIONS)
def test_corrupt_object_stops_recovery_and_repair_resumes(major: int, work: Workdir) -> None:
    repo = work.mkdir("repo")
    cfg = walship_config(work, {"repo": repo})
    primary = Cluster(major, work, "primary")
    primary.initdb(
        {"archive_mode": "on", "archive_command": archive_command(cfg), "archive_timeout": "0"}
    )
    clusters = [primary]
    try:
        primary.start()
        primary.psql("CREATE TABLE ev(batch int, note text)")
        primary.psql("INSERT INTO ev SELECT 1, 'base ' || g FROM generate_series(1, 1000) g")
        backup = os.path.join(work.path, "backup")
        primary.basebackup(backup)
        # three segments after the backup, one batch each; the middle one gets corrupted
        segments = []
        for batch in (2, 3, 4):
            primary.psql(
                f"INSERT INTO ev SELECT {batch}, repeat('x', 200) FROM generate_series(1, 5000)"
            )
            if batch == 4:
                primary.psql("SELECT pg_create_restore_point('end')")
            segments.append(primary.switch_wal())
        primary.wait_archived(segments[-1])
        primary.stop()

        bad = segments[1]
        obj = os.path.join(repo, key_for(bad))
        with open(obj, "rb") as fh:
            original = fh.read()
        corrupted = bytearray(original)
        middle = len(corrupted) // 2
        corrupted[middle : middle + 64] = bytes(b ^ 0xFF for b in corrupted[middle : middle + 64])
        with open(obj, "wb") as fh:
            fh.write(corrupted)

        restored = restore_cluster(
            major,
            work,
            backup,
            "restored",
            {
                "restore_command": restore_command(cfg),
                "recovery_target_name": "'end'",
                "recovery_target_action": "'promote'",
                "hot_standby": "on",
            },
        )
        clusters.append(restored)
        restored.start(wait=False)
        # until the server gives up, it must never leave recovery
        deadline = time.monotonic() + 120
        while "database system is shut down" not in restored.log():
            assert time.monotonic() < deadline, restored.log()[-4000:]
            answer = restored.psql("SELECT pg_is_in_recovery()", check=False)
            assert answer != "f", "promoted past a corrupt segment:\n" + restored.log()[-4000:]
            time.sleep(0.2)
        restored.wait_exit()
        log = restored.log()
        assert f'could not restore file "{bad}" from archive' in log, log[-4000:]
        assert "exit code 255" in log, log[-4000:]
        walship_errors = [
            line for line in log.splitlines() if line.startswith("walship[") and " ERROR " in line
        ]
        assert len(walship_errors) == 1, log[-4000:]
        assert bad in walship_errors[0], walship_errors
        assert "corrupt" in walship_errors[0], walship_errors
        assert "Traceback" not in log
        for promoted in ("archive recovery complete", "selected new timeline ID"):
            assert promoted not in log, log[-4000:]
        assert os.path.exists(os.path.join(restored.datadir, "recovery.signal"))
        assert not os.path.exists(os.path.join(restored.datadir, "pg_wal", "00000002.history"))
        assert key_for("00000002.history") not in repo_files(repo)

        # repair the object: the same server resumes recovery and reaches the target
        with open(obj, "wb") as fh:
            fh.write(original)
        restored.start()
        restored.wait_promoted()
        assert restored.psql("SELECT string_agg(DISTINCT batch::text, ',') FROM ev") == "1,2,3,4"
        assert restored.psql("SELECT count(*) FROM ev") == str(1000 + 3 * 5000)
        assert 'recovery stopping at restore point "end"' in restored.log()
    finally:
        stop_all(clusters)
