"""Azure backend against Azurite, directly and through the fault proxy."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from cloudutil import backend_for, captured_log, run_walship
from helpers import make_segment, segment_name
from servers.faultproxy import FaultProxy
from servers.launch import AZURITE_ACCOUNT, Running
from servers.plugin import azure_env, create_azure_container, unique

from walship.errors import AlreadyExists, ContainerNotFound, NotFound, PermissionDenied, Transient
from walship.storage.base import read_all

pytestmark = pytest.mark.cloud
MIB = 1 << 20


@pytest.fixture(scope="module")
def az_proxy(azurite: Running) -> Iterator[FaultProxy]:
    proxy = FaultProxy(azurite.port, flavor="azure")
    yield proxy
    proxy.stop()


@pytest.fixture
def faulty(az_proxy: FaultProxy, azurite: Running) -> Iterator[tuple[dict[str, str], FaultProxy]]:
    container = unique("walship")
    create_azure_container(azurite.endpoint, container)
    env = azure_env(f"{az_proxy.url}/{AZURITE_ACCOUNT}", container)
    env["WALSHIP_RETRY_DEADLINE"] = "2"
    env["WALSHIP_RETRY_ATTEMPT_TIMEOUT"] = "1"
    az_proxy.clear()
    yield env, az_proxy
    az_proxy.clear()


def _blocks(env: dict[str, str]) -> Any:
    return backend_for(env, azure_block_size=MIB)


def test_metadata_names_roundtrip(azure_repo_env: dict[str, str]) -> None:
    backend = backend_for(azure_repo_env)
    meta = {"walship-format": "1", "walship-raw-sha256": "ab", "walship-raw-size": "3"}
    backend.put("k", [b"abc"], metadata=meta)
    head = backend.head("k")
    assert head is not None and head.metadata == meta
    assert backend.open("k").info.metadata == meta


def test_block_upload_roundtrip_and_conditional(azure_repo_env: dict[str, str]) -> None:
    backend = _blocks(azure_repo_env)
    data = os.urandom(3 * MIB + 11)
    backend.put("big", [data[i : i + 300_000] for i in range(0, len(data), 300_000)])
    assert read_all(backend.open("big")) == data
    with pytest.raises(AlreadyExists):
        backend.put("big", [os.urandom(2 * MIB + 1)])
    assert read_all(backend.open("big")) == data


def test_missing_container_is_container_not_found(azurite: Running) -> None:
    backend = backend_for(azure_env(azurite.endpoint, unique("absent")))
    for call in (
        lambda: backend.head("wal/x"),
        lambda: backend.open("wal/x"),
        lambda: backend.put("wal/x", [b"1"]),
        lambda: list(backend.list("wal/")),
    ):
        with pytest.raises(ContainerNotFound) as info:
            call()
        assert not isinstance(info.value, NotFound)


def test_bad_key_is_permission_denied(azurite: Running, azure_repo_env: dict[str, str]) -> None:
    env = dict(azure_repo_env)
    env["WALSHIP_AZURE_CONNECTION_STRING"] = env["WALSHIP_AZURE_CONNECTION_STRING"].replace(
        "AccountKey=Eby8", "AccountKey=Xby8"
    )
    backend = backend_for(env)
    with pytest.raises(PermissionDenied) as info:
        backend.put("k", [b"x"])
    assert env["WALSHIP_REPO"].split("/")[2] in info.value.one_line()


def test_faults_are_ridden_out(faulty: tuple[dict[str, str], FaultProxy]) -> None:
    env, proxy = faulty
    backend = _blocks(env)
    data = os.urandom(2 * MIB + 5)
    proxy.plan("503", method="PUT", path_contains="comp=block&")
    proxy.plan("reset", method="PUT", path_contains="comp=block&")
    proxy.plan("reset_after", method="PUT", path_contains="comp=blocklist")
    with captured_log() as logs:
        backend.put("big", [data])
    assert logs.getvalue().count("retrying") == 3
    assert read_all(backend.open("big")) == data
    proxy.plan("truncate", method="GET")
    proxy.plan("stall", method="GET", seconds=2.5)
    assert read_all(backend.open("big")) == data


def test_ambiguous_single_create_is_success(faulty: tuple[dict[str, str], FaultProxy]) -> None:
    env, proxy = faulty
    backend = backend_for(env)
    proxy.plan("reset_after", method="PUT")
    backend.put("k", [b"payload"])
    assert read_all(backend.open("k")) == b"payload"
    with pytest.raises(AlreadyExists):
        backend.put("k", [b"other"])


def test_outage_fetch_aborts(faulty: tuple[dict[str, str], FaultProxy], tmp_path: Any) -> None:
    env, proxy = faulty
    name = segment_name(3)
    (tmp_path / name).write_bytes(make_segment(3))
    assert run_walship(env, "push", str(tmp_path / name), name).returncode == 0
    proxy.outage("503")
    with pytest.raises(Transient):
        backend_for(env).head("k")
    proc = run_walship(env, "fetch", name, str(tmp_path / "out"), cwd=str(tmp_path))
    assert proc.returncode == 255, proc.stderr
    assert "AccountKey" not in proc.stderr and "Eby8" not in proc.stderr
