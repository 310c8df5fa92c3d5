"""Helpers for the backup-push tests: run walship as the server user, read what it wrote."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from collections.abc import Mapping

from pgharness import WALSHIP, Cluster

from walship import config as wconfig
from walship.backup import catalog
from walship.codec import objects
from walship.manifest import Manifest
from walship.storage.registry import open_backend


def server_env(cluster: Cluster, **extra: str) -> dict[str, str]:
    """libpq settings for ``cluster`` (unix socket, user postgres)."""
    env = {"PGHOST": cluster.sockdir, "PGPORT": str(cluster.port), "PGUSER": "postgres"}
    env.update(extra)
    return env


def as_server_user() -> dict[str, object]:
    """subprocess arguments that run a command as the server user when tests run as root."""
    if os.geteuid() == 0:
        return {"user": "postgres", "group": "postgres", "extra_groups": []}
    return {}


def walship_cmd(config: str, *args: str) -> list[str]:
    return [WALSHIP, "--config", config, *args]


def run_walship(
    config: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    user: str | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """``walship --config CONFIG ARGS`` as the server user (or ``user``)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "WALSHIP_"))}
    full.update(env or {})
    kw = as_server_user()
    if user is not None and os.geteuid() == 0:
        kw = {"user": user, "group": user if user != "nobody" else "nogroup", "extra_groups": []}
    return subprocess.run(
        walship_cmd(config, *args),
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/tmp",
        **kw,  # type: ignore[arg-type]
    )


def start_walship(
    config: str, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.Popen[str]:
    """The same, in the background: the Popen's pid is walship's own (no runuser between)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "WALSHIP_"))}
    full.update(env or {})
    return subprocess.Popen(
        walship_cmd(config, *args),
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/tmp",
        preexec_fn=_default_sigint,
        **as_server_user(),  # type: ignore[arg-type]
    )


def _default_sigint() -> None:
    """A test run as a background job (nohup, ``cmd &``) ignores SIGINT, and a child
    inherits SIG_IGN: Python then installs no Ctrl-C handler and a test that
    interrupts walship waits for nothing. The child gets the default back."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def load_config(config: str) -> wconfig.Config:
    return wconfig.load(config_path=config, env={})


def manifests(config: str) -> list[Manifest]:
    cfg = load_config(config)
    backend = open_backend(cfg.require("repo"), cfg)
    try:
        found, errors = catalog.load(cfg, backend)
    finally:
        backend.close()
    assert not errors, errors
    return found


def scan(config: str) -> catalog.Scan:
    cfg = load_config(config)
    backend = open_backend(cfg.require("repo"), cfg)
    try:
        return catalog.scan(backend)
    finally:
        backend.close()


def file_bytes(config: str, manifest: Manifest, path: str) -> bytes:
    """A file of the backup, put together from its chunks (as a restore would)."""
    cfg = load_config(config)
    backend = open_backend(cfg.require("repo"), cfg)
    entry = next(f for f in manifest.files if f.path == path)
    parts: dict[int, bytes] = {}
    out = bytearray()
    try:
        for index, offset, length in entry.chunks:
            if index not in parts:
                key = f"basebackups/{manifest.name}/part-{index:06d}"
                with objects.open_object(cfg, backend, key) as obj:
                    parts[index] = b"".join(obj.raw)
            out += parts[index][offset : offset + length]
    finally:
        backend.close()
    assert len(out) == entry.size
    return bytes(out)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def one_line(stderr: str) -> str:
    """The error line of a failed command: exactly one line, no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]
