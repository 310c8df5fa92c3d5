"""``walship archive-status``: how far archiving is behind (back-pressure).

Prints one line: the number of files waiting in ``pg_wal/archive_status``
(``.ready``), the oldest one and its age in seconds, how many of them the
background process has pushed ahead (records in the spool), and whether that
process runs. ``--json`` prints the same as one JSON object. walship never
drops WAL to keep a queue short: this is what to monitor instead.
"""

from __future__ import annotations

import os

from ..archive import lookahead
from ..config import Config
from ..errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pgdata",
        metavar="DIR",
        help="data directory (default: the pgdata setting, else the current directory)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object instead of a line")


def run(args: argparse.Namespace, cfg: Config) -> int:
    pgdata = os.path.abspath(args.pgdata or cfg.pgdata or os.getcwd())
    pg_wal = os.path.join(pgdata, "pg_wal")
    status = os.path.join(pg_wal, "archive_status")
    if not os.path.isdir(status):
        raise UsageError(
            f"{status} does not exist: {pgdata} is not a PostgreSQL data directory",
            hint="pass --pgdata DIR or set pgdata (see docs/configuration.md)",
        )
    backlog = lookahead.backlog(status)
    ahead = 0
    running = False
    if cfg.repo:
        spool = lookahead.Spool(pg_wal, cfg)
        ready = set(spool.ready())
        # whatever settings they were pushed with: an operator's shell need not have the
        # server's environment
        ahead = sum(
            1 for name in ready if spool.acknowledged(name, os.path.join(pg_wal, name), True)
        )
        running = spool.background_running()
    out: dict[str, object] = {
        "ready": backlog.ready,
        "oldest": backlog.oldest,
        "oldest_age_s": None if backlog.oldest_age is None else round(backlog.oldest_age, 1),
        "pushed_ahead": ahead,
        "background": "running" if running else "stopped",
    }
    if args.json:
        import json

        print(json.dumps(out))
    else:
        print(" ".join(f"{k}={'-' if v is None else v}" for k, v in out.items()))
    return 0
