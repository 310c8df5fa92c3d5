from __future__ import annotations

from .. import log
from ..archive import fetch
from ..cli import remember_fetch_settings
from ..config import Config
from ..storage.registry import open_backend

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="archive file name (%%f)")
    parser.add_argument("dest", metavar="DEST", help="where to write it (%%p)")


def run(args: argparse.Namespace, cfg: Config) -> int:
    remember_fetch_settings(cfg.fetch_error_exit, cfg.pgdata)
    backend = open_backend(cfg.require("repo"), cfg)
    try:
        result = fetch.fetch(cfg, backend, args.name, args.dest)
    finally:
        backend.close()
    log.info(
        "fetch.done",
        f"fetched {result.name}",
        raw_size=result.raw_size,
        ms=round(result.seconds * 1000, 1),
    )
    return 0
