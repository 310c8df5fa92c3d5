"""One-line event logging to stderr (PostgreSQL copies it into the server log).

Deliberately tiny instead of :mod:`logging`: it runs once per WAL segment and
must cost nothing. ``text`` lines look like::

    walship[1234]: INFO pushed 000000010000000000000003 raw_size=16777216 stored_size=801234

``json`` lines are one object each: ``{"ts": ..., "level": ..., "pid": ...,
"event": ..., "msg": ..., <fields>}``.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    class Stream(Protocol):
        """Where lines go: stderr, a test's buffer, the background process's log file."""

        def write(self, text: str, /) -> int: ...

        def flush(self) -> None: ...


LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}

_state: dict[str, object] = {"level": 20, "format": "text"}
_stream: list[Stream | None] = [None]


def configure(*, level: str = "info", fmt: str = "text", shift: int = 0) -> None:
    """Set the threshold (``shift`` adds -v/-q steps of 10) and the line format."""
    _state["level"] = max(10, min(50, LEVELS[level] + shift))
    _state["format"] = fmt


def set_stream(stream: Stream | None) -> None:
    _stream[0] = stream


def enabled(level: str) -> bool:
    threshold = _state["level"]
    assert isinstance(threshold, int)
    return LEVELS[level] >= threshold


def _quote(value: object) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\n\t'):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def emit(level: str, event: str, msg: str, **fields: object) -> None:
    if not enabled(level):
        return
    stream = _stream[0] or sys.stderr
    if stream is None:  # started with stderr closed: nowhere to write
        return
    if _state["format"] == "json":
        import json

        record: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
            + f".{int(time.time() * 1000) % 1000:03d}Z",
            "level": level,
            "pid": os.getpid(),
            "event": event,
            "msg": " ".join(msg.split()),
        }
        record.update(fields)
        line = json.dumps(record, default=str, sort_keys=False)
    else:
        parts = [f"walship[{os.getpid()}]: {level.upper()} {' '.join(msg.split())}"]
        parts.extend(f"{k}={_quote(v)}" for k, v in fields.items())
        line = " ".join(parts)
    stream.write(line + "\n")
    stream.flush()


def debug(event: str, msg: str, **fields: object) -> None:
    emit("debug", event, msg, **fields)


def info(event: str, msg: str, **fields: object) -> None:
    emit("info", event, msg, **fields)


def warning(event: str, msg: str, **fields: object) -> None:
    emit("warning", event, msg, **fields)


def error(event: str, msg: str, **fields: object) -> None:
    emit("error", event, msg, **fields)
