"""Google Cloud Storage (``gs://bucket/prefix``) over the JSON API.

The only module that imports Google's libraries; the registry imports it only
for the ``gs`` scheme. Authentication is google-auth (installed with the
``walship[gcs]`` extra, google-cloud-storage's own auth layer):
Application Default Credentials, or a service-account file
(``gcs_credentials_file``), or none (``gcs_anonymous``, emulators). Requests
go through google-auth's ``AuthorizedSession`` straight to the JSON API, so
that every upload can be retried from bytes this module holds (the client
library's upload helpers need a seekable file) and so a push does not pay
for importing the whole client library.

- Create-only puts send ``ifGenerationMatch=0``; the store decides
  (412 conditionNotMet -> AlreadyExists, and no other answer: the table
  ``_ERRORS``).
- Objects below ``gcs_chunk_size`` are one multipart upload; larger ones a
  resumable upload in chunks of that size, holding one chunk (in memory up
  to 64 MiB, else in its spool file, sent from there in 1 MiB blocks). A
  failed chunk is resumed from the offset the service reports; a failed
  upload is cancelled, and an unfinished resumable upload is never visible.
- A create retried after an ambiguous failure compares the stored MD5 with
  what it sent (computed while spooling): its own earlier write is success,
  not AlreadyExists.
- Downloads stream in 1 MiB chunks, pinned to the object generation, and
  resume with a ranged GET after a fault mid-body.
- Deletes go in JSON API batches (``/batch/storage/v1``) of 100; each
  sub-response is checked, and only transient ones are resent.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import google.auth
import google.auth.exceptions
import requests
from google.auth.transport.requests import AuthorizedSession

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
from .parts import Part, PartBody, PartReader
from .retry import RetryPolicy, resuming_chunks

if TYPE_CHECKING:
    from ..config import Config

CHUNK = 1 << 20
ALIGN = 256 << 10
DEFAULT_ENDPOINT = "https://storage.googleapis.com"
SCOPES = ("https://www.googleapis.com/auth/devstorage.read_write",)
DELETE_BATCH = 100


#: (HTTP status, JSON API error reason) -> outcome; see walship/storage/errormap.py
#: and docs/storage.md. The only EXISTS answer is 412 conditionNotMet, what an
#: upload with ``ifGenerationMatch=0`` gets when the name is taken (also a 412
#: without a JSON body); other 412 reasons (orgPolicyConstraintFailed, ...) are
#: errors. A 409 is a concurrent change to the same resource and is retried,
#: never read as "exists".
_ERRORS: em.Table = {
    (412, "conditionNotMet"): em.EXISTS,
    (412, ""): em.EXISTS,
    (412, em.ANY_CODE): em.ERROR,
    (404, em.ANY_CODE): em.NOT_FOUND,
    (409, em.ANY_CODE): em.TRANSIENT,
    (408, em.ANY_CODE): em.TRANSIENT,
    (429, em.ANY_CODE): em.TRANSIENT,
    (401, em.ANY_CODE): em.DENIED,
    (403, em.ANY_CODE): em.DENIED,
}


def parse_url(url: str) -> tuple[str, str]:
    rest = url.partition("://")[2]
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    if not bucket:
        raise ConfigError(
            f"repository URL {url!r} names no bucket", hint="use gs://BUCKET[/PREFIX]"
        )
    return bucket, (prefix + "/" if prefix else "")


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _parse_mtime(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    from datetime import datetime

    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class _Status(Exception):
    """An HTTP answer that is not success (internal; translated by _check)."""

    def __init__(self, resp: requests.Response) -> None:
        super().__init__(resp.status_code)
        self.resp = resp


class GcsBackend:
    def __init__(self, url: str, config: Config) -> None:
        self.bucket, self.prefix = parse_url(url)
        self.url = f"gs://{self.bucket}/{self.prefix}".rstrip("/")
        self.policy = RetryPolicy.from_config(config)
        self.timeout = (self.policy.connect_timeout, self.policy.attempt_timeout)
        chunk = int(getattr(config, "gcs_chunk_size", 16 << 20))
        self.chunk_size = max(ALIGN, chunk - chunk % ALIGN)
        self.endpoint = (getattr(config, "gcs_endpoint_url", None) or DEFAULT_ENDPOINT).rstrip("/")
        self.session: Any = AuthorizedSession(self._credentials(config))  # type: ignore[no-untyped-call]
        self._bucket_ok = False
        self._b = _quote(self.bucket)

    def _credentials(self, config: Config) -> Any:
        if getattr(config, "gcs_anonymous", False):
            from google.auth.credentials import AnonymousCredentials

            return AnonymousCredentials()  # type: ignore[no-untyped-call]
        path = getattr(config, "gcs_credentials_file", None)
        try:
            if path:
                from google.oauth2 import service_account

                return service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
                    path, scopes=list(SCOPES)
                )
            creds, _ = google.auth.default(scopes=list(SCOPES))
            return creds
        except google.auth.exceptions.DefaultCredentialsError as exc:
            raise PermissionDenied(
                f"no Google Cloud credentials for gs://{self.bucket}: {exc}",
                hint="set gcs_credentials_file, GOOGLE_APPLICATION_CREDENTIALS, or run on a "
                "machine with a service account, for the user walship runs as",
            ) from None
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot read gcs_credentials_file {path}: {exc}",
                hint="the file must be a service-account JSON key readable by the postgres user",
            ) from None

    # --- errors ------------------------------------------------------------
    def _where(self, key: str | None = None) -> str:
        return f"gs://{self.bucket}/{self.prefix}{key}" if key is not None else self.url

    def _denied_hint(self) -> str:
        return (
            f"check the Google credentials walship runs with (as the postgres user for "
            f"archive/restore_command) and that they hold roles/storage.objectAdmin "
            f"(or objectCreator + objectViewer) on bucket {self.bucket!r}"
        )

    def _status_error(self, resp: requests.Response, what: str) -> StorageError:
        return self._error_for(resp.status_code, resp.content, what)

    def _error_for(self, status: int, body: bytes, what: str) -> StorageError:
        """The walship error for a JSON API error answer (also batch sub-responses)."""
        message, reason = _error_text(body)
        text = f"{what}: HTTP {status} {message}".strip()
        found = em.outcome(_ERRORS, status, reason)
        if found == em.NOT_FOUND:
            return NotFound(text)
        if found == em.EXISTS:
            return AlreadyExists(text)
        if found == em.DENIED:
            return PermissionDenied(text, hint=self._denied_hint())
        if found == em.TRANSIENT:
            return Transient(text)
        return StorageError(f"{text} ({reason})" if reason else text)

    def _request(
        self,
        method: str,
        url: str,
        what: str,
        *,
        ok: tuple[int, ...] = (200,),
        stream: bool = False,
        **kwargs: Any,
    ) -> requests.Response:
        """One HTTP request; non-``ok`` answers and faults become walship errors."""
        try:
            resp: requests.Response = self.session.request(
                method, url, timeout=self.timeout, stream=stream, **kwargs
            )
        except google.auth.exceptions.RefreshError as exc:
            raise PermissionDenied(
                f"{what}: Google credentials were refused: {exc}", hint=self._denied_hint()
            ) from None
        except google.auth.exceptions.TransportError as exc:
            raise Transient(f"{what}: cannot reach the token service: {exc}") from None
        except (requests.exceptions.RequestException, OSError) as exc:
            raise Transient(f"{what}: {type(exc).__name__}: {exc}") from None
        if resp.status_code not in ok:
            err = self._status_error(resp, what)
            resp.close()
            raise err
        return resp

    def _call(
        self, fn: Callable[[], Any], what: str, on_retry: Callable[[Transient], None] | None = None
    ) -> Any:
        return self.policy.call(fn, what, on_retry=on_retry)

    def _full(self, key: str) -> str:
        check_key(key)
        return self.prefix + key

    def _object_url(self, full: str) -> str:
        return f"{self.endpoint}/storage/v1/b/{self._b}/o/{_quote(full)}"

    def _check_bucket(self) -> None:
        if self._bucket_ok:
            return
        what = f"GET bucket gs://{self.bucket}"
        try:
            self._call(
                lambda: self._request(
                    "GET", f"{self.endpoint}/storage/v1/b/{self._b}?fields=name", what
                ),
                what,
            )
        except NotFound:
            raise ContainerNotFound(
                f"bucket gs://{self.bucket} does not exist",
                hint="check `repo` / WALSHIP_REPO (and gcs_endpoint_url), or create the bucket",
            ) from None
        self._bucket_ok = True

    def _not_found(self, key: str) -> NotFound:
        self._check_bucket()
        return NotFound(f"{self._where(key)} does not exist")

    # --- protocol ------------------------------------------------------------
    def _info(self, key: str, resource: Mapping[str, Any]) -> ObjectInfo:
        meta = {str(k).lower(): str(v) for k, v in (resource.get("metadata") or {}).items()}
        return ObjectInfo(
            key, int(resource.get("size", 0)), meta, _parse_mtime(resource.get("updated"))
        )

    def _resource(self, full: str, what: str) -> dict[str, Any] | None:
        try:
            resp = self._call(lambda: self._request("GET", self._object_url(full), what), what)
        except NotFound:
            return None
        data: dict[str, Any] = resp.json()
        return data

    def head(self, key: str) -> ObjectInfo | None:
        full = self._full(key)
        resource = self._resource(full, f"GET metadata of {self._where(key)}")
        if resource is None:
            self._check_bucket()
            return None
        self._bucket_ok = True
        return self._info(key, resource)

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
        first = reader.read(self.chunk_size)
        try:
            if reader.exhausted:
                self._put_single(key, full, first, mode, meta)
            else:
                self._put_resumable(key, full, first, reader, mode, meta)
        except NotFound:
            raise self._not_found(key) from None
        finally:
            first.close()
        self._bucket_ok = True
        return ObjectInfo(key, reader.total, meta, None)

    def _upload_url(self, kind: str, mode: str) -> str:
        url = f"{self.endpoint}/upload/storage/v1/b/{self._b}/o?uploadType={kind}"
        return url + "&ifGenerationMatch=0" if mode == CREATE else url

    def _put_single(self, key: str, full: str, part: Part, mode: str, meta: dict[str, str]) -> None:
        what = f"upload {self._where(key)}"
        boundary = f"walship-{uuid.uuid4().hex}"
        resource = json.dumps({"name": full, "metadata": meta}).encode()
        head = b"".join(
            [
                f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode(),
                resource,
                f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode(),
            ]
        )
        body = part.stream(head=head, tail=f"\r\n--{boundary}--\r\n".encode())
        ambiguous: list[Transient] = []
        try:
            self._call(
                lambda: self._request(
                    "POST",
                    self._upload_url("multipart", mode),
                    what,
                    data=body,
                    headers={"Content-Type": f'multipart/related; boundary="{boundary}"'},
                ),
                what,
                ambiguous.append,
            )
        except AlreadyExists:
            if ambiguous and self._stored_md5(full, key) == _md5_b64(part):
                return  # our own earlier attempt landed; its answer was lost
            raise AlreadyExists(f"{self._where(key)} already exists") from None

    def _stored_md5(self, full: str, key: str) -> str | None:
        resource = self._resource(full, f"GET metadata of {self._where(key)}")
        return None if resource is None else resource.get("md5Hash")

    def _put_resumable(
        self,
        key: str,
        full: str,
        first: Part,
        reader: PartReader,
        mode: str,
        meta: dict[str, str],
    ) -> None:
        where = self._where(key)
        what = f"start resumable upload of {where}"
        resp = self._call(
            lambda: self._request(
                "POST",
                self._upload_url("resumable", mode),
                what,
                json={"name": full, "metadata": meta},
                headers={"X-Upload-Content-Type": "application/octet-stream"},
            ),
            what,
        )
        session_url = resp.headers["Location"]
        finished = False
        try:
            offset = 0
            part: Part | None = first
            while part is not None:
                last = reader.exhausted
                total = offset + part.size if last else None
                try:
                    self._send_chunk(session_url, where, part, offset, total)
                finally:
                    if part is not first:
                        part.close()
                offset += part.size
                part = None if last else reader.read(self.chunk_size)
            finished = True
        finally:
            if not finished:
                try:
                    self._request(
                        "DELETE",
                        session_url,
                        f"cancel upload of {where}",
                        ok=(499, 204, 200, 404, 410),
                    )
                except StorageError:
                    pass

    def _send_chunk(
        self, session_url: str, where: str, part: Part, offset: int, total: int | None
    ) -> None:
        """PUT one chunk; after a fault, ask how much the service has and resend the rest.

        The chunk is sent from the part (its spool file), from the first byte
        the service does not hold yet, never copied into one bytes object.
        """
        what = f"upload bytes {offset}.. of {where}"
        size = part.size
        total_s = "*" if total is None else str(total)
        state = {"retry": False}

        def attempt() -> None:
            start = offset
            if state["retry"]:
                status = self._request(
                    "PUT",
                    session_url,
                    f"query upload status of {where}",
                    ok=(200, 201, 308),
                    headers={"Content-Range": f"bytes */{total_s}"},
                )
                if status.status_code in (200, 201):
                    if total is None:
                        raise StorageError(f"{where}: upload finished early")
                    return
                start = _persisted(status)
                if start < offset or start > offset + size:
                    raise StorageError(f"{where}: service reports {start} bytes, expected {offset}")
            state["retry"] = True
            chunk: bytes | PartBody = b""
            if start < offset + size:
                chunk = part.stream(start - offset)
                crange = f"bytes {start}-{offset + size - 1}/{total_s}"
            else:
                crange = f"bytes */{total_s}"
            resp = self._request(
                "PUT",
                session_url,
                what,
                ok=(200, 201, 308),
                data=chunk,
                headers={"Content-Range": crange},
            )
            if resp.status_code == 308:
                if total is not None:
                    raise Transient(f"{what}: service did not finish the upload")
                got = _persisted(resp)
                if got != offset + size:
                    raise Transient(f"{what}: service kept {got} of {offset + size} bytes")

        try:
            self._call(attempt, what)
        except AlreadyExists:
            raise AlreadyExists(f"{where} already exists") from None

    def _media_url(self, full: str, generation: str | None) -> str:
        url = f"{self.endpoint}/download/storage/v1/b/{self._b}/o/{_quote(full)}?alt=media"
        return url + f"&generation={generation}" if generation else url

    def _body(self, resp: requests.Response, what: str) -> Iterator[bytes]:
        try:
            try:
                for data in resp.iter_content(CHUNK):
                    if data:
                        yield data
            except (requests.exceptions.RequestException, OSError) as exc:
                raise Transient(f"{what}: {type(exc).__name__}: {exc}") from None
        finally:
            resp.close()

    def open(self, key: str) -> ObjectStream:
        full = self._full(key)
        where = self._where(key)
        what = f"GET {where}"
        headers = {"Accept-Encoding": "identity"}
        try:
            resp = self._call(
                lambda: self._request(
                    "GET", self._media_url(full, None), what, stream=True, headers=headers
                ),
                what,
            )
        except NotFound:
            raise self._not_found(key) from None
        self._bucket_ok = True
        generation = resp.headers.get("x-goog-generation")
        size = int(
            resp.headers.get("x-goog-stored-content-length")
            or resp.headers.get("Content-Length")
            or 0
        )
        meta = {
            k[len("x-goog-meta-") :].lower(): v
            for k, v in resp.headers.items()
            if k.lower().startswith("x-goog-meta-")
        }
        info = ObjectInfo(key, size, meta, None)

        def open_at(pos: int) -> Iterator[bytes]:
            r = self._request(
                "GET",
                self._media_url(full, generation),
                what,
                ok=(200, 206),
                stream=True,
                headers={**headers, "Range": f"bytes={pos}-"},
            )
            if r.status_code == 200 and pos:
                r.close()
                raise Transient(f"{what}: range request was answered with the whole object")
            return self._body(r, what)

        return IterStream(
            info, resuming_chunks(self._body(resp, what), open_at, size, self.policy, where)
        )

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        token: str | None = None
        strip = len(self.prefix)
        what = f"LIST {self._where(prefix)}"
        while True:
            params = {
                "prefix": self.prefix + prefix,
                "maxResults": "1000",
                "fields": "items(name,size,updated),nextPageToken",
            }
            if token:
                params["pageToken"] = token

            def fetch_page(params: dict[str, str] = params) -> requests.Response:
                return self._request(
                    "GET", f"{self.endpoint}/storage/v1/b/{self._b}/o", what, params=params
                )

            try:
                resp = self._call(fetch_page, what)
            except NotFound:
                raise ContainerNotFound(
                    f"bucket gs://{self.bucket} does not exist",
                    hint="check `repo` / WALSHIP_REPO (and gcs_endpoint_url), or create the bucket",
                ) from None
            self._bucket_ok = True
            page = resp.json()
            items = sorted(page.get("items") or (), key=lambda i: str(i["name"]).encode())
            for item in items:
                yield ObjectInfo(
                    str(item["name"])[strip:],
                    int(item.get("size", 0)),
                    None,
                    _parse_mtime(item.get("updated")),
                )
            token = page.get("nextPageToken")
            if not token:
                return

    def delete(self, keys: Iterable[str]) -> None:
        """Delete in JSON API batches of DELETE_BATCH; absent keys are not an error.

        Each batch is one ``POST /batch/storage/v1`` (multipart/mixed) holding
        one ``DELETE`` per object. Sub-requests answered 200/204/404 are done;
        transient ones (408, 429, 5xx, or no answer) are resent, alone, under
        the retry policy, as is the whole batch after a transient fault (a
        DELETE that already landed then answers 404); any other answer fails.
        A 404 makes the bucket be checked once: a missing bucket is
        ContainerNotFound, not a run of absent keys.
        """
        fulls = list(dict.fromkeys(self._full(key) for key in keys))
        for i in range(0, len(fulls), DELETE_BATCH):
            self._delete_batch(fulls[i : i + DELETE_BATCH])

    def _delete_batch(self, fulls: Sequence[str]) -> None:
        strip = len(self.prefix)
        what = f"batch DELETE of {len(fulls)} objects (first {self._where(fulls[0][strip:])})"
        pending: Sequence[str] = tuple(fulls)
        saw_absent = False
        base = urllib.parse.urlsplit(self.endpoint).path.rstrip("/")

        def attempt() -> None:
            nonlocal pending, saw_absent
            boundary = f"walship-{uuid.uuid4().hex}"
            body = _batch_body(
                boundary, [f"{base}/storage/v1/b/{self._b}/o/{_quote(full)}" for full in pending]
            )
            resp = self._request(
                "POST",
                f"{self.endpoint}/batch/storage/v1",
                what,
                data=body,
                headers={"Content-Type": f'multipart/mixed; boundary="{boundary}"'},
            )
            answers = _batch_answers(resp)
            retry: list[str] = []
            transient: StorageError | None = None
            for index, full in enumerate(pending):
                one = f"DELETE {self._where(full[strip:])}"
                answer = answers.get(index)
                if answer is None:
                    retry.append(full)
                    transient = Transient(f"{one}: no answer in the batch response")
                    continue
                status, sub_body = answer
                if status in (200, 204):
                    continue
                if status == 404:
                    saw_absent = True
                    continue
                err = self._error_for(status, sub_body, one)
                if not isinstance(err, Transient):
                    raise err
                retry.append(full)
                transient = err
            pending = retry
            if transient is not None:
                raise Transient(f"{len(retry)} of the batch: {transient.message}")

        try:
            self._call(attempt, what)
        except NotFound as exc:  # the batch endpoint itself, not an object
            raise StorageError(
                exc.message, hint="gcs_endpoint_url must serve the JSON API batch endpoint"
            ) from None
        if saw_absent:
            self._check_bucket()
        else:
            self._bucket_ok = True

    def close(self) -> None:
        self.session.close()


def _batch_body(boundary: str, paths: list[str]) -> bytes:
    """A JSON API batch (multipart/mixed): one ``DELETE path`` per part, Content-ID = index."""
    out: list[str] = []
    for index, path in enumerate(paths):
        out.append(
            f"--{boundary}\r\nContent-Type: application/http\r\n"
            f"Content-Transfer-Encoding: binary\r\nContent-ID: <{index}>\r\n\r\n"
            f"DELETE {path} HTTP/1.1\r\n\r\n\r\n"
        )
    out.append(f"--{boundary}--\r\n")
    return "".join(out).encode()


def _batch_answers(resp: requests.Response) -> dict[int, tuple[int, bytes]]:
    """Sub-request index -> (status, body) from a batch response (multipart/mixed).

    Parts are matched by ``Content-ID: <response-N>`` (falling back to their
    order); a part that cannot be parsed is left out, so its request is
    treated as unanswered.
    """
    ctype = resp.headers.get("Content-Type", "")
    marker = "boundary="
    if marker not in ctype:
        raise Transient(f"batch response is not multipart: {ctype!r}")
    boundary = ctype.split(marker, 1)[1].split(";", 1)[0].strip().strip('"')
    delimiter = b"--" + boundary.encode()
    answers: dict[int, tuple[int, bytes]] = {}
    chunks = resp.content.split(delimiter)[1:]
    for order, chunk in enumerate(chunks):
        if chunk.startswith(b"--"):
            break  # the closing delimiter
        head, _, inner = chunk.lstrip(b"\r\n").partition(b"\r\n\r\n")
        index = order
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-id":
                tail = value.strip().strip(b"<>").rsplit(b"-", 1)[-1].rsplit(b"+", 1)[-1]
                if tail.isdigit():
                    index = int(tail)
        status_line, _, rest = inner.partition(b"\r\n")
        fields = status_line.split(None, 2)
        if len(fields) < 2 or not fields[0].startswith(b"HTTP/") or not fields[1].isdigit():
            continue
        body = rest.partition(b"\r\n\r\n")[2]
        if body.endswith(b"\r\n"):
            body = body[:-2]
        answers[index] = (int(fields[1]), body)
    return answers


def _error_text(body: bytes) -> tuple[str, str]:
    """(message, reason) of a JSON API error body; reason "" when there is none."""
    try:
        error = json.loads(body).get("error", {})
        message = str(error.get("message", ""))
        errors = error.get("errors") or [{}]
        reason = str(errors[0].get("reason", "") or "")
    except (ValueError, AttributeError, TypeError, IndexError):
        return body[:200].decode("utf-8", "replace"), ""
    return message, reason


def _md5_b64(part: Part) -> str:
    return base64.b64encode(part.md5()).decode()


def _persisted(resp: requests.Response) -> int:
    """Bytes the service holds, from a 308's ``Range: bytes=0-N`` (absent: none)."""
    rng = resp.headers.get("Range")
    if not rng:
        return 0
    return int(rng.rsplit("-", 1)[1]) + 1


def open_backend(url: str, config: Config) -> GcsBackend:
    return GcsBackend(url, config)
