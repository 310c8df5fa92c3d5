"""Azure Blob Storage (``az://container/prefix``), via azure-storage-blob.

The only module that imports the Azure SDK; the registry imports it only for
the ``az`` scheme. The SDK's own retries are off (``retry_total=0``):
:mod:`.retry` retries transient faults with one policy for every backend.

Credentials, first that is set: ``azure_connection_string``;
``azure_account_url`` or ``azure_account_name`` with ``azure_account_key``
or ``azure_sas_token``; else a token credential
(``azure.identity.DefaultAzureCredential``) when azure-identity is installed.

- Create-only puts send ``If-None-Match: *`` (Put Blob with overwrite=False,
  and on Put Block List); 409 BlobAlreadyExists / 412 ConditionNotMet ->
  AlreadyExists, and no other answer (the table ``_ERRORS``).
- Objects below ``azure_block_size`` are one Put Blob; larger ones are staged
  as blocks (one block held: in memory up to 64 MiB, else in its spool
  file, which is what is sent) and committed at the end: uncommitted blocks
  are never visible, so a failed upload leaves no object. The SDK reads a
  Put Blob's body into memory, so a spooled object below the block size is
  one staged block and a Put Block List carrying its Content-MD5 instead.
- A create retried after an ambiguous failure checks whether the stored
  object is its own (Content-MD5 of a Put Blob, or the committed block ids).
- Metadata names must be C# identifiers, so ``-`` is stored as ``_`` and
  mapped back on read (walship's own keys are ``[a-z0-9-]``).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, HttpResponseError, ServiceRequestError
from azure.storage.blob import BlobBlock, BlobServiceClient, ContentSettings

from ..errors import ConfigError, PermissionDenied, StorageError, Transient
from . import errormap as em
from .base import CREATE, ObjectInfo
from .client import DeleteAnswer, Entry, RemoteBackend
from .parts import Part
from .retry import IDEMPOTENT, SAFE, Interrupted

if TYPE_CHECKING:
    from ..config import Config

GET_CHUNK = 4 << 20

#: (HTTP status, Azure error code) -> outcome; see walship/storage/errormap.py
#: and docs/storage.md. Codes are from Azure's "Blob service error codes" and
#: "Common REST API error codes". Only the answers of a failed create-only
#: condition are EXISTS: 409 BlobAlreadyExists (Put Blob, overwrite=False) and
#: 412 ConditionNotMet (If-None-Match: * on Put Block List). Every other 409
#: and 412 (leases, a container being deleted, immutability, pending copy)
#: says nothing about the key being taken.
_ERRORS = em.table(
    em.codes(em.EXISTS, "BlobAlreadyExists", status=409),
    em.codes(em.EXISTS, "ConditionNotMet", status=412),
    em.codes(em.NOT_FOUND, "BlobNotFound", em.ANY_CODE, status=404),
    em.codes(em.NO_CONTAINER, "ContainerNotFound", status=404),
    # 409s that clear by themselves within seconds
    em.codes(
        em.TRANSIENT,
        "AccountBeingCreated",
        "PendingCopyOperation",
        "SnapshotOperationRateExceeded",
        status=409,
    ),
    # 409s that do not: ContainerBeingDeleted lasts until the container is
    # gone (garbage collection takes at least 30 s), then it is ContainerNotFound;
    # and 412s other than ConditionNotMet are about leases (a lease is held on
    # the blob and walship sends no lease id)
    em.codes(
        em.ERROR,
        "ContainerBeingDeleted",
        "ContainerDisabled",
        "LeaseAlreadyPresent",
        "BlobImmutableDueToPolicy",
        "BlobImmutableDueToLegalHold",
        em.ANY_CODE,
        status=409,
    ),
    em.codes(em.ERROR, em.ANY_CODE, status=412),
    em.codes(
        em.TRANSIENT, "ServerBusy", "OperationTimedOut", "InternalError", "ServiceUnavailable"
    ),
    em.codes(
        em.DENIED,
        "AuthenticationFailed",
        "AuthorizationFailure",
        "AuthorizationPermissionMismatch",
        "AuthorizationSourceIPMismatch",
        "AuthorizationProtocolMismatch",
        "AuthorizationResourceTypeMismatch",
        "AuthorizationServiceMismatch",
        "InsufficientAccountPermissions",
        "AccountIsDisabled",
        "KeyBasedAuthenticationNotPermitted",
    ),
)
_LEASE_CODES = (
    "LeaseIdMissing",
    "LeaseIdMismatchWithBlobOperation",
    "LeaseLost",
    "LeaseAlreadyPresent",
)


def _code_of(exc: HttpResponseError) -> str:
    """The service's error code: the SDK gives a StorageErrorCode member or a str
    (``str()`` of a member is ``"StorageErrorCode.X"``, not the code)."""
    raw = getattr(exc, "error_code", None) or ""
    return str(getattr(raw, "value", raw))


def to_azure_meta(meta: Mapping[str, str]) -> dict[str, str]:
    return {k.replace("-", "_"): v for k, v in meta.items()}


def from_azure_meta(meta: Mapping[str, str] | None) -> dict[str, str]:
    return {str(k).lower().replace("_", "-"): str(v) for k, v in (meta or {}).items()}


class AzureBackend(RemoteBackend):
    SCHEME = "az"
    NOUN = "container"
    PART_SETTING = "azure_block_size"
    ERRORS = _ERRORS
    SDK_ERRORS = (AzureError, OSError)
    NO_CONTAINER_HINT = (
        "check `repo` / WALSHIP_REPO and the storage account, or create the container"
    )
    MAX_PARTS = 50_000  # blocks of a block blob
    MAX_PART = 4000 << 20
    DELETE_BATCH = 256  # blob batch

    def __init__(self, url: str, config: Config) -> None:
        super().__init__(url, config)
        self.part_size = self.block_size = int(getattr(config, "azure_block_size", 16 << 20))
        kwargs: dict[str, Any] = {
            "retry_total": 0,
            "connection_timeout": self.policy.connect_timeout,
            "read_timeout": self.policy.attempt_timeout,
            "max_single_put_size": max(64 << 20, self.block_size + 1),
            "max_single_get_size": GET_CHUNK,
            "max_chunk_get_size": GET_CHUNK,
        }
        conn = getattr(config, "azure_connection_string", None)
        try:
            if conn:
                self.service = BlobServiceClient.from_connection_string(conn, **kwargs)
            else:
                account_url = getattr(config, "azure_account_url", None)
                name = getattr(config, "azure_account_name", None)
                if not account_url:
                    if not name:
                        raise ConfigError(
                            f"{self.url} needs an Azure account",
                            hint="set azure_account_name (or azure_account_url, or "
                            "azure_connection_string)",
                        )
                    account_url = f"https://{name}.blob.core.windows.net"
                self.service = BlobServiceClient(
                    account_url, credential=self._credential(config, name), **kwargs
                )
        except ValueError as exc:
            raise ConfigError(
                f"bad Azure settings for {self.url}: {type(exc).__name__}",
                hint="check azure_connection_string / azure_account_url (values not shown)",
            ) from None
        self.client = self.service.get_container_client(self.container)
        # every Azure 404 names its cause (x-ms-error-code: BlobNotFound or
        # ContainerNotFound), so a missing container needs no probe
        self._container_ok = True

    @property
    def container(self) -> str:
        return self.bucket

    def _credential(self, config: Config, name: str | None) -> Any:
        key = getattr(config, "azure_account_key", None)
        if key:
            if not name:
                raise ConfigError(
                    "azure_account_key needs azure_account_name", hint="set azure_account_name"
                )
            return {"account_name": name, "account_key": key}
        sas = getattr(config, "azure_sas_token", None)
        if sas:
            return sas.lstrip("?")
        try:
            from azure.identity import DefaultAzureCredential
        except ImportError:
            raise ConfigError(
                f"no Azure credentials for {self.url}",
                hint="set azure_connection_string, azure_account_key or azure_sas_token, or "
                "install azure-identity for managed identity / az login credentials",
            ) from None
        return DefaultAzureCredential()

    # --- errors ------------------------------------------------------------
    def _denied_hint(self) -> str:
        return (
            f"check the Azure credentials walship runs with (as the postgres user for "
            f"archive/restore_command): key/SAS/identity must allow read, write, list and "
            f"delete on container {self.container!r} (e.g. Storage Blob Data Contributor)"
        )

    def _final_error(self, code: str, text: str, what: str) -> StorageError:
        if code == "ContainerBeingDeleted":
            return StorageError(
                f"{what}: container {self.container!r} is being deleted",
                hint="wait until the deletion completes and create the container again, "
                "or point repo at another container",
            )
        if code in _LEASE_CODES:
            return StorageError(
                f"{text}: a lease is held on the blob",
                hint="walship does not use leases: find what holds it, or break it "
                "(az storage blob lease break)",
            )
        return StorageError(text)

    def _translate(self, exc: BaseException, what: str) -> BaseException:
        if isinstance(exc, HttpResponseError):
            status = int(getattr(exc, "status_code", 0) or 0)
            return self._answer_error(status, _code_of(exc), what)
        name = type(exc).__name__
        if isinstance(exc, ServiceRequestError):  # not sent
            return Transient(f"{what}: {name}: {exc}")
        if name in ("CredentialUnavailableError", "ClientAuthenticationError"):
            return PermissionDenied(f"{what}: {name}", hint=self._denied_hint())
        if isinstance(exc, (AzureError, OSError)):  # ServiceResponseError: sent, no answer
            return Interrupted(f"{what}: {name}: {exc}")
        return exc

    # --- reads -----------------------------------------------------------------
    def _head(self, full: str, what: str) -> Any:
        return self.client.get_blob_client(full).get_blob_properties()

    def _info(self, key: str, answer: Any) -> ObjectInfo:
        mtime = getattr(answer, "last_modified", None)
        return ObjectInfo(
            key,
            int(answer.size or 0),
            from_azure_meta(answer.metadata),
            mtime.timestamp() if mtime is not None else None,
        )

    def _get(self, key: str, full: str, what: str) -> tuple[Any, ObjectInfo, str | None]:
        downloader = self.client.get_blob_client(full).download_blob(max_concurrency=1)
        props = downloader.properties
        return downloader, self._info(key, props), props.etag

    def _get_range(self, full: str, pos: int, version: str | None, what: str) -> Any:
        return self.client.get_blob_client(full).download_blob(
            offset=pos,
            max_concurrency=1,
            etag=version,
            match_condition=MatchConditions.IfNotModified,
        )

    def _body(self, answer: Any, what: str) -> Iterator[bytes]:
        try:
            for chunk in answer.chunks():
                if chunk:
                    yield bytes(chunk)
        except (AzureError, OSError) as exc:
            err = self._translate(exc, what)
            raise (err if isinstance(err, StorageError) else Transient(str(exc))) from None

    def _list_page(
        self, full_prefix: str, token: str | None, what: str
    ) -> tuple[list[Entry], str | None]:
        pager: Any = self.client.list_blobs(
            name_starts_with=full_prefix, results_per_page=1000
        ).by_page(continuation_token=token)
        entries: list[Entry] = []
        for item in next(pager, []):
            mtime = getattr(item, "last_modified", None)
            entries.append(
                (
                    str(item.name),
                    int(item.size or 0),
                    mtime.timestamp() if mtime is not None else None,
                )
            )
        return entries, pager.continuation_token or None

    # --- writes ----------------------------------------------------------------
    def _one_request(self, part: Part) -> bool:
        # the SDK reads a Put Blob's body into memory: a spooled part is one
        # staged block and a Put Block List carrying its Content-MD5 instead
        return part.in_memory

    def _put_one(self, full: str, part: Part, mode: str, meta: dict[str, str], what: str) -> object:
        data = part.data
        assert data is not None  # a spooled part is staged (_one_request)
        return self.client.get_blob_client(full).upload_blob(
            data,
            length=len(data),
            overwrite=mode != CREATE,
            metadata=to_azure_meta(meta),
            content_settings=ContentSettings(
                content_type="application/octet-stream", content_md5=bytearray(part.md5())
            ),
            max_concurrency=1,
        )

    def _holds_one(self, full: str, part: Part, what: str) -> bool:
        blob = self.client.get_blob_client(full)
        stored = self._call(blob.get_blob_properties, what, SAFE).content_settings.content_md5
        return stored is not None and bytes(stored) == part.md5()

    def _start_upload(self, full: str, mode: str, meta: dict[str, str], where: str) -> Any:
        return self.client.get_blob_client(full), uuid.uuid4().hex

    def _send_part(
        self, upload: Any, index: int, part: Part, offset: int, last: bool, where: str
    ) -> str:
        blob, tag = upload
        block_id = base64.b64encode(f"{tag}-{index:06d}".encode()).decode()

        # bytes, or the spool file rewound for this attempt: streamed by the SDK
        def body() -> bytes | BinaryIO:
            data = part.data
            return data if data is not None else part.body()

        self._call(
            lambda: blob.stage_block(block_id, body(), length=part.size),
            f"stage block {index} of {where}",
            IDEMPOTENT,
        )
        return block_id

    def _commit(
        self,
        upload: Any,
        tokens: list[str],
        first: Part,
        mode: str,
        meta: dict[str, str],
        what: str,
    ) -> object:
        settings = ContentSettings(content_type="application/octet-stream")
        if len(tokens) == 1:
            settings.content_md5 = bytearray(first.md5())  # as a Put Blob would store
        kwargs: dict[str, Any] = {"metadata": to_azure_meta(meta), "content_settings": settings}
        if mode == CREATE:
            kwargs["match_condition"] = MatchConditions.IfMissing  # If-None-Match: *
        return upload[0].commit_block_list([BlobBlock(block_id=i) for i in tokens], **kwargs)

    def _holds_parts(self, upload: Any, tokens: list[str], what: str) -> bool:
        committed, _ = self._call(lambda: upload[0].get_block_list("committed"), what, SAFE)
        return [b.id for b in committed] == tokens

    def _delete_request(self, fulls: Sequence[str], what: str) -> list[DeleteAnswer]:
        answers = self.client.delete_blobs(*fulls, raise_on_any_failure=False)
        return [
            (
                int(r.status_code),
                str((getattr(r, "headers", None) or {}).get("x-ms-error-code", "")),
                "",
            )
            for r in answers
        ]

    def close(self) -> None:
        self.service.close()


def open_backend(url: str, config: Config) -> AzureBackend:
    return AzureBackend(url, config)
