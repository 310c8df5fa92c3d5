"""``walship check`` against real PostgreSQL 15: passes on a correct setup and names
each problem of the issue (archiving off, archive_command elsewhere, repository
unwritable, wrong key, another cluster's repository, no backup, a gap)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from e2e import archiving_primary, key_for, stop_all
from pgharness import WALSHIP, Workdir, restore_cluster, restore_command, run, walship_config

from walship.config import Config
from walship.repository import IDENTITY_KEY, Identity
from walship.storage.registry import open_backend

pytestmark = [pytest.mark.slow, pytest.mark.pg]

MAJOR = 15


def check(cluster, config: str, *extra: str) -> tuple[int, dict, str]:
    env = {"PGHOST": cluster.sockdir, "PGPORT": str(cluster.port), "PGUSER": "postgres"}
    proc = run(
        [WALSHIP, "--config", config, "check", "--json", "--wait", "20", *extra],
        env=env,
        check=False,
        timeout=120,
    )
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(
            f"no JSON: rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        ) from None
    return proc.returncode, doc, proc.stderr


def by_name(doc: dict) -> dict[str, dict]:
    return {c["name"]: c for c in doc["checks"]}


def failed(doc: dict) -> dict[str, str]:
    return {c["name"]: c["detail"] for c in doc["checks"] if c["status"] == "FAIL"}


def text_check(cluster, config: str) -> subprocess.CompletedProcess[str]:
    env = {"PGHOST": cluster.sockdir, "PGPORT": str(cluster.port), "PGUSER": "postgres"}
    return run([WALSHIP, "--config", config, "check", "--wait", "20"], env=env, check=False)


def test_check_correct_setup_and_each_problem(work: Workdir) -> None:
    repo = work.mkdir("repo")
    config = walship_config(work, {"repo": repo})
    primary = archiving_primary(MAJOR, work, config)
    try:
        # --- no backup yet: exactly that fails -------------------------------------
        rc, doc, err = check(primary, config)
        assert rc == 21, (doc, err)
        assert set(failed(doc)) == {"backup.exists"}, doc
        assert "no base backup" in failed(doc)["backup.exists"]
        checks = by_name(doc)
        for name in (
            "server",
            "wal_level",
            "archive_mode",
            "archive_command",
            "repository",
            "repository.identity",
            "repository.write",
            "archive.now",
        ):
            assert checks[name]["status"] == "OK", checks[name]
        assert checks["archive_timeout"]["status"] == "WARN"
        assert "digest matches pg_wal" in checks["archive.now"]["detail"]
        assert "backup.exists" in err and "walship check" in err

        # --- a correct setup passes ------------------------------------------------
        primary.basebackup(os.path.join(work.path, "base"))
        rc, doc, err = check(primary, config)
        assert rc == 0, doc
        assert doc["ok"] is True and doc["failed"] == 0
        assert by_name(doc)["backup.restorable"]["status"] == "OK"
        assert os.path.exists(os.path.join(repo, "ops", "check.json"))
        assert not [f for f in os.listdir(os.path.join(repo, "ops")) if f.startswith("probe-")]
        proc = text_check(primary, config)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.splitlines()[-1].startswith("check: passed")
        assert any(line.startswith("OK   archive.now: ") for line in proc.stdout.splitlines())

        # --- a gap after the newest backup -------------------------------------------
        names = [primary.switch_wal() for _ in range(3)]
        primary.psql("SELECT 1")
        for n in names:
            primary.wait_archived(n)
        middle = os.path.join(repo, key_for(names[1]))
        aside = os.path.join(work.path, "aside")
        run(["mv", middle, aside])
        rc, doc, _ = check(primary, config)
        run(["mv", aside, middle])
        assert rc == 21
        assert "archive.gaps" in failed(doc), doc
        assert names[1] in failed(doc)["archive.gaps"]
        assert "gap" in failed(doc)["backup.restorable"]

        # --- archive_command pointing elsewhere ----------------------------------------
        primary.psql("ALTER SYSTEM SET archive_command = 'cp %p /nonexistent/%f'")
        primary.psql("SELECT pg_reload_conf()")
        rc, doc, _ = check(primary, config)
        assert rc == 21
        assert "does not call walship" in failed(doc)["archive_command"], doc
        assert by_name(doc)["archive.now"]["status"] == "SKIP"
        other_repo = work.mkdir("other-repo")
        other = walship_config(work, {"repo": other_repo}, name="other.toml")
        primary.psql(f"ALTER SYSTEM SET archive_command = '{WALSHIP} --config {other} push %p %f'")
        primary.psql("SELECT pg_reload_conf()")
        rc, doc, _ = check(primary, config)
        assert rc == 21
        assert f"into {other_repo}" in failed(doc)["archive_command"], doc
        primary.psql("ALTER SYSTEM RESET archive_command")
        primary.psql("SELECT pg_reload_conf()")

        # --- another cluster's repository --------------------------------------------
        foreign = work.mkdir("foreign")
        backend = open_backend(foreign, Config(repo=foreign))
        backend.put(IDENTITY_KEY, [Identity(7000000000000000001, 16 << 20, 150000).to_json()])
        backend.close()
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "postgres:postgres", foreign], check=True)
        rc, doc, _ = check(primary, config, "--repo", foreign)
        assert rc == 21
        assert "another cluster's repository" in failed(doc)["repository.identity"], doc

        # --- repository unwritable ------------------------------------------------------
        run(["chmod", "-R", "a-w", repo])
        try:
            rc, doc, _ = check(primary, config)
        finally:
            run(["chmod", "-R", "u+w", repo])
        assert rc == 21
        assert "probe object could not be written" in failed(doc)["repository.write"], doc

        # --- archiving off ------------------------------------------------------------------
        primary.psql("ALTER SYSTEM SET archive_mode = off")
        primary.stop()
        primary.start()
        rc, doc, _ = check(primary, config)
        assert rc == 21
        assert "archive_mode = off" in failed(doc)["archive_mode"], doc
        assert by_name(doc)["archive.now"]["status"] == "SKIP"
    finally:
        stop_all([primary])


def test_check_wrong_encryption_key(work: Workdir) -> None:
    repo = work.mkdir("repo")
    keys = work.mkdir("keys")
    key_a = os.path.join(keys, "a.key")
    key_b = os.path.join(keys, "b.key")
    for path in (key_a, key_b):
        run([WALSHIP, "--repo", repo, "keygen", path])
    current = os.path.join(keys, "current.key")
    run(["cp", "-p", key_a, current])
    config = walship_config(
        work, {"repo": repo, "encryption": "symmetric", "encryption_key_file": current}
    )
    primary = archiving_primary(MAJOR, work, config)
    try:
        primary.basebackup(os.path.join(work.path, "base"))
        rc, doc, _ = check(primary, config)
        assert rc == 0, doc
        assert by_name(doc)["encryption"]["status"] == "OK"
        assert "symmetric encryption" in by_name(doc)["repository.write"]["detail"]
        # the key file is replaced by another key: new WAL would still archive, old is lost
        run(["cp", "-p", key_b, current])
        rc, doc, _ = check(primary, config)
        assert rc == 21
        assert "none of the configured keys" in failed(doc)["encryption"], doc
        # the backup is unreadable with that key: said as such, not as "no backup"
        assert "cannot be read" in failed(doc)["backup.exists"], doc
    finally:
        stop_all([primary])
        shutil.rmtree(keys, ignore_errors=True)


def test_check_on_a_standby(work: Workdir) -> None:
    """On a standby: no WAL switch (SKIP), restore_command judged, the rest applies."""
    repo = work.mkdir("repo")
    config = walship_config(work, {"repo": repo})
    primary = archiving_primary(MAJOR, work, config)
    standby = None
    try:
        base = os.path.join(work.path, "base")
        primary.basebackup(base)
        last = primary.switch_wal()
        primary.wait_archived(last)
        standby = restore_cluster(
            MAJOR,
            work,
            base,
            "standby",
            {"restore_command": restore_command(config), "archive_mode": "on"},
            signal="standby.signal",
        )
        standby.start()
        assert standby.is_in_recovery()
        rc, doc, err = check(standby, config)
        assert rc == 0, (doc, err)
        checks = by_name(doc)
        assert checks["server"]["detail"].startswith("standby")
        assert checks["archive.now"]["status"] == "SKIP"
        assert checks["restore_command"]["status"] == "OK"
        assert checks["repository.identity"]["status"] == "OK"
        assert checks["backup.restorable"]["status"] == "OK"
        # a standby restoring from somewhere else is named
        standby.psql("ALTER SYSTEM SET restore_command = 'cp /mnt/archive/%f %p'")
        standby.psql("SELECT pg_reload_conf()")
        rc, doc, _ = check(standby, config)
        assert rc == 21
        assert "does not call walship" in failed(doc)["restore_command"]
    finally:
        stop_all([c for c in (standby, primary) if c is not None])
