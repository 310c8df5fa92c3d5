"""Proof: plan-restore predicts what real PostgreSQL recovery does (PostgreSQL 15).

History built here (every file archived through walship into one repository):

    TL1  CREATE t | backup b1 | id 1 | rp_a | id 2 | backup b2 | id 3 | T_x2 | id 4
    TL2  (PITR of b1 to rp_a, planned by walship)  id 5 | id 6 | backup b3 | id 7 | rp_c
         | switch | 5 xids used | id 8 | switch | id 11
    TL3  (PITR of b3 to rp_c on timeline 2, planned by walship)  id 9 | L_9 | id 10

Then, for targets before, inside and after each branch, a restore point, an
xid and an LSN, the plan's verdict, backup and timeline are checked, and the
reachable ones (and one unreachable one) are actually recovered with the
plan's settings: the recovered rows and PostgreSQL's "recovery stopping"
line must match the plan. Finally one segment is deleted from the
repository: plan and verify must name exactly it, earlier targets stay
reachable.

Segment summaries come from the segment index (``walship index``) when that
command exists, else from walship.pg.records run over the archived segments.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest
from pgharness import (
    WALSHIP,
    Cluster,
    Workdir,
    archive_command,
    restore_cluster,
    restore_command,
    walship_config,
)
from pgharness import run as pgrun

from walship import cli, repository
from walship.config import Config
from walship.pg import parse_lsn, parse_segment_name
from walship.restore import planner, report
from walship.restore.inventory import load_inventory, read_object
from walship.storage.local import LocalBackend

pytestmark = pytest.mark.pg

MAJOR = 15
HAS_INDEX = "index" in cli.COMMANDS


class World:
    def __init__(self, work: Workdir) -> None:
        self.work = work
        self.repo = work.mkdir("repo")
        self.cfg_path = walship_config(work, {"repo": self.repo})
        self.cfg = Config(repo=self.repo)
        self.backups: dict[str, str] = {}
        self.clusters: list[Cluster] = []
        self.summaries: dict[tuple[int, int], Any] | None = None

    # --- PostgreSQL ----------------------------------------------------------
    def backup(self, cluster: Cluster, label: str) -> None:
        path = os.path.join(self.work.path, label)
        cluster.basebackup(path, "-l", label)
        self.backups[label] = path

    def restore(self, name: str, plan: dict[str, Any], *, archive: bool = False) -> Cluster:
        settings = dict(plan["settings"])
        settings["restore_command"] = restore_command(self.cfg_path)
        if archive:
            settings["archive_mode"] = "on"
            settings["archive_command"] = archive_command(self.cfg_path)
        cluster = restore_cluster(
            MAJOR, self.work, self.backups[plan["backup"]["label"]], name, settings
        )
        self.clusters.append(cluster)
        return cluster

    # --- walship ---------------------------------------------------------------
    def walship(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [WALSHIP, "--config", self.cfg_path, *args],
            capture_output=True,
            text=True,
            timeout=300,
        )

    def index(self) -> None:
        if HAS_INDEX:
            proc = self.walship("index")
            assert proc.returncode == 0, proc.stderr
            return
        from walship.pg import records

        backend = LocalBackend(self.repo)
        inv, lst = load_inventory(self.cfg, backend, summaries=False)
        by_tli: dict[int, list[str]] = {}
        for name, _ in lst.segments:
            by_tli.setdefault(int(name[:8], 16), []).append(name)
        summaries: dict[tuple[int, int], Any] = {}
        for names in by_tli.values():
            names.sort()
            runs: list[list[str]] = []
            for name in names:
                segno = parse_segment_name(name, inv.seg_size).segno
                if runs and parse_segment_name(runs[-1][-1], inv.seg_size).segno == segno - 1:
                    runs[-1].append(name)
                else:
                    runs.append([name])
            for run in runs:
                files = ((n, read_object(self.cfg, backend, repository.key_for(n))) for n in run)
                for scan in records.read_segments(files):
                    s = scan.summary
                    summaries[(s.tli, s.segno)] = s
        self.summaries = summaries

    def plan(self, *args: str) -> dict[str, Any]:
        """``walship plan-restore --json ARGS`` (with the CLI when the index exists)."""
        if HAS_INDEX:
            proc = self.walship("plan-restore", "--json", *args)
            assert proc.returncode in planner.EXIT_CODES.values(), proc.stderr
            doc: dict[str, Any] = json.loads(proc.stdout)
            assert doc["exit_code"] == proc.returncode
            return doc
        from walship.commands import plan_restore

        parser = argparse.ArgumentParser()
        plan_restore.configure(parser)
        ns = parser.parse_args(list(args))
        inv, _ = load_inventory(self.cfg, LocalBackend(self.repo), summaries=False)
        if self.summaries is not None:
            inv.summaries = dict(self.summaries)
        p = planner.plan(
            inv,
            plan_restore.parse_target(ns),
            timeline=plan_restore.parse_timeline(ns.timeline),
            backup=ns.backup,
            action=ns.action,
        )
        # the CLI answers the same for the targets that need no index
        if self.summaries is None or p.target.kind in ("lsn", "immediate", "latest"):
            proc = self.walship("plan-restore", "--json", *args)
            assert proc.returncode == p.exit_code, proc.stdout + proc.stderr
        return report.plan_json(p, inv)


def rows(cluster: Cluster) -> list[int]:
    out = cluster.psql("SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM t")
    return [int(x) for x in out.split(",") if x]


def insert(cluster: Cluster, i: int, tli: int) -> int:
    time.sleep(0.05)
    out = cluster.psql(f"INSERT INTO t VALUES ({i}, {tli}) RETURNING txid_current()")
    return int(out.splitlines()[0])


def now(cluster: Cluster) -> str:
    time.sleep(0.3)
    value = cluster.psql("SELECT now()::text")
    time.sleep(0.3)
    return value


def finish(cluster: Cluster) -> None:
    last = cluster.switch_wal()
    cluster.wait_archived(last)
    cluster.stop("immediate")


def stopped_at(cluster: Cluster) -> str:
    lines = [ln for ln in cluster.log().splitlines() if "recovery stopping" in ln]
    return lines[-1] if lines else ""


def recover(world: World, name: str, plan: dict[str, Any], *, archive: bool = False) -> Cluster:
    assert plan["verdict"] == "reachable", plan
    cluster = world.restore(name, plan, archive=archive)
    try:
        cluster.start()
    except RuntimeError as exc:
        raise AssertionError(f"{name} failed: {plan}\n{cluster.log()[-3000:]}") from exc
    cluster.wait_promoted()
    return cluster


def check_stop(cluster: Cluster, plan: dict[str, Any]) -> None:
    """PostgreSQL's 'recovery stopping ...' line names the record the plan predicted."""
    event = plan["stop"]["event"]
    line = stopped_at(cluster)
    if event is None:
        return
    if event["kind"] == "restore_point":
        assert f'recovery stopping at restore point "{event["name"]}"' in line, line
    else:
        assert f"{plan['stop']['how']} commit of transaction {event['xid']}" in line, line


def test_plans_match_real_recoveries(work: Workdir) -> None:
    world = World(work)
    primary = Cluster(MAJOR, work)
    world.clusters.append(primary)
    primary.initdb(
        {
            "archive_mode": "on",
            "archive_command": archive_command(world.cfg_path),
            "archive_timeout": "0",
            "autovacuum": "off",
        }
    )
    try:
        _scenario(world, primary)
    finally:
        for c in world.clusters:
            c.stop("immediate")


def _scenario(world: World, primary: Cluster) -> None:
    # --- timeline 1 -------------------------------------------------------------
    primary.start()
    primary.psql("CREATE TABLE t(id int PRIMARY KEY, tl int)")
    world.backup(primary, "b1")
    insert(primary, 1, 1)
    primary.psql("SELECT pg_create_restore_point('rp_a')")
    insert(primary, 2, 1)
    world.backup(primary, "b2")
    insert(primary, 3, 1)
    t_x2 = now(primary)
    xid4 = insert(primary, 4, 1)
    finish(primary)
    world.index()

    # --- timeline 2: a PITR planned by walship --------------------------------------
    p = world.plan("--name", "rp_a", "--action", "promote")
    assert (p["verdict"], p["backup"]["label"], p["target_timeline"]) == ("reachable", "b1", 1)
    r1 = recover(world, "r1", p, archive=True)
    check_stop(r1, p)
    assert rows(r1) == [1]
    xid5 = insert(r1, 5, 2)
    insert(r1, 6, 2)
    world.backup(r1, "b3")
    insert(r1, 7, 2)
    r1.psql("SELECT pg_create_restore_point('rp_c')")
    r1.switch_wal()
    for _ in range(5):  # xids restart at the fork on timeline 3: make xid 8 unique to TL2
        r1.psql("SELECT txid_current()")
    xid8 = insert(r1, 8, 2)
    r1.switch_wal()
    insert(r1, 11, 2)
    finish(r1)
    world.index()

    # --- timeline 3: a second PITR, on timeline 2 ------------------------------------
    p = world.plan("--name", "rp_c", "--timeline", "2", "--action", "promote")
    assert (p["verdict"], p["backup"]["label"], p["target_timeline"]) == ("reachable", "b3", 2)
    r2 = recover(world, "r2", p, archive=True)
    check_stop(r2, p)
    assert rows(r2) == [1, 5, 6, 7]
    insert(r2, 9, 3)
    lsn9 = r2.psql("SELECT pg_current_wal_insert_lsn()")
    insert(r2, 10, 3)
    finish(r2)
    world.index()

    # --- predictions on the full archive -------------------------------------------
    expect = {
        # name: (args, verdict, backup label, target timeline)
        "rp_a latest": (["--name", "rp_a"], "reachable", "b1", 3),
        "rp_c on TL1": (["--name", "rp_c", "--timeline", "1"], "timeline", None, None),
        "unknown name": (["--name", "nope"], "unknown-restore-point", None, None),
        "xid8 latest": (["--xid", str(xid8)], "timeline", None, None),
        "immediate": (["--immediate"], "reachable", "b3", 3),
        "latest": (["--latest"], "reachable", "b3", 3),
        "after the end": (["--time", "2099-01-01 00:00:00+00"], "archive-ends", None, None),
        "before b1": (["--lsn", "0/1000000"], "no-backup", None, None),
        "rp_a from b2": (
            ["--name", "rp_a", "--backup", "b2", "--timeline", "1"],
            "no-backup",
            None,
            None,
        ),
    }
    for what, (args, verdict, label, tli) in expect.items():
        p = world.plan(*args)
        assert p["verdict"] == verdict, (what, p)
        if label is not None:
            assert (p["backup"]["label"], p["target_timeline"]) == (label, tli), (what, p)
    p = world.plan("--xid", str(xid8))
    assert p["hint"] == "use --timeline 2"
    p = world.plan("--time", "2099-01-01 00:00:00+00")
    assert p["latest"]["last_commit_time"] is not None and "latest reachable time" in p["reason"]

    # time inside timeline 1 after timeline 2 left it: the latest path is on timeline 2
    # by then, whose first commit (id 5) is later than the target. b3 already holds it
    # (recovery from b3 would stop before id 7, with 5 and 6 in): b1 serves the target
    p = world.plan("--time", t_x2, "--action", "promote")
    assert (p["verdict"], p["backup"]["label"], p["target_timeline"]) == ("reachable", "b1", 3)
    assert p["stop"]["event"]["xid"] == xid5 and p["stop"]["timeline"] == 2
    c = recover(world, "c1", p)
    check_stop(c, p)
    assert rows(c) == [1]
    c.stop("immediate")

    # the same time on timeline 1 itself
    p = world.plan("--time", t_x2, "--timeline", "1", "--action", "promote")
    assert (p["verdict"], p["backup"]["label"], p["target_timeline"]) == ("reachable", "b2", 1)
    assert p["stop"]["event"]["xid"] == xid4
    c = recover(world, "c2", p)
    check_stop(c, p)
    assert rows(c) == [1, 2, 3]
    c.stop("immediate")

    # an xid on timeline 2 after timeline 3 left it: unreachable on timeline 3 ...
    p = world.plan("--xid", str(xid8), "--timeline", "2", "--action", "promote")
    assert (p["verdict"], p["backup"]["label"], p["target_timeline"]) == ("reachable", "b3", 2)
    failing = dict(p, settings=dict(p["settings"], recovery_target_timeline="'3'"))
    c = world.restore("c3", failing)
    c.start(wait=False)
    deadline = time.monotonic() + 120
    while "database system is shut down" not in c.log() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert "recovery ended before configured recovery target was reached" in c.log(), c.log()
    # ... and reachable on timeline 2
    c = recover(world, "c4", p)
    check_stop(c, p)
    assert rows(c) == [1, 5, 6, 7, 8]
    c.stop("immediate")
    # ... and with recovery_target_inclusive = off: stops before xid 8's commit
    p = world.plan(
        "--xid", str(xid8), "--timeline", "2", "--inclusive", "off", "--action", "promote"
    )
    assert p["stop"]["how"] == "before" and p["stop"]["event"]["xid"] == xid8, p
    assert p["settings"]["recovery_target_inclusive"] == "'off'"
    c = recover(world, "c4x", p)
    check_stop(c, p)
    assert rows(c) == [1, 5, 6, 7]
    c.stop("immediate")

    # an LSN on timeline 3
    p = world.plan("--lsn", lsn9, "--action", "promote")
    assert (p["verdict"], p["backup"]["label"], p["target_timeline"]) == ("reachable", "b3", 3)
    c = recover(world, "c5", p)
    assert rows(c) == [1, 5, 6, 7, 9]
    c.stop("immediate")

    proc = world.walship("verify")
    assert proc.returncode == 0, proc.stdout + proc.stderr

    # --- remove one segment: the one holding xid 8's commit (timeline 2, off TL3) ----
    gone = p_seg = world.plan("--xid", str(xid8), "--timeline", "2")["segments"][-1]["last"]
    assert p_seg.startswith("00000002")
    LocalBackend(world.repo).delete([repository.key_for(gone)])
    p = world.plan("--xid", str(xid8), "--timeline", "2")
    assert (p["verdict"], p["missing_segment"], p["exit_code"]) == ("gap", gone, 11)
    assert world.plan("--name", "rp_c", "--timeline", "2")["verdict"] == "reachable"
    assert world.plan("--time", t_x2)["verdict"] == "reachable"
    assert world.plan("--latest")["verdict"] == "reachable"
    assert world.plan("--latest", "--timeline", "2")["missing_segment"] == gone
    proc = world.walship("verify", "--json")
    doc = json.loads(proc.stdout)
    assert proc.returncode == 20, proc.stdout
    errors = [e for e in doc["problems"] if e["severity"] == "error"]
    assert [e["objects"] for e in errors] == [[gone]], errors
    print(json.dumps(doc, indent=1), file=sys.stderr)


# --- which backup serves a target: the first matching event of the whole history ---------


def lowlevel_backup(world: World, cluster: Cluster, label: str) -> dict[str, str]:
    """A base backup with pg_backup_start/stop whose window holds a commit (id 7), a restore
    point (rp_in) and a time taken inside it. Returns T_IN, XID7 and LSN_IN."""
    dest = os.path.join(world.work.path, label)
    script = world.work.write(
        f"{label}.sql",
        f"SELECT pg_backup_start('{label}', true);\n"
        "SELECT pg_sleep(1.2);\n"
        "SELECT 'T_IN=' || now()::text;\n"
        "SELECT pg_sleep(0.3);\n"
        "INSERT INTO t VALUES (7, 1) RETURNING 'XID7=' || txid_current()::text;\n"
        "SELECT pg_create_restore_point('rp_in');\n"
        "SELECT 'LSN_IN=' || pg_current_wal_insert_lsn()::text;\n"
        f"\\! cp -a {cluster.datadir} {dest}\n"
        f"\\o {dest}/backup_label\n"
        "SELECT labelfile FROM pg_backup_stop(true);\n"
        "\\o\n",
    )
    proc = pgrun(
        [
            cluster.bin("psql"),
            *("-h", cluster.sockdir, "-p", str(cluster.port), "-U", "postgres", "-d", "postgres"),
            *("-X", "-At", "-q", "-v", "ON_ERROR_STOP=1", "-f", script),
        ]
    )
    assert os.path.exists(os.path.join(dest, "global", "pg_control")), proc.stderr
    world.backups[label] = dest
    out = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    assert set(out) == {"T_IN", "XID7", "LSN_IN"}, proc.stdout
    return out


def lsn(cluster: Cluster) -> str:
    return cluster.psql("SELECT pg_current_wal_insert_lsn()")


def between(a: str, b: str) -> str:
    """An LSN half way between two LSNs."""
    mid = (parse_lsn(a) + parse_lsn(b)) // 2
    return f"{mid >> 32:X}/{mid & 0xFFFFFFFF:X}"


def expect_failure(world: World, name: str, plan: dict[str, Any], message: str) -> None:
    """PostgreSQL refuses the recovery with ``message`` (and shuts down)."""
    c = world.restore(name, plan)
    c.start(wait=False)
    deadline = time.monotonic() + 120
    while "database system is shut down" not in c.log() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert message in c.log(), c.log()[-3000:]
    c.stop("immediate")


@pytest.mark.slow
def test_backup_choice_matches_real_recoveries(work: Workdir) -> None:
    """Three backups b1 < b2 < b3 on timeline 1; targets before, inside and after each
    backup's window; then the same with one segment between b1 and b2 removed."""
    world = World(work)
    primary = Cluster(MAJOR, work)
    world.clusters.append(primary)
    primary.initdb(
        {
            "archive_mode": "on",
            "archive_command": archive_command(world.cfg_path),
            "archive_timeout": "0",
            "autovacuum": "off",
        }
    )
    try:
        _backup_choice(world, primary)
    finally:
        for c in world.clusters:
            c.stop("immediate")


def _backup_choice(world: World, primary: Cluster) -> None:
    primary.start()
    primary.psql("CREATE TABLE t(id int PRIMARY KEY, tl int)")
    insert(primary, 1, 1)
    primary.psql("SELECT pg_create_restore_point('rp_pre')")
    t_pre = now(primary)
    xid2 = insert(primary, 2, 1)
    lsn_pre = lsn(primary)
    world.backup(primary, "b1")
    insert(primary, 3, 1)
    primary.psql("SELECT pg_create_restore_point('dup')")
    lsn_1 = lsn(primary)
    t_1 = now(primary)
    primary.switch_wal()
    xid4 = insert(primary, 4, 1)  # in the segment removed later
    primary.psql("SELECT pg_create_restore_point('rp_g')")
    gone = primary.psql("SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
    primary.switch_wal()
    insert(primary, 5, 1)
    t_2 = now(primary)
    xid6 = insert(primary, 6, 1)
    inside = lowlevel_backup(world, primary, "b2")  # id 7, rp_in, T_IN inside its window
    xid7 = int(inside["XID7"])
    xid8 = insert(primary, 8, 1)
    primary.psql("SELECT pg_create_restore_point('dup')")  # the same name again
    t_3 = now(primary)
    xid9 = insert(primary, 9, 1)
    lsn_3 = lsn(primary)
    world.backup(primary, "b3")
    time.sleep(1.1)  # t_4 a second after b3's START TIME (whole seconds), for the gap case
    xid10 = insert(primary, 10, 1)
    primary.psql("SELECT pg_create_restore_point('rp_post')")
    t_4 = now(primary)
    xid11 = insert(primary, 11, 1)
    lsn_4 = lsn(primary)
    insert(primary, 12, 1)
    finish(primary)
    world.index()

    backups = {
        b["label"]: b for b in json.loads(world.walship("wal-show", "--json").stdout)["backups"]
    }
    assert sorted(backups) == ["b1", "b2", "b3"]
    in_b1 = between(backups["b1"]["start_lsn"], backups["b1"]["stop_lsn"])
    in_b3 = between(backups["b3"]["start_lsn"], backups["b3"]["stop_lsn"])

    NB = ("no-backup", None, None)
    expect: dict[str, tuple[list[str], tuple[str, str | None, int | None]]] = {
        # before b1: its files already hold id 2
        "time before b1": (["--time", t_pre], NB),
        "xid before b1": (["--xid", str(xid2)], NB),
        "name before b1": (["--name", "rp_pre"], NB),
        "lsn before b1": (["--lsn", lsn_pre], NB),
        "lsn inside b1": (["--lsn", in_b1], NB),
        # between b1 and b2 (b2 and b3 would "stop" somewhere, holding later commits)
        "time b1..b2": (["--time", t_1], ("reachable", "b1", xid4)),
        "time b1..b2 late": (["--time", t_2], ("reachable", "b1", xid6)),
        "xid b1..b2": (["--xid", str(xid4)], ("reachable", "b1", xid4)),
        "first dup": (["--name", "dup"], ("reachable", "b1", None)),
        "lsn b1..b2": (["--lsn", lsn_1], ("reachable", "b1", None)),
        # inside b2's window
        "time inside b2": (["--time", inside["T_IN"]], ("reachable", "b1", xid7)),
        "xid inside b2": (["--xid", str(xid7)], ("reachable", "b1", xid7)),
        "name inside b2": (["--name", "rp_in"], ("reachable", "b1", None)),
        "lsn inside b2": (["--lsn", inside["LSN_IN"]], ("reachable", "b1", None)),
        # between b2 and b3, and inside b3's window (no commit there)
        "time b2..b3": (["--time", t_3], ("reachable", "b2", xid9)),
        "xid b2..b3": (["--xid", str(xid8)], ("reachable", "b2", xid8)),
        "lsn b2..b3": (["--lsn", lsn_3], ("reachable", "b2", None)),
        "lsn inside b3": (["--lsn", in_b3], ("reachable", "b2", None)),
        # after b3
        "time after b3": (["--time", t_4], ("reachable", "b3", xid11)),
        "xid after b3": (["--xid", str(xid10)], ("reachable", "b3", xid10)),
        "name after b3": (["--name", "rp_post"], ("reachable", "b3", None)),
        "lsn after b3": (["--lsn", lsn_4], ("reachable", "b3", None)),
    }
    plans: dict[str, dict[str, Any]] = {}
    for what, (args, (verdict, label, xid)) in expect.items():
        p = world.plan(*args, "--action", "promote")
        plans[what] = p
        got = (p["verdict"], p["backup"] and p["backup"]["label"])
        assert got == (verdict, label), (what, p["reason"], p)
        assert p["caution"] is None, (what, p)
        if xid is not None:
            assert p["stop"]["event"]["xid"] == xid, (what, p["stop"])
        if verdict == "no-backup":
            assert p["exit_code"] == 10 and "the oldest backup, " in p["reason"], (what, p)
            assert backups["b1"]["name"] in p["reason"], p["reason"]

    # each verdict class checked by a real recovery
    # no backup: b1 restored to T_pre silently holds id 2, committed after T_pre
    wrong = dict(plans["time b1..b2"])
    wrong["settings"] = dict(wrong["settings"], recovery_target_time=f"'{t_pre}'")
    c = recover(world, "nb", wrong)
    assert rows(c) == [1, 2]
    c.stop("immediate")
    # served by the oldest backup although the newer ones would stop somewhere
    for what, expected in (("time b1..b2", [1, 2, 3]), ("first dup", [1, 2, 3])):
        c = recover(world, what.replace(" ", "_").replace(".", "_"), plans[what])
        check_stop(c, plans[what])
        assert rows(c) == expected, what
        c.stop("immediate")
    # inside b2's window: b2 itself cannot stop there; b1 can
    p = plans["time inside b2"]
    expect_failure(
        world,
        "in_b2",
        dict(p, backup={"label": "b2"}),
        "requested recovery stop point is before consistent recovery point",
    )
    c = recover(world, "in_b1", p)
    check_stop(c, p)
    assert rows(c) == [1, 2, 3, 4, 5, 6]
    c.stop("immediate")
    for what, expected in (
        ("time b2..b3", list(range(1, 9))),
        ("xid after b3", list(range(1, 11))),
    ):
        c = recover(world, what.replace(" ", "_").replace(".", "_"), plans[what])
        check_stop(c, plans[what])
        assert rows(c) == expected, what
        c.stop("immediate")

    # --- one segment between b1 and b2 removed -----------------------------------------
    LocalBackend(world.repo).delete([repository.key_for(gone)])
    gap_expect = {
        # only b1 could serve these, and its WAL now has the gap
        "time b1..b2": "gap",
        "time b1..b2 late": "gap",
        "xid b1..b2": "gap",
        "time inside b2": "gap",
        "xid inside b2": "gap",
        "name inside b2": "gap",
        "lsn inside b2": "gap",
        # before the gap: b1 still serves
        "first dup": "reachable",
        "lsn b1..b2": "reachable",
        # b2 and b3 serve; for time and name targets the plan says what it could not see
        "time b2..b3": "reachable",
        "lsn b2..b3": "reachable",
        "time after b3": "reachable",
        "name after b3": "reachable",
    }
    for what, verdict in gap_expect.items():
        args = expect[what][0]
        p = world.plan(*args, "--action", "promote")
        assert p["verdict"] == verdict, (what, p["reason"], p)
        if verdict == "gap":
            assert (p["missing_segment"], p["exit_code"]) == (gone, 11), (what, p)
        else:
            assert p["backup"]["label"] == expect[what][1][1], (what, p)
            blind = what in ("time b2..b3", "time after b3", "name after b3")
            assert (p["caution"] is not None) == blind, (what, p)
            if blind:
                assert gone in p["caution"], p["caution"]
        plans[what] = p
    proc = world.walship("plan-restore", "--time", t_3)
    assert proc.returncode == 0 and f"  caution    segment {gone} is missing" in proc.stdout
    p = plans["time b2..b3"]
    c = recover(world, "gap_b2", p)
    check_stop(c, p)
    assert rows(c) == list(range(1, 9))
    c.stop("immediate")
