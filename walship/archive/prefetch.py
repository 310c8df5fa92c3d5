"""Read-ahead for restore_command: WAL segments fetched before PostgreSQL asks.

With ``fetch_prefetch = N`` (N > 0), a ``walship fetch`` of a WAL segment into
``pg_wal`` (how PostgreSQL calls restore_command) also makes sure a helper
process is fetching the next N segments of the same timeline into a spool,
``pg_wal/.walship-prefetch/<repository tag>/``. The helper is a fork of the
fetch that started it (so its imports, cryptography included, are already
loaded), runs in its own session, holds an exclusive ``flock`` on the
spool's ``.lock`` while it works and exits when its window is filled, at
the end of the archive (an absent segment) or on an error, which it logs
as a warning and otherwise ignores: a spool miss always falls back to a
normal fetch.

Every spooled file went through the normal fetch (size, SHA-256, name and
cluster checks, written to a temporary file, fsynced, renamed). A later
fetch of that name *claims* it: checks the long page header against the
name, the segment size and ``global/pg_control``, renames it to DEST (same
directory tree, so the same file system), fsyncs DEST and ``pg_wal``. A
segment the helper is still fetching (its ``NAME.part`` marker exists and
the lock is held) is waited for rather than fetched twice.

Absence is never answered from the spool: a name that is not spooled is
fetched from the repository, so exit code 1 still means "the repository
does not have it". Spooled files are exact copies of objects the repository
never replaces, so they cannot go stale; files outside the current window
are deleted by the next helper. The spool is removed (and its helper
stopped) when PostgreSQL restores a history file, as it does when recovery
ends (see :func:`ends_recovery`); ``walship push`` removes a spool left
behind once the server is out of recovery.
"""

from __future__ import annotations

import os
import time

from .. import log
from ..errors import WalshipError
from ..pg import (
    FileKind,
    check_segment_header,
    classify,
    parse_long_header,
    parse_segment_name,
    segment_file_name,
)
from ..proc import safe_sys_path, signal_proven

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..config import Config

SPOOL = ".walship-prefetch"
LOCK = ".lock"
PART = ".part"
#: the helper's log lines, until a fetch copies them to the server log
HELPER_LOG = ".helper.log"
#: longest a fetch waits for the helper to finish the segment it asked for
WAIT_SECONDS = 60.0
POLL_SECONDS = 0.005


def _kind_into_pg_wal(name: str, dest: str) -> str | None:
    """The kind of ``name`` when PostgreSQL restores it into ``pg_wal``, else None."""
    if os.path.basename(os.path.dirname(dest)) != "pg_wal":
        return None
    try:
        return classify(name)
    except WalshipError:
        return None


def enabled(cfg: Config, name: str, dest: str) -> bool:
    """Prefetch applies to WAL segments restored into a ``pg_wal`` directory."""
    return cfg.fetch_prefetch > 0 and _kind_into_pg_wal(name, dest) == FileKind.SEGMENT


def ends_recovery(name: str, dest: str) -> bool:
    """A history file restored into ``pg_wal``: the spool's segments will not be used.

    PostgreSQL restores history files when recovery starts and, probing for
    a free timeline id, when it ends (and a standby between attempts, when
    it has no next segment). At none of these moments is a spooled segment
    about to be asked for, and after the last one, nothing would remove it.
    """
    return _kind_into_pg_wal(name, dest) == FileKind.HISTORY


def discard(cfg: Config, dest: str) -> None:
    """Stop this repository's helper, if one runs, and remove its spool."""
    spool = spool_dir(cfg, dest)
    if not os.path.isdir(spool):
        return
    relay_log(spool)
    if _lock_held(spool):
        _stop_helper(spool)
        deadline = time.monotonic() + 5
        while _lock_held(spool):
            if time.monotonic() > deadline:
                return  # left for the next discard or push
            time.sleep(POLL_SECONDS)
    import shutil

    shutil.rmtree(spool, ignore_errors=True)


def helpers_running(pg_wal: str) -> bool:
    """Whether a read-ahead helper works on any spool of this ``pg_wal``."""
    root = os.path.join(pg_wal, SPOOL)
    try:
        tags = os.listdir(root)
    except OSError:
        return False
    return any(_lock_held(os.path.join(root, tag)) for tag in tags)


def _stop_helper(spool: str) -> None:
    """SIGTERM the helper whose pid its starter wrote into the (held) lock file.

    The starter empties the file before it forks and writes the child's pid
    while it still holds the lock, so a pid read while the lock is held is
    the helper's or nothing; the helper is also the leader of its own
    session. Both are checked once the pid is pinned (walship/proc.py), so
    a helper that exited meanwhile is never mistaken for whatever reused
    its pid.
    """
    import signal

    pid = _lock_pid(spool)
    if pid is None:
        return

    def still_the_helper() -> bool:
        try:
            return _lock_held(spool) and _lock_pid(spool) == pid and os.getsid(pid) == pid
        except OSError:
            return False

    signal_proven(pid, signal.SIGTERM, still_the_helper)


def _lock_pid(spool: str) -> int | None:
    try:
        with open(os.path.join(spool, LOCK), "rb") as fh:
            pid = int(fh.read(32).strip() or 0)
    except (OSError, ValueError):
        return None
    return pid if pid > 1 else None


def spool_dir(cfg: Config, dest: str) -> str:
    """The spool of this repository beside DEST (one per repository URL)."""
    import hashlib

    tag = hashlib.sha256(str(cfg.repo).encode()).hexdigest()[:12]
    return os.path.join(os.path.dirname(dest), SPOOL, tag)


def _control_sysid(pgdata: str) -> int | None:
    from .fetch import control_system_identifier

    return control_system_identifier(pgdata)


def _lock_held(spool: str) -> bool:
    """Whether a helper holds the spool lock (it never blocks)."""
    import fcntl

    try:
        fd = os.open(os.path.join(spool, LOCK), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # also drops the shared lock if it was granted
    return False


def _fsync_path(path: str, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def claim(cfg: Config, name: str, dest: str) -> bool:
    """Move the spooled copy of ``name`` to ``dest``; False if there is none to use."""
    spool = spool_dir(cfg, dest)
    relay_log(spool)
    path = os.path.join(spool, name)
    if not os.path.exists(path):
        if not os.path.exists(path + PART):
            return False
        deadline = time.monotonic() + WAIT_SECONDS
        while not os.path.exists(path):
            if not os.path.exists(path + PART) or not _lock_held(spool):
                break
            if time.monotonic() > deadline:
                log.warning(
                    "prefetch.timeout",
                    f"gave up waiting for the prefetch of {name}; fetching it directly",
                )
                return False
            time.sleep(POLL_SECONDS)
        if not os.path.exists(path):
            return False
    try:
        problem = _check_spooled(cfg, name, path)
    except OSError as exc:
        problem = f"cannot read it: {exc.strerror or exc}"
    if problem is not None:
        log.warning(
            "prefetch.rejected",
            f"prefetched copy of {name} not used ({problem}); fetching it directly",
        )
        try:
            os.unlink(path)
        except OSError:
            pass
        return False
    try:
        os.replace(path, dest)
    except FileNotFoundError:  # removed meanwhile (push cleaning up a spool)
        return False
    try:
        _fsync_path(dest)
        _fsync_path(os.path.dirname(dest), directory=True)
    except OSError as exc:
        raise WalshipError(f"cannot write {dest}: {exc.strerror or exc}") from None
    return True


def _check_spooled(cfg: Config, name: str, path: str) -> str | None:
    """Why the spooled file must not be used, or None."""
    with open(path, "rb") as fh:
        first = fh.read(8192)
        size = os.fstat(fh.fileno()).st_size
    try:
        page = parse_long_header(first)
        check_segment_header(name, page)
    except WalshipError as exc:
        return exc.message
    if size != page.seg_size:
        return f"{size} bytes, but its header says segments are {page.seg_size} bytes"
    control = _control_sysid(cfg.pgdata or os.getcwd())
    if control is not None and control != page.system_identifier:
        return f"it is from database system {page.system_identifier}, not {control}"
    return None


def window(name: str, seg_size: int, count: int) -> list[str]:
    """The ``count`` segment names after ``name`` on its timeline."""
    seg = parse_segment_name(name, seg_size)
    return [segment_file_name(seg.tli, seg.segno + i, seg_size) for i in range(1, count + 1)]


def start(cfg: Config, name: str, dest: str, seg_size: int) -> None:
    """Start a helper filling the window after ``name``, unless one runs or nothing is missing.

    Called after ``name`` is at DEST. The calling process returns at once;
    the helper is a forked child in its own session.
    """
    spool = spool_dir(cfg, dest)
    wanted = window(name, seg_size, cfg.fetch_prefetch)
    if all(os.path.exists(os.path.join(spool, n)) for n in wanted):
        return
    import fcntl

    try:
        os.makedirs(spool, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(spool, LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        log.warning("prefetch.error", f"cannot use the prefetch spool {spool}: {exc.strerror}")
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)  # a helper is running; it or the next one fills the window
        return
    try:
        os.ftruncate(fd, 0)  # no stale pid while the lock is held (see _stop_helper)
        pid = os.fork()  # log lines are flushed as written: nothing is buffered twice
    except OSError as exc:
        os.close(fd)
        log.warning("prefetch.error", f"cannot start the prefetch helper: {exc.strerror}")
        return
    if pid:
        try:
            os.pwrite(fd, str(pid).encode(), 0)
        except OSError:
            pass
        os.close(fd)  # the child keeps the lock (same open file description)
        return
    code = 0
    try:
        os.setsid()
        # This helper imports lazily, in the caller's working directory:
        # nothing relative to it on sys.path (walship/proc.py).
        safe_sys_path()
        # Let go of the caller's stdin, stdout and stderr: whoever reads
        # them (a `| logger` in restore_command, a wrapper script) must see
        # them close when the fetch exits, not when the helper does. The
        # helper's log lines go to a file in the spool, which the next fetch
        # copies to its own stderr (the server log).
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        log.set_stream(_SpoolLog(os.path.join(spool, HELPER_LOG)))
        _fill(cfg, spool, wanted)
    except BaseException as exc:  # never let the child return into the caller
        code = 1
        try:
            log.warning("prefetch.error", f"prefetch helper failed: {exc}")
        except BaseException:
            pass
    finally:
        os._exit(code)


class _SpoolLog:
    """A log stream appending each line to a file (opened per line, so that
    :func:`relay_log` can take the file away between lines)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def write(self, text: str) -> int:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            return os.write(fd, text.encode("utf-8", "replace"))
        finally:
            os.close(fd)

    def flush(self) -> None:
        pass


def relay_log(spool: str) -> None:
    """Copy what helpers logged to this process's stderr (the server log)."""
    import sys

    path = os.path.join(spool, HELPER_LOG)
    taken = f"{path}.{os.getpid()}"
    try:
        os.rename(path, taken)
    except OSError:
        return  # nothing logged (the usual case)
    try:
        with open(taken, "rb") as fh:
            text = fh.read(1 << 16).decode("utf-8", "replace")
        sys.stderr.write(text)
        sys.stderr.flush()
    except OSError:
        pass
    finally:
        try:
            os.unlink(taken)
        except OSError:
            pass


def _fill(cfg: Config, spool: str, wanted: list[str]) -> None:
    from ..errors import NotFound
    from ..storage.registry import open_backend
    from .fetch import fetch

    keep = set(wanted) | {n + PART for n in wanted} | {LOCK, HELPER_LOG}
    for entry in os.listdir(spool):
        if entry not in keep:
            try:
                os.unlink(os.path.join(spool, entry))
            except OSError:
                pass
    todo = [n for n in wanted if not os.path.exists(os.path.join(spool, n))]
    if not todo:
        return
    backend = open_backend(cfg.require("repo"), cfg)
    stop: list[str] = []  # set once a segment is absent or a fetch failed

    def one(name: str) -> None:
        if stop:
            return
        path = os.path.join(spool, name)
        marker = path + PART
        with open(marker, "wb"):
            pass
        try:
            result = fetch(cfg, backend, name, path)
        except NotFound:
            stop.append(name)  # the end of the archive, for now
            return
        except WalshipError as exc:
            stop.append(name)
            log.warning("prefetch.error", f"prefetch of {name} failed: {exc.one_line()}")
            return
        finally:
            os.unlink(marker)
        log.debug("prefetch.done", f"prefetched {name}", ms=round(result.seconds * 1000, 1))

    try:
        workers = min(len(todo), _concurrency(backend.url))
        if workers <= 1:
            for name in todo:
                one(name)
            return
        from concurrent.futures import ThreadPoolExecutor

        from ..codec import compress

        compress._zstd()  # loaded once here, not raced for by the workers
        # in window order: the segment replay needs next is started first
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for future in [pool.submit(one, name) for name in todo]:
                future.result()
    finally:
        backend.close()


#: segments a helper fetches at once from a remote store (latency-bound); a
#: local repository is fetched one at a time (CPU-bound, beside the replay)
REMOTE_CONCURRENCY = 4


def _concurrency(url: str) -> int:
    return 1 if url.startswith(("file:", "mem:")) else REMOTE_CONCURRENCY


def remove_stale(pgdata: str) -> None:
    """Remove a spool left behind by a finished recovery.

    ``walship push`` calls this when ``pg_wal/.walship-prefetch`` exists: a
    spool left from recovery holds up to ``fetch_prefetch`` segments per
    repository in ``pg_wal``. Nothing is removed while the server is in
    recovery (``recovery.signal`` or ``standby.signal``: a standby with
    ``archive_mode = always`` pushes while it restores) or while a helper
    holds a spool's lock.
    """
    root = os.path.join(pgdata, "pg_wal", SPOOL)
    if not os.path.isdir(root):
        return
    for signal in ("recovery.signal", "standby.signal"):
        if os.path.exists(os.path.join(pgdata, signal)):
            return
    import shutil

    for tag in os.listdir(root):
        spool = os.path.join(root, tag)
        if os.path.isdir(spool) and not _lock_held(spool):
            shutil.rmtree(spool, ignore_errors=True)
    try:
        os.rmdir(root)
    except OSError:
        pass
