"""walship delete on the GCS and Azure emulators (fake-gcs-server, Azurite on
127.0.0.1): the store's batch requests (GCS JSON API batches of 100, Azure blob
batches of 256), counted by an HTTP proxy, and the result."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator

import pytest
from cloudutil import backend_for, run_walship
from retention_repo import DAY, cfg, identity, keys, segments, walship_backup
from servers.faultproxy import FaultProxy
from servers.launch import AZURITE_ACCOUNT, Running
from servers.plugin import (
    azure_env,
    create_azure_container,
    create_gcs_bucket,
    gcs_env,
    unique,
)

pytestmark = [pytest.mark.cloud, pytest.mark.slow]

NOW = time.time() - 60
SEGMENTS = 600
#: a loaded machine must not turn a slow answer into a retried (and counted) request
PATIENT = {"WALSHIP_RETRY_DEADLINE": "120", "WALSHIP_RETRY_ATTEMPT_TIMEOUT": "60"}
DELETED = 499  # segments 1..499, before the kept backup's start in segment 500


def _fill(env: dict[str, str]) -> None:
    backend = backend_for(env)
    c = cfg(env["WALSHIP_REPO"])
    identity(backend)
    segments(c, backend, range(1, SEGMENTS + 1))
    walship_backup(c, backend, 2, NOW - 2 * DAY)
    walship_backup(c, backend, 500, NOW - DAY)
    backend.close()


@pytest.fixture
def gcs(fake_gcs: Running) -> Iterator[tuple[dict[str, str], FaultProxy]]:
    proxy = FaultProxy(fake_gcs.port, flavor="gcs")
    bucket = unique("retention")
    create_gcs_bucket(fake_gcs.endpoint, bucket)
    yield {**gcs_env(proxy.url, bucket), **PATIENT}, proxy
    proxy.stop()


@pytest.fixture
def azure(azurite: Running) -> Iterator[tuple[dict[str, str], FaultProxy]]:
    proxy = FaultProxy(azurite.port, flavor="azure")
    container = unique("retention")
    create_azure_container(azurite.endpoint, container)
    yield {**azure_env(f"{proxy.url}/{AZURITE_ACCOUNT}", container), **PATIENT}, proxy
    proxy.stop()


@pytest.mark.parametrize(("store", "batch"), [("gcs", 100), ("azure", 256)])
def test_delete_uses_the_store_batches(
    store: str, batch: int, request: pytest.FixtureRequest
) -> None:
    env, proxy = request.getfixturevalue(store)
    _fill(env)
    proxy.clear()
    proc = run_walship(env, "delete", "--retain", "1", "--confirm", "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["wal"]["delete_segments"] == DELETED
    batches = [p for m, p, _ in proxy.log if m == "POST" and "batch" in p]
    # the dropped backup: manifest, parts, tombstone (one batch each); then the WAL in
    # chunks of 1000 keys, each sent as batches of the store's size
    assert len(batches) == 3 + math.ceil(DELETED / batch)
    assert proxy.count("DELETE") == 0  # nothing deleted one request per key
    backend = backend_for(env)
    assert len(keys(backend, "wal/")) == SEGMENTS - DELETED
    assert len({k.split("/")[1] for k in keys(backend, "basebackups/")}) == 1
    backend.close()
