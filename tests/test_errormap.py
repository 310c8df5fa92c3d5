"""The (status, code) -> outcome tables of the remote backends (issue 10, item 5).

Only the answers a failed create-only condition gives may be EXISTS: any
other answer read as "exists" reaches push's duplicate check and could end as
a false conflict. Each table is checked through the backend's own translation
of the SDK's real exception types (no server needed).
"""

from __future__ import annotations

import json
from typing import Any

import botocore.exceptions
import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import StorageErrorCode
from servers.plugin import azure_env, config_from_env, gcs_env, s3_env

from walship.errors import (
    AlreadyExists,
    ConfigError,
    ContainerNotFound,
    NotFound,
    PermissionDenied,
    StorageError,
    Transient,
)
from walship.storage import azure, gcs, s3
from walship.storage import errormap as em

CLASS = {
    em.EXISTS: AlreadyExists,
    em.NOT_FOUND: NotFound,
    em.NO_CONTAINER: ContainerNotFound,
    em.DENIED: PermissionDenied,
    em.TRANSIENT: Transient,
    em.CONFIG: ConfigError,
    em.ERROR: StorageError,
}
TABLES = {"s3": s3._ERRORS, "gcs": gcs._ERRORS, "azure": azure._ERRORS}
#: the create-only condition's own "the key is taken" answers, per store
EXISTS = {
    "s3": {(412, "PreconditionFailed"), (412, "412"), (412, "")},
    "gcs": {(412, "conditionNotMet"), (412, "")},
    "azure": {(409, "BlobAlreadyExists"), (412, "ConditionNotMet")},
}
DEAD = "http://127.0.0.1:9"  # never contacted: the backends connect lazily


def test_lookup_order() -> None:
    table: em.Table = {
        (409, "A"): em.EXISTS,
        (em.ANY_STATUS, "A"): em.DENIED,
        (em.ANY_STATUS, "B"): em.TRANSIENT,
        (409, em.ANY_CODE): em.ERROR,
    }
    assert em.outcome(table, 409, "A") == em.EXISTS  # exact first
    assert em.outcome(table, 400, "A") == em.DENIED  # then the code at any status
    assert em.outcome(table, 409, "B") == em.TRANSIENT  # code beats the status rule
    assert em.outcome(table, 409, "C") == em.ERROR  # then the status rule
    assert em.outcome(table, 503, "C") == em.TRANSIENT  # then 5xx
    assert em.outcome(table, 400, "C") == em.ERROR  # then an error


@pytest.mark.parametrize("store", sorted(TABLES))
def test_only_the_condition_answers_are_exists(store: str) -> None:
    table = TABLES[store]
    assert set(table.values()) <= set(em.OUTCOMES)
    exists = {key for key, value in table.items() if value == em.EXISTS}
    assert exists == EXISTS[store]
    # the wildcard rule for 409 and 412 is never "exists"
    for status in (409, 412):
        assert em.outcome(table, status, "SomethingElse") != em.EXISTS


# --- each backend's translation, through the SDK's own exception types ---------------


def _azure() -> azure.AzureBackend:
    return azure.AzureBackend(
        "az://c/repo", config_from_env(azure_env(f"{DEAD}/devstoreaccount1", "c"))
    )


def _azure_error(status: int, code: Any) -> HttpResponseError:
    exc = HttpResponseError(message=f"HTTP {status}")
    exc.status_code = status
    exc.error_code = code
    return exc


def _s3_error(status: int, code: str) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )


def _gcs_body(status: int, reason: str) -> bytes:
    errors = [{"reason": reason, "message": "m"}] if reason else []
    return json.dumps({"error": {"code": status, "message": "m", "errors": errors}}).encode()


def _rows(store: str) -> list[tuple[int, str, str]]:
    """Concrete (status, code, outcome) rows of a table, wildcards filled in."""
    out = []
    for (status, code), value in TABLES[store].items():
        out.append((status or 400, "Unlisted" if code == em.ANY_CODE else code, value))
    return out


@pytest.mark.parametrize(("status", "code", "expected"), _rows("azure"))
def test_azure_translation(status: int, code: str, expected: str) -> None:
    backend = _azure()
    for raw in (code, *(m for m in StorageErrorCode if m.value == code)):
        err = backend._translate(_azure_error(status, raw), "PUT az://c/repo/k")
        assert type(err) is CLASS[expected], (status, raw, err)


@pytest.mark.parametrize(("status", "code", "expected"), _rows("s3"))
def test_s3_translation(status: int, code: str, expected: str) -> None:
    backend = s3.S3Backend("s3://b/repo", config_from_env(s3_env(DEAD, "b")))
    err = backend._translate(_s3_error(status, code), "PUT s3://b/repo/k")
    assert type(err) is CLASS[expected], (status, code, err)


@pytest.mark.parametrize(("status", "code", "expected"), _rows("gcs"))
def test_gcs_translation(status: int, code: str, expected: str) -> None:
    backend = gcs.GcsBackend("gs://b/repo", config_from_env(gcs_env(DEAD, "b")))
    body = _gcs_body(status, code) if code else b""
    err = backend._error_for(status, body, "upload gs://b/repo/k")
    assert type(err) is CLASS[expected], (status, code, err)


@pytest.mark.parametrize(
    ("code", "status", "words"),
    [
        (StorageErrorCode.LEASE_ID_MISSING, 412, "lease"),
        (StorageErrorCode.LEASE_ALREADY_PRESENT, 409, "lease"),
        (StorageErrorCode.CONTAINER_BEING_DELETED, 409, "being deleted"),
        (StorageErrorCode.BLOB_ARCHIVED, 409, "BlobArchived"),
    ],
)
def test_azure_non_existence_conflicts_are_named(
    code: StorageErrorCode, status: int, words: str
) -> None:
    """A 409/412 that is not about existence: a final error naming the cause."""
    err = _azure()._translate(_azure_error(status, code), "PUT az://c/repo/k")
    assert type(err) is StorageError
    assert words in err.one_line()
    assert "StorageErrorCode." not in err.one_line()


def test_s3_conditional_request_conflict_is_retried_not_exists() -> None:
    backend = s3.S3Backend("s3://b/repo", config_from_env(s3_env(DEAD, "b")))
    assert isinstance(
        backend._translate(_s3_error(409, "ConditionalRequestConflict"), "x"), Transient
    )
    assert type(backend._translate(_s3_error(409, "BucketNotEmpty"), "x")) is StorageError


def test_gcs_412_other_than_condition_is_an_error() -> None:
    backend = gcs.GcsBackend("gs://b/repo", config_from_env(gcs_env(DEAD, "b")))
    err = backend._error_for(412, _gcs_body(412, "orgPolicyConstraintFailed"), "upload x")
    assert type(err) is StorageError and "orgPolicyConstraintFailed" in err.one_line()
