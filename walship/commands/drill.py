"""``walship drill``: restore a backup into a scratch server and measure RTO (walship/ops/drill.py).

Exit 0 when the drill passed, 22 when it ran and failed (the reason is the last
line, and in the stored report under ``drills/``), 2 for bad usage (another
drill running, a bad target, run as root).
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

from .. import log
from ..ops import drill

if TYPE_CHECKING:
    import argparse

    from ..config import Config


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        default="latest",
        metavar="latest|TIME",
        help="recover to the end of the archived WAL (default) or to a time with a zone, "
        "e.g. '2026-12-01 14:30:00+00'",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the restored copy (stopped) under drill_dir until the next drill",
    )
    parser.add_argument("--json", action="store_true", help="print the JSON report")


def run(args: argparse.Namespace, cfg: Config) -> int:
    report = drill.Drill(cfg, args.target, args.keep).run()
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(drill.text(report))
    if not report["ok"]:
        log.error("drill.failed", f"walship drill failed: {report['reason']}")
        return drill.EXIT_FAILED
    return 0
