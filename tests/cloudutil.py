"""Helpers for the cloud backend tests (tests/test_cloud_*.py)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from helpers import environment_without_settings
from servers.plugin import config_from_env

from walship import log
from walship.storage.registry import open_backend

WALSHIP = os.path.join(os.path.dirname(sys.executable), "walship")


def backend_for(env: dict[str, str], **overrides: object) -> Any:
    cfg = config_from_env(env, **overrides)
    return open_backend(env["WALSHIP_REPO"], cfg)  # type: ignore[arg-type]


@contextmanager
def captured_log() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    log.configure(level="info")
    log.set_stream(buf)
    try:
        yield buf
    finally:
        log.set_stream(None)


def run_walship(
    env: dict[str, str], *args: str, cwd: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full = environment_without_settings()
    full.update(env)
    full["WALSHIP_CONFIG"] = os.devnull
    return subprocess.run(
        [WALSHIP, *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )
