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

from walship import repository
from walship.errors import (
    AlreadyExists,
    ContainerNotFound,
    NotFound,
    PermissionDenied,
    StorageError,
    Transient,
)
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
        lambda: backend.delete(["wal/x"]),  # each blob's answer names the container
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


# --- 409/412 answers that are not about the key being taken (issue 10, item 5) ------


def _blob(env: dict[str, str], key: str) -> Any:
    from azure.storage.blob import BlobServiceClient

    container = env["WALSHIP_REPO"].split("/")[2]
    service = BlobServiceClient.from_connection_string(env["WALSHIP_AZURE_CONNECTION_STRING"])
    return service.get_container_client(container).get_blob_client(f"repo/{key}")


def _leased_uncommitted(env: dict[str, str], key: str) -> Any:
    """A lease on a name that holds only an uncommitted block: HEAD says 404, and
    Azurite 3.37 answers a create-only Put Blob with 409 BlobAlreadyExists and a
    Put Block / Put Block List with 412 LeaseIdMissing. Reproducible stand-ins
    for the non-existence 409/412s of the real service (leases, a container
    being deleted)."""
    blob = _blob(env, key)
    blob.stage_block("AAAA", b"x")
    lease = blob.acquire_lease(-1)
    assert backend_for(env).head(key) is None
    return lease


def test_lease_412_on_block_upload_is_not_already_exists(azure_repo_env: dict[str, str]) -> None:
    lease = _leased_uncommitted(azure_repo_env, "big")
    try:
        with pytest.raises(StorageError) as info:
            _blocks(azure_repo_env).put("big", [os.urandom(2 * MIB + 1)])
        assert not isinstance(info.value, AlreadyExists)
        assert "LeaseIdMissing" in info.value.one_line() and "lease" in info.value.hint
    finally:
        lease.release()


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        # a 16 MiB segment stored uncompressed in 1 MiB blocks: Put Block -> 412 LeaseIdMissing
        ({"WALSHIP_COMPRESSION": "none", "WALSHIP_AZURE_BLOCK_SIZE": str(MIB)}, "lease"),
        # compressed, one Put Blob -> 409 BlobAlreadyExists, yet no object to compare with
        ({}, "not a conflict"),
    ],
    ids=["blocks-412", "single-409"],
)
def test_push_under_a_lease_is_not_a_conflict(
    azure_repo_env: dict[str, str], tmp_path: Any, settings: dict[str, str], says: str
) -> None:
    env = {**azure_repo_env, **settings}
    first, name = segment_name(2), segment_name(3)
    for n in (first, name):
        (tmp_path / n).write_bytes(make_segment(int(n[-1])))
    assert run_walship(env, "push", str(tmp_path / first), first).returncode == 0
    lease = _leased_uncommitted(env, repository.key_for(name))
    try:
        proc = run_walship(env, "push", str(tmp_path / name), name)
    finally:
        lease.release()
    assert proc.returncode == 1, proc.stderr
    assert "None" not in proc.stderr and "different content" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and says in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_archived_blob_409_is_not_already_exists(azure_repo_env: dict[str, str]) -> None:
    backend = backend_for(azure_repo_env)
    backend.put("cold", [b"data"])
    _blob(azure_repo_env, "cold").set_standard_blob_tier("Archive")
    with pytest.raises(StorageError) as info:
        backend.open("cold")
    assert not isinstance(info.value, AlreadyExists)
    assert "BlobArchived" in info.value.one_line()


def test_blob_replaced_while_read_is_not_already_exists(azure_repo_env: dict[str, str]) -> None:
    """The SDK reads the blob in 4 MiB ranges pinned to its ETag: a 412
    ConditionNotMet there means the blob changed, not "already exists"."""
    backend = backend_for(azure_repo_env)
    backend.put("big", [os.urandom(9 * MIB)], mode="overwrite")
    stream = backend.open("big")
    chunks = iter(stream)
    assert next(chunks)
    backend.put("big", [os.urandom(9 * MIB)], mode="overwrite")
    with pytest.raises(StorageError) as info:
        for _ in chunks:
            pass
    stream.close()
    assert not isinstance(info.value, AlreadyExists)
    assert "replaced while being read" in info.value.one_line()
