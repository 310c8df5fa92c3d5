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
import builtins
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobBlock, BlobServiceClient, ContentSettings

from ..errors import (
    AlreadyExists,
    ConfigError,
    ContainerNotFound,
    NotFound,
    PermissionDenied,
    StorageError,
    Transient,
)
from . import errormap as em
from .base import CREATE, IterStream, ObjectInfo, ObjectStream, check_key, check_mode
from .parts import Part, PartReader, part_size
from .retry import RetryPolicy, resuming_chunks

if TYPE_CHECKING:
    from ..config import Config

GET_CHUNK = 4 << 20
MAX_BLOCKS = 50_000
MAX_BLOCK = 4000 << 20
DELETE_BATCH = 256

#: (HTTP status, Azure error code) -> outcome; see walship/storage/errormap.py
#: and docs/storage.md. Codes are from Azure's "Blob service error codes" and
#: "Common REST API error codes". Only the answers of a failed create-only
#: condition are EXISTS: 409 BlobAlreadyExists (Put Blob, overwrite=False) and
#: 412 ConditionNotMet (If-None-Match: * on Put Block List). Every other 409
#: and 412 (leases, a container being deleted, immutability, pending copy)
#: says nothing about the key being taken.
_ERRORS: em.Table = {
    (409, "BlobAlreadyExists"): em.EXISTS,
    (412, "ConditionNotMet"): em.EXISTS,
    (404, "BlobNotFound"): em.NOT_FOUND,
    (404, "ContainerNotFound"): em.NO_CONTAINER,
    (404, em.ANY_CODE): em.NOT_FOUND,
    # 409s that clear by themselves within seconds
    (409, "AccountBeingCreated"): em.TRANSIENT,
    (409, "PendingCopyOperation"): em.TRANSIENT,
    (409, "SnapshotOperationRateExceeded"): em.TRANSIENT,
    # 409s that do not: ContainerBeingDeleted lasts until the container is
    # gone (garbage collection takes at least 30 s), then it is ContainerNotFound
    (409, "ContainerBeingDeleted"): em.ERROR,
    (409, "ContainerDisabled"): em.ERROR,
    (409, "LeaseAlreadyPresent"): em.ERROR,
    (409, "BlobImmutableDueToPolicy"): em.ERROR,
    (409, "BlobImmutableDueToLegalHold"): em.ERROR,
    (409, em.ANY_CODE): em.ERROR,
    # 412s other than ConditionNotMet are about leases (a lease is held on the
    # blob and walship sends no lease id)
    (412, em.ANY_CODE): em.ERROR,
    (408, em.ANY_CODE): em.TRANSIENT,
    (429, em.ANY_CODE): em.TRANSIENT,
    (em.ANY_STATUS, "ServerBusy"): em.TRANSIENT,
    (em.ANY_STATUS, "OperationTimedOut"): em.TRANSIENT,
    (em.ANY_STATUS, "InternalError"): em.TRANSIENT,
    (em.ANY_STATUS, "ServiceUnavailable"): em.TRANSIENT,
    (401, em.ANY_CODE): em.DENIED,
    (403, em.ANY_CODE): em.DENIED,
    (em.ANY_STATUS, "AuthenticationFailed"): em.DENIED,
    (em.ANY_STATUS, "AuthorizationFailure"): em.DENIED,
    (em.ANY_STATUS, "AuthorizationPermissionMismatch"): em.DENIED,
    (em.ANY_STATUS, "AuthorizationSourceIPMismatch"): em.DENIED,
    (em.ANY_STATUS, "AuthorizationProtocolMismatch"): em.DENIED,
    (em.ANY_STATUS, "AuthorizationResourceTypeMismatch"): em.DENIED,
    (em.ANY_STATUS, "AuthorizationServiceMismatch"): em.DENIED,
    (em.ANY_STATUS, "InsufficientAccountPermissions"): em.DENIED,
    (em.ANY_STATUS, "AccountIsDisabled"): em.DENIED,
    (em.ANY_STATUS, "KeyBasedAuthenticationNotPermitted"): em.DENIED,
}
_LEASE_CODES = ("LeaseIdMissing", "LeaseIdMismatchWithBlobOperation", "LeaseLost")


def _code_of(exc: HttpResponseError) -> str:
    """The service's error code: the SDK gives a StorageErrorCode member or a str
    (``str()`` of a member is ``"StorageErrorCode.X"``, not the code)."""
    raw = getattr(exc, "error_code", None) or ""
    return str(getattr(raw, "value", raw))


def parse_url(url: str) -> tuple[str, str]:
    rest = url.partition("://")[2]
    container, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    if not container:
        raise ConfigError(
            f"repository URL {url!r} names no container", hint="use az://CONTAINER[/PREFIX]"
        )
    return container, (prefix + "/" if prefix else "")


def to_azure_meta(meta: Mapping[str, str]) -> dict[str, str]:
    return {k.replace("-", "_"): v for k, v in meta.items()}


def from_azure_meta(meta: Mapping[str, str] | None) -> dict[str, str]:
    return {str(k).lower().replace("_", "-"): str(v) for k, v in (meta or {}).items()}


class AzureBackend:
    def __init__(self, url: str, config: Config) -> None:
        self.container, self.prefix = parse_url(url)
        self.url = f"az://{self.container}/{self.prefix}".rstrip("/")
        self.policy = RetryPolicy.from_config(config)
        self.block_size = int(getattr(config, "azure_block_size", 16 << 20))
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
        self._container_ok = False

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
    def _where(self, key: str | None = None) -> str:
        return f"az://{self.container}/{self.prefix}{key}" if key is not None else self.url

    def _denied_hint(self) -> str:
        return (
            f"check the Azure credentials walship runs with (as the postgres user for "
            f"archive/restore_command): key/SAS/identity must allow read, write, list and "
            f"delete on container {self.container!r} (e.g. Storage Blob Data Contributor)"
        )

    def _translate(self, exc: BaseException, what: str) -> BaseException:
        if isinstance(exc, HttpResponseError):
            code = _code_of(exc)
            status = int(getattr(exc, "status_code", 0) or 0)
            text = f"{what}: {code or status}"
            found = em.outcome(_ERRORS, status, code)
            if found == em.NO_CONTAINER:
                return ContainerNotFound(
                    f"{what}: container {self.container!r} does not exist",
                    hint="check `repo` / WALSHIP_REPO and the storage account, "
                    "or create the container",
                )
            if found == em.NOT_FOUND:
                return NotFound(f"{what}: does not exist")
            if found == em.EXISTS:
                return AlreadyExists(f"{what}: already exists")
            if found == em.TRANSIENT:
                return Transient(text)
            if found == em.DENIED:
                return PermissionDenied(text, hint=self._denied_hint())
            if code == "ContainerBeingDeleted":
                return StorageError(
                    f"{what}: container {self.container!r} is being deleted",
                    hint="wait until the deletion completes and create the container again, "
                    "or point repo at another container",
                )
            if code in _LEASE_CODES or code == "LeaseAlreadyPresent":
                return StorageError(
                    f"{text}: a lease is held on the blob",
                    hint="walship does not use leases: find what holds it, or break it "
                    "(az storage blob lease break)",
                )
            return StorageError(text)
        if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
            return Transient(f"{what}: {type(exc).__name__}: {exc}")
        name = type(exc).__name__
        if name in ("CredentialUnavailableError", "ClientAuthenticationError"):
            return PermissionDenied(f"{what}: {name}", hint=self._denied_hint())
        if isinstance(exc, (AzureError, OSError)):
            return Transient(f"{what}: {name}: {exc}")
        return exc

    def _attempt(self, fn: Callable[[], Any], what: str) -> Any:
        try:
            return fn()
        except (AzureError, OSError) as exc:
            raise self._translate(exc, what) from None

    def _call(
        self, fn: Callable[[], Any], what: str, on_retry: Callable[[Transient], None] | None = None
    ) -> Any:
        return self.policy.call(lambda: self._attempt(fn, what), what, on_retry=on_retry)

    def _full(self, key: str) -> str:
        check_key(key)
        return self.prefix + key

    # --- protocol ------------------------------------------------------------
    def head(self, key: str) -> ObjectInfo | None:
        blob = self.client.get_blob_client(self._full(key))
        try:
            props = self._call(lambda: blob.get_blob_properties(), f"HEAD {self._where(key)}")
        except NotFound:
            return None
        return self._info(key, props)

    @staticmethod
    def _info(key: str, props: Any) -> ObjectInfo:
        mtime = getattr(props, "last_modified", None)
        return ObjectInfo(
            key,
            int(props.size or 0),
            from_azure_meta(props.metadata),
            mtime.timestamp() if mtime is not None else None,
        )

    def put(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        mode: str = CREATE,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        check_mode(mode)
        full = self._full(key)
        meta = {str(k): str(v) for k, v in (metadata or {}).items()}
        reader = PartReader(chunks)
        first = reader.read(self.block_size)
        try:
            if reader.exhausted and first.data is not None:
                self._put_single(key, full, first, mode, meta)
            else:
                self._put_blocks(key, full, first, reader, mode, meta)
        finally:
            first.close()
        return ObjectInfo(key, reader.total, meta, None)

    def _put_single(self, key: str, full: str, part: Part, mode: str, meta: dict[str, str]) -> None:
        blob = self.client.get_blob_client(full)
        what = f"PUT {self._where(key)}"
        data = part.body()
        assert isinstance(data, bytes)  # a spooled part goes to _put_blocks
        md5 = part.md5()
        ambiguous: list[Transient] = []
        try:
            self._call(
                lambda: blob.upload_blob(
                    data,
                    length=len(data),
                    overwrite=mode != CREATE,
                    metadata=to_azure_meta(meta),
                    content_settings=ContentSettings(
                        content_type="application/octet-stream", content_md5=bytearray(md5)
                    ),
                    max_concurrency=1,
                ),
                what,
                ambiguous.append,
            )
        except AlreadyExists:
            if ambiguous:
                try:
                    props = self._call(blob.get_blob_properties, f"HEAD {self._where(key)}")
                    stored = props.content_settings.content_md5
                    if stored is not None and bytes(stored) == md5:
                        return  # our own earlier attempt landed; its answer was lost
                except NotFound:
                    pass
            raise AlreadyExists(f"{self._where(key)} already exists") from None

    def _put_blocks(
        self,
        key: str,
        full: str,
        first: Part,
        reader: PartReader,
        mode: str,
        meta: dict[str, str],
    ) -> None:
        blob = self.client.get_blob_client(full)
        where = self._where(key)
        tag = uuid.uuid4().hex
        ids: list[str] = []
        part: Part | None = first
        index = 0
        while part is not None:
            block_id = base64.b64encode(f"{tag}-{index:06d}".encode()).decode()
            current = part

            def stage(current: Part = current, block_id: str = block_id) -> Any:
                # bytes, or the spool file rewound for this attempt: streamed by the SDK
                return blob.stage_block(block_id, current.body(), length=current.size)

            self._call(stage, f"stage block {index} of {where}")
            ids.append(block_id)
            if current is not first:
                current.close()
            index += 1
            if reader.exhausted:
                part = None
            else:
                if index >= MAX_BLOCKS:
                    raise StorageError(
                        f"{where}: object exceeds {MAX_BLOCKS} blocks",
                        hint="raise azure_block_size",
                    )
                part = reader.read(part_size(self.block_size, index, MAX_BLOCK))
        ambiguous: list[Transient] = []
        settings = ContentSettings(content_type="application/octet-stream")
        if reader.exhausted and len(ids) == 1:
            settings.content_md5 = bytearray(first.md5())  # as a Put Blob would store
        kwargs: dict[str, Any] = {"metadata": to_azure_meta(meta), "content_settings": settings}
        if mode == CREATE:
            kwargs["match_condition"] = MatchConditions.IfMissing  # If-None-Match: *
        try:
            self._call(
                lambda: blob.commit_block_list([BlobBlock(block_id=i) for i in ids], **kwargs),
                f"commit {len(ids)} blocks of {where}",
                ambiguous.append,
            )
        except AlreadyExists:
            if ambiguous:
                try:
                    committed, _ = self._call(
                        lambda: blob.get_block_list("committed"), f"block list of {where}"
                    )
                    if [b.id for b in committed] == ids:
                        return  # our own commit landed; its answer was lost
                except NotFound:
                    pass
            raise AlreadyExists(f"{where} already exists") from None

    def open(self, key: str) -> ObjectStream:
        full = self._full(key)
        where = self._where(key)
        what = f"GET {where}"
        blob = self.client.get_blob_client(full)
        downloader = self._call(lambda: blob.download_blob(max_concurrency=1), what)
        props = downloader.properties
        info = self._info(key, props)
        etag = props.etag

        def body(dl: Any) -> Iterator[bytes]:
            try:
                for chunk in dl.chunks():
                    if chunk:
                        yield bytes(chunk)
            except (AzureError, OSError) as exc:
                err = self._translate(exc, what)
                raise (err if isinstance(err, StorageError) else Transient(str(exc))) from None

        def open_at(pos: int) -> Iterator[bytes]:
            dl = self._attempt(
                lambda: blob.download_blob(
                    offset=pos,
                    max_concurrency=1,
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                ),
                what,
            )
            return body(dl)

        chunks = resuming_chunks(body(downloader), open_at, info.size, self.policy, where)
        return IterStream(info, em.pinned_read(chunks, where))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        strip = len(self.prefix)
        what = f"LIST {self._where(prefix)}"
        token: str | None = None
        while True:

            def page(token: str | None = token) -> tuple[builtins.list[Any], str | None]:
                pager: Any = self.client.list_blobs(
                    name_starts_with=self.prefix + prefix, results_per_page=1000
                ).by_page(continuation_token=token)
                items = list(next(pager, []))
                return items, pager.continuation_token

            items, token = self._call(page, what)
            for item in items:
                mtime = getattr(item, "last_modified", None)
                yield ObjectInfo(
                    str(item.name)[strip:],
                    int(item.size or 0),
                    None,
                    mtime.timestamp() if mtime is not None else None,
                )
            if not token:
                return

    def delete(self, keys: Iterable[str]) -> None:
        batch: builtins.list[str] = []
        for key in keys:
            batch.append(self._full(key))
            if len(batch) == DELETE_BATCH:
                self._delete_batch(batch)
                batch = []
        if batch:
            self._delete_batch(batch)

    def _delete_batch(self, names: builtins.list[str]) -> None:
        what = f"DELETE {len(names)} blobs in {self.url}"

        def run() -> None:
            responses = self.client.delete_blobs(*names, raise_on_any_failure=False)
            failed = [r for r in responses if r.status_code not in (200, 202, 404)]
            if failed:
                status = failed[0].status_code
                text = f"{what}: {len(failed)} failed (HTTP {status})"
                if status in (401, 403):
                    raise PermissionDenied(text, hint=self._denied_hint())
                if status in (408, 429) or status >= 500:
                    raise Transient(text)
                raise StorageError(text)

        self._call(run, what)

    def close(self) -> None:
        self.service.close()


def open_backend(url: str, config: Config) -> AzureBackend:
    return AzureBackend(url, config)
