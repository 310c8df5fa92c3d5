"""``walship wal-show``: timelines, archived segment ranges, gaps and time spans."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

from ..config import Config
from ..restore import planner, report
from ..restore.inventory import load_inventory
from ..storage.registry import open_backend

if TYPE_CHECKING:
    import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace, cfg: Config) -> int:
    backend = open_backend(cfg.require("repo"), cfg)
    try:
        inv, _ = load_inventory(cfg, backend)
    finally:
        backend.close()
    infos = planner.overview(inv)
    if args.json:
        json.dump(report.overview_json(inv, infos), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(report.overview_text(inv, infos))
    return 0
