"""``walship verify``: WAL continuity, history consistency, backup completeness."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

from .. import log
from ..config import Config
from ..manifest import BACKUPS_PREFIX
from ..restore import report, verify
from ..restore.inventory import deep_check, load_inventory
from ..storage.registry import open_backend

if TYPE_CHECKING:
    import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--deep",
        action="store_true",
        help="also re-read every object and check its digest (and decryption)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace, cfg: Config) -> int:
    backend = open_backend(cfg.require("repo"), cfg)
    try:
        inv, listing = load_inventory(cfg, backend)
        problems = verify.check(inv)
        problems += verify.check_parts(inv, listing.prefixes.get(BACKUPS_PREFIX, []))
        objects = raw_bytes = 0
        if args.deep:
            deep = deep_check(cfg, backend, listing, inv)
            problems += deep.problems
            objects, raw_bytes = deep.objects, deep.raw_bytes
    finally:
        backend.close()
    problems.sort(key=lambda p: (p.severity != verify.ERROR, p.kind))
    if args.json:
        doc = report.verify_json(
            problems, inv, deep=args.deep, objects=objects, raw_bytes=raw_bytes
        )
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(
            report.verify_text(problems, inv, deep=args.deep, objects=objects, raw_bytes=raw_bytes)
        )
    if verify.has_errors(problems):
        errors = [p for p in problems if p.severity == verify.ERROR]
        log.error(
            "verify.failed", f"verify found {len(errors)} problem(s); first: {errors[0].message}"
        )
        return verify.EXIT_PROBLEMS
    return 0
