"""Retrying transient storage faults (used by the remote backends only).

Only :class:`~walship.errors.Transient` is retried; every other error is
final at once. Whether a transient fault is retried also depends on what the
request does if it is sent twice (its *kind*, which every call names):

- :data:`SAFE`: a read (GET, HEAD, LIST); always retried.
- :data:`IDEMPOTENT`: repeating it has the effect of sending it once (an
  overwrite PUT, a DELETE, an upload part or staged block, a resumable chunk,
  which first asks what the store holds); retried.
- :data:`CONDITIONAL`: a create-only put. A repeat after the first attempt
  landed fails its own condition, and the retried-create check
  (:meth:`walship.storage.client.RemoteBackend._conditional`) then compares
  what the store holds with what was sent; so it is retried.
- :data:`ONCE`: repeating it may apply it twice. A fault after the request
  may have reached the store (:class:`Interrupted`: a read timeout, a reset,
  a cut answer) is final; a fault before it was sent (connection refused, a
  connect timeout) and an error answer (5xx, 429) are retried.

Starting a multipart / resumable upload is IDEMPOTENT for walship: a repeat
leaves at most an empty upload nobody sees (aborted by the bucket's lifecycle
rule, or expired), never a second object. No request walship sends today is
ONCE; a new one must say which kind it is.

Waits are exponential with *full jitter* (a uniformly random sleep
between 0 and ``base * 2**attempt``, capped at ``max_wait``), and a call
stops retrying once ``deadline`` seconds have passed since its first attempt
(the next sleep is clamped so no attempt starts after the deadline).
Each attempt is itself capped by the SDK's connect/read timeouts, which the
backends set from ``retry_attempt_timeout``. Each retry is logged as
``storage.retry`` with the attempt number and the cause.

The deadline applies per request (one PUT, one multipart part, one listing
page), not to a whole multi-GiB upload. See docs/storage.md for the defaults
and the reasoning behind them.

This module imports tenacity, so only the remote backends import it: the
local path of ``walship push`` never pays for it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import tenacity

from .. import log
from ..errors import Transient

T = TypeVar("T")

#: request kinds (see the module docstring)
SAFE = "safe"
IDEMPOTENT = "idempotent"
CONDITIONAL = "conditional"
ONCE = "once"
KINDS = (SAFE, IDEMPOTENT, CONDITIONAL, ONCE)


class Interrupted(Transient):
    """A transient fault after the request was sent (a read timeout, a reset,
    a cut answer): the store may have applied it. Retried for every kind but
    :data:`ONCE`."""


def retried(kind: str, exc: BaseException) -> bool:
    """Whether ``exc`` from a request of ``kind`` is worth another attempt."""
    if not isinstance(exc, Transient):
        return False
    return kind != ONCE or not isinstance(exc, Interrupted)


class RetryPolicy:
    """How one backend retries: total ``deadline`` and per-attempt cap, seconds."""

    def __init__(
        self,
        deadline: float = 30.0,
        attempt_timeout: float = 10.0,
        *,
        base: float = 0.1,
        max_wait: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.deadline = float(deadline)
        self.attempt_timeout = float(attempt_timeout)
        self.base = base
        self.max_wait = max_wait
        self._sleep = sleep

    @classmethod
    def from_config(cls, config: object) -> RetryPolicy:
        deadline = getattr(config, "retry_deadline", 30.0)
        attempt = getattr(config, "retry_attempt_timeout", 10.0)
        return cls(float(deadline), float(attempt))

    @property
    def connect_timeout(self) -> float:
        return min(self.attempt_timeout, 5.0)

    def _wait(self, state: tenacity.RetryCallState) -> float:
        ceiling = min(self.max_wait, self.base * (2 ** (state.attempt_number - 1)))
        remaining = self.deadline - state.seconds_since_start if state.seconds_since_start else 0.0
        return max(0.0, min(random.uniform(0.0, ceiling), remaining))

    def _stop(self, state: tenacity.RetryCallState) -> bool:
        return (state.seconds_since_start or 0.0) >= self.deadline

    def call(
        self,
        fn: Callable[[], T],
        what: str,
        *,
        kind: str = SAFE,
        on_retry: Callable[[Transient], None] | None = None,
    ) -> T:
        """Run ``fn`` until it succeeds, fails for good, or the deadline passes.

        ``kind`` says what a repeat of the request does (:data:`KINDS`).
        ``on_retry`` is called with the transient error before each retry
        (backends use it to remember that an attempt may have landed); a
        :data:`CONDITIONAL` request needs one, since only the retried-create
        check makes its retry safe.
        """
        if kind not in KINDS:
            raise ValueError(f"request kind must be one of {KINDS}, not {kind!r}")
        if kind == CONDITIONAL and on_retry is None:
            raise ValueError("a conditional request is retried only with a retried-create check")

        def before_sleep(state: tenacity.RetryCallState) -> None:
            outcome = state.outcome
            exc = outcome.exception() if outcome is not None else None
            cause = exc.one_line() if isinstance(exc, Transient) else repr(exc)
            log.warning(
                "storage.retry",
                f"retrying {what}",
                attempt=state.attempt_number + 1,
                cause=cause,
                sleep=round(state.next_action.sleep if state.next_action else 0.0, 3),
            )
            if on_retry is not None and isinstance(exc, Transient):
                on_retry(exc)

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(lambda exc: retried(kind, exc)),
            stop=self._stop,
            wait=self._wait,
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        started = time.monotonic()
        try:
            return retrying(fn)
        except Transient as exc:
            attempts = retrying.statistics.get("attempt_number", 1)
            elapsed = time.monotonic() - started
            if not retried(kind, exc):
                raise Transient(
                    f"{what} failed and was not retried, since it may have been applied: "
                    f"{exc.message}",
                    hint=exc.hint or "check the store, then run the command again",
                ) from exc
            raise Transient(
                f"{what} failed after {attempts} attempts in {elapsed:.1f}s: {exc.message}",
                hint=exc.hint
                or "the storage service is unreachable or overloaded; check the network "
                "and the service status (retry_deadline sets how long walship retries)",
            ) from exc


def resuming_chunks(
    first: Iterator[bytes],
    open_at: Callable[[int], Iterator[bytes]],
    size: int,
    policy: RetryPolicy,
    what: str,
) -> Iterator[bytes]:
    """Yield ``size`` bytes from ``first``, resuming at the current offset.

    ``first`` is the body of the response ``open`` already received;
    ``open_at(offset)`` returns an iterator of the body from ``offset`` (a
    ranged GET); it and the iterators it returns raise Transient for faults
    worth retrying. A body that ends early is treated as a transient fault and
    resumed; one that runs long is an error. Never yields truncated data
    silently.
    """
    pos = 0
    body: Iterator[bytes] | None = first
    failures = 0
    first_failure = 0.0
    try:
        while True:
            if body is None:
                start = pos
                body = policy.call(
                    lambda start=start: open_at(start),  # type: ignore[misc]
                    f"resume {what} at byte {start}",
                    kind=SAFE,
                )
            try:
                chunk = next(body)
            except StopIteration:
                if pos >= size:
                    return
                exc: Transient = Transient(f"{what} ended at byte {pos} of {size}")
            except Transient as err:
                exc = err
            else:
                if not chunk:
                    continue
                pos += len(chunk)
                if pos > size:
                    from ..errors import IntegrityError

                    raise IntegrityError(f"{what} is longer than its stated size {size}")
                yield chunk
                continue
            # a fault mid-body: close this response, resume with a ranged GET
            _close(body)
            body = None
            failures += 1
            now = time.monotonic()
            if failures == 1:
                first_failure = now
            if now - first_failure > policy.deadline:
                raise Transient(
                    f"{what}: download kept failing for {policy.deadline:.0f}s "
                    f"(last at byte {pos}): {exc.message}"
                )
            log.warning(
                "storage.retry",
                f"resuming {what}",
                attempt=failures + 1,
                cause=exc.one_line(),
                offset=pos,
            )
    finally:
        if body is not None:
            _close(body)


def _close(it: Iterator[bytes]) -> None:
    close = getattr(it, "close", None)
    if close is not None:
        try:
            close()
        except Exception:
            pass
