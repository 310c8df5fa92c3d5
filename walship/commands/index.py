"""``walship index [--tli N] [--rebuild]``: index archived segments for restore planning.

Downloads every archived segment (and ``.partial``) that has no index entry
yet, reads it with the WAL reader, stores its entry, joins records that cross
segment boundaries and rewrites the index packs. Safe to run at any time and
repeatedly (cron, systemd timer); see docs/index.md.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ..config import Config
from ..storage.registry import open_backend

if TYPE_CHECKING:
    import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tli", type=int, metavar="N", help="only this timeline")
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="re-read every segment and replace all index objects",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace, cfg: Config) -> int:
    from .. import log
    from ..index.build import update_index

    backend = open_backend(cfg.require("repo"), cfg)
    try:
        report = update_index(cfg, backend, tli=args.tli, rebuild=args.rebuild)
    finally:
        backend.close()
    doc = {
        "scanned": report.scanned,
        "entries": report.entries,
        "failed": report.failed,
        "pending": report.pending,
        "packs_written": report.packs_written,
        "packs_deleted": report.packs_deleted,
        "seconds": round(report.seconds, 3),
    }
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(
            f"indexed {report.scanned} segment(s); {report.entries} in the index; "
            f"{report.packs_written} pack(s) written; {len(report.pending)} pending; "
            f"{len(report.failed)} failed ({report.seconds:.1f} s)"
        )
    if report.failed:
        log.warning(
            "index.failures",
            f"{len(report.failed)} segment(s) could not be indexed: {', '.join(report.failed[:5])}",
            hint="see the warnings above; 'walship verify' checks the archived segments",
        )
        return 1
    return 0
