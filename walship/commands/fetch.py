"""``walship fetch NAME DEST``: restore one file (PostgreSQL's restore_command).

With ``fetch_prefetch`` on, a segment restored into ``pg_wal`` is taken from
the read-ahead spool when it is there, and the fetch then asks the walship
background process for the segments after it (walship/archive/prefetch.py,
walship/background.py, docs/push-fetch.md).

Its exit codes are its own (docs/exit-codes.md): an absent file exits 1, a
real failure exits what ``fetch_error_exit`` says (:func:`error_exit`, which
the CLI asks for every failure of a fetch, configuration errors included).
"""

from __future__ import annotations

import os
import time

from .. import log
from ..config import Config
from ..errors import NotFound

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

    from ..archive.lookahead import Spool


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="archive file name (%%f)")
    parser.add_argument("dest", metavar="DEST", help="where to write it (%%p)")


#: exit code that makes PostgreSQL abort recovery instead of treating the file as absent
ABORT_EXIT = 255


def error_exit(cfg: Config | None) -> int:
    """Exit code for a real (not "absent") fetch failure, per fetch_error_exit.

    ``cfg`` is None when the configuration itself failed to load (or was not
    reached: a usage error): then $WALSHIP_FETCH_ERROR_EXIT decides if it is
    clear, else the failure aborts.
    """
    if cfg is not None:
        mode, pgdata = cfg.fetch_error_exit, cfg.pgdata
    else:
        from .. import config

        mode = str(config.from_environment("fetch_error_exit"))
        value = config.from_environment("pgdata")
        pgdata = value if isinstance(value, str) else None
    if mode == "missing":
        return 1
    if mode == "auto":
        directory = str(pgdata or os.getcwd())
        return 1 if os.path.exists(os.path.join(directory, "standby.signal")) else ABORT_EXIT
    return ABORT_EXIT


def run(args: argparse.Namespace, cfg: Config) -> int:
    try:
        return _fetch(args, cfg)
    except NotFound as exc:  # authoritatively absent: PostgreSQL asks past the archive's end
        log.info("fetch.missing", exc.one_line())
        return 1


def _fetch(args: argparse.Namespace, cfg: Config) -> int:
    repo = cfg.require("repo")
    spool: Spool | None = None
    if cfg.fetch_prefetch > 0:
        from ..archive import prefetch

        dest = os.path.abspath(args.dest)
        if prefetch.ends_recovery(args.name, dest):
            prefetch.discard(prefetch.spool_of(cfg, dest))
        if prefetch.enabled(cfg, args.name, dest):
            spool = prefetch.spool_of(cfg, dest)
            spool.relay_log()
            started = time.monotonic()
            if prefetch.claim(cfg, spool, args.name, dest):
                log.info(
                    "fetch.done",
                    f"fetched {args.name} (prefetched)",
                    ms=round((time.monotonic() - started) * 1000, 1),
                )
                _read_ahead(args, cfg, spool, os.path.getsize(dest))
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
    if spool is not None:
        _read_ahead(args, cfg, spool, result.raw_size)
    return 0


def _read_ahead(args: argparse.Namespace, cfg: Config, spool: Spool, seg_size: int) -> None:
    """Ask for the segments after ``args.name``; start the background process if need be."""
    from ..archive import prefetch

    if prefetch.request(spool, args.name, seg_size, cfg.fetch_prefetch):
        if not spool.background_running():
            from .. import background

            background.start(spool, cfg.config, args.repo, args.log_format)
