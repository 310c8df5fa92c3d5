"""The SQL session to the PostgreSQL server: the only importer of psycopg.

backup-push, check, status and drill talk to the server through
:func:`connect`. psycopg (the ``backup`` extra) is imported only here and only
when a session is opened: ``walship push`` / ``walship fetch`` never load it.

The connection uses libpq's own settings (PGHOST, PGPORT, PGUSER, PGDATABASE,
PGPASSWORD, ~/.pgpass, PGSERVICE, ...) and the ``conninfo`` setting when set.
No password is ever taken from argv, and no connection string is put into a
message: errors name the host/port only.
"""

from __future__ import annotations

import re

from .errors import WalshipError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .config import Config


class ServerError(WalshipError):
    """The PostgreSQL server could not be reached or refused what was asked."""


def connect(cfg: Config, *, autocommit: bool = True, application: str = "walship") -> Any:
    """A psycopg connection, or ServerError with one line naming the problem and the fix."""
    try:
        import psycopg
    except ImportError:
        raise ServerError(
            "this command needs the PostgreSQL driver psycopg, which is not installed",
            hint="install walship[backup] (pip install 'walship[backup]')",
        ) from None
    conninfo = getattr(cfg, "conninfo", None)
    try:
        conn = psycopg.connect(
            conninfo or "",
            autocommit=autocommit,
            application_name=application,
        )
    except psycopg.OperationalError as exc:
        raise ServerError(
            f"cannot connect to the PostgreSQL server: {_first_line(exc)}",
            hint="check PGHOST/PGPORT/PGUSER (or the `conninfo` setting) and ~/.pgpass",
        ) from None
    return conn


#: what psycopg puts before libpq's message (it says nothing the message does not)
_PSYCOPG_PREFIXES = ("connection failed: ", "connection is bad: ")
#: libpq's severity word after "connection to server ... failed: "
_SEVERITY = re.compile(r"(failed: )(?:FATAL|ERROR):  ")


def _first_line(exc: BaseException) -> str:
    """libpq's message, first line, without anything that could be a password, and
    without psycopg's prefixes or libpq's severity word."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    changed = True
    while changed:
        changed = False
        for prefix in _PSYCOPG_PREFIXES:
            if text.startswith(prefix):
                text, changed = text[len(prefix) :], True
    text = _SEVERITY.sub(r"\1", text)
    return text.removeprefix("FATAL:  ").strip() or type(exc).__name__
