"""Read-ahead for restore_command, the fetch side: requests, claims, clean-up.

With ``fetch_prefetch = N`` (N > 0), a ``walship fetch`` of a WAL segment into
``pg_wal`` (how PostgreSQL calls restore_command) asks the walship background
process (walship/background.py, the one that also pushes ahead) to keep the
next N segments of the same timeline spooled in ``f/`` of the spool
``pg_wal/.walship/<tag>/`` (walship/archive/lookahead.py):

    f/want           the latest request, ``NAME SEG_SIZE COUNT``: written
                     atomically by a fetch, taken by the process
    f/serving        the request the process is serving (renamed from want;
                     removed when its window is filled or it stopped)
    f/<segment>      a spooled segment, complete and verified
    f/<segment>.part the process is fetching that segment right now

Every spooled file went through the normal fetch (size, SHA-256, name and
cluster checks, temporary file, fsync, rename). A later fetch of that name
*claims* it: checks the long page header against the name, the segment size
and ``global/pg_control``, and renames it to DEST (same file system; not
fsynced again, see :func:`claim`). A segment being fetched (``NAME.part`` exists and the spool's
lock is held) is waited for rather than fetched twice.

Absence is never answered from the spool: a name that is not spooled is
fetched from the repository, so exit code 1 still means "the repository does
not have it". Spooled files are copies of objects the repository never
replaces, so they cannot go stale. ``f/`` is removed, without stopping or
signalling anything, when PostgreSQL restores a history file (as it does when
recovery ends, see :func:`ends_recovery`); ``walship push`` removes one left
behind once the server is out of recovery. The process never creates ``f/``
(only a request does), so it cannot bring a removed one back.
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
from .lookahead import LEGACY_READAHEAD, Spool

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..config import Config

WANT = "want"
SERVING = "serving"
PART = ".part"
TMP = ".tmp-"
#: ``f`` is renamed to ``f.gone-<pid>`` before it is removed (see :func:`discard`)
GONE = ".gone-"
#: longest a fetch waits for the background process to finish the segment it asked for
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
    """Read-ahead applies to WAL segments restored into a ``pg_wal`` directory."""
    return cfg.fetch_prefetch > 0 and _kind_into_pg_wal(name, dest) == FileKind.SEGMENT


def ends_recovery(name: str, dest: str) -> bool:
    """A history file restored into ``pg_wal``: the spooled segments will not be used.

    PostgreSQL restores history files when recovery starts and, probing for
    a free timeline id, when it ends (and a standby between attempts, when
    it has no next segment). At none of these moments is a spooled segment
    about to be asked for, and after the last one, nothing would remove it.
    """
    return _kind_into_pg_wal(name, dest) == FileKind.HISTORY


def spool_of(cfg: Config, dest: str) -> Spool:
    """The spool of this repository in the ``pg_wal`` holding DEST."""
    return Spool(os.path.dirname(dest), cfg)


def discard(spool: Spool) -> None:
    """Remove the read-ahead spool ``f/``.

    It is renamed away first, in one step: the background process, whose
    writes all go through the path ``f/...``, then finds no such directory
    (a fetch it has in flight fails to rename its result into place, quietly),
    and never recreates it. Nothing is stopped or signalled.
    """
    import shutil

    spool.relay_log()
    gone = f"{spool.readahead}{GONE}{os.getpid()}"
    try:
        os.rename(spool.readahead, gone)
    except OSError:
        pass
    try:
        entries = os.listdir(spool.path)
    except OSError:
        return
    for entry in entries:  # ours, and any a killed fetch left behind
        if entry.startswith(os.path.basename(spool.readahead) + GONE):
            shutil.rmtree(os.path.join(spool.path, entry), ignore_errors=True)


def remove_stale(cfg: Config, pgdata: str) -> None:
    """``walship push``'s backstop: remove a read-ahead spool left by a finished recovery.

    Nothing is removed while the server is in recovery (``recovery.signal``
    or ``standby.signal``: a standby with ``archive_mode = always`` pushes
    while it restores).
    """
    spool = Spool(os.path.join(pgdata, "pg_wal"), cfg)
    legacy = os.path.join(pgdata, "pg_wal", LEGACY_READAHEAD)
    if not os.path.isdir(spool.readahead) and not os.path.isdir(legacy):
        return
    for signal in ("recovery.signal", "standby.signal"):
        if os.path.exists(os.path.join(pgdata, signal)):
            return
    if os.path.isdir(spool.readahead):
        discard(spool)
    # the spool of walship before the one background process: nothing serves it any more
    import shutil

    shutil.rmtree(legacy, ignore_errors=True)


def claim(cfg: Config, spool: Spool, name: str, dest: str) -> bool:
    """Move the spooled copy of ``name`` to ``dest``; False if there is none to use."""
    path = os.path.join(spool.readahead, name)
    if not os.path.exists(path):
        if not os.path.exists(path + PART):
            return False
        deadline = time.monotonic() + WAIT_SECONDS
        while not os.path.exists(path):
            if not os.path.exists(path + PART) or not spool.background_running():
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
    # A rename, not fsynced: the spooled bytes were fsynced when spooled, and %p is
    # PostgreSQL's temporary name (pg_wal/RECOVERYXLOG), which it durable_renames
    # to the segment's own name (fsync of the file and of pg_wal) before replaying
    # it. After a crash before that, recovery asks for the segment again. Two more
    # fsyncs here would each force a journal commit on the startup process's path.
    try:
        os.replace(path, dest)
    except FileNotFoundError:  # removed meanwhile (out of the window, or discarded)
        return False
    except OSError as exc:
        # e.g. EXDEV, the spool on another file system (a symlinked .walship): the
        # fetch straight from the repository writes DEST itself, and reports its own
        # error if DEST cannot be written
        log.warning(
            "prefetch.rejected",
            f"prefetched copy of {name} not used (cannot move it to {dest}: "
            f"{exc.strerror or exc}); fetching it directly",
        )
        return False
    return True


def _check_spooled(cfg: Config, name: str, path: str) -> str | None:
    """Why the spooled file must not be used, or None."""
    from .fetch import control_system_identifier

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
    control = control_system_identifier(cfg.pgdata or os.getcwd())
    if control is not None and control != page.system_identifier:
        return f"it is from database system {page.system_identifier}, not {control}"
    return None


def window(name: str, seg_size: int, count: int) -> list[str]:
    """The ``count`` segment names after ``name`` on its timeline."""
    seg = parse_segment_name(name, seg_size)
    return [segment_file_name(seg.tli, seg.segno + i, seg_size) for i in range(1, count + 1)]


def request(spool: Spool, name: str, seg_size: int, count: int) -> bool:
    """Ask for the ``count`` segments after ``name`` (which is at DEST now).

    Returns False when they are all spooled already (nothing to ask for).
    The caller then makes sure the background process runs.
    """
    wanted = window(name, seg_size, count)
    if all(os.path.exists(os.path.join(spool.readahead, n)) for n in wanted):
        return False
    try:
        os.makedirs(spool.readahead, mode=0o700, exist_ok=True)
        temp = os.path.join(spool.readahead, f"{WANT}{TMP}{os.getpid()}")
        with open(temp, "w", encoding="ascii") as fh:
            fh.write(f"{name} {seg_size} {count}\n")
        os.replace(temp, os.path.join(spool.readahead, WANT))
    except OSError as exc:
        log.warning("prefetch.error", f"cannot use the prefetch spool {spool.path}: {exc}")
        return False
    return True


def parse_request(text: str) -> list[str] | None:
    """The window a request asks for; None if it is not one."""
    try:
        name, seg_size, count = text.split()
        return window(name, int(seg_size), int(count))
    except (ValueError, WalshipError):
        return None
