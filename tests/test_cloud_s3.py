"""S3 backend against real servers (moto, SeaweedFS) and through the fault proxy."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cloudutil import backend_for, captured_log, run_walship
from helpers import make_segment, segment_name
from servers.faultproxy import FaultProxy
from servers.launch import Running
from servers.plugin import create_s3_bucket, s3_env, unique

from walship.errors import (
    AlreadyExists,
    ContainerNotFound,
    NotFound,
    PermissionDenied,
    StorageError,
    Transient,
)
from walship.storage import s3 as s3mod
from walship.storage.base import read_all

pytestmark = pytest.mark.cloud
MIB = 1 << 20


@pytest.fixture(scope="module")
def s3_proxy(moto_s3: Running) -> Iterator[FaultProxy]:
    proxy = FaultProxy(moto_s3.port, flavor="s3")
    yield proxy
    proxy.stop()


@pytest.fixture
def faulty(s3_proxy: FaultProxy, moto_s3: Running) -> Iterator[tuple[dict[str, str], FaultProxy]]:
    """A fresh bucket on moto, reached through the fault proxy (deadline 2 s, attempt 1 s)."""
    bucket = unique("walship")
    create_s3_bucket(moto_s3.endpoint, bucket)
    env = s3_env(s3_proxy.url, bucket)
    env["WALSHIP_RETRY_DEADLINE"] = "2"
    env["WALSHIP_RETRY_ATTEMPT_TIMEOUT"] = "1"
    s3_proxy.clear()
    yield env, s3_proxy
    s3_proxy.clear()


def _multipart_backend(env: dict[str, str]) -> Any:
    backend = backend_for(env)
    backend.part_size = 5 * MIB  # S3's minimum, so a 12 MiB object has 3 parts
    return backend


@pytest.mark.parametrize("server", ["moto", "seaweedfs"])
def test_multipart_roundtrip_and_conditional_complete(
    server: str, request: pytest.FixtureRequest
) -> None:
    env = request.getfixturevalue("s3_repo_env" if server == "moto" else "seaweedfs_repo_env")
    backend = _multipart_backend(env)
    data = os.urandom(12 * MIB + 5)
    backend.put(
        "big/obj", [data[i : i + MIB] for i in range(0, len(data), MIB)], metadata={"m": "1"}
    )
    head = backend.head("big/obj")
    assert head is not None and head.size == len(data) and head.metadata["m"] == "1"
    assert (
        hashlib.sha256(read_all(backend.open("big/obj"))).digest() == hashlib.sha256(data).digest()
    )
    # IfNoneMatch on CompleteMultipartUpload: the store refuses, the original stays
    with pytest.raises(AlreadyExists):
        backend.put("big/obj", [os.urandom(11 * MIB)])
    assert read_all(backend.open("big/obj")) == data
    backend.put("big/obj", [b"small"], mode="overwrite")
    assert read_all(backend.open("big/obj")) == b"small"


@pytest.mark.parametrize("server", ["moto", "seaweedfs"])
def test_object_just_over_the_part_size_is_one_put(
    server: str, request: pytest.FixtureRequest
) -> None:
    # a 16 MiB segment stored uncompressed is 16 MiB plus its header: one PUT,
    # not a multipart upload of a full part and a few hundred bytes
    env = request.getfixturevalue("s3_repo_env" if server == "moto" else "seaweedfs_repo_env")
    backend = _multipart_backend(env)
    data = os.urandom(5 * MIB + 300)
    backend.put("seg/obj", [data[i : i + MIB] for i in range(0, len(data), MIB)])
    etag = backend.client.head_object(Bucket=backend.bucket, Key=backend.prefix + "seg/obj")[
        "ETag"
    ].strip('"')
    assert etag == hashlib.md5(data).hexdigest()  # a single PUT's ETag; multipart's ends "-2"
    assert read_all(backend.open("seg/obj")) == data
    # beyond the slack (a sixteenth of the part, in 256 KiB steps) it is a multipart
    # upload whose first part is that much larger
    first_size = 5 * MIB + 256 * 1024
    data = os.urandom(first_size + 1)
    backend.put("seg/big", [data])
    etag = backend.client.head_object(Bucket=backend.bucket, Key=backend.prefix + "seg/big")[
        "ETag"
    ].strip('"')
    first = hashlib.md5(data[:first_size]).digest()
    rest = hashlib.md5(data[first_size:]).digest()
    assert etag == hashlib.md5(first + rest).hexdigest() + "-2"
    assert read_all(backend.open("seg/big")) == data


def test_body_is_signed_over_http_only(s3_repo_env: dict[str, str]) -> None:
    # over http the SHA-256 in the signature is the body's only end-to-end check
    backend = backend_for(s3_repo_env)
    sent: list[str] = []

    def seen(request: Any, **_: object) -> None:
        sent.append(request.headers["X-Amz-Content-SHA256"].decode())

    backend.client.meta.events.register("before-send.s3.PutObject", seen)
    data = os.urandom(MIB)
    backend.put("signed/obj", [data])
    assert sent == [hashlib.sha256(data).hexdigest()]
    assert "payload_signing_enabled" not in (backend.client.meta.config.s3 or {})
    # over https TLS protects the body: no SHA-256 of every body on both sides
    tls = backend_for({**s3_repo_env, "WALSHIP_S3_ENDPOINT_URL": "https://127.0.0.1:9"})
    assert tls.client.meta.config.s3["payload_signing_enabled"] is False


def test_part_sizes_cover_5_tib() -> None:
    from walship.storage.parts import capacity

    assert capacity(8 * MIB, 10_000, s3mod.S3Backend.MAX_PART) >= 5 << 40
    assert capacity(16 * MIB, 10_000, s3mod.S3Backend.MAX_PART) >= 5 << 40


def test_missing_bucket_is_container_not_found(moto_s3: Running) -> None:
    env = s3_env(moto_s3.endpoint, unique("absent"))
    backend = backend_for(env)
    for call in (
        lambda: backend.head("wal/x"),
        lambda: backend.open("wal/x"),
        lambda: backend.put("wal/x", [b"1"]),
        lambda: list(backend.list("wal/")),
    ):
        with pytest.raises(ContainerNotFound) as info:
            call()
        assert not isinstance(info.value, NotFound)
        assert "absent-" in info.value.one_line()


def test_fetch_from_missing_bucket_aborts_not_absent(moto_s3: Running, tmp_path: Any) -> None:
    env = s3_env(moto_s3.endpoint, unique("absent"))
    proc = run_walship(env, "fetch", segment_name(3), str(tmp_path / "x"), cwd=str(tmp_path))
    assert proc.returncode == 255, proc.stderr
    assert "does not exist" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_transient_faults_are_ridden_out(faulty: tuple[dict[str, str], FaultProxy]) -> None:
    env, proxy = faulty
    backend = backend_for(env)
    data = os.urandom(2 * MIB)
    proxy.plan("reset", method="PUT")
    proxy.plan("slowdown", method="PUT")
    proxy.plan("500", method="PUT")
    with captured_log() as logs:
        backend.put("a/obj", [data], metadata={"walship-raw-sha256": "x"})
    assert proxy.count("PUT") == 4
    assert logs.getvalue().count("retrying PUT") == 3
    assert "attempt=2" in logs.getvalue() and "SlowDown" in logs.getvalue()
    proxy.plan("503", method="GET")
    proxy.plan("reset", method="GET")
    proxy.plan("503", method="HEAD")
    head = backend.head("a/obj")
    assert head is not None and head.metadata["walship-raw-sha256"] == "x"
    assert read_all(backend.open("a/obj")) == data


@pytest.mark.parametrize("action", ["stall", "truncate"])
def test_mid_body_fault_resumes_without_corruption(
    faulty: tuple[dict[str, str], FaultProxy], action: str
) -> None:
    env, proxy = faulty
    backend = backend_for(env)
    data = os.urandom(3 * MIB + 1)
    backend.put("a/obj", [data])
    proxy.plan(action, method="GET", seconds=2.5)  # stall beyond the 1 s read timeout
    with captured_log() as logs:
        assert read_all(backend.open("a/obj")) == data
    assert "resuming" in logs.getvalue()
    ranged = [p for m, p, a in proxy.log if m == "GET"]
    assert len(ranged) == 2


def test_persistent_outage_gives_up_after_deadline(
    faulty: tuple[dict[str, str], FaultProxy],
) -> None:
    env, proxy = faulty
    backend = backend_for(env)
    proxy.outage("reset")
    started = time.monotonic()
    with pytest.raises(Transient) as info:
        backend.put("a/obj", [b"x"])
    elapsed = time.monotonic() - started
    assert 1.5 <= elapsed <= 2 + 1 + 1.5, elapsed
    assert "failed after" in info.value.one_line() and "attempts" in info.value.one_line()
    proxy.clear()
    assert backend.head("a/obj") is None


def test_permission_denied_is_clear_and_not_retried(
    faulty: tuple[dict[str, str], FaultProxy],
) -> None:
    env, proxy = faulty
    backend = backend_for(env)
    proxy.plan("403", method="PUT", times=None)
    with pytest.raises(PermissionDenied) as info:
        backend.put("a/obj", [b"x"])
    assert proxy.count("PUT") == 1
    bucket = env["WALSHIP_REPO"].split("/")[2]
    assert bucket in info.value.one_line() and "s3:PutObject" in info.value.one_line()


def test_ambiguous_create_is_success_not_conflict(
    faulty: tuple[dict[str, str], FaultProxy],
) -> None:
    env, proxy = faulty
    backend = backend_for(env)
    # the store applies the PUT, but the answer is lost: the retry meets its own object
    proxy.plan("reset_after", method="PUT")
    backend.put("a/obj", [b"payload"])
    assert proxy.count("PUT") == 2
    assert read_all(backend.open("a/obj")) == b"payload"
    # a different writer's content is still refused
    proxy.plan("reset_after", method="PUT")
    backend.put("a/other", [b"mine"])
    with pytest.raises(AlreadyExists):
        backend.put("a/other", [b"theirs"])


def test_ambiguous_multipart_complete_is_success(
    faulty: tuple[dict[str, str], FaultProxy],
) -> None:
    env, proxy = faulty
    backend = _multipart_backend(env)
    data = os.urandom(11 * MIB)
    proxy.plan("reset", method="PUT", path_contains="partNumber=2")
    proxy.plan("reset_after", method="POST", path_contains="uploadId=")
    backend.put("big", [data])
    assert read_all(backend.open("big")) == data


def test_failed_multipart_leaves_nothing(
    faulty: tuple[dict[str, str], FaultProxy], moto_s3: Running
) -> None:
    env, proxy = faulty
    backend = _multipart_backend(env)
    proxy.outage("reset", method="PUT", path_contains="partNumber=2")
    with pytest.raises(Transient):
        backend.put("big", [os.urandom(11 * MIB)])
    proxy.clear()
    assert backend.head("big") is None
    assert list(backend.list("")) == []
    uploads = backend.client.list_multipart_uploads(Bucket=backend.bucket).get("Uploads", [])
    assert uploads == []  # aborted


def test_delete_is_batched(faulty: tuple[dict[str, str], FaultProxy], monkeypatch: Any) -> None:
    env, proxy = faulty
    backend = backend_for(env)
    for i in range(5):
        backend.put(f"d/{i}", [b"x"])
    monkeypatch.setattr(backend, "DELETE_BATCH", 2)
    proxy.clear()
    backend.delete([f"d/{i}" for i in range(5)] + ["d/absent"])
    assert proxy.count("POST") == 3
    assert list(backend.list("d/")) == []


# --- the commands, end to end through the fault proxy -----------------------
def _segment(tmp_path: Any, segno: int = 3) -> tuple[str, str]:
    name = segment_name(segno)
    path = tmp_path / name
    path.write_bytes(make_segment(segno))
    return name, str(path)


def test_push_survives_ambiguous_failure_and_fetch_outage_aborts(
    faulty: tuple[dict[str, str], FaultProxy], tmp_path: Any
) -> None:
    env, proxy = faulty
    name, path = _segment(tmp_path)
    proxy.plan("reset_after", method="PUT", path_contains=name)
    proc = run_walship(env, "push", path, name)
    assert proc.returncode == 0, proc.stderr
    assert "storage.retry" in proc.stderr or "retrying" in proc.stderr
    # re-pushing (PostgreSQL retries after a crash) is harmless
    proc = run_walship(env, "push", path, name)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "restored"
    proc = run_walship(env, "fetch", name, str(out), cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == Path(path).read_bytes()
    # a persistent outage: fetch ends with the abort code, never 1 ("absent")
    proxy.outage("503")
    out2 = tmp_path / "again"
    started = time.monotonic()
    proc = run_walship(env, "fetch", name, str(out2), cwd=str(tmp_path))
    assert proc.returncode == 255, proc.stderr
    assert time.monotonic() - started < 10
    assert not out2.exists()
    assert "failed after" in proc.stderr
    # and push fails (non-zero) so PostgreSQL keeps the segment and retries
    name4, path4 = _segment(tmp_path, 4)
    proc = run_walship(env, "push", path4, name4)
    assert proc.returncode != 0
    assert "failed after" in proc.stderr


def test_fetch_absent_segment_is_exit_1(s3_repo_env: dict[str, str], tmp_path: Any) -> None:
    name, path = _segment(tmp_path, 3)  # a repository (repository.json) must exist for "absent"
    assert run_walship(s3_repo_env, "push", path, name).returncode == 0
    proc = run_walship(
        s3_repo_env, "fetch", segment_name(9), str(tmp_path / "x"), cwd=str(tmp_path)
    )
    assert proc.returncode == 1, proc.stderr


def test_errors_raised_are_walship_errors_only(faulty: tuple[dict[str, str], FaultProxy]) -> None:
    env, proxy = faulty
    backend = backend_for(env)
    proxy.outage("reset")
    for call in (
        lambda: backend.head("x"),
        lambda: list(backend.list("")),
        lambda: backend.open("x"),
    ):
        with pytest.raises(StorageError):
            call()


def test_warm_parses_botocore_data_once_for_later_clients(
    s3_repo_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the walship agent does before forking workers: later clients share
    the parsed data (and still talk to the configured endpoint)."""
    monkeypatch.setattr(s3mod, "_LOADER", [])
    s3mod.warm()
    loader = s3mod._LOADER[0]
    s3mod.warm()  # idempotent
    assert [loader] == s3mod._LOADER
    for n in range(2):
        backend = backend_for(s3_repo_env)
        assert backend.client._loader is loader
        backend.put(f"warm/{n}", [b"data %d" % n])
        assert read_all(backend.open(f"warm/{n}")) == b"data %d" % n
        backend.close()


def test_object_replaced_before_a_resume_is_not_already_exists(
    faulty: tuple[dict[str, str], FaultProxy], moto_s3: Running
) -> None:
    """A resume is pinned with If-Match: its 412 means the object changed, not
    "already exists"."""
    env, proxy = faulty
    backend = backend_for(env)
    backend.put("big", [os.urandom(4 * MIB)], mode="overwrite")
    # half the body, then silence: the read times out (1 s) and resumes
    proxy.plan("stall", method="GET", seconds=2.5)
    stream = backend.open("big")
    chunks = iter(stream)
    assert next(chunks)
    direct = backend_for({**env, "WALSHIP_S3_ENDPOINT_URL": moto_s3.endpoint})
    direct.put("big", [os.urandom(4 * MIB)], mode="overwrite")
    with pytest.raises(StorageError) as info:
        for _ in chunks:
            pass
    stream.close()
    assert not isinstance(info.value, AlreadyExists)
    assert "replaced while being read" in info.value.one_line()
