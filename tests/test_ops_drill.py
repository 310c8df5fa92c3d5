"""``walship drill`` on a repository made with real PostgreSQL 15 and walship backup-push:
a drill restores and reports (latest and a time target), SIGTERM and a crash (SIGKILL)
leave nothing behind (the next drill stops the crashed drill's proven server), and a
drill against a gap or a corrupt object fails with the reason and leaves nothing."""

from __future__ import annotations

import glob
import json
import os
import pwd
import signal
import subprocess
import time

import pytest
from e2e import archiving_primary, stop_all
from pgharness import WALSHIP, Workdir, run, walship_config
from prometheus_client.parser import text_string_to_metric_families

from walship.ops.drill import parse_postmaster_pid
from walship.ops.metrics import METRICS

pytestmark = [pytest.mark.slow, pytest.mark.pg]


def env_for(cluster) -> dict[str, str]:
    return {"PGHOST": cluster.sockdir, "PGPORT": str(cluster.port), "PGUSER": "postgres"}


def drill(cluster, config: str, *extra: str) -> tuple[int, dict, str]:
    proc = run(
        [WALSHIP, "--config", config, "drill", "--json", *extra],
        env=env_for(cluster),
        check=False,
        timeout=600,
    )
    try:
        return proc.returncode, json.loads(proc.stdout), proc.stderr
    except ValueError:
        raise AssertionError(f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}") from None


def leftovers(drills: str) -> list[str]:
    return sorted(e for e in os.listdir(drills) if e != "lock")


def as_postgres() -> None:
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.setgid(pw.pw_gid)
        os.setgroups([])
        os.setuid(pw.pw_uid)


def start_drill(cluster, config: str) -> subprocess.Popen[bytes]:
    """A drill whose pid is walship's own (no runuser in between), to signal it."""
    return subprocess.Popen(
        [WALSHIP, "--config", config, "drill"],
        env={**os.environ, **env_for(cluster), "HOME": "/tmp"},
        cwd="/tmp",
        preexec_fn=as_postgres,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def server_pid_when_started(drills: str, proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for pidfile in glob.glob(os.path.join(drills, "drill-*", "data", "postmaster.pid")):
            try:
                with open(pidfile) as fh:
                    parsed = parse_postmaster_pid(fh.read())
            except OSError:
                continue
            if parsed is not None:
                return parsed[0], os.path.dirname(pidfile)
        assert proc.poll() is None, f"the drill ended early (exit {proc.returncode})"
        time.sleep(0.05)
    raise TimeoutError("the drill server did not start")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split(") ", 1)[1][0] != "Z"


def test_drill_restores_reports_and_cleans_up(work: Workdir) -> None:
    repo = work.mkdir("repo")
    drills = work.mkdir("drills")
    settings = {
        "repo": repo,
        "drill_dir": drills,
        "drill_sql": "SELECT count(*) FROM pgbench_accounts",
        "metrics_cache_max_age": 0,
        "metrics_cache": os.path.join(work.path, "cache.json"),
    }
    config = walship_config(work, settings)
    primary = archiving_primary(15, work, config)
    try:
        primary.psql("ALTER SYSTEM SET archive_timeout = '2s'")
        primary.psql("SELECT pg_reload_conf()")
        primary.pgbench("-i", "-s", "1")
        push = run([WALSHIP, "--config", config, "backup-push", "--fast"], env=env_for(primary))
        assert push.returncode == 0
        primary.psql("CREATE TABLE marker(batch int)")
        primary.psql("INSERT INTO marker VALUES (1)")
        time.sleep(1.1)
        target = primary.psql("SELECT now()::text")
        time.sleep(1.1)
        primary.psql("INSERT INTO marker VALUES (2)")
        primary.pgbench("-t", "200", "-c", "2", "-n")
        last = primary.switch_wal()
        primary.wait_archived(last)
        port, datadir = primary.port, primary.datadir

        # --- latest: restores, checks, reports, stores, leaves nothing ----------------
        rc, rep, err = drill(primary, config)
        assert rc == 0, (rep, err)
        assert rep["ok"] is True and rep["reason"] is None
        assert rep["backup"] and rep["target"] == "latest"
        assert rep["restore_seconds"] > 0 and rep["replay_seconds"] > 0
        assert rep["rto_seconds"] == pytest.approx(
            rep["restore_seconds"] + rep["replay_seconds"], abs=0.01
        )
        assert rep["wal_replayed_bytes"] >= 16 << 20
        assert rep["rpo_seconds"] is not None and 0 <= rep["rpo_seconds"] < 300
        assert rep["recovery_stop_reason"] == "no recovery target specified"
        steps = {s["name"]: s for s in rep["steps"]}
        assert steps["sql"]["detail"] == "drill_sql returned 100000"
        assert leftovers(drills) == []
        assert glob.glob(os.path.join(repo, "drills", "*.json"))
        assert os.path.exists(os.path.join(repo, "ops", "last-drill.json"))
        # the production server was not touched
        assert primary.port == port and primary.datadir == datadir
        assert primary.psql("SELECT count(*) FROM marker") == "2"
        assert not primary.is_in_recovery()

        # metrics and status now have everything, the drill included
        checked = run(
            [WALSHIP, "--config", config, "check", "--wait", "20"],
            env=env_for(primary),
            check=False,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        prom = os.path.join(work.path, "walship.prom")
        run([WALSHIP, "--config", config, "metrics", "--textfile", prom], env=env_for(primary))
        with open(prom) as fh:
            samples = {
                s.name: s.value
                for fam in text_string_to_metric_families(fh.read())
                for s in fam.samples
            }
        assert not set(METRICS) - set(samples), set(METRICS) - set(samples)
        assert samples["walship_drill_success"] == 1
        assert samples["walship_drill_rto_seconds"] == pytest.approx(rep["rto_seconds"])
        assert samples["walship_backup_newest_raw_bytes"] > 0

        # --- a time target: the restored data is the state at T --------------------------
        at_t = walship_config(
            work, {**settings, "drill_sql": "SELECT count(*) = 1 FROM marker"}, name="t.toml"
        )
        rc, rep, err = drill(primary, at_t, "--target", target)
        assert rc == 0, (rep, err)
        assert rep["recovery_stop_reason"].startswith("before"), rep
        assert leftovers(drills) == []

        # --- SIGTERM while the scratch server runs: stopped, removed ----------------------
        proc = start_drill(primary, config)
        pid, _ = server_pid_when_started(drills, proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 130
        assert not alive(pid)
        assert leftovers(drills) == []

        # --- a crash (SIGKILL): the next drill stops that server and removes it ------------
        proc = start_drill(primary, config)
        pid, _ = server_pid_when_started(drills, proc)
        proc.kill()
        proc.wait(timeout=30)
        assert alive(pid) and leftovers(drills)

        # --- ... and that next drill meets a gap: fails with the reason, nothing left ------
        segments = sorted(glob.glob(os.path.join(repo, "wal", "0000000100000000", "0*")))
        victim = segments[len(segments) // 2 + 1]
        aside = os.path.join(work.path, "aside")
        os.rename(victim, aside)
        try:
            rc, rep, err = drill(primary, config)
        finally:
            os.rename(aside, victim)
        assert not alive(pid), "the crashed drill's server was not stopped"
        assert rc == 22, (rep, err)
        assert rep["ok"] is False and "gap" in rep["reason"]
        assert "walship drill failed" in err and "gap" in err
        assert leftovers(drills) == []

        # --- a corrupt backup part: fails with the reason, nothing left -------------------
        part = sorted(glob.glob(os.path.join(repo, "basebackups", "*", "part-*")))[0]
        with open(part, "rb") as fh:
            original = fh.read()
        damaged = bytearray(original)
        damaged[len(damaged) // 2] ^= 0xFF
        os.chmod(part, 0o644)
        with open(part, "wb") as fh:
            fh.write(damaged)
        try:
            rc, rep, err = drill(primary, config)
        finally:
            with open(part, "wb") as fh:
                fh.write(original)
        assert rc == 22, (rep, err)
        assert "backup-fetch" in rep["reason"], rep
        assert leftovers(drills) == []
        stored = json.loads(
            run([WALSHIP, "--config", config, "status", "--json", "--no-server"]).stdout
        )
        assert stored["last_drill"]["ok"] is False
        assert "backup-fetch" in stored["last_drill"]["reason"]
        # --- short of disk: refused before anything is written, says how much -------------
        if os.geteuid() == 0:  # a real small file system (tmpfs of 1 MiB)
            small = work.mkdir("small")
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", small], check=True
            )
            try:
                os.chown(small, pwd.getpwnam("postgres").pw_uid, pwd.getpwnam("postgres").pw_gid)
                os.chmod(small, 0o700)
                tiny = walship_config(work, {**settings, "drill_dir": small}, name="tiny.toml")
                rc, rep, err = drill(primary, tiny)
                assert rc == 22, (rep, err)
                assert "GiB free in" in rep["reason"] and "needs about" in rep["reason"]
                assert os.listdir(small) == ["lock"]
            finally:
                subprocess.run(["umount", small], check=True)
    finally:
        stop_all([primary])
