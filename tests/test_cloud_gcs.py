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
        lambda: backend.delete(["wal/x", "wal/y"]),
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


def test_delete_is_batched(faulty: tuple[dict[str, str], FaultProxy]) -> None:
    env, proxy = faulty
    backend = backend_for(env)
    keys = [f"del/{i:04d}" for i in range(250)]
    for k in keys:
        backend.put(k, [b"x"])
    backend.put("keep", [b"k"])
    proxy.clear()
    backend.delete([*keys, "del/absent", "del/absent2"])
    assert list(backend.list("del/")) == []
    assert [i.key for i in backend.list("")] == ["keep"]
    posts = [path for method, path, _ in proxy.log if method == "POST"]
    assert posts == ["/batch/storage/v1"] * 3  # 252 keys, 100 per batch
    assert proxy.count("DELETE") == 0
    assert len(proxy.log) <= 3 + 1 + 2  # batches, one bucket check (404s seen), two LISTs


def test_delete_batch_rides_out_faults(faulty: tuple[dict[str, str], FaultProxy]) -> None:
    env, proxy = faulty
    backend = backend_for(env)
    keys = [f"del/{i:03d}" for i in range(150)]
    for k in keys:
        backend.put(k, [b"x"])
    proxy.clear()
    proxy.plan("503", method="POST", path_contains="/batch/")
    proxy.plan("reset_after", method="POST", path_contains="/batch/")  # deleted, answer lost
    with captured_log() as logs:
        backend.delete(keys)
    assert logs.getvalue().count("retrying") >= 2
    assert list(backend.list("del/")) == []


def _rewrite_first_answer(
    backend: Any, monkeypatch: pytest.MonkeyPatch, status: bytes
) -> list[bytes]:
    """Make the first batch's first sub-response read ``status``; return every batch body sent."""
    real = backend.session.request
    bodies: list[bytes] = []

    def request(method: str, url: str, **kwargs: Any) -> Any:
        resp = real(method, url, **kwargs)
        if url.endswith("/batch/storage/v1"):
            bodies.append(kwargs["data"])
            if len(bodies) == 1:
                content = resp.content
                start = content.index(b"HTTP/1.1 ")
                end = content.index(b"\r\n", start)
                resp._content = content[:start] + b"HTTP/1.1 " + status + content[end:]
        return resp

    monkeypatch.setattr(backend.session, "request", request)
    return bodies


def test_delete_batch_resends_only_transient_answers(
    gcs_repo_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = backend_for(gcs_repo_env)
    keys = [f"del/{i}" for i in range(5)]
    for k in keys:
        backend.put(k, [b"x"])
    bodies = _rewrite_first_answer(backend, monkeypatch, b"503 Service Unavailable")
    with captured_log() as logs:
        backend.delete(keys)
    assert "retrying" in logs.getvalue()
    assert len(bodies) == 2
    assert bodies[0].count(b"DELETE /storage/v1/") == 5
    assert bodies[1].count(b"DELETE /storage/v1/") == 1  # only the one answered 503
    assert list(backend.list("del/")) == []


def test_delete_batch_maps_denied_answer(
    gcs_repo_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = backend_for(gcs_repo_env)
    backend.put("del/0", [b"x"])
    bodies = _rewrite_first_answer(backend, monkeypatch, b"403 Forbidden")
    with pytest.raises(PermissionDenied) as info:
        backend.delete(["del/0", "del/1"])
    assert len(bodies) == 1  # not retried
    assert "del/0" in info.value.one_line()
