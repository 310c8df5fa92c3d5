"""``walship backup-push``: a base backup of the running server into the repository.

The order (docs/backups.md):

1. one SQL session (walship/pgsql.py), checked before anything is copied:
   server version (12+; 15+ uses the pg_backup_* names), archiving (on a
   primary: archive_mode not off and archive_command calling walship, else
   the backup could never become consistent), the data directory (readable,
   and the same cluster as the server and as the repository);
2. ``pg_backup_start`` on that session (held open, autocommit), then the
   walk and the copy of the data directory and every tablespace, by parallel
   workers into part objects (walship/backup/writer.py);
3. ``pg_backup_stop(wait_for_archive => false)``: never a wait inside the
   server; on a standby the timeline must not have changed meanwhile;
4. a wait, through walship's own repository, for the WAL segment that makes
   the backup consistent (and on a primary the ``.backup`` file), with a
   timeout (``backup_wal_timeout``);
5. the manifest, last, with a create-only put: only now is it a backup.

Anything that fails before step 5 leaves parts without a manifest: never
listed or planned as a backup, reported by the catalog as an incomplete
backup (garbage for ``walship delete --garbage``); closing the session
aborts the server's backup, and the next backup-push takes a new name.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

from .. import __version__, log, pgsql, repository
from ..codec import objects
from ..errors import (
    AlreadyExists,
    ContainerNotFound,
    ForeignClusterError,
    UsageError,
    WalshipError,
)
from ..manifest import CONFIG_FILE_SETTINGS, KIND_MANIFEST, Manifest, Tablespace, manifest_key
from ..pg import basebackup, format_lsn, parse_lsn, segment_file_name, segno_of_end_lsn
from . import catalog, files, writer

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ..config import Config
    from ..storage.base import Backend

MIN_VERSION = 120000
NEW_API = 150000  # pg_backup_start/pg_backup_stop (before: pg_start_backup/pg_stop_backup)
#: failures named in the error line (all of them go to the log)
SHOWN_FAILURES = 5


class ServerCheckError(WalshipError):
    """The server or its data directory cannot give a usable backup."""


class Options:
    def __init__(
        self,
        *,
        pgdata: str | None = None,
        label: str | None = None,
        fast: bool = False,
        allow_checksum_failures: bool = False,
        progress: bool = False,
        verbose: bool = False,
    ) -> None:
        self.pgdata = pgdata
        self.label = label
        self.fast = fast
        self.allow_checksum_failures = allow_checksum_failures
        self.progress = progress
        self.verbose = verbose


class Server:
    """What the checks learnt about the server."""

    version: int
    standby: bool
    system_identifier: int
    catalog_version: int
    wal_segment_size: int
    block_size: int
    data_checksums: bool
    data_directory: str | None
    #: config_file, hba_file, ident_file (None: not readable with this role's privileges)
    config_files: dict[str, str | None]
    tablespaces: dict[int, tuple[str, str]]  # oid -> (name, location)


class Result:
    def __init__(self, manifest: Manifest, seconds: float, stop_segment: str) -> None:
        self.manifest = manifest
        self.seconds = seconds
        self.stop_segment = stop_segment

    def line(self) -> str:
        m = self.manifest
        return (
            f"backup {m.name}: {len(m.files)} files, {human(m.raw_size)} raw, "
            f"{human(m.stored_size)} stored, {self.seconds:.1f} s; consistent at LSN "
            f"{format_lsn(m.stop_lsn)} (segment {self.stop_segment} archived)"
        )


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1e6) % 1000000:06d}Z"


# ------------------------------------------------------------------ the session


def _one(conn: Any, sql: str, params: tuple[object, ...] = ()) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchone()


def _sql_error(what: str, exc: BaseException) -> ServerCheckError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    hint = None
    if "permission denied" in text or "must be superuser" in text:
        hint = (
            "connect as a superuser, or a role granted pg_read_all_settings, pg_monitor "
            "and EXECUTE on pg_backup_start/pg_backup_stop (docs/backups.md)"
        )
    return ServerCheckError(f"{what}: {text}", hint=hint)


def _inspect(conn: Any) -> Server:
    import psycopg  # only reached once pgsql.connect imported it

    s = Server()
    try:
        (s.version,) = _one(conn, "SELECT current_setting('server_version_num')::int")
        if s.version < MIN_VERSION:
            raise ServerCheckError(
                f"PostgreSQL {s.version // 10000 if s.version >= 100000 else s.version // 100} "
                "is not supported by walship backup-push",
                hint="it needs PostgreSQL 12 or later (15 or later recommended)",
            )
        conn.execute("SET statement_timeout = 0")
        if s.version >= 140000:
            conn.execute("SET idle_session_timeout = 0")
        (s.standby,) = _one(conn, "SELECT pg_is_in_recovery()")
        sysid, catversion = _one(
            conn, "SELECT system_identifier, catalog_version_no FROM pg_control_system()"
        )
        s.system_identifier, s.catalog_version = int(sysid), int(catversion)
        seg, block = _one(
            conn, "SELECT bytes_per_wal_segment, database_block_size FROM pg_control_init()"
        )
        s.wal_segment_size, s.block_size = int(seg), int(block)
        (checksums,) = _one(conn, "SELECT current_setting('data_checksums')")
        s.data_checksums = checksums == "on"
        try:
            (s.data_directory,) = _one(conn, "SELECT current_setting('data_directory')")
        except psycopg.errors.InsufficientPrivilege:
            s.data_directory = None
        s.config_files = {}
        for setting in CONFIG_FILE_SETTINGS:
            try:
                (s.config_files[setting],) = _one(conn, f"SELECT current_setting('{setting}')")
            except psycopg.errors.InsufficientPrivilege:
                s.config_files[setting] = None
        s.tablespaces = {}
        with conn.cursor() as cur:
            cur.execute(
                "SELECT oid::bigint, spcname::text, pg_tablespace_location(oid) FROM pg_tablespace "
                "WHERE spcname NOT IN ('pg_default', 'pg_global')"
            )
            for oid, name, location in cur.fetchall():
                s.tablespaces[int(oid)] = (str(name), str(location))
    except psycopg.Error as exc:
        raise _sql_error("cannot read the server's settings", exc) from None
    return s


def _check_archiving(conn: Any, server: Server) -> None:
    """On a primary the archive must be walship's: else the backup never becomes consistent.

    On a standby archive_mode = on is normal (the primary archives): the
    standby's own settings say nothing about the primary's, so the check is
    the repository itself (it must hold this cluster's identity) and the wait
    for the stop segment.
    """
    import psycopg

    if server.standby:
        return
    try:
        (mode,) = _one(conn, "SELECT current_setting('archive_mode')")
        (command,) = _one(conn, "SELECT current_setting('archive_command')")
        (library,) = _one(conn, "SELECT coalesce(current_setting('archive_library', true), '')")
    except psycopg.Error as exc:
        raise _sql_error("cannot read the server's archiving settings", exc) from None
    fix = (
        "set archive_mode = on and archive_command = 'walship push %p %f' "
        '(README.md, "Quick start"; docs/backups.md)'
    )
    if mode == "off":
        raise ServerCheckError(
            "archive_mode is off on this server: the WAL a backup needs would never reach "
            "the repository, so the backup could never become consistent",
            hint=fix + ", restart the server, then run backup-push again",
        )
    if library:
        raise ServerCheckError(
            f"the server archives with archive_library = {library!r}, not walship: the "
            "backup could never become consistent from this repository",
            hint=fix,
        )
    if "walship" not in command or "push" not in command:
        raise ServerCheckError(
            "archive_command does not call `walship push`: the WAL a backup needs would not "
            "reach this repository, so the backup could never become consistent",
            hint=fix + " and reload the server",
        )


def _pgdata(opts: Options, cfg: Config, server: Server) -> str:
    given = opts.pgdata or cfg.pgdata or server.data_directory
    if not given:
        raise UsageError(
            "the data directory is not known: the server does not show data_directory to this role",
            hint="pass --pgdata DIR or set pgdata",
        )
    pgdata = os.path.abspath(given)
    control = os.path.join(pgdata, "global", "pg_control")
    try:
        with open(control, "rb") as fh:
            head = fh.read(8)
    except FileNotFoundError:
        raise ServerCheckError(
            f"{pgdata} is not a PostgreSQL data directory (no global/pg_control)",
            hint="pass --pgdata DIR (or set pgdata) to the server's data directory",
        ) from None
    except PermissionError:
        raise files._unreadable(pgdata) from None
    if not os.access(pgdata, os.R_OK | os.X_OK):
        raise files._unreadable(pgdata)
    sysid = basebackup.control_system_identifier(head)
    if sysid != server.system_identifier:
        raise ServerCheckError(
            f"{pgdata} holds database system {sysid}, but the server is system "
            f"{server.system_identifier}",
            hint="pass --pgdata for the data directory of the server backup-push connects to",
        )
    if server.data_directory and os.path.exists(server.data_directory):
        try:
            same = os.path.samefile(pgdata, server.data_directory)
        except OSError:
            same = True
        if not same:
            raise ServerCheckError(
                f"{pgdata} is not the server's data directory ({server.data_directory}), "
                "though it is a copy of the same cluster",
                hint="pass --pgdata for the data directory of the server backup-push connects to",
            )
    return pgdata


def _check_repository(backend: Backend, server: Server) -> None:
    """The repository must be this cluster's; a primary's first backup may create it.

    A standby's backup needs WAL archived by someone else (the primary), so
    there a repository without this cluster's identity is refused: nothing
    archives into it, and the backup could never become consistent.
    """
    mine = repository.Identity(
        server.system_identifier, server.wal_segment_size, server.version // 10000
    )
    try:
        current = repository.read_identity(backend)
    except ContainerNotFound as exc:
        if server.standby:
            raise repository.repository_missing(backend, exc) from None
        current = None
    if current is None:
        if server.standby:
            raise repository.repository_missing(backend)
        repository.ensure_identity(backend, mine)  # what the first `walship push` would write
        return
    if current.system_identifier != mine.system_identifier:
        raise ForeignClusterError(
            f"repository {backend.url} belongs to database system {current.system_identifier}, "
            f"but this server is system {mine.system_identifier}",
            hint="use a separate repository (repo setting) for each cluster",
        )
    repository.check_identity(backend, current, mine)


# ------------------------------------------------------------------ progress


class _Reporter:
    """Bytes, rate and ETA: redrawn on a terminal, or a log line every 10 s with -v."""

    def __init__(self, progress: writer.Progress, tty: bool, verbose: bool) -> None:
        self.progress = progress
        self.tty = tty
        self.verbose = verbose
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if tty or verbose:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def _text(self) -> str:
        p = self.progress
        elapsed = max(1e-6, time.monotonic() - p.started)
        rate = p.done / elapsed
        eta = (p.total - p.done) / rate if rate > 0 else 0.0
        pct = 100.0 * p.done / p.total if p.total else 100.0
        return f"{human(p.done)} of {human(p.total)} ({pct:.0f}%), {human(rate)}/s, ETA {eta:.0f} s"

    def _run(self) -> None:
        every = 0.5 if self.tty else 10.0
        while not self._stop.wait(every):
            if self.tty:
                sys.stderr.write("\r\x1b[K" + self._text())
                sys.stderr.flush()
            else:
                log.info("backup.progress", self._text())

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            if self.tty:
                sys.stderr.write("\r\x1b[K")
                sys.stderr.flush()


# ------------------------------------------------------------------ the backup


#: seconds between checks of the session during the copy (alive; a standby not promoted)
SESSION_CHECK = 5.0


def _copy(
    ctx: writer.Context,
    jobs: list[list[files.Source]],
    workers: int,
    check: Callable[[], None] | None = None,
) -> tuple[list[Any], list[Any]]:
    """Run the jobs, calling ``check`` every few seconds (it raises to stop the copy)."""
    file_entries: list[Any] = []
    part_entries: list[Any] = []
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="walship-backup")
    try:
        futures = [pool.submit(writer.run_job, ctx, job) for job in jobs]
        while True:
            done, pending = wait(futures, timeout=SESSION_CHECK, return_when=FIRST_EXCEPTION)
            for f in done:
                exc = f.exception()
                if exc is not None and not isinstance(exc, writer._Aborted):
                    raise exc
            if not pending:
                break
            if check is not None:
                check()
        for f in futures:
            res = f.result()
            file_entries.extend(res.files)
            part_entries.extend(res.parts)
    except BaseException:
        # a failed job, or Ctrl-C: the other workers stop at their next read
        ctx.failed.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    return file_entries, part_entries


def _check_session(conn: Any, server: Server, name: str) -> None:
    """The backup's session is alive and, on a standby, the server still in recovery."""
    import psycopg

    try:
        (recovering,) = _one(conn, "SELECT pg_is_in_recovery()")
    except psycopg.Error as exc:
        err = _sql_error("lost the session holding the backup", exc)
        raise ServerCheckError(
            f"backup {name}: {err.message}; the server aborted the backup, which is not recorded",
            hint="take the backup again once the server is back",
        ) from None
    if server.standby and not recovering:
        raise ServerCheckError(
            f"backup {name}: the standby was promoted during the backup; the backup is not "
            "recorded",
            hint="take the backup again (of the new primary, or of a standby)",
        )


def _start(conn: Any, server: Server, label: str, fast: bool) -> int:
    import psycopg

    try:
        if server.version >= NEW_API:
            (lsn,) = _one(conn, "SELECT pg_backup_start(%s, %s)::text", (label, fast))
        else:
            (lsn,) = _one(conn, "SELECT pg_start_backup(%s, %s, false)::text", (label, fast))
    except psycopg.Error as exc:
        raise _sql_error("the server refused to start a backup", exc) from None
    return parse_lsn(lsn)


def _stop(conn: Any, server: Server) -> tuple[int, str, str | None]:
    import psycopg

    try:
        if server.version >= NEW_API:
            sql = "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(false)"
        else:
            sql = "SELECT lsn::text, labelfile, spcmapfile FROM pg_stop_backup(false, false)"
        lsn, labelfile, spcmap = _one(conn, sql)
    except psycopg.Error as exc:
        err = _sql_error("pg_backup_stop failed", exc)
        raise ServerCheckError(
            f"{err.message}; the backup is not recorded",
            hint=err.hint or "take the backup again",
        ) from None
    return parse_lsn(lsn), str(labelfile), (str(spcmap) if spcmap else None)


def _stop_timeline(conn: Any, server: Server) -> int:
    if server.standby:
        (tli,) = _one(conn, "SELECT min_recovery_end_timeline FROM pg_control_recovery()")
        if not tli:  # no minimum recovery point recorded: the replay timeline
            (tli,) = _one(conn, "SELECT timeline_id FROM pg_control_checkpoint()")
    else:
        (name,) = _one(conn, "SELECT pg_walfile_name(pg_current_wal_lsn())")
        tli = int(str(name)[:8], 16)
    return int(tli)


def wait_for_wal(
    backend: Backend, names: list[str], timeout: float, standby: bool, backup: str
) -> None:
    """Poll the repository until every file of ``names`` is there, or fail clearly."""
    deadline = time.monotonic() + timeout
    delay = 0.2
    missing = list(names)
    while True:
        missing = [n for n in missing if backend.head(repository.key_for(n)) is None]
        if not missing:
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 5.0)
    where = (
        "this server is a standby: the primary must archive it into this repository "
        "(run SELECT pg_switch_wal() on the primary, or set archive_timeout there)"
        if standby
        else "is archiving failing? check `walship archive-status` and the server log "
        "(pg_stat_archiver)"
    )
    raise WalshipError(
        f"backup {backup}: {missing[0]} (needed to make the backup consistent) did not reach "
        f"repository {backend.url} within {timeout:.0f} s; the backup is not recorded (its "
        "parts are garbage for `walship delete --garbage`)",
        hint=f"{where}; raise backup_wal_timeout to wait longer",
    )


def backup_push(cfg: Config, backend: Backend, opts: Options) -> Result:
    started = time.monotonic()
    conn = pgsql.connect(cfg, application="walship backup-push")
    try:
        server = _inspect(conn)
        _check_archiving(conn, server)
        pgdata = _pgdata(opts, cfg, server)
        _check_repository(backend, server)
        start_tli = None
        if server.standby:
            (start_tli,) = _one(conn, "SELECT timeline_id FROM pg_control_checkpoint()")
        start_wall = time.time()
        name = catalog.new_name(backend, start_wall)
        label = opts.label or f"walship {name}"
        if opts.progress and not opts.fast:
            sys.stderr.write(
                "waiting for the server's checkpoint (a spread one; --fast asks for an "
                "immediate one)\n"
            )
            sys.stderr.flush()
        start_lsn = _start(conn, server, label, opts.fast)
        log.debug(
            "backup.start", f"backup {name} started at LSN {format_lsn(start_lsn)}", pgdata=pgdata
        )
        version_dir = basebackup.tablespace_version_dir(server.version, server.catalog_version)
        found = files.walk(pgdata, version_dir)
        if found.skipped:
            log.warning(
                "backup.skipped",
                f"not copied (not a regular file or directory): {', '.join(found.skipped[:10])}",
            )
        part_size = writer.effective_part_size(cfg.backup_part_size)
        progress = writer.Progress(found.size)
        checker = writer.Checker(start_lsn, server.block_size) if server.data_checksums else None
        workers = cfg.backup_workers or os.cpu_count() or 1
        ctx = writer.Context(cfg, backend, name, part_size, progress, checker, workers)
        reporter = _Reporter(progress, opts.progress, opts.verbose)
        try:
            file_entries, part_entries = _copy(
                ctx,
                writer.plan(found.files, part_size),
                workers,
                lambda: _check_session(conn, server, name),
            )
        finally:
            reporter.close()
        stop_lsn, labelfile, spcmap = _stop(conn, server)
        stop_wall = time.time()
        stop_tli = _stop_timeline(conn, server)
    finally:
        conn.close()
    try:
        parsed = basebackup.parse_backup_label(labelfile)
    except ValueError as exc:
        raise WalshipError(f"pg_backup_stop returned an unreadable backup_label: {exc}") from None
    if (start_tli is not None and int(start_tli) != stop_tli) or parsed.start_timeline != stop_tli:
        raise WalshipError(
            f"backup {name}: the timeline changed during the backup ({parsed.start_timeline} -> "
            f"{stop_tli}: the standby was promoted or followed a new primary); the backup is "
            "not recorded",
            hint="take the backup again",
        )
    for vanished in ctx.vanished:
        log.debug("backup.vanished", f"{vanished} disappeared during the backup (skipped)")
    ctx.checksum_failures.sort(key=lambda f: (str(f["path"]), int(str(f["block"]))))
    if ctx.checksum_failures:
        shown = ", ".join(
            f"{f['path']} block {f['block']}" for f in ctx.checksum_failures[:SHOWN_FAILURES]
        )
        report = log.warning if opts.allow_checksum_failures else log.debug  # else: one line
        for f in ctx.checksum_failures:
            report(
                "backup.checksum",
                f"page checksum failure in {f['path']} block {f['block']}",
                path=f["path"],
                block=f["block"],
            )
        if not opts.allow_checksum_failures:
            raise WalshipError(
                f"backup {name}: {len(ctx.checksum_failures)} page(s) failed their checksum "
                f"({shown}); the backup is not recorded",
                hint="the data files are corrupt: investigate (and restore those relations; "
                "-v lists every page); --allow-checksum-failures records the backup anyway",
            )
    seg = server.wal_segment_size
    stop_segment = segment_file_name(stop_tli, segno_of_end_lsn(stop_lsn, seg), seg)
    wanted = [stop_segment]
    if not server.standby:
        wanted.append(basebackup.backup_history_file_name(stop_tli, parsed.start_lsn, seg))
    log.debug("backup.wait", f"waiting for {', '.join(wanted)} to be archived")
    wait_for_wal(backend, wanted, cfg.backup_wal_timeout, server.standby, name)

    tablespaces = [
        Tablespace(oid, location, server.tablespaces.get(oid, ("", ""))[0] or None)
        for oid, location in sorted(found.links.items())
    ]
    manifest = Manifest(
        name=name,
        label=label,
        pg_version=server.version,
        system_identifier=server.system_identifier,
        wal_segment_size=seg,
        block_size=server.block_size,
        start_lsn=parsed.start_lsn,
        stop_lsn=stop_lsn,
        checkpoint_lsn=parsed.checkpoint_lsn,
        timeline=parsed.start_timeline,
        stop_timeline=stop_tli,
        start_time=_utc(start_wall),
        stop_time=_utc(stop_wall),
        from_standby=server.standby,
        data_checksums=server.data_checksums,
        backup_label=labelfile,
        tablespace_map=spcmap,
        tablespaces=tablespaces,
        files=sorted(file_entries, key=lambda f: f.path),
        directories=sorted(found.directories, key=lambda d: d.path),
        parts=sorted(part_entries, key=lambda p: p.index),
        checksum_failures=list(ctx.checksum_failures),
        writer=f"walship {__version__}",
        data_directory=server.data_directory,
        config_file=server.config_files.get("config_file"),
        hba_file=server.config_files.get("hba_file"),
        ident_file=server.config_files.get("ident_file"),
    )
    write_manifest(cfg, backend, manifest)
    return Result(manifest, time.monotonic() - started, stop_segment)


def write_manifest(cfg: Config, backend: Backend, manifest: Manifest) -> None:
    import hashlib

    data = manifest.to_json()
    header = objects.new_header(
        f"{manifest.name}/manifest.json",
        KIND_MANIFEST,
        len(data),
        hashlib.sha256(data).hexdigest(),
        cfg,
        backup=manifest.name,
    )
    try:
        objects.put_object(cfg, backend, manifest_key(manifest.name), header, [data])
    except AlreadyExists:
        raise WalshipError(
            f"backup {manifest.name} already has a manifest: another backup-push wrote it",
            hint="run one backup-push at a time per repository",
        ) from None
