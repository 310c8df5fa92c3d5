from __future__ import annotations

import os
import time

from .. import log
from ..cli import remember_fetch_settings
from ..config import Config

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="archive file name (%%f)")
    parser.add_argument("dest", metavar="DEST", help="where to write it (%%p)")


def run(args: argparse.Namespace, cfg: Config) -> int:
    remember_fetch_settings(cfg.fetch_error_exit, cfg.pgdata)
    repo = cfg.require("repo")
    prefetching = False
    if cfg.fetch_prefetch > 0:
        from ..archive import prefetch

        dest = os.path.abspath(args.dest)
        if prefetch.ends_recovery(args.name, dest):
            prefetch.discard(cfg, dest)
        prefetching = prefetch.enabled(cfg, args.name, dest)
        if prefetching:
            started = time.monotonic()
            if prefetch.claim(cfg, args.name, dest):
                log.info(
                    "fetch.done",
                    f"fetched {args.name} (prefetched)",
                    ms=round((time.monotonic() - started) * 1000, 1),
                )
                prefetch.start(cfg, args.name, dest, os.path.getsize(dest))
                return 0
    # here, not at the top: a prefetched segment needs neither (nor zstd, nor crypto)
    from ..archive import fetch
    from ..storage.registry import open_backend

    backend = open_backend(repo, cfg)
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
    if prefetching:
        prefetch.start(cfg, args.name, dest, result.raw_size)
    return 0
