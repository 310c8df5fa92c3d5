"""JSON for the small documents on the push/fetch path, without ``import json``.

``import json`` also imports ``re``, ``enum``, ``functools`` and
``collections``: about 7 ms per process on the benchmark machine, 10-15 % of
a whole ``walship push`` or ``walship fetch`` (PostgreSQL starts one process
per file). The documents those two commands read and write (object headers,
local-backend metadata, ``repository.json``) are objects of strings,
integers, booleans, null and nested objects, so:

- :func:`dumps` writes exactly what ``json.dumps(obj, sort_keys=True,
  separators=...)`` writes (with the default ``ensure_ascii``) when every
  string is printable ASCII without ``"`` or ``\\``; otherwise it calls
  ``json.dumps``;
- :func:`loads` parses objects whose strings hold no escapes and whose
  numbers are integers; anything else (arrays, floats, escapes, invalid JSON)
  goes to ``json.loads``, so results and errors are always ``json``'s.

tests/test_minijson.py checks both against ``json`` on generated documents.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_WS = " \t\n\r"
_DIGITS = "0123456789"


class _Fallback(Exception):
    """Raised inside the fast path: let ``json`` handle this document."""


# ------------------------------------------------------------------ dumps


def _plain(s: str) -> bool:
    return s.isascii() and s.isprintable() and '"' not in s and "\\" not in s


def _dump(obj: object, out: list[str], item_sep: str, key_sep: str) -> None:
    if obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif type(obj) is int:
        out.append(str(obj))
    elif type(obj) is str:
        if not _plain(obj):
            raise _Fallback
        out.append(f'"{obj}"')
    elif type(obj) is dict:
        if not obj:
            out.append("{}")
            return
        out.append("{")
        first = True
        for key in sorted(obj):  # TypeError for mixed key types, as json
            if type(key) is not str or not _plain(key):
                raise _Fallback
            if not first:
                out.append(item_sep)
            first = False
            out.append(f'"{key}"{key_sep}')
            _dump(obj[key], out, item_sep, key_sep)
        out.append("}")
    else:
        raise _Fallback


def dumps(obj: object, *, separators: tuple[str, str] = (", ", ": ")) -> str:
    """``json.dumps(obj, sort_keys=True, separators=separators)``."""
    out: list[str] = []
    try:
        _dump(obj, out, *separators)
    except _Fallback:
        import json

        return json.dumps(obj, sort_keys=True, separators=separators)
    return "".join(out)


# ------------------------------------------------------------------ loads


def _skip(s: str, i: int) -> int:
    n = len(s)
    while i < n and s[i] in _WS:
        i += 1
    return i


def _string(s: str, i: int) -> tuple[str, int]:
    # s[i] == '"'
    end = s.find('"', i + 1)
    if end < 0:
        raise _Fallback
    value = s[i + 1 : end]
    if "\\" in value or not (value.isprintable() or _no_controls(value)):
        raise _Fallback
    return value, end + 1


def _no_controls(value: str) -> bool:
    # JSON forbids raw control characters (U+0000-U+001F) in strings; other
    # non-printable characters (U+007F, U+00A0, ...) are allowed.
    return not any(c < " " for c in value)


def _value(s: str, i: int, depth: int) -> tuple[Any, int]:
    if i >= len(s):
        raise _Fallback
    c = s[i]
    if c == '"':
        return _string(s, i)
    if c == "{":
        return _object(s, i, depth + 1)
    if c == "-" or c in _DIGITS:
        j = i + 1 if c == "-" else i
        k = j
        while k < len(s) and s[k] in _DIGITS:
            k += 1
        digits = s[j:k]
        if not digits or (len(digits) > 1 and digits[0] == "0") or len(digits) > 4000:
            raise _Fallback
        if k < len(s) and s[k] in ".eE":
            raise _Fallback  # floats: json's parsing and rounding
        return int(s[i:k]), k
    for word, value in (("true", True), ("false", False), ("null", None)):
        if s.startswith(word, i):
            return value, i + len(word)
    raise _Fallback


def _object(s: str, i: int, depth: int) -> tuple[dict[str, Any], int]:
    # s[i] == "{"
    if depth > 64:
        raise _Fallback
    out: dict[str, Any] = {}
    i = _skip(s, i + 1)
    if i < len(s) and s[i] == "}":
        return out, i + 1
    while True:
        if i >= len(s) or s[i] != '"':
            raise _Fallback
        key, i = _string(s, i)
        i = _skip(s, i)
        if i >= len(s) or s[i] != ":":
            raise _Fallback
        value, i = _value(s, _skip(s, i + 1), depth)
        out[key] = value
        i = _skip(s, i)
        if i >= len(s):
            raise _Fallback
        if s[i] == "}":
            return out, i + 1
        if s[i] != ",":
            raise _Fallback
        i = _skip(s, i + 1)


def loads(data: str | bytes | bytearray) -> Any:
    """``json.loads(data)``: the same result, or the same ValueError."""
    try:
        s = data if isinstance(data, str) else bytes(data).decode("utf-8")
        i = _skip(s, 0)
        if not s.startswith("{", i):
            raise _Fallback
        value, i = _object(s, i, 0)
        if _skip(s, i) != len(s):
            raise _Fallback
        return value
    except (_Fallback, UnicodeDecodeError):
        import json

        return json.loads(data)
