"""The request machinery every remote store shares (s3.py, gcs.py, azure.py).

:class:`RemoteBackend` implements the Backend protocol once: key checks and
prefixes, error answers -> walship errors (one ``(status, code) -> outcome``
table per store, :mod:`.errormap`), retries by request kind (:mod:`.retry`),
the put skeleton (one request, or parts with an abort on failure) with the
retried-create check, resumed downloads, pagination, and batched deletes
checked key by key. A store module holds only what differs: its SDK (the
only place that imports it and knows its exception types), its table, how a
request is sent, and the fingerprint the retried-create check compares.

Hooks a store implements (a request hook sends one attempt and this class
retries it; ``_holds_*``, ``_start_upload`` and ``_send_part`` send theirs
through :meth:`_call`, naming the request's kind):

- ``_translate(exc, what)``: an SDK exception -> walship's error (a status
  answer through :meth:`_answer_error`); the exceptions it is given are those
  in ``SDK_ERRORS``.
- ``_probe_container()``: a request that fails NotFound when the bucket is
  missing (used where an answer cannot tell a missing key from a missing
  bucket); a store whose 404s always say which sets ``_container_ok`` at once.
- ``_head(full, what)`` + ``_info(key, answer)``; ``_get(key, full, what)``
  -> ``(answer, info, version)``, ``_get_range(full, pos, version, what)``
  and ``_body(answer, what)`` for a download pinned to the version it
  started on.
- ``_put_one(full, part, mode, meta, what)`` and ``_holds_one(full, part,
  what)`` (does the store hold exactly this part?) for a one-request put
  (``_one_request(part)`` says whether it may be one); ``_start_upload``,
  ``_send_part``, ``_commit``, ``_holds_parts`` and ``_abort_upload`` for a
  put in parts.
- ``_list_page(full_prefix, token, what)`` -> ``(entries, next_token)``.
- ``_delete_request(fulls, what)`` -> one answer per key, in order.

No SDK import here: this module costs a push no more than :mod:`.retry`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

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
from .base import CREATE, IterStream, ObjectInfo, ObjectStream, Store, check_key
from .parts import Part, PartReader, part_size
from .retry import CONDITIONAL, IDEMPOTENT, SAFE, RetryPolicy, resuming_chunks

if TYPE_CHECKING:
    from ..config import Config

#: one listing entry: (full name, size, mtime)
Entry = tuple[str, int, float | None]
#: one key's answer in a batched delete: (HTTP status or 0, code, message),
#: or None when the batch response holds no answer for it
DeleteAnswer = tuple[int, str, str] | None

_DELETED = (200, 202, 204)


def parse_url(url: str, noun: str = "bucket") -> tuple[str, str]:
    """``scheme://name/a/b`` -> ("name", "a/b/"); ``noun`` names the missing part."""
    scheme, _, rest = url.partition("://")
    name, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    if not name:
        raise ConfigError(
            f"repository URL {url!r} names no {noun}",
            hint=f"use {scheme}://{noun.upper()}[/PREFIX]",
        )
    return name, (prefix + "/" if prefix else "")


def answer_text(what: str, status: int, code: str, message: str = "") -> str:
    """``what`` and a store's error answer, in one line."""
    parts = [f"{what}:", f"HTTP {status}" if status else "", code, message]
    return " ".join(p for p in parts if p)


#: see :func:`one_request_slack`; GCS's chunk alignment
SLACK_STEP = 256 << 10


def one_request_slack(part_size: int) -> int:
    """Bytes above the part size an object may have and still be one request (and
    a larger object's first part has): a sixteenth of the part size, in steps of
    256 KiB (1 MiB for 16 MiB parts). So a 16 MiB WAL segment stored uncompressed
    (or incompressible) with its object header is one PUT, not an upload of a
    full part and a part of a few hundred bytes: five requests instead of one."""
    return part_size // 16 // SLACK_STEP * SLACK_STEP


class RemoteBackend(Store):
    """A Backend over a remote object store; subclasses supply the hooks above."""

    #: URL scheme, the store's name for a bucket, and the setting that sizes parts
    SCHEME: ClassVar[str]
    NOUN: ClassVar[str] = "bucket"
    PART_SETTING: ClassVar[str]
    #: (HTTP status, service code) -> outcome (:mod:`.errormap`)
    ERRORS: ClassVar[em.Table]
    #: the SDK's exception types :meth:`_translate` maps
    SDK_ERRORS: ClassVar[tuple[type[BaseException], ...]] = ()
    #: hint for a missing bucket / container and for a ConfigError answer
    NO_CONTAINER_HINT: ClassVar[str]
    CONFIG_HINT: ClassVar[str] = "check the repository settings"
    #: parts per object and bytes per part the store allows (None: no limit)
    MAX_PARTS: ClassVar[int | None] = None
    MAX_PART: ClassVar[int] = 5 << 30
    #: keys per delete request
    DELETE_BATCH: ClassVar[int] = 1000
    #: whether a put in parts ends with a commit request (GCS: the last chunk ends it)
    COMMITS: ClassVar[bool] = True

    part_size: int

    def __init__(self, url: str, config: Config) -> None:
        self.bucket, self.prefix = parse_url(url, self.NOUN)
        self.url = f"{self.SCHEME}://{self.bucket}/{self.prefix}".rstrip("/")
        self.policy = RetryPolicy.from_config(config)
        self._container_ok = False

    # --- hooks ---------------------------------------------------------------
    def _translate(self, exc: BaseException, what: str) -> BaseException:
        raise NotImplementedError

    def _probe_container(self) -> object:
        raise NotImplementedError

    def _denied_hint(self) -> str:
        raise NotImplementedError

    def _head(self, full: str, what: str) -> Any:
        raise NotImplementedError

    def _info(self, key: str, answer: Any) -> ObjectInfo:
        raise NotImplementedError

    def _get(self, key: str, full: str, what: str) -> tuple[Any, ObjectInfo, str | None]:
        raise NotImplementedError

    def _get_range(self, full: str, pos: int, version: str | None, what: str) -> Any:
        raise NotImplementedError

    def _body(self, answer: Any, what: str) -> Iterator[bytes]:
        raise NotImplementedError

    def _one_request(self, part: Part) -> bool:
        """Whether an object of this one part goes in one request."""
        return True

    def _put_one(self, full: str, part: Part, mode: str, meta: dict[str, str], what: str) -> object:
        raise NotImplementedError

    def _holds_one(self, full: str, part: Part, what: str) -> bool:
        raise NotImplementedError

    def _start_upload(self, full: str, mode: str, meta: dict[str, str], where: str) -> Any:
        raise NotImplementedError

    def _send_part(
        self, upload: Any, index: int, part: Part, offset: int, last: bool, where: str
    ) -> Any:
        raise NotImplementedError

    def _commit(
        self,
        upload: Any,
        tokens: list[Any],
        first: Part,
        mode: str,
        meta: dict[str, str],
        what: str,
    ) -> object:
        raise NotImplementedError

    def _holds_parts(self, upload: Any, tokens: list[Any], what: str) -> bool:
        raise NotImplementedError

    def _abort_upload(self, upload: Any, where: str) -> None:
        pass  # uncommitted parts are invisible and expire

    def _list_page(
        self, full_prefix: str, token: str | None, what: str
    ) -> tuple[list[Entry], str | None]:
        raise NotImplementedError

    def _delete_request(self, fulls: Sequence[str], what: str) -> Sequence[DeleteAnswer]:
        raise NotImplementedError

    def _final_error(self, code: str, text: str, what: str) -> StorageError:
        """The error for an answer the table calls final (em.ERROR)."""
        return StorageError(text)

    # --- names, errors and retries -------------------------------------------
    def _where(self, key: str | None = None) -> str:
        return f"{self.SCHEME}://{self.bucket}/{self.prefix}{key}" if key is not None else self.url

    def _full(self, key: str) -> str:
        check_key(key)
        return self.prefix + key

    def _no_container(self, what: str | None = None) -> ContainerNotFound:
        head = f"{what}: " if what else ""
        return ContainerNotFound(
            f"{head}{self.NOUN} {self.bucket!r} does not exist", hint=self.NO_CONTAINER_HINT
        )

    def _answer_error(
        self, status: int, code: str, what: str, message: str = ""
    ) -> StorageError | ConfigError:
        """The walship error for the store's error answer ``status`` / ``code``."""
        found = em.outcome(self.ERRORS, status, code)
        text = answer_text(what, status, code, message)
        if found == em.NO_CONTAINER:
            return self._no_container(what)
        if found == em.NOT_FOUND:
            return NotFound(f"{what}: does not exist")
        if found == em.EXISTS:
            return AlreadyExists(f"{what}: already exists")
        if found == em.TRANSIENT:
            return Transient(text)
        if found == em.DENIED:
            return PermissionDenied(text, hint=self._denied_hint())
        if found == em.CONFIG:
            return ConfigError(text, hint=self.CONFIG_HINT)
        return self._final_error(code, text, what)

    def _attempt(self, fn: Callable[[], Any], what: str) -> Any:
        """One attempt of ``fn``, the SDK's exceptions translated."""
        try:
            return fn()
        except self.SDK_ERRORS as exc:
            raise self._translate(exc, what) from None

    def _call(
        self,
        fn: Callable[[], Any],
        what: str,
        kind: str,
        on_retry: Callable[[Transient], None] | None = None,
    ) -> Any:
        """``fn`` under the retry policy; ``kind`` as in :mod:`.retry`."""
        return self.policy.call(lambda: self._attempt(fn, what), what, kind=kind, on_retry=on_retry)

    def _check_container(self) -> None:
        """Raise ContainerNotFound (or PermissionDenied) unless the bucket is there."""
        if self._container_ok:
            return
        what = f"HEAD {self.NOUN} {self.SCHEME}://{self.bucket}"
        try:
            self._call(self._probe_container, what, SAFE)
        except NotFound:
            raise self._no_container() from None
        self._container_ok = True

    def _absent(self, where: str) -> NotFound:
        self._check_container()
        return NotFound(f"{where} does not exist")

    # --- the protocol ----------------------------------------------------------
    def head(self, key: str) -> ObjectInfo | None:
        full = self._full(key)
        what = f"HEAD {self._where(key)}"
        try:
            answer = self._call(lambda: self._head(full, what), what, SAFE)
        except NotFound:
            self._check_container()
            return None
        self._container_ok = True
        return self._info(key, answer)

    def open(self, key: str) -> ObjectStream:
        full = self._full(key)
        where = self._where(key)
        what = f"GET {where}"
        try:
            answer, info, version = self._call(lambda: self._get(key, full, what), what, SAFE)
        except NotFound:
            raise self._absent(where) from None
        self._container_ok = True

        def open_at(pos: int) -> Iterator[bytes]:
            return self._body(
                self._attempt(lambda: self._get_range(full, pos, version, what), what), what
            )

        chunks = resuming_chunks(self._body(answer, what), open_at, info.size, self.policy, where)
        return IterStream(info, em.pinned_read(chunks, where))

    def _put(
        self, key: str, chunks: Iterable[bytes], mode: str, meta: dict[str, str]
    ) -> ObjectInfo:
        full = self.prefix + key
        where = self._where(key)
        reader = PartReader(chunks)
        first = reader.read(min(self.part_size + one_request_slack(self.part_size), self.MAX_PART))
        try:
            if reader.exhausted and self._one_request(first):
                what = f"PUT {where}"
                self._conditional(
                    lambda: self._put_one(full, first, mode, meta, what),
                    what,
                    mode,
                    lambda: self._holds_one(full, first, what),
                )
            else:
                self._put_parts(full, where, first, reader, mode, meta)
        except AlreadyExists:
            raise AlreadyExists(f"{where} already exists") from None
        except NotFound:
            raise self._absent(where) from None
        finally:
            first.close()
        self._container_ok = True
        return ObjectInfo(key, reader.total, meta, None)

    def _conditional(
        self,
        send: Callable[[], object],
        what: str,
        mode: str,
        holds: Callable[[], bool],
        *,
        completes: bool = False,
    ) -> None:
        """Send a request that writes the object, and the retried-create check.

        A retry after a transient fault may meet the first attempt's own
        object: then the store answers "already exists" (a create-only put's
        condition) or, for a commit (``completes``), "no such upload". Either
        is success when ``holds()`` finds the stored object to be exactly what
        was sent; otherwise AlreadyExists stands, and a vanished upload is an
        error. Without a retry the answer is the store's, unchanged.
        """
        ambiguous: list[Transient] = []
        kind = CONDITIONAL if mode == CREATE else IDEMPOTENT
        try:
            self._call(send, what, kind, ambiguous.append)
        except (AlreadyExists, NotFound) as exc:
            if isinstance(exc, NotFound) and not completes:
                raise
            if ambiguous and self._stored_is_ours(holds):
                return  # our own earlier attempt landed; its answer was lost
            if isinstance(exc, AlreadyExists):
                raise
            raise StorageError(f"{what}: the upload vanished before completion") from None

    @staticmethod
    def _stored_is_ours(holds: Callable[[], bool]) -> bool:
        try:
            return holds()
        except NotFound:
            return False

    def _put_parts(
        self,
        full: str,
        where: str,
        first: Part,
        reader: PartReader,
        mode: str,
        meta: dict[str, str],
    ) -> None:
        """A put in parts: start, send each part (one held at a time), commit;
        aborted on any failure, so no partial object is ever visible."""
        upload = self._start_upload(full, mode, meta, where)
        done = False
        try:
            tokens: list[Any] = []
            offset = 0
            for index, part, last in self._parts(first, reader, where):
                tokens.append(self._send_part(upload, index, part, offset, last, where))
                offset += part.size
            if self.COMMITS:
                what = f"complete upload of {where} ({len(tokens)} parts)"
                self._conditional(
                    lambda: self._commit(upload, tokens, first, mode, meta, what),
                    what,
                    mode,
                    lambda: self._holds_parts(upload, tokens, what),
                    completes=True,
                )
            done = True
        finally:
            if not done:
                self._abort_upload(upload, where)

    def _parts(
        self, first: Part, reader: PartReader, where: str
    ) -> Iterator[tuple[int, Part, bool]]:
        """(index, part, is last) from ``first`` on, sizes growing (:mod:`.parts`);
        each part but ``first`` is closed once sent."""
        part = first
        index = 0
        while True:
            last = reader.exhausted
            try:
                yield index, part, last
            finally:
                if part is not first:
                    part.close()
            if last:
                return
            index += 1
            if self.MAX_PARTS is not None and index >= self.MAX_PARTS:
                raise StorageError(
                    f"{where}: object exceeds {self.MAX_PARTS} parts",
                    hint=f"raise {self.PART_SETTING}",
                )
            part = reader.read(self._part_size(index))

    def _part_size(self, index: int) -> int:
        return part_size(self.part_size, index, self.MAX_PART)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every key under ``prefix``, a page at a time, in byte order."""
        what = f"LIST {self._where(prefix)}"
        full_prefix = self.prefix + prefix
        strip = len(self.prefix)
        token: str | None = None
        while True:
            try:
                entries, token = self._call(
                    lambda token=token: self._list_page(full_prefix, token, what),  # type: ignore[misc]
                    what,
                    SAFE,
                )
            except NotFound:  # a listing finds no key absent: the bucket is
                raise self._no_container(what) from None
            self._container_ok = True
            for name, size, mtime in sorted(entries, key=lambda e: e[0].encode()):
                yield ObjectInfo(name[strip:], size, None, mtime)
            if not token:
                return

    def delete(self, keys: Iterable[str]) -> None:
        """Delete in batches of DELETE_BATCH; absent keys are not an error."""
        batch: dict[str, None] = {}
        for key in keys:
            batch[self._full(key)] = None
            if len(batch) == self.DELETE_BATCH:
                self._delete_batch(tuple(batch))
                batch = {}
        if batch:
            self._delete_batch(tuple(batch))

    def _delete_batch(self, fulls: Sequence[str]) -> None:
        """One batch, checked key by key: deleted and absent keys are done, a
        transient answer (or none) is resent alone under the retry policy,
        any other answer fails. An absent key makes the bucket be checked once:
        a missing bucket is ContainerNotFound, not a run of absent keys."""
        strip = len(self.prefix)
        what = f"DELETE {len(fulls)} objects in {self.url}"
        pending: Sequence[str] = tuple(fulls)
        saw_absent = False

        def attempt() -> None:
            nonlocal pending, saw_absent
            answers = self._delete_request(pending, what)
            retry: list[str] = []
            transient: StorageError | None = None
            for index, full in enumerate(pending):
                one = f"DELETE {self._where(full[strip:])}"
                answer = answers[index] if index < len(answers) else None
                if answer is None:
                    retry.append(full)
                    transient = Transient(f"{one}: no answer in the batch response")
                    continue
                status, code, message = answer
                if status in _DELETED:
                    continue
                err = self._answer_error(status, code, one, message)
                if type(err) is NotFound:
                    saw_absent = True
                    continue
                if not isinstance(err, Transient):
                    raise err
                retry.append(full)
                transient = err
            pending = retry
            if transient is not None:
                raise Transient(f"{len(retry)} of the batch: {transient.message}")

        self._call(attempt, what, IDEMPOTENT)
        if saw_absent:
            self._check_container()
        else:
            self._container_ok = True
