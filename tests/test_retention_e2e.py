"""End-to-end: walship delete against real PostgreSQL backups (walship backup-push) and a
timeline switch, proven by real recoveries (tests/pgharness.py, PostgreSQL 15).

Three backups: b1 and b2 on timeline 1; then b2 is restored and promoted (timeline 2)
and b3 is taken there. ``delete --retain 2 --confirm`` must remove exactly b1 and the
WAL only b1 needed, keep 00000002.history, and every kept backup must still restore to
its latest point and to a point inside its window.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import datetime
from typing import Any

import pytest
from e2e import stop_all
from pgharness import WALSHIP, Cluster, Workdir, archive_command, run, walship_config

from walship.pg import parse_lsn, segno_of_lsn

pytestmark = [pytest.mark.slow, pytest.mark.pg]
MAJOR = 15
SEG = 16 << 20


def walship(cfg: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([WALSHIP, "--config", cfg, *args], check=check, timeout=600)


def conninfo(cluster: Cluster) -> str:
    return f"host={cluster.sockdir} port={cluster.port} user=postgres dbname=postgres"


def backup_push(cluster: Cluster, cfg: str, label: str) -> dict[str, Any]:
    walship(cfg, "backup-push", "--pgdata", cluster.datadir, "--fast", "--label", label)
    rows = json.loads(walship(cfg, "backup-list", "--json").stdout)
    row = next(r for r in reversed(rows) if r["label"] == label)
    assert row["wal_ok"], row
    return dict(row)


def insert(cluster: Cluster, n: int) -> None:
    cluster.psql(f"INSERT INTO t VALUES ({n})")


def mark(cluster: Cluster) -> str:
    """A target time between two commits: the rows so far are before it."""
    time.sleep(1.1)
    at = cluster.psql("SELECT now()::text")
    time.sleep(1.1)
    return at


def archived(cluster: Cluster) -> None:
    cluster.wait_archived(cluster.switch_wal(), timeout=120)


def restore(
    work: Workdir, cfg: str, name: str, dest: str, *target: str
) -> tuple[Cluster, list[int]]:
    """backup-fetch ``name`` into ``dest`` (a target, or the end of the archive), start it
    with archiving off, wait for the end of recovery; returns the server and t's rows."""
    walship(cfg, "backup-fetch", name, os.path.join(work.path, dest), *target)
    cluster = Cluster(MAJOR, work, dest)
    cluster.configure({"archive_mode": "off"})
    cluster.start()
    cluster.wait_promoted()
    rows = cluster.psql("SELECT string_agg(n::text, ',' ORDER BY n) FROM t")
    return cluster, [int(x) for x in rows.split(",")]


def wal_segments(repo: str) -> set[tuple[int, int]]:
    out = set()
    for _dirpath, _dirs, files in os.walk(os.path.join(repo, "wal")):
        for f in files:
            if len(f) == 24:
                out.add((int(f[:8], 16), int(f[8:16], 16) * 256 + int(f[16:], 16)))
    return out


def seconds_ago(iso: str) -> float:
    return time.time() - datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_retain_two_across_a_timeline_switch(work: Workdir) -> None:
    repo = work.mkdir("repo")
    cfg = walship_config(work, {"repo": repo})
    primary = Cluster(MAJOR, work)
    primary.initdb({"archive_mode": "on", "archive_command": archive_command(cfg)})
    clusters: list[Cluster] = [primary]
    try:
        primary.start()
        cfg1 = walship_config(work, {"repo": repo, "conninfo": conninfo(primary)}, "w1.toml")
        primary.psql("CREATE TABLE t(n int)")
        insert(primary, 1)
        b1 = backup_push(primary, cfg1, "b1")
        time.sleep(8)  # known times: b1 ends well before b2 (the --window checks below)
        insert(primary, 2)
        archived(primary)
        b2 = backup_push(primary, cfg1, "b2")
        insert(primary, 3)
        in_b2_window = mark(primary)
        insert(primary, 4)
        archived(primary)
        primary.stop()

        # restore b2 to the end of timeline 1 and promote it: timeline 2
        walship(cfg, "backup-fetch", b2["name"], os.path.join(work.path, "second"))
        second = Cluster(MAJOR, work, "second")
        clusters.append(second)
        second.configure({})  # its own port and socket; archiving as the backup's copy had it
        second.start()
        second.wait_promoted()
        assert second.psql("SELECT count(*) FROM t") == "4"
        cfg2 = walship_config(work, {"repo": repo, "conninfo": conninfo(second)}, "w2.toml")
        insert(second, 5)
        archived(second)
        b3 = backup_push(second, cfg2, "b3")
        assert b3["timeline"] == 2 and b2["timeline"] == 1
        insert(second, 6)
        in_b3_window = mark(second)
        insert(second, 7)
        archived(second)
        second.stop()
        assert os.path.exists(os.path.join(repo, "wal", "history", "00000002.history"))

        # --window: its start between b2's and b3's end keeps b2 (the newest before it)
        between = (seconds_ago(b2["stop_time"]) + seconds_ago(b3["stop_time"])) / 2
        doc = json.loads(walship(cfg, "delete", "--window", f"{int(between)}s", "--json").stdout)
        assert [(b["name"], b["action"]) for b in doc["backups"]] == [
            (b1["name"], "delete"),
            (b2["name"], "keep"),
            (b3["name"], "keep"),
        ]
        assert "newest backup before" in doc["backups"][1]["why"]
        # a window starting between b1's and b2's end keeps b1 too (the newest before it)
        older = int((seconds_ago(b1["stop_time"]) + seconds_ago(b2["stop_time"])) / 2)
        doc = json.loads(walship(cfg, "delete", "--window", f"{older}s", "--json").stdout)
        assert [b["action"] for b in doc["backups"]] == ["keep", "keep", "keep"]

        # bad input: one line, exit 2, nothing deleted
        before = wal_segments(repo)
        bad = walship(cfg, "delete", "--confirm", "--before", "20200101T000000Z", check=False)
        assert bad.returncode == 2 and "no backup of that name" in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1

        out = walship(cfg, "delete", "--retain", "2", "--confirm", "--json").stdout
        doc = json.loads(out)
        assert [b["name"] for b in doc["backups"] if b["action"] == "delete"] == [b1["name"]]
        # PostgreSQL's own .backup file of b1 (archived by walship push) went with it
        twins = doc["backups"][0]["backup_files"]
        assert len(twins) == 1 and twins[0].endswith(".backup")
        assert not any(twins[0] in files for _d, _s, files in os.walk(repo))
        assert all(b["backup_files"] for b in doc["backups"][1:])
        assert all(c["verdict"] == "reachable" for c in doc["checks"]), doc["checks"]
        after = wal_segments(repo)
        b2_start = segno_of_lsn(parse_lsn(b2["start_lsn"]), SEG)
        # exactly timeline 1's WAL before b2's start went; timeline 2 is untouched
        assert before - after == {(tli, s) for tli, s in before if tli == 1 and s < b2_start}
        assert before - after
        assert os.path.exists(os.path.join(repo, "wal", "history", "00000002.history"))
        rows = json.loads(walship(cfg, "backup-list", "--json").stdout)
        assert [r["name"] for r in rows] == [b2["name"], b3["name"]]
        assert all(r["wal_ok"] for r in rows)
        assert walship(cfg, "verify", check=False).returncode == 0

        # every kept backup restores to its latest point and to a point in its window
        for name, target, dest, expected in (
            (b2["name"], (), "b2-latest", [1, 2, 3, 4, 5, 6, 7]),
            (b3["name"], (), "b3-latest", [1, 2, 3, 4, 5, 6, 7]),
            (b2["name"], ("--target-time", in_b2_window), "b2-pitr", [1, 2, 3]),
            (b3["name"], ("--target-time", in_b3_window), "b3-pitr", [1, 2, 3, 4, 5, 6]),
        ):
            extra = (*target, "--target-action", "promote") if target else ()
            cluster, got = restore(work, cfg, name, dest, *extra)
            clusters.append(cluster)
            assert got == expected, (name, target)
            cluster.stop()
    finally:
        stop_all(clusters)
