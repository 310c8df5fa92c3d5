"""Amazon S3 and S3-compatible stores (``s3://bucket/prefix``), via botocore.

boto3's credential chain and client come from botocore, which boto3 (the
``walship[s3]`` extra) installs; importing boto3 itself would only add time.
The only module that imports botocore; the registry imports it only for
the ``s3`` scheme. botocore's own retries are off: :mod:`.retry` retries
transient faults with one policy for every backend.

- Create-only puts send ``If-None-Match: *`` on PutObject and on
  CompleteMultipartUpload; the store decides (412 PreconditionFailed ->
  AlreadyExists, and no other answer: the table ``_ERRORS``).
- Objects below ``s3_part_size`` are one PUT; larger ones are multipart
  uploads with growing part sizes (:mod:`.parts`), aborted on any failure so
  no partial object is ever visible.
- A create retried after an ambiguous failure (the first attempt may have
  landed) checks the stored ETag against the MD5 of what it sent: its own
  earlier write is success, not AlreadyExists.
- Reads stream in 1 MiB chunks and resume with a ranged, ``If-Match`` GET
  after a fault mid-body.
- A HEAD 404 does not say whether the key or the bucket is missing; the
  bucket is then checked once per process (missing bucket ->
  ContainerNotFound, never NotFound).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import botocore.exceptions
import botocore.session
from botocore.config import Config as BotoConfig

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
from .parts import Part, PartReader, md5_of, part_size
from .retry import RetryPolicy, resuming_chunks

if TYPE_CHECKING:
    from ..config import Config

CHUNK = 1 << 20
MAX_PARTS = 10_000
MAX_PART = 5 << 30
DELETE_BATCH = 1000

#: (HTTP status, S3 error code) -> outcome; see walship/storage/errormap.py and
#: docs/storage.md. The only EXISTS answer is 412 PreconditionFailed, what
#: PutObject and CompleteMultipartUpload answer when ``If-None-Match: *``
#: fails (also without a body, code "412"). 409 ConditionalRequestConflict
#: (a concurrent conditional write or a delete in flight) and OperationAborted
#: are retried; no 409 means "exists".
_ERRORS: em.Table = {
    (412, "PreconditionFailed"): em.EXISTS,
    (412, "412"): em.EXISTS,
    (412, ""): em.EXISTS,
    (412, em.ANY_CODE): em.ERROR,
    (em.ANY_STATUS, "NoSuchBucket"): em.NO_CONTAINER,
    (em.ANY_STATUS, "NoSuchKey"): em.NOT_FOUND,
    (em.ANY_STATUS, "NoSuchVersion"): em.NOT_FOUND,
    (404, "NoSuchUpload"): em.NOT_FOUND,
    (404, "404"): em.NOT_FOUND,
    (404, ""): em.NOT_FOUND,
    (409, "ConditionalRequestConflict"): em.TRANSIENT,
    (409, "OperationAborted"): em.TRANSIENT,
    (409, em.ANY_CODE): em.ERROR,
    (408, em.ANY_CODE): em.TRANSIENT,
    (429, em.ANY_CODE): em.TRANSIENT,
    **{
        (em.ANY_STATUS, code): em.TRANSIENT
        for code in (
            "SlowDown",
            "ServiceUnavailable",
            "InternalError",
            "RequestTimeout",
            "RequestTimeoutException",
            "Throttling",
            "ThrottlingException",
            "ThrottledException",
            "RequestThrottled",
            "RequestLimitExceeded",
            "TooManyRequestsException",
            "ProvisionedThroughputExceededException",
            "BandwidthLimitExceeded",
            "EC2ThrottledException",
            "IDPCommunicationError",
            "PriorRequestNotComplete",
        )
    },
    (401, em.ANY_CODE): em.DENIED,
    (403, em.ANY_CODE): em.DENIED,
    **{
        (em.ANY_STATUS, code): em.DENIED
        for code in (
            "AccessDenied",
            "AllAccessDisabled",
            "AccountProblem",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "ExpiredToken",
            "InvalidToken",
            "TokenRefreshRequired",
            "InvalidSecurity",
            "Forbidden",
            "RequestTimeTooSkewed",
            "InvalidObjectState",
        )
    },
    (em.ANY_STATUS, "PermanentRedirect"): em.CONFIG,
    (em.ANY_STATUS, "AuthorizationHeaderMalformed"): em.CONFIG,
}


def parse_url(url: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ("bucket", "a/b/")."""
    rest = url.partition("://")[2]
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    if not bucket:
        raise ConfigError(
            f"repository URL {url!r} names no bucket", hint="use s3://BUCKET[/PREFIX]"
        )
    return bucket, (prefix + "/" if prefix else "")


class S3Backend:
    def __init__(self, url: str, config: Config) -> None:
        self.bucket, self.prefix = parse_url(url)
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.policy = RetryPolicy.from_config(config)
        self.part_size = int(getattr(config, "s3_part_size", 16 << 20))
        boto_config = BotoConfig(
            region_name=getattr(config, "s3_region", None),
            connect_timeout=self.policy.connect_timeout,
            read_timeout=self.policy.attempt_timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},
            s3={
                "addressing_style": "path"
                if getattr(config, "s3_force_path_style", False)
                else "auto"
            },
            request_checksum_calculation=getattr(config, "s3_checksum", "when_required"),
            response_checksum_validation="when_required",
            max_pool_connections=16,
            tcp_keepalive=True,
        )
        try:
            # botocore directly: boto3 adds import time and nothing this module uses
            session = _session(getattr(config, "s3_profile", None))
            self.client: Any = session.create_client(
                "s3", endpoint_url=getattr(config, "s3_endpoint_url", None), config=boto_config
            )
        except botocore.exceptions.ProfileNotFound as exc:
            raise ConfigError(f"S3 profile not found: {exc}", hint="check s3_profile") from None
        except ValueError as exc:
            raise ConfigError(f"bad S3 setting: {exc}", hint="check s3_endpoint_url") from None
        self._put_extra: dict[str, str] = {}
        sse = getattr(config, "s3_sse", "none")
        if sse and sse != "none":
            self._put_extra["ServerSideEncryption"] = sse
            kms = getattr(config, "s3_sse_kms_key_id", None)
            if sse == "aws:kms" and kms:
                self._put_extra["SSEKMSKeyId"] = kms
        storage_class = getattr(config, "s3_storage_class", None)
        if storage_class:
            self._put_extra["StorageClass"] = storage_class
        self._bucket_ok = False

    # --- errors ------------------------------------------------------------
    def _where(self, key: str | None = None) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}" if key is not None else self.url

    def _denied_hint(self) -> str:
        return (
            f"check the AWS credentials walship runs with (as the postgres user for "
            f"archive/restore_command) and that they allow s3:GetObject, s3:PutObject, "
            f"s3:ListBucket and s3:DeleteObject on bucket {self.bucket!r}"
        )

    def _translate(self, exc: BaseException, what: str) -> BaseException:
        """An SDK exception -> walship's error (or the exception itself if not ours)."""
        E = botocore.exceptions
        if isinstance(exc, E.ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            text = f"{what}: {code or status} {err.get('Message', '')}".strip()
            found = em.outcome(_ERRORS, status, code)
            if found == em.NO_CONTAINER:
                return ContainerNotFound(
                    f"{what}: bucket {self.bucket!r} does not exist",
                    hint="check `repo` / WALSHIP_REPO and s3_endpoint_url/s3_region, "
                    "or create the bucket",
                )
            if found == em.NOT_FOUND:
                return NotFound(f"{what}: does not exist")
            if found == em.EXISTS:
                return AlreadyExists(f"{what}: already exists")
            if found == em.TRANSIENT:
                return Transient(text)
            if found == em.DENIED:
                return PermissionDenied(text, hint=self._denied_hint())
            if found == em.CONFIG:
                return ConfigError(text, hint="set s3_region to the bucket's region")
            return StorageError(text)
        if isinstance(exc, (E.NoCredentialsError, E.PartialCredentialsError)):
            return PermissionDenied(
                f"{what}: no AWS credentials found",
                hint="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile (s3_profile), "
                "or an instance/task role, for the user walship runs as",
            )
        if isinstance(exc, E.CredentialRetrievalError):
            return PermissionDenied(f"{what}: {exc}", hint=self._denied_hint())
        if isinstance(exc, E.NoRegionError):
            return ConfigError(f"{what}: no region", hint="set s3_region")
        if isinstance(exc, (E.HTTPClientError, E.ConnectionError, E.IncompleteReadError)):
            return Transient(f"{what}: {type(exc).__name__}: {exc}")
        if isinstance(exc, OSError):
            return Transient(f"{what}: {type(exc).__name__}: {exc}")
        return exc

    def _attempt(self, fn: Callable[[], Any], what: str) -> Any:
        try:
            return fn()
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as exc:
            raise self._translate(exc, what) from None

    def _call(
        self,
        fn: Callable[[], Any],
        what: str,
        on_retry: Callable[[Transient], None] | None = None,
    ) -> Any:
        return self.policy.call(lambda: self._attempt(fn, what), what, on_retry=on_retry)

    def _full(self, key: str) -> str:
        check_key(key)
        return self.prefix + key

    def _check_bucket(self) -> None:
        """Raise ContainerNotFound / PermissionDenied unless the bucket is there."""
        if self._bucket_ok:
            return
        what = f"HEAD bucket s3://{self.bucket}"
        try:
            self._call(lambda: self.client.head_bucket(Bucket=self.bucket), what)
        except NotFound:
            raise ContainerNotFound(
                f"bucket {self.bucket!r} does not exist",
                hint="check `repo` / WALSHIP_REPO and s3_endpoint_url/s3_region, "
                "or create the bucket",
            ) from None
        self._bucket_ok = True

    # --- protocol ------------------------------------------------------------
    def head(self, key: str) -> ObjectInfo | None:
        full = self._full(key)
        what = f"HEAD {self._where(key)}"
        try:
            resp = self._call(lambda: self.client.head_object(Bucket=self.bucket, Key=full), what)
        except NotFound:
            self._check_bucket()
            return None
        self._bucket_ok = True
        return self._info(key, resp)

    @staticmethod
    def _info(key: str, resp: Mapping[str, Any]) -> ObjectInfo:
        mtime = resp.get("LastModified")
        meta = {str(k).lower(): str(v) for k, v in (resp.get("Metadata") or {}).items()}
        return ObjectInfo(
            key,
            int(resp.get("ContentLength", 0)),
            meta,
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
        first = reader.read(self.part_size)
        try:
            if reader.exhausted:
                self._put_single(key, full, first, mode, meta)
            else:
                self._put_multipart(key, full, first, reader, mode, meta)
        finally:
            first.close()
        self._bucket_ok = True
        return ObjectInfo(key, reader.total, meta, None)

    def _put_single(self, key: str, full: str, part: Part, mode: str, meta: dict[str, str]) -> None:
        what = f"PUT {self._where(key)}"
        ambiguous: list[Transient] = []

        def put() -> Any:
            kwargs: dict[str, Any] = dict(
                Bucket=self.bucket, Key=full, Body=part.body(), Metadata=meta, **self._put_extra
            )
            if mode == CREATE:
                kwargs["IfNoneMatch"] = "*"
            return self.client.put_object(**kwargs)

        try:
            self._call(put, what, on_retry=ambiguous.append)
        except AlreadyExists:
            if ambiguous and self._stored_etag(full) == part.md5_hex():
                return  # our own earlier attempt landed; its response was lost
            raise AlreadyExists(f"{self._where(key)} already exists") from None
        except NotFound:
            self._check_bucket()
            raise

    def _stored_etag(self, full: str) -> str | None:
        try:
            resp = self._call(
                lambda: self.client.head_object(Bucket=self.bucket, Key=full),
                f"HEAD {self._where(full[len(self.prefix) :])}",
            )
        except NotFound:
            return None
        return str(resp.get("ETag", "")).strip('"') or None

    def _put_multipart(
        self,
        key: str,
        full: str,
        first: Part,
        reader: PartReader,
        mode: str,
        meta: dict[str, str],
    ) -> None:
        where = self._where(key)
        try:
            resp = self._call(
                lambda: self.client.create_multipart_upload(
                    Bucket=self.bucket, Key=full, Metadata=meta, **self._put_extra
                ),
                f"start multipart upload of {where}",
            )
        except NotFound:
            self._check_bucket()
            raise
        upload_id = resp["UploadId"]
        done = False
        try:
            parts: list[dict[str, Any]] = []
            md5s: list[str] = []
            part: Part | None = first
            index = 0
            while part is not None:
                number = index + 1
                current = part

                def upload(current: Part = current, number: int = number) -> Any:
                    return self.client.upload_part(
                        Bucket=self.bucket,
                        Key=full,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=current.body(),
                    )

                out = self._call(upload, f"upload part {number} of {where}")
                etag = str(out["ETag"])
                parts.append({"ETag": etag, "PartNumber": number})
                md5s.append(etag.strip('"'))
                if current is not first:
                    current.close()
                index += 1
                if reader.exhausted:
                    part = None
                else:
                    if index >= MAX_PARTS:
                        raise StorageError(
                            f"{where}: object exceeds {MAX_PARTS} parts",
                            hint="raise s3_part_size",
                        )
                    part = reader.read(part_size(self.part_size, index, MAX_PART))
            expected = md5_of(md5s)
            ambiguous: list[Transient] = []

            def complete() -> Any:
                kwargs: dict[str, Any] = dict(
                    Bucket=self.bucket,
                    Key=full,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
                if mode == CREATE:
                    kwargs["IfNoneMatch"] = "*"
                return self.client.complete_multipart_upload(**kwargs)

            try:
                self._call(complete, f"complete multipart upload of {where}", ambiguous.append)
            except (AlreadyExists, NotFound) as exc:
                # NotFound here is NoSuchUpload: after a lost response it may mean "done"
                if ambiguous and self._stored_etag(full) == expected:
                    done = True
                    return
                if isinstance(exc, AlreadyExists):
                    raise AlreadyExists(f"{where} already exists") from None
                raise StorageError(
                    f"{where}: multipart upload vanished before completion"
                ) from None
            done = True
        finally:
            if not done:
                self._abort(full, upload_id, where)

    def _abort(self, full: str, upload_id: str, where: str) -> None:
        try:
            self._attempt(
                lambda: self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=full, UploadId=upload_id
                ),
                f"abort multipart upload of {where}",
            )
        except StorageError:
            pass  # a lifecycle rule for incomplete uploads cleans up (docs/storage.md)

    def _body(self, resp: Mapping[str, Any], what: str) -> Iterator[bytes]:
        body = resp["Body"]
        try:
            while True:
                try:
                    data = body.read(CHUNK)
                except (botocore.exceptions.BotoCoreError, OSError, ValueError) as exc:
                    if isinstance(exc, ValueError):
                        exc = OSError(str(exc))
                    err = self._translate(exc, what)
                    raise (err if isinstance(err, StorageError) else Transient(str(exc))) from None
                if not data:
                    return
                yield data
        finally:
            body.close()

    def open(self, key: str) -> ObjectStream:
        full = self._full(key)
        where = self._where(key)
        what = f"GET {where}"
        try:
            resp = self._call(lambda: self.client.get_object(Bucket=self.bucket, Key=full), what)
        except NotFound:
            self._check_bucket()
            raise NotFound(f"{where} does not exist") from None
        self._bucket_ok = True
        info = self._info(key, resp)
        etag = resp.get("ETag")

        def open_at(pos: int) -> Iterator[bytes]:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": full, "Range": f"bytes={pos}-"}
            if etag:
                kwargs["IfMatch"] = etag
            r = self._attempt(lambda: self.client.get_object(**kwargs), what)
            return self._body(r, what)

        body = self._body(resp, what)
        chunks = resuming_chunks(body, open_at, info.size, self.policy, where)
        return IterStream(info, em.pinned_read(chunks, where))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        full_prefix = self.prefix + prefix
        token: str | None = None
        strip = len(self.prefix)
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": full_prefix, "MaxKeys": 1000}
            if token:
                kwargs["ContinuationToken"] = token

            def page(kwargs: dict[str, Any] = kwargs) -> Any:
                return self.client.list_objects_v2(**kwargs)

            resp = self._call(page, f"LIST {self._where(prefix)}")
            self._bucket_ok = True
            for item in resp.get("Contents") or ():
                mtime = item.get("LastModified")
                yield ObjectInfo(
                    item["Key"][strip:],
                    int(item.get("Size", 0)),
                    None,
                    mtime.timestamp() if mtime is not None else None,
                )
            token = resp.get("NextContinuationToken")
            if not resp.get("IsTruncated") or not token:
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

    def _delete_batch(self, batch: builtins.list[str]) -> None:
        what = f"DELETE {len(batch)} objects in {self.url}"
        resp = self._call(
            lambda: self.client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
            ),
            what,
        )
        errors = [e for e in resp.get("Errors") or () if e.get("Code") != "NoSuchKey"]
        if errors:
            first = errors[0]
            code = str(first.get("Code", ""))
            text = f"{what}: {len(errors)} failed, e.g. {first.get('Key')}: {code}"
            found = em.outcome(_ERRORS, em.ANY_STATUS, code)
            if found == em.DENIED:
                raise PermissionDenied(text, hint=self._denied_hint())
            if found == em.TRANSIENT:
                # deletes are idempotent: retry the whole batch once more via the policy
                self._call(
                    lambda: self._raise_if_errors(
                        self.client.delete_objects(
                            Bucket=self.bucket,
                            Delete={"Objects": [{"Key": e["Key"]} for e in errors], "Quiet": True},
                        ),
                        what,
                    ),
                    what,
                )
                return
            raise StorageError(text)

    def _raise_if_errors(self, resp: Mapping[str, Any], what: str) -> None:
        errors = [e for e in resp.get("Errors") or () if e.get("Code") != "NoSuchKey"]
        if errors:
            code = str(errors[0].get("Code", ""))
            text = f"{what}: {len(errors)} failed ({code})"
            if em.outcome(_ERRORS, em.ANY_STATUS, code) == em.TRANSIENT:
                raise Transient(text)
            raise StorageError(text)

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close is not None:
            close()


def open_backend(url: str, config: Config) -> S3Backend:
    return S3Backend(url, config)


#: botocore's data loader (service model, endpoint rules: JSON files it parses
#: per session) shared by the sessions of this process once :func:`warm` ran
_LOADER: list[Any] = []


def _session(profile: str | None) -> Any:
    session = botocore.session.Session(profile=profile)
    if _LOADER:
        session.register_component("data_loader", _LOADER[0])
    return session


def warm() -> None:
    """Parse botocore's S3 data once (the walship agent calls this; its workers
    then make a client in ~8 ms instead of ~60 ms). No request is sent: the
    throwaway clients have dummy credentials and an unused endpoint."""
    if _LOADER:
        return
    loader = botocore.session.Session().get_component("data_loader")
    for _ in range(2):  # the second client loads what botocore loads lazily
        session = botocore.session.Session()
        session.register_component("data_loader", loader)
        session.create_client(
            "s3",
            region_name="us-east-1",
            endpoint_url="http://127.0.0.1:9",
            aws_access_key_id="walship-agent-warm-up",
            aws_secret_access_key="walship-agent-warm-up",
        )
    _LOADER[:] = [loader]
