"""``walship status``: archiving, backups and the restorable window (walship/ops/status.py).

Text for people, ``--json`` for monitoring (the versioned schema of
docs/operations.md). Exit 0 whenever a document could be made; an unreachable
server or repository is part of the document (and of the text), not a crash.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

from ..ops import status

if TYPE_CHECKING:
    import argparse

    from ..config import Config


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pgdata",
        metavar="DIR",
        help="data directory, for the .ready backlog (default: the pgdata setting, else "
        "what the server reports)",
    )
    parser.add_argument(
        "--no-server", action="store_true", help="do not connect to the server (repository only)"
    )
    parser.add_argument("--json", action="store_true", help="print the JSON document")


def run(args: argparse.Namespace, cfg: Config) -> int:
    doc = status.collect(cfg, pgdata=args.pgdata, server=not args.no_server)
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(status.text(doc))
    return 0 if doc["repository"] is not None else 1
