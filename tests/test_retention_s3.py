"""walship delete on S3 (the moto server on 127.0.0.1): batched DeleteObjects requests
counted by an HTTP proxy, and a delete killed with SIGKILL midway, then re-run."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from cloudutil import WALSHIP, backend_for, run_walship
from helpers import environment_without_settings
from retention_repo import DAY, cfg, identity, keys, segments, walship_backup
from servers.faultproxy import FaultProxy
from servers.launch import Running
from servers.plugin import create_s3_bucket, s3_env, unique

pytestmark = [pytest.mark.cloud, pytest.mark.slow]

NOW = time.time() - 60
SEGMENTS = 2600  # more than 2 DeleteObjects requests' worth


@pytest.fixture
def proxy(moto_s3: Running) -> Iterator[FaultProxy]:
    p = FaultProxy(moto_s3.port, flavor="s3")
    yield p
    p.stop()


def _bucket(moto_s3: Running, proxy: FaultProxy) -> dict[str, str]:
    bucket = unique("retention")
    create_s3_bucket(moto_s3.endpoint, bucket)
    # a loaded machine must not turn a slow answer into a retried (and counted) request
    return {**s3_env(proxy.url, bucket), "WALSHIP_RETRY_ATTEMPT_TIMEOUT": "60"}


def _fill(env: dict[str, str]) -> list[str]:
    backend = backend_for(env)
    c = cfg(env["WALSHIP_REPO"])
    identity(backend)
    segments(c, backend, range(1, SEGMENTS + 1))
    names = [
        walship_backup(c, backend, 2, NOW - 3 * DAY, parts=3),
        walship_backup(c, backend, 1200, NOW - 2 * DAY, parts=3),
        walship_backup(c, backend, 2100, NOW - DAY, parts=3),
    ]
    backend.close()
    return names


def _deletes(proxy: FaultProxy) -> list[str]:
    """Paths of the DeleteObjects requests (POST ?delete) the proxy saw."""
    return [path for method, path, _ in proxy.log if method == "POST" and "delete" in path]


def test_delete_batches_1000_keys_per_request(moto_s3: Running, proxy: FaultProxy) -> None:
    env = _bucket(moto_s3, proxy)
    names = _fill(env)
    proxy.clear()
    proc = run_walship(env, "delete", "--retain", "1", "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    dry = json.loads(proc.stdout)
    assert dry["wal"]["delete_segments"] == 2099  # segments 1..2099: before the kept start
    assert _deletes(proxy) == []  # a dry run deletes nothing, writes nothing
    assert proxy.count("PUT") == 0 and proxy.count("DELETE") == 0

    proxy.clear()
    proc = run_walship(env, "delete", "--retain", "1", "--confirm", "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    # the deleted backups' manifests (first, in one request), their parts, their
    # tombstones; then the WAL in DeleteObjects requests of 1000 keys
    wal_requests = math.ceil(2099 / 1000)
    assert len(_deletes(proxy)) == 3 + wal_requests == doc["deleted"]["delete_calls"]
    assert doc["deleted"]["objects"] == dry["delete_objects"]
    listed_after = sum(1 for m, _, _ in proxy.log if m == "GET")
    assert listed_after < 20  # listings are paginated 1000 keys a page, not per key

    backend = backend_for(env)
    left = keys(backend, "wal/")
    assert len(left) == SEGMENTS - 2099
    assert {k.split("/")[1] for k in keys(backend, "basebackups/")} == {names[2]}
    backend.close()


def test_delete_killed_midway_then_rerun(moto_s3: Running, proxy: FaultProxy) -> None:
    """SIGKILL while the 2nd DeleteObjects request is in flight (the dropped backups'
    parts: the proxy has applied it and holds the answer back), so their manifests
    are gone, their tombstones are there and no WAL is deleted yet; the re-run ends
    where an uninterrupted run ends."""
    ref = _bucket(moto_s3, proxy)
    env = _bucket(moto_s3, proxy)
    _fill(ref)
    _fill(env)
    assert run_walship(ref, "delete", "--retain", "1", "--confirm", timeout=300).returncode == 0

    proxy.clear()
    full = environment_without_settings()
    full.update(env)
    full["WALSHIP_CONFIG"] = os.devnull
    # the first request passes, the 2nd stalls
    for _ in range(1):
        proxy.plan("pass", method="POST", path_contains="delete")
    proxy.plan("stall", method="POST", path_contains="delete", seconds=60)
    proc = subprocess.Popen(
        [WALSHIP, "delete", "--retain", "1", "--confirm"],
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while len(_deletes(proxy)) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # the stalled request reached the store
    assert proc.poll() is None and len(_deletes(proxy)) == 2, proc.communicate(timeout=5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    proxy.clear()

    backend = backend_for(env)
    # really stopped midway: two backups half-deleted (tombstone, no manifest), WAL intact
    tombs = [k for k in keys(backend, "basebackups/") if k.endswith("/deleting")]
    assert len(tombs) == 2 and len(keys(backend, "wal/")) == SEGMENTS
    listed = run_walship(env, "backup-list", "--json", timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 1  # the half-deleted backup is not listed
    verify = run_walship(env, "verify", timeout=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    again = run_walship(env, "delete", "--retain", "1", "--confirm", timeout=300)
    assert again.returncode == 0, again.stderr
    ref_backend = backend_for(ref)
    assert keys(backend) == keys(ref_backend)
    verify = run_walship(env, "verify", timeout=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    backend.close()
    ref_backend.close()
