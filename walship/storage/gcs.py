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
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import google.auth
import google.auth.exceptions
import requests
from google.auth.transport.requests import AuthorizedSession

from ..errors import ConfigError, NotFound, PermissionDenied, StorageError, Transient
from . import errormap as em
from .base import CREATE, ObjectInfo
from .client import DeleteAnswer, Entry, RemoteBackend
from .parts import Part, PartBody
from .retry import IDEMPOTENT, SAFE, Interrupted

if TYPE_CHECKING:
    from ..config import Config

CHUNK = 1 << 20
ALIGN = 256 << 10
DEFAULT_ENDPOINT = "https://storage.googleapis.com"
SCOPES = ("https://www.googleapis.com/auth/devstorage.read_write",)
_IDENTITY = {"Accept-Encoding": "identity"}


#: (HTTP status, JSON API error reason) -> outcome; see walship/storage/errormap.py
#: and docs/storage.md. The only EXISTS answer is 412 conditionNotMet, what an
#: upload with ``ifGenerationMatch=0`` gets when the name is taken (also a 412
#: without a JSON body); other 412 reasons (orgPolicyConstraintFailed, ...) are
#: errors. A 409 is a concurrent change to the same resource and is retried,
#: never read as "exists".
_ERRORS = em.table(
    em.codes(em.EXISTS, "conditionNotMet", "", status=412),
    em.codes(em.ERROR, em.ANY_CODE, status=412),
    em.codes(em.NOT_FOUND, em.ANY_CODE, status=404),
    em.codes(em.TRANSIENT, em.ANY_CODE, status=409),
)


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


class GcsBackend(RemoteBackend):
    SCHEME = "gs"
    PART_SETTING = "gcs_chunk_size"
    ERRORS = _ERRORS
    SDK_ERRORS = (
        requests.exceptions.RequestException,
        google.auth.exceptions.GoogleAuthError,
        OSError,
    )
    NO_CONTAINER_HINT = "check `repo` / WALSHIP_REPO (and gcs_endpoint_url), or create the bucket"
    DELETE_BATCH = 100  # the JSON API batch limit
    COMMITS = False  # the last chunk of a resumable upload ends it

    def __init__(self, url: str, config: Config) -> None:
        super().__init__(url, config)
        self.timeout = (self.policy.connect_timeout, self.policy.attempt_timeout)
        chunk = int(getattr(config, "gcs_chunk_size", 16 << 20))
        self.part_size = self.chunk_size = max(ALIGN, chunk - chunk % ALIGN)
        self.endpoint = (getattr(config, "gcs_endpoint_url", None) or DEFAULT_ENDPOINT).rstrip("/")
        self.session: Any = AuthorizedSession(self._credentials(config))  # type: ignore[no-untyped-call]
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
    def _denied_hint(self) -> str:
        return (
            f"check the Google credentials walship runs with (as the postgres user for "
            f"archive/restore_command) and that they hold roles/storage.objectAdmin "
            f"(or objectCreator + objectViewer) on bucket {self.bucket!r}"
        )

    def _error_for(self, status: int, body: bytes, what: str) -> StorageError | ConfigError:
        """The walship error for a JSON API error answer (also batch sub-responses)."""
        message, reason = _error_text(body)
        return self._answer_error(status, reason, what, message)

    def _translate(self, exc: BaseException, what: str) -> BaseException:
        if isinstance(exc, google.auth.exceptions.RefreshError):
            return PermissionDenied(
                f"{what}: Google credentials were refused: {exc}", hint=self._denied_hint()
            )
        if isinstance(exc, google.auth.exceptions.TransportError):
            return Transient(f"{what}: cannot reach the token service: {exc}")
        text = f"{what}: {type(exc).__name__}: {exc}"
        if isinstance(exc, requests.exceptions.ConnectTimeout):  # not sent
            return Transient(text)
        if isinstance(exc, (requests.exceptions.RequestException, OSError)):
            return Interrupted(text)
        return exc

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
        """One HTTP request; a non-``ok`` answer raises its walship error."""
        resp: requests.Response = self.session.request(
            method, url, timeout=self.timeout, stream=stream, **kwargs
        )
        if resp.status_code not in ok:
            err = self._error_for(resp.status_code, resp.content, what)
            resp.close()
            raise err
        return resp

    def _object_url(self, full: str) -> str:
        return f"{self.endpoint}/storage/v1/b/{self._b}/o/{_quote(full)}"

    def _probe_container(self) -> object:
        url = f"{self.endpoint}/storage/v1/b/{self._b}?fields=name"
        return self._request("GET", url, f"GET bucket gs://{self.bucket}")

    # --- reads -----------------------------------------------------------------
    def _head(self, full: str, what: str) -> dict[str, Any]:
        resource: dict[str, Any] = self._request("GET", self._object_url(full), what).json()
        return resource

    def _info(self, key: str, answer: Mapping[str, Any]) -> ObjectInfo:
        meta = {str(k).lower(): str(v) for k, v in (answer.get("metadata") or {}).items()}
        return ObjectInfo(
            key, int(answer.get("size", 0)), meta, _parse_mtime(answer.get("updated"))
        )

    def _media_url(self, full: str, generation: str | None) -> str:
        url = f"{self.endpoint}/download/storage/v1/b/{self._b}/o/{_quote(full)}?alt=media"
        return url + f"&generation={generation}" if generation else url

    def _get(self, key: str, full: str, what: str) -> tuple[Any, ObjectInfo, str | None]:
        resp = self._request(
            "GET", self._media_url(full, None), what, stream=True, headers=_IDENTITY
        )
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
        return resp, ObjectInfo(key, size, meta, None), resp.headers.get("x-goog-generation")

    def _get_range(self, full: str, pos: int, version: str | None, what: str) -> Any:
        resp = self._request(
            "GET",
            self._media_url(full, version),
            what,
            ok=(200, 206),
            stream=True,
            headers={**_IDENTITY, "Range": f"bytes={pos}-"},
        )
        if resp.status_code == 200 and pos:
            resp.close()
            raise Transient(f"{what}: range request was answered with the whole object")
        return resp

    def _body(self, answer: requests.Response, what: str) -> Iterator[bytes]:
        try:
            try:
                for data in answer.iter_content(CHUNK):
                    if data:
                        yield data
            except (requests.exceptions.RequestException, OSError) as exc:
                raise Transient(f"{what}: {type(exc).__name__}: {exc}") from None
        finally:
            answer.close()

    def _list_page(
        self, full_prefix: str, token: str | None, what: str
    ) -> tuple[list[Entry], str | None]:
        params = {
            "prefix": full_prefix,
            "maxResults": "1000",
            "fields": "items(name,size,updated),nextPageToken",
        }
        if token:
            params["pageToken"] = token
        url = f"{self.endpoint}/storage/v1/b/{self._b}/o"
        page = self._request("GET", url, what, params=params).json()
        entries: list[Entry] = [
            (str(item["name"]), int(item.get("size", 0)), _parse_mtime(item.get("updated")))
            for item in page.get("items") or ()
        ]
        return entries, page.get("nextPageToken") or None

    # --- writes ----------------------------------------------------------------
    def _upload_url(self, kind: str, mode: str) -> str:
        url = f"{self.endpoint}/upload/storage/v1/b/{self._b}/o?uploadType={kind}"
        return url + "&ifGenerationMatch=0" if mode == CREATE else url

    def _put_one(self, full: str, part: Part, mode: str, meta: dict[str, str], what: str) -> object:
        boundary = f"walship-{uuid.uuid4().hex}"
        resource = json.dumps({"name": full, "metadata": meta}).encode()
        head = b"".join(
            [
                f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode(),
                resource,
                f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode(),
            ]
        )
        return self._request(
            "POST",
            self._upload_url("multipart", mode),
            what,
            data=part.stream(head=head, tail=f"\r\n--{boundary}--\r\n".encode()),
            headers={"Content-Type": f'multipart/related; boundary="{boundary}"'},
        )

    def _holds_one(self, full: str, part: Part, what: str) -> bool:
        resource = self._call(lambda: self._head(full, what), what, SAFE)
        return bool(resource.get("md5Hash") == base64.b64encode(part.md5()).decode())

    def _start_upload(self, full: str, mode: str, meta: dict[str, str], where: str) -> str:
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
            IDEMPOTENT,  # a repeat leaves an unused session, which expires unseen
        )
        return str(resp.headers["Location"])

    def _abort_upload(self, upload: str, where: str) -> None:
        what = f"cancel upload of {where}"
        try:
            self._attempt(
                lambda: self._request("DELETE", upload, what, ok=(499, 204, 200, 404, 410)), what
            )
        except StorageError:
            pass

    def _send_part(
        self, upload: str, index: int, part: Part, offset: int, last: bool, where: str
    ) -> None:
        """PUT one chunk; after a fault, ask how much the service has and resend the rest.

        The chunk is sent from the part (its spool file), from the first byte
        the service does not hold yet, never copied into one bytes object.
        """
        what = f"upload bytes {offset}.. of {where}"
        size = part.size
        total = offset + size if last else None
        total_s = "*" if total is None else str(total)
        state = {"retry": False}

        def attempt() -> None:
            start = offset
            if state["retry"]:
                status = self._request(
                    "PUT",
                    upload,
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
                upload,
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

        # a retry first asks what the service holds, so a repeat never doubles bytes
        self._call(attempt, what, IDEMPOTENT)

    def _part_size(self, index: int) -> int:
        return self.chunk_size  # resumable chunks are multiples of 256 KiB: fixed

    def _delete_request(self, fulls: Sequence[str], what: str) -> list[DeleteAnswer]:
        """One JSON API batch (``POST /batch/storage/v1``, multipart/mixed) of
        one ``DELETE`` per object; the sub-responses are the answers."""
        base = urllib.parse.urlsplit(self.endpoint).path.rstrip("/")
        boundary = f"walship-{uuid.uuid4().hex}"
        body = _batch_body(
            boundary, [f"{base}/storage/v1/b/{self._b}/o/{_quote(full)}" for full in fulls]
        )
        try:
            resp = self._request(
                "POST",
                f"{self.endpoint}/batch/storage/v1",
                what,
                data=body,
                headers={"Content-Type": f'multipart/mixed; boundary="{boundary}"'},
            )
        except NotFound as exc:  # the batch endpoint itself, not an object
            raise StorageError(
                exc.message, hint="gcs_endpoint_url must serve the JSON API batch endpoint"
            ) from None
        answers = _batch_answers(resp)
        out: list[DeleteAnswer] = []
        for index in range(len(fulls)):
            answer = answers.get(index)
            if answer is None:
                out.append(None)
                continue
            status, sub_body = answer
            message, reason = _error_text(sub_body) if status >= 300 else ("", "")
            out.append((status, reason, message))
        return out

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


def _persisted(resp: requests.Response) -> int:
    """Bytes the service holds, from a 308's ``Range: bytes=0-N`` (absent: none)."""
    rng = resp.headers.get("Range")
    if not rng:
        return 0
    return int(rng.rsplit("-", 1)[1]) + 1


def open_backend(url: str, config: Config) -> GcsBackend:
    return GcsBackend(url, config)
