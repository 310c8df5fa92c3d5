"""``walship check``: everything a restore depends on (walship/ops/check.py).

One line per check (OK / WARN / FAIL / SKIP, with the fix), ``--json`` for the
document; exit 21 when any check failed (docs/exit-codes.md). The result is
also stored in the repository (``ops/check.json``) for status and metrics.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

from .. import log
from ..ops import check

if TYPE_CHECKING:
    import argparse

    from ..config import Config


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pgdata",
        metavar="DIR",
        help="data directory, to compare the switched segment with its pg_wal copy "
        "(default: the pgdata setting, else what the server reports)",
    )
    parser.add_argument(
        "--wait",
        metavar="SECONDS",
        type=float,
        help="how long to wait for the switched segment (default: check_archive_wait)",
    )
    parser.add_argument("--json", action="store_true", help="print the JSON document")


def run(args: argparse.Namespace, cfg: Config) -> int:
    doc = check.run_checks(cfg, pgdata=args.pgdata, wait=args.wait)
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(check.text(doc))
    if not doc["ok"]:
        log.error(
            "check.failed",
            f"walship check: {doc['failed']} check(s) failed; first: {doc['reason']}",
        )
        return check.EXIT_FAILED
    return 0
