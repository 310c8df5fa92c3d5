"""Results of ``walship check`` and ``walship drill`` kept in the repository.

    ops/check.json                 the last check (replaced by each check)
    ops/last-drill.json            the last drill (replaced by each drill)
    drills/<YYYYMMDDTHHMMSSZ>.json every drill, create-only (history for operators)

Each is a walship envelope (compressed, and encrypted when encryption is
configured) holding one JSON document; ``walship status`` and ``walship
metrics`` read the two ``ops/`` objects (two GETs, no listing).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import TYPE_CHECKING, Any

from ..codec import objects
from ..errors import AlreadyExists, NotFound, WalshipError
from ..storage.base import CREATE, OVERWRITE

if TYPE_CHECKING:
    from ..config import Config
    from ..storage.base import Backend

CHECK_KEY = "ops/check.json"
LAST_DRILL_KEY = "ops/last-drill.json"
DRILLS_PREFIX = "drills/"
PROBE_PREFIX = "ops/probe-"


def _put(
    cfg: Config, backend: Backend, key: str, kind: str, doc: dict[str, Any], mode: str
) -> None:
    data = json.dumps(doc, sort_keys=True).encode() + b"\n"
    header = objects.new_header(key, kind, len(data), hashlib.sha256(data).hexdigest(), cfg)
    objects.put_object(cfg, backend, key, header, [data], mode=mode)


def read(cfg: Config, backend: Backend, key: str) -> dict[str, Any] | None:
    """The JSON document under ``key``; None when absent. Errors propagate."""
    try:
        with objects.open_object(cfg, backend, key) as obj:
            data = b"".join(obj.raw)
    except NotFound:
        return None
    try:
        doc = json.loads(data)
    except ValueError:
        raise WalshipError(
            f"{backend.url}/{key} is not JSON", hint="delete it; the next run rewrites it"
        ) from None
    return doc if isinstance(doc, dict) else None


def save_check(cfg: Config, backend: Backend, doc: dict[str, Any]) -> None:
    _put(cfg, backend, CHECK_KEY, "ops-check", doc, OVERWRITE)


def drill_key(started: float) -> str:
    return DRILLS_PREFIX + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started)) + ".json"


def save_drill(cfg: Config, backend: Backend, doc: dict[str, Any], started: float) -> str:
    key = drill_key(started)
    try:
        _put(cfg, backend, key, "ops-drill", doc, CREATE)
    except AlreadyExists:  # two drills in one second: keep the first
        pass
    _put(cfg, backend, LAST_DRILL_KEY, "ops-drill", doc, OVERWRITE)
    return key
