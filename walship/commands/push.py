from __future__ import annotations

import os

from ..archive import push
from ..config import Config
from ..storage.registry import open_backend

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE", help="path of the file (%%p)")
    parser.add_argument("name", metavar="NAME", help="archive file name (%%f)")


def run(args: argparse.Namespace, cfg: Config) -> int:
    backend = open_backend(cfg.require("repo"), cfg)
    try:
        result = push.push(cfg, backend, args.source, args.name)
    finally:
        backend.close()
    push.log_result(result)
    pgdata = cfg.pgdata or os.getcwd()
    if os.path.isdir(os.path.join(pgdata, "pg_wal", ".walship-prefetch")):
        from ..archive import prefetch  # a spool left by a finished recovery

        prefetch.remove_stale(pgdata)
    return 0
