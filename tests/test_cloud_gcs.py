"""GCS backend against fake-gcs-server (precondition-enforcing proxy) and the fault proxy."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from cloudutil import backend_for, captured_log, run_walship
from helpers import make_segment, segment_name
from servers.faultproxy import FaultProxy
from servers.launch import Running
from servers.plugin import create_gcs_bucket, gcs_env, unique

from walship.errors import AlreadyExists, ContainerNotFound, NotFound, PermissionDenied, Transient
from walship.storage.base import read_all

pytestmark = pytest.mark.cloud
KIB = 1 << 10


@pytest.fixture(scope="module")
def gcs_proxy(fake_gcs: Running) -> Iterator[FaultProxy]:
    proxy = FaultProxy(fake_gcs.port, flavor="gcs")
    yield proxy
    proxy.stop()


@pytest.fixture
def faulty(gcs_proxy: FaultProxy, fake_gcs: Running) -> Iterator[tuple[dict[str, str], FaultProxy]]:
    bucket = unique("walship")
    create_gcs_bucket(fake_gcs.endpoint, bucket)
    env = gcs_env(gcs_proxy.url, bucket)
    env["WALSHIP_RETRY_DEADLINE"] = "2"
    env["WALSHIP_RETRY_ATTEMPT_TIMEOUT"] = "1"
    gcs_proxy.clear()
    yield env, gcs_proxy
    gcs_proxy.clear()


def _chunked(env: dict[str, str]) -> Any:
    return backend_for(env, gcs_chunk_size=256 * KIB)


def test_precondition_is_sent_and_its_412_mapped(
    gcs_repo_env: dict[str, str], fake_gcs: Running
) -> None:
    proxy = fake_gcs.proxies[0]
    before = proxy.enforced  # type: ignore[attr-defined]
    backend = backend_for(gcs_repo_env)
    backend.put("k", [b"first"])
    with pytest.raises(AlreadyExists):
        backend.put("k", [b"second"])
    assert proxy.enforced == before + 1  # type: ignore[attr-defined]
    # overwrite sends no precondition
    backend.put("k", [b"third"], mode="overwrite")
    assert proxy.enforced == before + 1  # type: ignore[attr-defined]
    assert read_all(backend.open("k")) == b"third"


def test_resumable_upload_roundtrip_and_conditional(
    gcs_repo_env: dict[str, str], fake_gcs: Running
) -> None:
    backend = _chunked(gcs_repo_env)
    data = os.urandom(1024 * KIB + 3)
    backend.put(
        "big", [data[i : i + 100_000] for i in range(0, len(data), 100_000)], metadata={"m": "1"}
    )
    head = backend.head("big")
    assert head is not None and head.size == len(data) and head.metadata == {"m": "1"}
    assert read_all(backend.open("big")) == data
    with pytest.raises(AlreadyExists):
        backend.put("big", [os.urandom(600 * KIB)])
    assert read_all(backend.open("big")) == data
    exact = os.urandom(512 * KIB)  # a multiple of the chunk size: final chunk is empty
    backend.put("exact", [exact])
    assert read_all(backend.open("exact")) == exact


def test_missing_bucket_is_container_not_found(fake_gcs: Running) -> None:
    backend = backend_for(gcs_env(fake_gcs.endpoint, unique("absent")))
    for call in (
        lambda: backend.head("wal/x"),
        lambda: backend.open("wal/x"),
        lambda: backend.put("wal/x", [b"1"]),
        lambda: list(backend.list("wal/")),
    ):
        with pytest.raises(ContainerNotFound) as info:
            call()
        assert not isinstance(info.value, NotFound)


def test_faults_are_ridden_out(faulty: tuple[dict[str, str], FaultProxy]) -> None:
    env, proxy = faulty
    backend = _chunked(env)
    data = os.urandom(700 * KIB)
    proxy.plan("503", method="POST")
    proxy.plan("reset", method="PUT")  # a chunk of the resumable upload
    proxy.plan("reset_after", method="PUT")  # the service keeps it, the answer is lost
    with captured_log() as logs:
        backend.put("big", [data])
    assert logs.getvalue().count("retrying") >= 3
    assert read_all(backend.open("big")) == data
    proxy.plan("truncate", method="GET")
    proxy.plan("stall", method="GET", seconds=2.5)
    assert read_all(backend.open("big")) == data


def test_ambiguous_single_create_is_success(faulty: tuple[dict[str, str], FaultProxy]) -> None:
    env, proxy = faulty
    backend = backend_for(env)
    proxy.plan("reset_after", method="POST")
    backend.put("k", [b"payload"])
    assert read_all(backend.open("k")) == b"payload"


def test_outage_and_denial(faulty: tuple[dict[str, str], FaultProxy], tmp_path: Any) -> None:
    env, proxy = faulty
    backend = backend_for(env)
    name = segment_name(3)
    (tmp_path / name).write_bytes(make_segment(3))
    assert run_walship(env, "push", str(tmp_path / name), name).returncode == 0
    proxy.outage("reset")
    with pytest.raises(Transient):
        backend.put("k", [b"x"])
    proc = run_walship(env, "fetch", name, str(tmp_path / "out"), cwd=str(tmp_path))
    assert proc.returncode == 255, proc.stderr
    proxy.clear()
    proxy.plan("403", times=None)
    with pytest.raises(PermissionDenied) as info:
        backend.head("k")
    assert len(proxy.log) == 1 and env["WALSHIP_REPO"].split("/")[2] in info.value.one_line()
