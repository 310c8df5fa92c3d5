"""``walship push SOURCE NAME``: archive one file (PostgreSQL's archive_command).

When SOURCE is in ``pg_wal`` and ``archive_lookahead`` is on, a file the
background process already pushed is acknowledged from its record (the fast
path: no storage, compression or encryption module is imported), a call
that finds other files waiting makes sure the background process runs, and a
call whose file that process would push hands it over and waits for its
record instead of pushing it too (walship/background.py, docs/push-fetch.md).
"""

from __future__ import annotations

import os
import time

from .. import log
from ..archive import lookahead
from ..config import Config

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE", help="path of the file (%%p)")
    parser.add_argument("name", metavar="NAME", help="archive file name (%%f)")


def run(args: argparse.Namespace, cfg: Config) -> int:
    cfg.require("repo")
    path = os.path.abspath(args.source)
    pg_wal = lookahead.pg_wal_of(path) if cfg.archive_lookahead > 0 else None
    spool = lookahead.Spool(pg_wal, cfg) if pg_wal is not None else None
    if spool is not None:
        started = time.monotonic()
        record = spool.acknowledged(args.name, path) or spool.wait_for_background(args.name, path)
        if record is None:
            spool.announce()  # the settings to push ahead with are this call's
            ready = spool.ready()
            # a backlog and nobody pushing ahead: start the background process now
            started_it = _start_background(spool, args, cfg, ready)
            if args.name in ready and spool.will_take(args.name, path, started_it):
                # it runs (or was just started): it pushes this file too, with the
                # storage SDK it has loaded, so let it, rather than push it twice
                record = spool.hand_over(args.name, path, just_started=started_it)
        # after the record: what the background process logged about this file (written
        # before its record) reaches the server log with this call
        spool.relay_log()
        if record is not None:
            log.info(
                "push.done",
                f"pushed {args.name} (ahead)",
                sha256=record.sha256,
                ms=round((time.monotonic() - started) * 1000, 1),
            )
            _after(spool, args, cfg)
            return 0
    pgdata = cfg.pgdata or os.getcwd()
    try:
        _push(args, cfg, path, spool)
    except BaseException:
        _log_backlog(_status_dir(path, pgdata))  # each push says it, failed ones too
        raise
    if spool is not None:
        _after(spool, args, cfg)
    else:
        _log_backlog(_status_dir(path, pgdata))
    pg_wal_dir = os.path.join(pgdata, "pg_wal")
    if os.path.isdir(lookahead.Spool(pg_wal_dir, cfg).readahead) or os.path.isdir(
        os.path.join(pg_wal_dir, lookahead.LEGACY_READAHEAD)
    ):
        from ..archive import prefetch  # a read-ahead spool left by a finished recovery

        prefetch.remove_stale(cfg, pgdata)
    return 0


def _push(args: argparse.Namespace, cfg: Config, path: str, spool: lookahead.Spool | None) -> None:
    """The normal push (here, not at the top: the fast path needs none of it)."""
    from ..archive import push
    from ..storage.registry import open_backend

    started_ns = time.time_ns()
    try:
        before = lookahead.stat_of(path) if spool is not None else None
    except OSError:
        before = None  # push reports it
    backend = open_backend(cfg.require("repo"), cfg)
    try:
        result = push.push(cfg, backend, args.source, args.name)
    finally:
        backend.close()
    push.log_result(result)
    if spool is not None and before is not None:
        # durable now: a record keeps the background process from pushing it again
        try:
            spool.record_if_unchanged(
                args.name, path, before, started_ns, result.sha256, result.system_identifier
            )
        except OSError as exc:
            log.debug("lookahead.record", f"no record for {args.name}: {exc}")


def _after(spool: lookahead.Spool, args: argparse.Namespace, cfg: Config) -> None:
    """Report the backlog; start the background process when files are waiting;
    with none running, remove the records of files no longer waiting."""
    ready = spool.ready()
    _log_backlog(spool.status)
    if not _start_background(spool, args, cfg, ready) and not spool.background_running():
        spool.prune(ready)


def _status_dir(path: str, pgdata: str) -> str:
    """archive_status of the pg_wal holding ``path``, else of the data directory's."""
    pg_wal = lookahead.pg_wal_of(path) or os.path.join(pgdata, "pg_wal")
    return os.path.join(pg_wal, "archive_status")


def _log_backlog(status_dir: str) -> None:
    """The backlog at debug level (nothing when there is no archive_status)."""
    if log.enabled("debug") and os.path.isdir(status_dir):
        backlog = lookahead.backlog(status_dir)
        log.debug(
            "push.backlog",
            "archive backlog",
            ready=backlog.ready,
            oldest=backlog.oldest or "-",
            oldest_age_s=round(backlog.oldest_age or 0.0, 1),
        )


def _start_background(
    spool: lookahead.Spool, args: argparse.Namespace, cfg: Config, ready: list[str]
) -> bool:
    """Start the background process when files other than this one wait and none
    runs; True if this call started it.

    ``r/`` (what asks a process for look-ahead) is made only here, and
    ``config.push`` names this call's settings: a process pushes ahead only
    with those settings. One a fetch started (read-ahead during recovery, with
    restore_command's settings) pushes ahead only if they are the same; else
    the calls push their files themselves until it exits."""
    if any(n != args.name for n in ready) and not spool.background_running():
        from .. import background

        try:
            os.makedirs(spool.records, mode=0o700, exist_ok=True)  # asks for look-ahead
        except OSError:
            pass  # background.start reports it
        spool.announce()  # ... with this call's settings (the process's too)
        return background.start(spool, cfg.config, args.repo, args.log_format)
    return False
