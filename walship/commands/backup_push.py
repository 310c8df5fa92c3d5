"""``walship backup-push``: take a base backup of the running server (docs/backups.md).

Runs on the database host as the user that owns the data directory (usually
postgres); connects with libpq's settings or the ``conninfo`` setting.
Prints one line when the backup is complete (its manifest written), with its
name, sizes, duration and the LSN at which it is consistent.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from .. import log
from ..errors import UsageError
from ..storage.registry import open_backend

if TYPE_CHECKING:
    import argparse

    from ..config import Config


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pgdata",
        metavar="DIR",
        help="data directory (default: the pgdata setting, else the server's data_directory)",
    )
    parser.add_argument("--label", metavar="TEXT", help="backup label (default: walship NAME)")
    parser.add_argument(
        "--fast",
        action="store_true",
        help="start with an immediate checkpoint instead of a spread one",
    )
    parser.add_argument(
        "--allow-checksum-failures",
        action="store_true",
        help="record the backup even when pages fail their checksum (they are listed in "
        "the manifest)",
    )


def run(args: argparse.Namespace, cfg: Config) -> int:
    from ..backup import push

    if args.label is not None and (
        "\n" in args.label or "\r" in args.label or len(args.label.encode()) > 1023
    ):
        raise UsageError(
            "--label must be one line of at most 1023 bytes (PostgreSQL writes it into "
            "backup_label)"
        )
    opts = push.Options(
        pgdata=args.pgdata,
        label=args.label,
        fast=args.fast,
        allow_checksum_failures=args.allow_checksum_failures,
        progress=sys.stderr is not None and sys.stderr.isatty(),
        verbose=bool(args.verbose),
    )
    repo = cfg.require("repo")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        log.warning(
            "backup-push.root",
            "running as root: what it creates in a local repository is owned by root, which "
            "the postgres user's archiving and backups then cannot write",
            hint="run backup-push as the user that owns the data directory (usually postgres)",
        )
    backend = open_backend(repo, cfg)
    try:
        result = push.backup_push(cfg, backend, opts)
    finally:
        backend.close()
    print(result.line())
    return 0
