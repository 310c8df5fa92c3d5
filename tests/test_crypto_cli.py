"""Encryption through the real command line (subprocess: the installed ``walship``)."""

from __future__ import annotations

import base64
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import environment_without_settings, make_segment, segment_name

from walship.codec import crypto

WALSHIP = os.path.join(os.path.dirname(sys.executable), "walship")
KEY_LINE = re.compile(r"^walship-key-v1 \S+ (\S+)$", re.M)


def run(
    tmp_path: Any, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = environment_without_settings()
    full.update(env or {})
    return subprocess.run(
        [WALSHIP, *args], env=full, cwd=str(tmp_path), capture_output=True, text=True, timeout=60
    )


def secrets_of(path: str) -> list[str]:
    """Base64 secret material in a key file (private / symmetric lines only)."""
    text = Path(path).read_text()
    return [m.group(1) for m in KEY_LINE.finditer(text) if "public" not in m.group(0)]


@pytest.fixture
def segment(tmp_path: Any) -> tuple[str, str, bytes]:
    data = make_segment(7)
    path = os.path.join(str(tmp_path), "seg")
    with open(path, "wb") as fh:
        fh.write(data)
    return path, segment_name(7), data


def test_keygen_symmetric_prints_only_the_id(tmp_path: Any) -> None:
    path = os.path.join(str(tmp_path), "k.key")
    proc = run(tmp_path, "keygen", path)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    (key,) = crypto.read_key_file(path, "t")
    assert proc.stdout.splitlines() == [f"key id {key.key_id}", f"wrote symmetric key {path}"]
    (secret,) = secrets_of(path)
    assert base64.b64decode(secret) == key.secret
    assert secret not in proc.stdout + proc.stderr
    # never overwrites a key
    again = run(tmp_path, "keygen", path)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert crypto.read_key_file(path, "t")[0].secret == key.secret


def test_keygen_public_key_pair_and_show(tmp_path: Any) -> None:
    path = os.path.join(str(tmp_path), "restore.key")
    proc = run(tmp_path, "keygen", "--mode", "public-key", path)
    assert proc.returncode == 0, proc.stderr
    for p in (path, path + ".pub"):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    (priv,) = crypto.read_key_file(path, "t")
    (pub,) = crypto.read_key_file(path + ".pub", "t")
    assert priv.key_id == pub.key_id and pub.secret is None and priv.public == pub.public
    assert f"key id {priv.key_id}" in proc.stdout
    assert "x25519-private" not in Path(path + ".pub").read_text()
    (secret,) = secrets_of(path)
    assert secret not in proc.stdout + proc.stderr
    show = run(tmp_path, "keygen", "--show", path + ".pub")
    assert show.returncode == 0
    assert show.stdout.strip() == f"{pub.key_id} X25519 public key (public-key)"


def _env(repo: str, **settings: str) -> dict[str, str]:
    env = {"WALSHIP_REPO": repo, "WALSHIP_LOG_LEVEL": "debug"}
    env.update({f"WALSHIP_{k.upper()}": v for k, v in settings.items()})
    return env


def _object_path(repo: str, name: str) -> str:
    return os.path.join(repo, "wal", name[:16], name)


@pytest.mark.parametrize("mode", ["symmetric", "public-key"])
def test_cli_round_trip_secrets_stay_out_of_logs_and_repository(
    tmp_path: Any, segment: tuple[str, str, bytes], mode: str
) -> None:
    src, name, data = segment
    repo = os.path.join(str(tmp_path), "repo")
    key = os.path.join(str(tmp_path), "k.key")
    assert run(tmp_path, "keygen", "--mode", mode, key).returncode == 0
    write_key = key if mode == "symmetric" else key + ".pub"
    writer = _env(repo, encryption=mode, encryption_key_file=write_key)
    pushed = run(tmp_path, "-vv", "push", src, name, env=writer)
    assert pushed.returncode == 0, pushed.stderr
    reader = _env(repo, encryption_keyring=key)
    got = run(tmp_path, "-vv", "--log-format", "json", "fetch", name, "out", env=reader)
    assert got.returncode == 0, got.stderr
    assert Path(os.path.join(str(tmp_path), "out")).read_bytes() == data
    shown = run(tmp_path, "show-config", env=writer)
    secret = secrets_of(key)[0]
    raw = base64.b64decode(secret)
    stored = b""
    for root, _, files in os.walk(repo):
        for f in files:
            stored += Path(os.path.join(root, f)).read_bytes()
    for text in (pushed.stderr, got.stderr, shown.stdout, pushed.stdout):
        assert secret not in text
    assert secret.encode() not in stored and raw not in stored and raw.hex().encode() not in stored
    assert data[64:4096] not in stored


def test_fetch_with_unconfigured_key_aborts_naming_the_key(
    tmp_path: Any, segment: tuple[str, str, bytes]
) -> None:
    src, name, _ = segment
    repo = os.path.join(str(tmp_path), "repo")
    k1, k2 = (os.path.join(str(tmp_path), f) for f in ("k1.key", "k2.key"))
    run(tmp_path, "keygen", k1)
    run(tmp_path, "keygen", k2)
    id1, id2 = (crypto.read_key_file(k, "t")[0].key_id for k in (k1, k2))
    pushed = run(
        tmp_path, "push", src, name, env=_env(repo, encryption="symmetric", encryption_key_file=k1)
    )
    assert pushed.returncode == 0, pushed.stderr
    for settings in ({"encryption_key_file": k2}, {}):
        proc = run(tmp_path, "fetch", name, "out", env=_env(repo, **settings))
        assert proc.returncode == 255, proc.stderr
        lines = [ln for ln in proc.stderr.strip().splitlines() if " DEBUG " not in ln]
        assert len(lines) == 1, proc.stderr
        assert id1 in lines[0] and "KeyNotConfigured" in lines[0]
        if settings:
            assert id2 in lines[0]
        assert not os.path.exists(os.path.join(str(tmp_path), "out"))
    # a standby that prefers to fall back to streaming may ask for exit 1 instead
    proc = run(tmp_path, "fetch", name, "out", env=_env(repo, fetch_error_exit="missing"))
    assert proc.returncode == 1


@pytest.mark.parametrize("where", ["body", "key_id"])
def test_fetch_of_tampered_object_aborts(
    tmp_path: Any, segment: tuple[str, str, bytes], where: str
) -> None:
    src, name, _ = segment
    repo = os.path.join(str(tmp_path), "repo")
    key = os.path.join(str(tmp_path), "k.key")
    run(tmp_path, "keygen", key)
    env = _env(repo, encryption="symmetric", encryption_key_file=key)
    assert run(tmp_path, "push", src, name, env=env).returncode == 0
    path = _object_path(repo, name)
    blob = bytearray(Path(path).read_bytes())
    if where == "body":
        blob[-100] ^= 0x01
    else:  # same length, another valid-looking id
        key_id = crypto.read_key_file(key, "t")[0].key_id.encode()
        at = blob.index(key_id)
        blob[at : at + 16] = b"f" * 16 if key_id != b"f" * 16 else b"e" * 16
    os.chmod(path, 0o600)
    with open(path, "wb") as fh:
        fh.write(blob)
    proc = run(tmp_path, "fetch", name, "out", env=env)
    assert proc.returncode == 255
    lines = [ln for ln in proc.stderr.strip().splitlines() if " DEBUG " not in ln]
    assert len(lines) == 1, proc.stderr
    assert f"wal/{name[:16]}/{name}" in lines[0]
    expected = "DecryptionError" if where == "body" else "KeyNotConfigured"
    assert expected in lines[0]
    assert not os.path.exists(os.path.join(str(tmp_path), "out"))


def test_push_refuses_a_readable_key_file_without_showing_it(
    tmp_path: Any, segment: tuple[str, str, bytes]
) -> None:
    src, name, _ = segment
    key = os.path.join(str(tmp_path), "k.key")
    run(tmp_path, "keygen", key)
    os.chmod(key, 0o644)
    repo = os.path.join(str(tmp_path), "repo")
    proc = run(
        tmp_path, "push", src, name, env=_env(repo, encryption="symmetric", encryption_key_file=key)
    )
    assert proc.returncode == 2
    assert "chmod 600" in proc.stderr and secrets_of(key)[0] not in proc.stderr
    assert not os.path.exists(_object_path(repo, name))


def test_plain_repository_never_loads_cryptography(
    tmp_path: Any, segment: tuple[str, str, bytes]
) -> None:
    src, name, _ = segment
    repo = os.path.join(str(tmp_path), "repo")
    code = (
        "import sys\n"
        "from walship.cli import main\n"
        f"assert main(['push', {src!r}, {name!r}]) == 0\n"
        f"assert main(['fetch', {name!r}, 'out']) == 0\n"
        "heavy = ('cryptography', 'walship.codec.crypto')\n"
        "loaded = [m for m in sys.modules if m.startswith(heavy)]\n"
        "assert not loaded, loaded\n"
    )
    env = environment_without_settings()
    env["WALSHIP_REPO"] = repo
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=str(tmp_path), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
