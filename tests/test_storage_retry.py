"""Retries by request kind (walship/storage/retry.py) and the faults each
backend reports as "sent, answer lost" (Interrupted), through the SDKs' own
exception types (no server needed)."""

from __future__ import annotations

from collections.abc import Callable

import botocore.exceptions
import pytest
import requests
from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from servers.plugin import azure_env, config_from_env, gcs_env, s3_env

from walship.errors import StorageError, Transient
from walship.storage import azure, gcs, s3
from walship.storage.retry import (
    CONDITIONAL,
    IDEMPOTENT,
    ONCE,
    SAFE,
    Interrupted,
    RetryPolicy,
)

DEAD = "http://127.0.0.1:9"  # never contacted: the backends connect lazily


def _policy() -> RetryPolicy:
    return RetryPolicy(deadline=5.0, attempt_timeout=1.0, sleep=lambda _: None)


def _flaky(fault: Transient, fails: int) -> tuple[Callable[[], str], list[int]]:
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if len(calls) <= fails:
            raise fault
        return "done"

    return fn, calls


def test_an_interrupted_once_request_is_not_retried() -> None:
    fn, calls = _flaky(Interrupted("PUT x: ReadTimeoutError"), 1)
    with pytest.raises(Transient) as info:
        _policy().call(fn, "PUT x", kind=ONCE)
    assert len(calls) == 1
    assert "not retried" in info.value.message and "may have been applied" in info.value.message


def test_a_once_request_is_retried_when_it_was_not_applied() -> None:
    # an error answer or a fault before sending: the store did not apply it
    fn, calls = _flaky(Transient("PUT x: HTTP 503 SlowDown"), 2)
    assert _policy().call(fn, "PUT x", kind=ONCE) == "done"
    assert len(calls) == 3


@pytest.mark.parametrize("kind", [SAFE, IDEMPOTENT])
def test_interrupted_idempotent_requests_are_retried(kind: str) -> None:
    fn, calls = _flaky(Interrupted("GET x: reset"), 2)
    assert _policy().call(fn, "GET x", kind=kind) == "done"
    assert len(calls) == 3


def test_a_conditional_request_is_retried_with_its_check() -> None:
    seen: list[Transient] = []
    fn, calls = _flaky(Interrupted("PUT x: reset"), 1)
    assert _policy().call(fn, "PUT x", kind=CONDITIONAL, on_retry=seen.append) == "done"
    assert len(calls) == 2 and len(seen) == 1  # the caller knows an attempt may have landed
    with pytest.raises(ValueError, match="retried-create check"):
        _policy().call(fn, "PUT x", kind=CONDITIONAL)


def test_a_request_names_a_known_kind() -> None:
    with pytest.raises(ValueError, match="kind"):
        _policy().call(lambda: None, "PUT x", kind="maybe")


def test_final_errors_are_not_retried_whatever_the_kind() -> None:
    calls: list[int] = []

    def fn() -> None:
        calls.append(1)
        raise StorageError("PUT x: HTTP 400 InvalidArgument")

    with pytest.raises(StorageError):
        _policy().call(fn, "PUT x", kind=IDEMPOTENT)
    assert len(calls) == 1


# --- which faults each backend reports as Interrupted ------------------------------


def test_s3_faults() -> None:
    backend = s3.S3Backend("s3://b/repo", config_from_env(s3_env(DEAD, "b")))
    E = botocore.exceptions
    sent = backend._translate(E.ReadTimeoutError(endpoint_url=DEAD), "PUT s3://b/repo/k")
    reset = backend._translate(ConnectionResetError(104, "reset"), "PUT s3://b/repo/k")
    unsent = backend._translate(E.EndpointConnectionError(endpoint_url=DEAD), "PUT k")
    connect = backend._translate(E.ConnectTimeoutError(endpoint_url=DEAD), "PUT k")
    assert type(sent) is Interrupted and type(reset) is Interrupted
    assert type(unsent) is Transient and type(connect) is Transient


def test_gcs_faults() -> None:
    backend = gcs.GcsBackend("gs://b/repo", config_from_env(gcs_env(DEAD, "b")))
    sent = backend._translate(requests.exceptions.ReadTimeout("read"), "upload k")
    cut = backend._translate(requests.exceptions.ChunkedEncodingError("cut"), "upload k")
    unsent = backend._translate(requests.exceptions.ConnectTimeout("connect"), "upload k")
    assert type(sent) is Interrupted and type(cut) is Interrupted
    assert type(unsent) is Transient


def test_azure_faults() -> None:
    backend = azure.AzureBackend(
        "az://c/repo", config_from_env(azure_env(f"{DEAD}/devstoreaccount1", "c"))
    )
    sent = backend._translate(ServiceResponseError("no answer"), "PUT k")
    unsent = backend._translate(ServiceRequestError("refused"), "PUT k")
    assert type(sent) is Interrupted
    assert type(unsent) is Transient
