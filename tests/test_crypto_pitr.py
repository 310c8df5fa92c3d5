"""End-to-end with encryption: real PostgreSQL archives through walship with
encryption turned on mid-life (symmetric) or with a key rotation (public-key),
then recovers to a point in time with the reading keys only on the restore side.
Runs on a local repository and on S3 (the moto server of tests/servers).

Reuses the PostgreSQL harness of tests/pgharness.py (see test_e2e_pitr.py for
the plain scenario).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from e2e import archiving_primary, assert_at_target, mark_target_time, restore_to_time
from pgharness import (
    WALSHIP,
    Cluster,
    Workdir,
    run,
    walship_config,
)

from walship import config
from walship.codec import envelope
from walship.storage.registry import open_backend

pytestmark = pytest.mark.pg

MAJOR = 15


def keygen(path: str, mode: str) -> str:
    """Create a key as the server user; returns its key id."""
    out = run([WALSHIP, "keygen", "--mode", mode, path]).stdout
    return out.splitlines()[0].removeprefix("key id ")


def set_config(work: Workdir, path: str, settings: dict[str, Any]) -> None:
    """Replace the archiver's config file atomically (it is re-read per segment)."""
    tmp = walship_config(work, settings, name=os.path.basename(path) + ".new")
    os.replace(tmp, path)


def stored_key_ids(config_path: str) -> dict[str, str | None]:
    """Archive file name -> key id (None for a plain object) of every WAL object.

    Reads only the (plaintext, authenticated) headers: no key needed.
    """
    cfg = config.load(config_path=config_path, env={})
    backend = open_backend(cfg.require("repo"), cfg)
    out: dict[str, str | None] = {}
    try:
        for info in backend.list("wal/"):
            stream = backend.open(info.key)
            try:
                header, _, _ = envelope.read_header(iter(stream), info.key)
            finally:
                stream.close()
            enc = header["encryption"]
            out[header["name"]] = None if enc is None else enc["key_id"]
    finally:
        backend.close()
    return out


@pytest.fixture(params=["local", "s3"])
def repo_settings(
    request: pytest.FixtureRequest, work: Workdir, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """Repository settings for walship's TOML config (S3 credentials go to the env)."""
    if request.param == "local":
        return {"repo": work.mkdir("repo")}
    env: dict[str, str] = request.getfixturevalue("s3_repo_env")
    settings: dict[str, Any] = {}
    for key, value in env.items():
        if key.startswith("WALSHIP_"):  # strings: walship converts them like env values
            settings[key.removeprefix("WALSHIP_").lower()] = value
        else:  # credentials: inherited by the servers and their archive/restore commands
            monkeypatch.setenv(key, value)
    return settings


@pytest.mark.parametrize("mode", ["symmetric", "public-key"])
def test_pitr_with_encryption(mode: str, work: Workdir, repo_settings: dict[str, Any]) -> None:
    keys = work.mkdir("keys")
    writer_cfg = os.path.join(work.path, "walship.toml")
    if mode == "symmetric":
        # the repository starts plain; encryption is turned on mid-life
        k1 = os.path.join(keys, "k1.key")
        id1 = keygen(k1, "symmetric")
        phase1: dict[str, Any] = dict(repo_settings)
        phase2: dict[str, Any] = {
            **repo_settings,
            "encryption": "symmetric",
            "encryption_key_file": k1,
        }
        reader: dict[str, Any] = {**repo_settings, "encryption_key_file": k1}
        expected_ids = {None, id1}
    else:
        # the database host holds only public keys, and rotates from k1 to k2
        id1 = keygen(os.path.join(keys, "k1.key"), "public-key")
        id2 = keygen(os.path.join(keys, "k2.key"), "public-key")
        phase1 = {
            **repo_settings,
            "encryption": "public-key",
            "encryption_key_file": os.path.join(keys, "k1.key.pub"),
        }
        phase2 = {**phase1, "encryption_key_file": os.path.join(keys, "k2.key.pub")}
        reader = {**repo_settings, "encryption_keyring": keys}  # the *.key private keys
        expected_ids = {id1, id2}
    set_config(work, writer_cfg, phase1)

    primary = archiving_primary(MAJOR, work, writer_cfg)
    restored: Cluster | None = None
    try:
        primary.pgbench("-i", "-s", "2", "-q")
        backup = os.path.join(work.path, "backup")
        primary.basebackup(backup)
        primary.pgbench("-t", "200", "-c", "2", "-n")
        primary.wait_archived(primary.switch_wal())

        set_config(work, writer_cfg, phase2)
        primary.pgbench("-t", "200", "-c", "2", "-n")
        target, expected, last = mark_target_time(primary)

        ids = stored_key_ids(writer_cfg)
        assert set(ids.values()) == expected_ids, ids

        if mode == "public-key":
            # the database host cannot read what it archived: a real error, not "absent"
            proc = run(
                [WALSHIP, "--config", writer_cfg, "fetch", last, os.path.join(work.path, "x")],
                check=False,
            )
            assert proc.returncode == 255
            assert "KeyNotConfigured" in proc.stderr and ids[last] in proc.stderr

        reader_cfg = walship_config(work, reader, name="restore.toml")
        restored = restore_to_time(MAJOR, work, backup, reader_cfg, target)
        assert_at_target(restored, expected)
        for name in os.listdir(keys):  # no secret reaches the server logs
            with open(os.path.join(keys, name)) as fh:
                for line in fh:
                    fields = line.split()
                    if len(fields) == 3 and fields[1] in ("symmetric", "x25519-private"):
                        assert fields[2] not in primary.log() + restored.log()
    finally:
        if restored is not None:
            restored.stop("immediate")
        primary.stop("immediate")
