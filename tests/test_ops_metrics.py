"""``walship status`` and ``walship metrics`` against real PostgreSQL 15: the textfile
and the ``--listen`` scrape parse with prometheus_client's parser, every documented
metric is there, and the values follow the state (a failing push, a backlog)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request

import pytest
from e2e import archiving_primary, stop_all
from pgharness import WALSHIP, Workdir, free_port, run, walship_config
from prometheus_client.parser import text_string_to_metric_families

from walship.ops.metrics import METRICS

pytestmark = [pytest.mark.slow, pytest.mark.pg]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: present only after a drill (tests/test_ops_drill.py) or for walship's own backups
LATER = {
    "walship_drill_success",
    "walship_drill_timestamp_seconds",
    "walship_drill_duration_seconds",
    "walship_drill_rto_seconds",
    "walship_drill_rpo_seconds",
    "walship_backup_newest_raw_bytes",
    "walship_backup_newest_stored_bytes",
}


def parse(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            out[sample.name] = sample.value
    return out


def env_for(cluster) -> dict[str, str]:
    return {"PGHOST": cluster.sockdir, "PGPORT": str(cluster.port), "PGUSER": "postgres"}


def textfile(cluster, config: str, path: str) -> dict[str, float]:
    run(
        [WALSHIP, "--config", config, "metrics", "--textfile", path, "--pgdata", cluster.datadir],
        env=env_for(cluster),
    )
    assert not [f for f in os.listdir(os.path.dirname(path)) if ".tmp" in f]
    with open(path) as fh:
        return parse(fh.read())


def test_status_and_metrics_follow_the_state(work: Workdir) -> None:
    repo = work.mkdir("repo")
    out = work.mkdir("textfile")
    config = walship_config(
        work,
        {
            "repo": repo,
            "metrics_cache": os.path.join(work.path, "cache.json"),
            "metrics_cache_max_age": 0,
        },
    )
    primary = archiving_primary(15, work, config)
    try:
        primary.basebackup(os.path.join(work.path, "base"))
        last = primary.switch_wal()
        primary.wait_archived(last)
        check = run(
            [WALSHIP, "--config", config, "check", "--wait", "20"],
            env=env_for(primary),
            check=False,
        )
        assert check.returncode == 0, check.stdout + check.stderr

        # --- status --json: the documented schema -------------------------------------
        proc = run(
            [WALSHIP, "--config", config, "status", "--json", "--pgdata", primary.datadir],
            env=env_for(primary),
        )
        doc = json.loads(proc.stdout)
        assert doc["walship_status"] == 1
        assert doc["server"]["reachable"] is True
        assert doc["server"]["archiver"]["last_archived_wal"] >= last
        assert doc["backlog"]["ready"] == 0
        r = doc["repository"]
        assert r["backups"]["count"] == 1 and r["gaps"] == 0
        assert r["timelines"][0]["ranges"][0]["last"] >= last
        assert r["window"]["restorable"] is True
        assert doc["last_check"]["ok"] is True and doc["last_drill"] is None
        text = run(
            [WALSHIP, "--config", config, "status", "--pgdata", primary.datadir],
            env=env_for(primary),
        ).stdout
        assert "backlog:    0 .ready file(s) waiting" in text
        assert "last check: passed" in text

        # --- the textfile: every documented metric (drill ones after a drill) -------------
        path = os.path.join(out, "walship.prom")
        m1 = textfile(primary, config, path)
        missing = set(METRICS) - LATER - set(m1)
        assert not missing, missing
        assert m1["walship_up"] == 1 and m1["walship_server_up"] == 1
        assert m1["walship_archive_backlog_files"] == 0
        assert m1["walship_archive_failing"] == 0
        assert m1["walship_backups"] == 1 and m1["walship_restorable"] == 1
        assert m1["walship_check_success"] == 1
        assert abs(m1["walship_backup_newest_age_seconds"]) < 600

        # --- a failing push: failure timestamp and backlog go up ------------------------
        time.sleep(1.1)
        broken = walship_config(work, {"repo": "/dev/null/no-repo"}, name="broken.toml")
        primary.psql(f"ALTER SYSTEM SET archive_command = '{WALSHIP} --config {broken} push %p %f'")
        primary.psql("SELECT pg_reload_conf()")
        primary.psql("CREATE TABLE t AS SELECT 1 AS x")
        primary.switch_wal()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if int(primary.psql("SELECT failed_count FROM pg_stat_archiver")) > 0:
                break
            time.sleep(0.3)
        m2 = textfile(primary, config, path)
        assert m2["walship_archive_last_failed_timestamp_seconds"] > max(
            m1["walship_archive_last_failed_timestamp_seconds"],
            m1["walship_archive_last_archived_timestamp_seconds"],
        )
        assert m2["walship_archive_failing"] == 1
        assert m2["walship_archive_failed_count"] >= 1
        assert m2["walship_archive_backlog_files"] >= 1
        assert m2["walship_archive_backlog_oldest_age_seconds"] > 0

        # --- --listen: scrape it -----------------------------------------------------------
        port = free_port()
        server = subprocess.Popen(
            [
                WALSHIP,
                "--config",
                config,
                "metrics",
                "--listen",
                f"127.0.0.1:{port}",
                "--pgdata",
                primary.datadir,
            ],
            env={**os.environ, **env_for(primary)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            body = ""
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/metrics", timeout=10
                    ) as resp:
                        body = resp.read().decode()
                    break
                except OSError:
                    assert server.poll() is None, server.stderr.read() if server.stderr else ""
                    time.sleep(0.2)
            scraped = parse(body)
            assert not set(METRICS) - LATER - set(scraped)
            assert scraped["walship_archive_backlog_files"] >= 1
            assert scraped["walship_archive_failing"] == 1
            info = [line for line in body.splitlines() if line.startswith("walship_info{")]
            assert info and f'repository="{repo}"' in info[0].replace("file://", "")
        finally:
            server.terminate()
            server.wait(timeout=30)
            if server.stderr is not None:
                server.stderr.close()

        # --- archiving repaired: the backlog drains, failing clears ----------------------
        primary.psql("ALTER SYSTEM RESET archive_command")
        primary.psql("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            m3 = textfile(primary, config, path)
            if m3["walship_archive_backlog_files"] == 0 and m3["walship_archive_failing"] == 0:
                break
            time.sleep(0.5)
        assert m3["walship_archive_backlog_files"] == 0 and m3["walship_archive_failing"] == 0
        assert m3["walship_repository_segments"] > m1["walship_repository_segments"]
    finally:
        stop_all([primary])


def test_every_metric_is_documented() -> None:
    """docs/operations.md lists exactly the metrics walship exports."""
    with open(os.path.join(ROOT, "docs", "operations.md")) as fh:
        doc = fh.read()
    documented = set(re.findall(r"^\| `(walship_[a-z_]+)`", doc, flags=re.M))
    assert documented == set(METRICS), documented ^ set(METRICS)


def test_alert_rules_parse_and_use_exported_metrics() -> None:
    """packaging/prometheus/walship.rules.yml: promtool when installed; always parsed,
    each alert complete and every metric it names exported."""
    path = os.path.join(ROOT, "packaging", "prometheus", "walship.rules.yml")
    promtool = next(
        (p for p in ("/usr/bin/promtool", "/usr/local/bin/promtool") if os.path.exists(p)), None
    )
    if promtool:
        proc = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    import yaml  # PyYAML: in the test extra

    with open(path) as fh:
        groups = yaml.safe_load(fh)["groups"]
    alerts = [r for g in groups for r in g["rules"]]
    names = {r["alert"] for r in alerts}
    assert {
        "WalshipArchiveBacklogGrowing",
        "WalshipArchiveFailing",
        "WalshipBackupTooOld",
        "WalshipArchiveGap",
        "WalshipDrillFailed",
        "WalshipDrillStale",
        "WalshipMetricsStale",
        "WalshipMetricsAbsent",
    } <= names
    for rule in alerts:
        assert rule["expr"] and rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]
        for metric in re.findall(r"\b(walship_[a-z_]+)", rule["expr"]):
            assert metric in METRICS, (rule["alert"], metric)
