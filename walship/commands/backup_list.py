"""``walship backup-list [--json]``: complete base backups, oldest first (docs/backups.md).

One row per backup with a manifest: name, label, stop time, start/stop LSN,
timeline, raw and stored size, duration, and whether the WAL it needs to
become consistent is in the repository (``wal_ok``). Backups without a
manifest (in progress, or interrupted) are not rows; the text output counts
them in a footer. An unreadable manifest is reported on stderr and makes the
exit status 1.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

from .. import log, repository
from ..storage.registry import open_backend

if TYPE_CHECKING:
    import argparse
    from typing import Any

    from ..config import Config


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="a JSON array of rows")


COLUMNS = (
    ("name", "name"),
    ("label", "label"),
    ("stop time", "stop_time"),
    ("start lsn", "start_lsn"),
    ("stop lsn", "stop_lsn"),
    ("tli", "timeline"),
    ("raw", "raw_size"),
    ("stored", "stored_size"),
    ("duration", "duration_s"),
    ("wal", "wal_ok"),
)


def _cell(key: str, value: Any) -> str:
    from ..backup.push import human

    if key in ("raw_size", "stored_size"):
        return human(int(value))
    if key == "duration_s":
        return "-" if value is None else f"{value:.0f}s"
    if key == "wal_ok":
        return "ok" if value else "MISSING"
    if key == "stop_time":
        return str(value).split(".")[0].replace("T", " ") + "Z"
    return str(value)


def text(rows: list[dict[str, Any]], incomplete: int) -> str:
    lines: list[str] = []
    if rows:
        table = [[title for title, _ in COLUMNS]]
        table += [[_cell(key, r[key]) for _, key in COLUMNS] for r in rows]
        widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
        for line in table:
            lines.append("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    else:
        lines.append("no complete base backup")
    if incomplete:
        noun = "backup" if incomplete == 1 else "backups"
        lines.append(f"{incomplete} incomplete {noun} (leftovers): walship delete --garbage")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace, cfg: Config) -> int:
    from ..backup import catalog, listing

    backend = open_backend(cfg.require("repo"), cfg)
    try:
        repository.require_identity(backend)
        scan = catalog.scan(backend)
        manifests, errors = catalog.load(cfg, backend, scan.complete)
        cache: dict[str, set[str]] = {}
        rows = [listing.row(m, listing.wal_present(backend, m, cache)) for m in manifests]
    finally:
        backend.close()
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(text(rows, len(scan.incomplete)))
    for name, reason in errors.items():
        log.error("backup-list.unreadable", f"backup {name}: {reason}")
    return 1 if errors else 0
