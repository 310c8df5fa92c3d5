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

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import botocore.exceptions
import botocore.session
from botocore.config import Config as BotoConfig

from ..errors import ConfigError, PermissionDenied, StorageError, Transient
from . import errormap as em
from .base import CREATE, ObjectInfo
from .client import DeleteAnswer, Entry, RemoteBackend
from .parts import Part, md5_of
from .retry import IDEMPOTENT, SAFE, Interrupted

if TYPE_CHECKING:
    from ..config import Config

CHUNK = 1 << 20

#: (HTTP status, S3 error code) -> outcome; see walship/storage/errormap.py and
#: docs/storage.md. The only EXISTS answer is 412 PreconditionFailed, what
#: PutObject and CompleteMultipartUpload answer when ``If-None-Match: *``
#: fails (also without a body, code "412"). 409 ConditionalRequestConflict
#: (a concurrent conditional write or a delete in flight) and OperationAborted
#: are retried; no 409 means "exists".
_ERRORS = em.table(
    em.codes(em.EXISTS, "PreconditionFailed", "412", "", status=412),
    em.codes(em.ERROR, em.ANY_CODE, status=412),
    em.codes(em.NO_CONTAINER, "NoSuchBucket"),
    em.codes(em.NOT_FOUND, "NoSuchKey", "NoSuchVersion"),
    em.codes(em.NOT_FOUND, "NoSuchUpload", "404", "", status=404),
    em.codes(em.TRANSIENT, "ConditionalRequestConflict", "OperationAborted", status=409),
    em.codes(em.ERROR, em.ANY_CODE, status=409),
    em.codes(
        em.TRANSIENT,
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
    ),
    em.codes(
        em.DENIED,
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
    ),
    em.codes(em.CONFIG, "PermanentRedirect", "AuthorizationHeaderMalformed"),
)


class S3Backend(RemoteBackend):
    SCHEME = "s3"
    PART_SETTING = "s3_part_size"
    ERRORS = _ERRORS
    SDK_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError)
    NO_CONTAINER_HINT = (
        "check `repo` / WALSHIP_REPO and s3_endpoint_url/s3_region, or create the bucket"
    )
    CONFIG_HINT = "set s3_region to the bucket's region"
    MAX_PARTS = 10_000
    MAX_PART = 5 << 30
    DELETE_BATCH = 1000  # DeleteObjects

    def __init__(self, url: str, config: Config) -> None:
        super().__init__(url, config)
        self.part_size = int(getattr(config, "s3_part_size", 16 << 20))
        endpoint = getattr(config, "s3_endpoint_url", None)
        s3_options: dict[str, object] = {
            "addressing_style": "path" if getattr(config, "s3_force_path_style", False) else "auto"
        }
        if endpoint is None or str(endpoint).lower().startswith("https://"):
            # TLS already protects the body in transit: signing it too means a SHA-256
            # of every body on both sides (~10 ms of a push's ~75 ms of CPU for a
            # 16 MiB segment, docs/benchmarks.md). Over plain http it stays signed.
            s3_options["payload_signing_enabled"] = False
        boto_config = BotoConfig(
            region_name=getattr(config, "s3_region", None),
            connect_timeout=self.policy.connect_timeout,
            read_timeout=self.policy.attempt_timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},
            s3=s3_options,
            request_checksum_calculation=getattr(config, "s3_checksum", "when_required"),
            response_checksum_validation="when_required",
            max_pool_connections=16,
            tcp_keepalive=True,
        )
        try:
            # botocore directly: boto3 adds import time and nothing this module uses
            session = _session(getattr(config, "s3_profile", None))
            self.client: Any = session.create_client(
                "s3", endpoint_url=endpoint, config=boto_config
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

    # --- errors ------------------------------------------------------------
    def _denied_hint(self) -> str:
        return (
            f"check the AWS credentials walship runs with (as the postgres user for "
            f"archive/restore_command) and that they allow s3:GetObject, s3:PutObject, "
            f"s3:ListBucket and s3:DeleteObject on bucket {self.bucket!r}"
        )

    def _translate(self, exc: BaseException, what: str) -> BaseException:
        """A botocore exception -> walship's error (or the exception itself if not ours)."""
        E = botocore.exceptions
        if isinstance(exc, E.ClientError):
            err = exc.response.get("Error", {})
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            code = str(err.get("Code", ""))
            return self._answer_error(status, code, what, str(err.get("Message", "")))
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
        if isinstance(exc, E.ConnectionError):  # not sent: refused, connect timeout, DNS
            return Transient(f"{what}: {type(exc).__name__}: {exc}")
        if isinstance(exc, (E.HTTPClientError, E.IncompleteReadError, OSError)):
            return Interrupted(f"{what}: {type(exc).__name__}: {exc}")
        return exc

    def _probe_container(self) -> object:
        return self.client.head_bucket(Bucket=self.bucket)

    # --- reads -----------------------------------------------------------------
    def _head(self, full: str, what: str) -> Any:
        return self.client.head_object(Bucket=self.bucket, Key=full)

    def _info(self, key: str, answer: Mapping[str, Any]) -> ObjectInfo:
        mtime = answer.get("LastModified")
        meta = {str(k).lower(): str(v) for k, v in (answer.get("Metadata") or {}).items()}
        return ObjectInfo(
            key,
            int(answer.get("ContentLength", 0)),
            meta,
            mtime.timestamp() if mtime is not None else None,
        )

    def _get(self, key: str, full: str, what: str) -> tuple[Any, ObjectInfo, str | None]:
        answer = self.client.get_object(Bucket=self.bucket, Key=full)
        return answer, self._info(key, answer), answer.get("ETag")

    def _get_range(self, full: str, pos: int, version: str | None, what: str) -> Any:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": full, "Range": f"bytes={pos}-"}
        if version:
            kwargs["IfMatch"] = version
        return self.client.get_object(**kwargs)

    def _body(self, answer: Mapping[str, Any], what: str) -> Iterator[bytes]:
        body = answer["Body"]
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

    def _list_page(
        self, full_prefix: str, token: str | None, what: str
    ) -> tuple[list[Entry], str | None]:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": full_prefix, "MaxKeys": 1000}
        if token:
            kwargs["ContinuationToken"] = token
        page = self.client.list_objects_v2(**kwargs)
        entries: list[Entry] = []
        for item in page.get("Contents") or ():
            mtime = item.get("LastModified")
            entries.append(
                (
                    item["Key"],
                    int(item.get("Size", 0)),
                    mtime.timestamp() if mtime is not None else None,
                )
            )
        more = page.get("IsTruncated") and page.get("NextContinuationToken")
        return entries, more or None

    # --- writes ----------------------------------------------------------------
    def _put_one(self, full: str, part: Part, mode: str, meta: dict[str, str], what: str) -> object:
        kwargs: dict[str, Any] = dict(
            Bucket=self.bucket, Key=full, Body=part.body(), Metadata=meta, **self._put_extra
        )
        if mode == CREATE:
            kwargs["IfNoneMatch"] = "*"
        return self.client.put_object(**kwargs)

    def _stored_etag(self, full: str, what: str) -> str | None:
        answer = self._call(
            lambda: self.client.head_object(Bucket=self.bucket, Key=full), what, SAFE
        )
        return str(answer.get("ETag", "")).strip('"') or None

    def _holds_one(self, full: str, part: Part, what: str) -> bool:
        return self._stored_etag(full, what) == part.md5_hex()

    def _start_upload(self, full: str, mode: str, meta: dict[str, str], where: str) -> Any:
        answer = self._call(
            lambda: self.client.create_multipart_upload(
                Bucket=self.bucket, Key=full, Metadata=meta, **self._put_extra
            ),
            f"start multipart upload of {where}",
            IDEMPOTENT,  # a repeat leaves an empty upload, aborted by the lifecycle rule
        )
        return _Upload(full, str(answer["UploadId"]))

    def _send_part(
        self, upload: _Upload, index: int, part: Part, offset: int, last: bool, where: str
    ) -> str:
        number = index + 1
        answer = self._call(
            lambda: self.client.upload_part(
                Bucket=self.bucket,
                Key=upload.full,
                UploadId=upload.upload_id,
                PartNumber=number,
                Body=part.body(),
            ),
            f"upload part {number} of {where}",
            IDEMPOTENT,
        )
        # the part's ETag, the MD5 of what the store received: kept for the commit
        # and for the retried-commit check, which needs no MD5 of our own (one
        # over every byte of every part: ~30 ms of CPU per 16 MiB part)
        return str(answer["ETag"])

    def _commit(
        self,
        upload: _Upload,
        tokens: list[str],
        first: Part,
        mode: str,
        meta: dict[str, str],
        what: str,
    ) -> object:
        parts = [{"ETag": etag, "PartNumber": n + 1} for n, etag in enumerate(tokens)]
        kwargs: dict[str, Any] = dict(
            Bucket=self.bucket,
            Key=upload.full,
            UploadId=upload.upload_id,
            MultipartUpload={"Parts": parts},
        )
        if mode == CREATE:
            kwargs["IfNoneMatch"] = "*"
        return self.client.complete_multipart_upload(**kwargs)

    def _holds_parts(self, upload: _Upload, tokens: list[str], what: str) -> bool:
        # NoSuchUpload after a lost answer may mean "done": the multipart ETag (the
        # MD5 of the parts' MD5s) decides. A part ETag that is no MD5 (SSE-KMS,
        # SSE-C) cannot show it: then the stored object is not taken for ours.
        md5s = [etag.strip('"').lower() for etag in tokens]
        if not all(len(m) == 32 and all(c in "0123456789abcdef" for c in m) for m in md5s):
            return False
        return self._stored_etag(upload.full, what) == md5_of(md5s)

    def _abort_upload(self, upload: _Upload, where: str) -> None:
        try:
            self._attempt(
                lambda: self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=upload.full, UploadId=upload.upload_id
                ),
                f"abort multipart upload of {where}",
            )
        except StorageError:
            pass  # a lifecycle rule for incomplete uploads cleans up (docs/storage.md)

    def _delete_request(self, fulls: Sequence[str], what: str) -> list[DeleteAnswer]:
        answer = self.client.delete_objects(
            Bucket=self.bucket,
            Delete={"Objects": [{"Key": k} for k in fulls], "Quiet": True},
        )
        # Quiet: only the keys that failed are listed, with a code and no status
        failed = {
            str(e.get("Key")): (em.ANY_STATUS, str(e.get("Code", "")), str(e.get("Message", "")))
            for e in answer.get("Errors") or ()
        }
        return [failed.get(full, (200, "", "")) for full in fulls]

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close is not None:
            close()


class _Upload:
    """A multipart upload in progress."""

    __slots__ = ("full", "upload_id")

    def __init__(self, full: str, upload_id: str) -> None:
        self.full = full
        self.upload_id = upload_id


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
