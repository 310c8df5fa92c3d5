"""Fast tests of the pure parts of walship/ops: command lines in server settings, the
settings verdicts, metric values from a status document, the drill's helpers and its
refusal to signal a process it has not proven to be its own server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from walship.ops import check, drill, metrics
from walship.ops.check import FAIL, OK, WARN, judge_command, judge_settings, parse_command

CFG = "/etc/walship/main.toml"
REPO = "/var/lib/walship/main"


def judge(text: str, sub: str = "push", ph: list[str] | None = None, their: str = REPO):
    return judge_command(
        "archive_command",
        text,
        subcommand=sub,
        placeholders=ph or ["%p", "%f"],
        our_program="/opt/walship/bin/walship",
        our_config=CFG,
        our_repo=REPO,
        their_repo_of=lambda path: their,
    )


def test_parse_command_forms() -> None:
    inv = parse_command("/opt/walship/bin/walship --config /etc/w.toml push %p %f")
    assert inv is not None and inv.subcommand == "push" and inv.config == "/etc/w.toml"
    assert inv.args == ["%p", "%f"]
    inv = parse_command("WALSHIP_REPO=/r /usr/bin/python3 -m walship --repo=/x fetch %f %p")
    assert inv is not None and inv.repo == "/x" and inv.subcommand == "fetch"
    inv = parse_command("env WALSHIP_CONFIG=/c.toml walship -v push %p %f")
    assert inv is not None and inv.config == "/c.toml"
    assert parse_command("cp %p /mnt/archive/%f") is None
    assert parse_command("test ! -f /x/%f && cp %p /x/%f") is None
    assert parse_command("'unbalanced") is None


def test_judge_command_verdicts() -> None:
    assert judge(f"/opt/walship/bin/walship --config {CFG} push %p %f").status == OK
    r = judge("cp %p /mnt/archive/%f")
    assert r.status == FAIL and "does not call walship" in r.detail
    assert "push %p %f" in (r.fix or "")
    r = judge(f"/opt/walship/bin/walship --config {CFG} fetch %f %p")
    assert r.status == FAIL and "does not run `walship push %p %f`" in r.detail
    r = judge(f"/opt/walship/bin/walship --config {CFG} --repo /elsewhere push %p %f")
    assert r.status == FAIL and "--repo /elsewhere" in r.detail
    r = judge("/opt/walship/bin/walship --config /etc/other.toml push %p %f", their="/srv/other")
    assert r.status == FAIL and "into /srv/other" in r.detail
    r = judge("/opt/walship/bin/walship --config /etc/other.toml push %p %f")
    assert r.status == WARN and "same repository" in r.detail
    r = judge(f"/usr/local/bin/walship --config {CFG} push %p %f")
    assert r.status == WARN and "two installations" in r.detail


def test_judge_settings() -> None:
    def cmd(setting, text, sub, ph):
        return check.Result(setting, OK, text)

    good = {
        "wal_level": "replica",
        "archive_mode": "on",
        "archive_command": "walship push %p %f",
        "archive_library": "",
        "archive_timeout": "60",
        "data_checksums": "on",
    }
    assert {r.status for r in judge_settings(good, False, cmd)} == {OK}
    out = {r.name: r for r in judge_settings({**good, "archive_mode": "off"}, False, cmd)}
    assert out["archive_mode"].status == FAIL
    out = {r.name: r for r in judge_settings({**good, "wal_level": "minimal"}, False, cmd)}
    assert out["wal_level"].status == FAIL and "replica" in (out["wal_level"].fix or "")
    out = {r.name: r for r in judge_settings({**good, "archive_command": ""}, False, cmd)}
    assert out["archive_command"].status == FAIL
    out = {
        r.name: r for r in judge_settings({**good, "archive_library": "basic_archive"}, False, cmd)
    }
    assert (
        out["archive_command"].status == FAIL and "archive_library" in out["archive_command"].detail
    )
    out = {
        r.name: r
        for r in judge_settings(
            {**good, "archive_timeout": "0", "data_checksums": "off"}, False, cmd
        )
    }
    assert out["archive_timeout"].status == WARN and out["data_checksums"].status == WARN
    # a standby with archive_mode = on archives nothing itself: fine; no restore_command: warn
    out = {r.name: r for r in judge_settings(good, True, cmd)}
    assert out["archive_mode"].status == OK and out["restore_command"].status == WARN


def test_metric_values_from_a_document() -> None:
    doc = {
        "timestamp": 1000.0,
        "version": "x",
        "server": {
            "reachable": True,
            "in_recovery": False,
            "archiver": {
                "archived_count": 5,
                "failed_count": 1,
                "last_archived_timestamp": 900.0,
                "last_failed_timestamp": 950.0,
                "failing": True,
            },
        },
        "backlog": {"ready": 3, "oldest_age_seconds": 12.5},
        "repository": {
            "summarized_timestamp": 990.0,
            "segments": 7,
            "gaps": 1,
            "gaps_since_newest_backup": 1,
            "newest_segment_timestamp": 899.0,
            "backups": {
                "count": 1,
                "incomplete": 0,
                "stored_size_total": 10,
                "newest": {"stop_timestamp": 400.0, "raw_size": 100, "stored_size": 10},
                "oldest": {"stop_timestamp": 400.0},
            },
            "window": {"restorable": False, "earliest_timestamp": None, "latest_timestamp": None},
        },
        "last_check": {"ok": False, "timestamp": 800.0, "duration_seconds": 2.0},
        "last_drill": None,
    }
    v = metrics.values(doc)
    assert v["walship_archive_failing"] == 1 and v["walship_archive_backlog_files"] == 3
    assert v["walship_summary_age_seconds"] == 10.0
    assert v["walship_backup_newest_age_seconds"] == 600.0
    assert v["walship_restorable"] == 0 and v["walship_check_success"] == 0
    assert "walship_drill_success" not in v
    assert set(v) <= set(metrics.METRICS)
    down = metrics.values({"timestamp": 1.0, "server": {"reachable": False}, "repository": None})
    assert down["walship_server_up"] == 0 and down["walship_repository_up"] == 0


def test_parse_listen() -> None:
    assert metrics.parse_listen("127.0.0.1:9187") == ("127.0.0.1", 9187)
    assert metrics.parse_listen(":9187") == ("127.0.0.1", 9187)
    assert metrics.parse_listen("[::1]:9") == ("::1", 9)
    with pytest.raises(Exception, match="not an address"):
        metrics.parse_listen("host:port")


def test_drill_helpers() -> None:
    assert drill.parse_postmaster_pid("1234\n/data\n1700000000\n5432\n") == (1234, "/data")
    assert drill.parse_postmaster_pid("garbage") is None
    hist = "1\t0/3000000\tno recovery target specified\n"
    assert drill.parse_history_end(hist) == (1, 0x3000000, "no recovery target specified")
    seg = 16 << 20
    assert drill.judge_reached("latest", 0x5000000, drill.NO_TARGET, 0x5000000, seg) is None
    assert "before the end" in (drill.judge_reached("latest", 0x3000000, "", 0x5000000, seg) or "")
    assert drill.judge_reached("time", 0x4000100, "before 2026-12-01 00:00:00+00", 0, seg) is None
    assert "without reaching" in (drill.judge_reached("time", 1, drill.NO_TARGET, 0, seg) or "")
    s = drill.settings_overrides(data="/d", sockdir="/s", port=5, hba="/h", ident="/i", major=15)
    assert s["archive_mode"] == "off" and s["listen_addresses"] == "" and s["archive_library"] == ""
    assert "archive_library" not in drill.settings_overrides(
        data="/d", sockdir="/s", port=5, hba="/h", ident="/i", major=14
    )
    assert drill.need_bytes(1 << 30, 1000, seg) == (1 << 30) + 64 * seg + drill.MARGIN


def test_stale_drill_with_an_unproven_pid_is_not_signalled(tmp_path: Path) -> None:
    """A leftover whose postmaster.pid names a live process that is not its server (a
    reused pid): never signalled; the directory is still removed."""
    bystander = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], cwd=str(tmp_path)
    )
    try:
        data = tmp_path / "drill-20261202T000000Z-x" / "data"
        data.mkdir(parents=True)
        (data / "postmaster.pid").write_text(f"{bystander.pid}\n{data}\n")
        # its cwd is not the data directory and it is not postgres: not proven
        assert drill.proven_ours(bystander.pid, str(data)) is False
        assert drill.proven_ours(os.getpid(), os.getcwd()) is False  # python, not postgres
        assert drill.clean_stale(str(tmp_path)) == ["drill-20261202T000000Z-x"]
        time.sleep(0.2)
        assert bystander.poll() is None, "a process not proven to be the drill's was signalled"
        assert not (tmp_path / "drill-20261202T000000Z-x").exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_one_drill_at_a_time(tmp_path: Path) -> None:
    fd = drill.lock_root(str(tmp_path))
    try:
        with pytest.raises(Exception, match="another walship drill is running"):
            drill.lock_root(str(tmp_path))
    finally:
        os.close(fd)
    os.close(drill.lock_root(str(tmp_path)))


def test_check_and_status_without_a_server(tmp_path: Path) -> None:
    """No server answers: check names it and still checks the repository; status and
    metrics work from the repository alone."""
    import json

    from walship.config import Config
    from walship.repository import IDENTITY_KEY, Identity
    from walship.storage.registry import open_backend

    repo = str(tmp_path / "repo")
    os.makedirs(repo)
    backend = open_backend(repo, Config(repo=repo))
    backend.put(IDENTITY_KEY, [Identity(7000000000000000001, 16 << 20, 150000).to_json()])
    backend.close()
    walship = os.path.join(os.path.dirname(sys.executable), "walship")
    env = {
        **os.environ,
        "PGHOST": str(tmp_path / "nosock"),
        "PGPORT": "1",
        "PGCONNECT_TIMEOUT": "2",
        "WALSHIP_METRICS_CACHE": str(tmp_path / "cache.json"),
    }
    env.pop("WALSHIP_CONFIG", None)
    proc = subprocess.run(
        [walship, "--repo", repo, "check", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 21, proc.stderr
    doc = json.loads(proc.stdout)
    status = {c["name"]: c["status"] for c in doc["checks"]}
    assert status["server"] == "FAIL" and "cannot connect" in doc["checks"][0]["detail"]
    assert status["repository"] == "OK" and status["repository.write"] == "OK"
    assert status["archive.now"] == "SKIP" and status["backup.exists"] == "FAIL"
    assert len(proc.stderr.strip().splitlines()) == 1  # one line, no traceback
    proc = subprocess.run(
        [walship, "--repo", repo, "status", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["server"]["reachable"] is False and doc["repository"]["segments"] == 0
    assert doc["last_check"]["ok"] is False
    proc = subprocess.run(
        [walship, "--repo", repo, "metrics"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "walship_server_up 0.0" in proc.stdout and "walship_repository_up 1.0" in proc.stdout


def test_metrics_use_the_cached_summary(tmp_path: Path) -> None:
    """Within metrics_cache_max_age a run does not read the repository (it may even be
    gone); the summary's age is exported; after it, the run reads the repository."""
    from prometheus_client.parser import text_string_to_metric_families

    from walship.config import Config
    from walship.repository import IDENTITY_KEY, Identity
    from walship.storage.registry import open_backend

    repo = str(tmp_path / "repo")
    os.makedirs(repo)
    backend = open_backend(repo, Config(repo=repo))
    backend.put(IDENTITY_KEY, [Identity(7000000000000000001, 16 << 20, 150000).to_json()])
    backend.close()
    walship = os.path.join(os.path.dirname(sys.executable), "walship")
    env = {
        **os.environ,
        "PGHOST": str(tmp_path / "nosock"),
        "PGPORT": "1",
        "WALSHIP_METRICS_CACHE": str(tmp_path / "cache.json"),
        "WALSHIP_METRICS_CACHE_MAX_AGE": "300",
    }
    env.pop("WALSHIP_CONFIG", None)
    prom = str(tmp_path / "walship.prom")

    def scrape() -> dict[str, float]:
        subprocess.run(
            [walship, "--repo", repo, "metrics", "--textfile", prom],
            env=env,
            check=True,
            timeout=60,
        )
        with open(prom) as fh:
            return {
                s.name: s.value
                for f in text_string_to_metric_families(fh.read())
                for s in f.samples
            }

    first = scrape()
    assert first["walship_repository_up"] == 1 and first["walship_summary_age_seconds"] < 5
    os.rename(repo, repo + ".away")
    time.sleep(1.1)
    cached = scrape()
    assert cached["walship_repository_up"] == 1
    assert cached["walship_summary_age_seconds"] >= 1
    env["WALSHIP_METRICS_CACHE_MAX_AGE"] = "0"
    stale = scrape()  # must refresh: the repository is gone; the last summary is kept
    assert stale["walship_summary_age_seconds"] >= 1 and stale["walship_repository_up"] == 0
    os.rename(repo + ".away", repo)
    fresh = scrape()
    assert fresh["walship_summary_age_seconds"] < 1 and fresh["walship_repository_up"] == 1
