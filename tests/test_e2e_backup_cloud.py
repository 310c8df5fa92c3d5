"""End-to-end: backup-push and backup-fetch through S3 (moto), GCS (fake-gcs-server)
and Azure (Azurite), encrypted with a symmetric key and with a public key.

The restore side of the public-key case holds only the private key, the push
side only the public one: backup-fetch and the restore_command it writes read
with the restore host's config file.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from e2e import BALANCES, archiving_primary, stop_all
from pgharness import WALSHIP, Cluster, Workdir, run, walship_config

from walship import config
from walship.codec import envelope
from walship.storage.registry import open_backend

pytestmark = [pytest.mark.slow, pytest.mark.pg, pytest.mark.cloud]
MAJOR = 16


def walship(cfg: str, *args: str) -> str:
    return run([WALSHIP, "--config", cfg, *args], timeout=600).stdout


def _settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in env.items():
        if not k.startswith("WALSHIP_"):
            monkeypatch.setenv(k, v)  # credentials: inherited by the servers and walship
            continue
        name = k[len("WALSHIP_") :].lower()
        out[name] = (v == "true") if v in ("true", "false") else v
    out["retry_deadline"] = "10"
    return out


def _part_encryption(cfg_path: str) -> list[str | None]:
    """The key id in each backup part's (plaintext, authenticated) header, None if plain."""
    cfg = config.load(config_path=cfg_path)
    backend = open_backend(cfg.require("repo"), cfg)
    out: list[str | None] = []
    try:
        for info in backend.list("basebackups/"):
            if "/part-" not in info.key:
                continue
            stream = backend.open(info.key)
            try:
                header, _, _ = envelope.read_header(iter(stream), info.key)
            finally:
                stream.close()
            enc = header.get("encryption")
            out.append(None if enc is None else str(enc["key_id"]))
    finally:
        backend.close()
    return out


@pytest.mark.parametrize(
    "store, mode", [("s3", "symmetric"), ("gcs", "public-key"), ("azure", "none")]
)
def test_backup_push_and_fetch_on_cloud(
    store: str,
    mode: str,
    work: Workdir,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = _settings(request.getfixturevalue(f"{store}_repo_env"), monkeypatch)
    push_side = dict(settings)
    fetch_side = dict(settings)
    if mode != "none":
        key = os.path.join(work.path, "repo.key")
        run([WALSHIP, "keygen", "--mode", mode, key])
        push_side["encryption"] = mode
        push_side["encryption_key_file"] = key + ".pub" if mode == "public-key" else key
        fetch_side["encryption_keyring"] = key
    primary = archiving_primary(MAJOR, work, walship_config(work, push_side))
    conninfo = f"host={primary.sockdir} port={primary.port} user=postgres dbname=postgres"
    push_cfg = walship_config(work, {**push_side, "conninfo": conninfo})
    fetch_cfg = walship_config(work, fetch_side, name="restore.toml")
    clusters: list[Cluster] = [primary]
    try:
        primary.pgbench("-i", "-s", "1", "-q")
        walship(push_cfg, "backup-push", "--pgdata", primary.datadir, "--fast")
        primary.pgbench("-t", "200", "-c", "2", "-n")
        expected = primary.psql(BALANCES)
        last = primary.switch_wal()
        primary.wait_archived(last)
        parts = _part_encryption(fetch_cfg)
        assert parts
        assert all((enc is None) == (mode == "none") for enc in parts), parts
        dest = os.path.join(work.path, "restored")
        out = walship(fetch_cfg, "backup-fetch", "LATEST", dest)
        assert "plan: reachable" in out, out
        with open(os.path.join(dest, "postgresql.auto.conf")) as fh:
            auto = fh.read()
        assert f"--config {fetch_cfg}" in auto
        for secret in ("azure_account_key", "azure_connection_string"):
            if settings.get(secret):
                assert str(settings[secret]) not in auto
        run([primary.bin("pg_verifybackup"), "--no-parse-wal", dest])
        restored = Cluster(MAJOR, work, "restored")
        restored.configure({"archive_mode": "off"})
        clusters.append(restored)
        restored.start()
        restored.wait_promoted()
        assert restored.psql(BALANCES) == expected
    finally:
        stop_all(clusters)
