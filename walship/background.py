"""The walship background process: push look-ahead and fetch read-ahead.

One kind of background process, one per spool (``<pg_wal>/.walship/<tag>/``,
see walship/archive/lookahead.py), started on demand by the first ``walship
push`` or ``walship fetch`` that has work for it. The singleton is an
``flock`` on the spool's ``lock`` file, taken by the starter and inherited by
the process: no pid file, and nothing ever signals it. Callers hand it work
through files in the spool only, and it notices everything itself:

- push look-ahead (on once ``r/`` exists; a push creates it): it pushes the
  ``.ready`` files of ``pg_wal/archive_status`` in PostgreSQL's order, up to
  ``archive_lookahead`` files ahead of the archiver and ``push_concurrency``
  at once, each with the normal push (walship/archive/push.py: the same
  checks, conditional create, identical content is success, different
  content is refused), and writes a record for each stored one. A file it
  cannot push is logged and left to the call for it, which then pushes it
  under the normal rules.
- fetch read-ahead (``f/want``, written by a fetch; see
  walship/archive/prefetch.py): it fetches the requested window with the
  normal fetch into ``f/``, in window order, one at a time from a local
  repository and four at once from a remote one, and stops at the first
  absent segment or error (logged). It never creates ``f/``: once a fetch
  removed it at the end of recovery, it has nothing to do.

Settings: the process publishes the fingerprint of its settings
(``config.process``), the push calls theirs (``config.push``). It pushes ahead
only while the two are equal, its records name it, and a call acknowledges
only a record of its own settings; when the calls push with other settings (a
new ``--config``, environment or file contents) and no recovery reads ahead, it
exits, and the next call starts one with theirs.

It exits after ``background_idle`` seconds without work, when its
configuration or walship's code changes, when the calls' settings are not
its own, or when its spool (or pg_wal) is removed. It is started as ``python
-I -c ...`` with walship's own directory first on ``sys.path``, changes to
``/`` before importing anything else and drops every relative ``sys.path``
entry, so nothing in the caller's working directory or environment is
importable; then it changes back to the caller's directory (so that relative
paths in the settings name what they name for the calls).
"""

from __future__ import annotations

import os
import sys
import threading
import time

from .archive.lookahead import (
    LOCK,
    LOG,
    SETTLE_WAIT_SECONDS,
    TMP,
    Spool,
    settled,
    settles_in,
    stat_of,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from concurrent.futures import Future, ThreadPoolExecutor

    from .config import Config
    from .storage.base import Backend

#: seconds between scans of archive_status while pushes are in flight
POLL_SECONDS = 0.02
#: ... while nothing is
IDLE_POLL_SECONDS = 0.1
#: seconds between looks for a read-ahead request, for a while after the last one
#: (replay asks for the next segment every few tens of milliseconds)
REQUEST_POLL_SECONDS = 0.005
REQUEST_ACTIVE_SECONDS = 2.0
#: a file that could not be pushed ahead is retried after this long
RETRY_SECONDS = 30.0
#: the background process's log file is rotated beyond this size
LOG_LIMIT = 1 << 20
#: niceness added to the threads that push ahead: PostgreSQL's archiver waits on
#: each call in turn, so a call (mostly interpreter start-up) must not queue for a
#: core behind the pushes ahead, which use what the calls leave. Not to the
#: threads that fetch ahead: there the startup process waits for them (each
#: restore_command call claims what they fetched), so they run at the caller's
#: priority, like the calls themselves.
NICE = 5
#: glibc malloc arenas of the background process (MALLOC_ARENA_MAX, unless set)
MALLOC_ARENAS = 2
#: ... and allocations above this size always mmap'ed (MALLOC_MMAP_THRESHOLD_)
MALLOC_MMAP_THRESHOLD = 4 << 20


# ------------------------------------------------------------------ starting


def start(spool: Spool, config_path: str | None, repo: str | None, log_format: str | None) -> bool:
    """Start the background process for ``spool`` unless one runs. Never blocks."""
    import fcntl

    from . import log

    try:
        os.makedirs(spool.path, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(spool.path, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        log.warning("background.error", f"cannot use the spool {spool.path}: {exc.strerror}")
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # one runs (or is starting)
        if config_path is not None:
            config_path = os.path.abspath(config_path)
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        code = (
            f"import sys; sys.path.insert(0, {package_parent!r}); "
            "from walship.background import main; main()"
        )
        argv = [
            sys.executable,
            "-I",
            "-c",
            code,
            str(fd),
            spool.pg_wal,
            os.getcwd(),
            config_path or "",
            repo or "",
            log_format or "",
        ]
        os.set_inheritable(fd, True)
        env = dict(os.environ)
        # glibc gives each pushing thread its own malloc arena, each keeping the
        # freed segment buffers, and after freeing one large buffer serves the
        # next from the heap: two arenas and large buffers always mapped (and
        # so returned when freed) cut the peak by ~10 MiB per push at once
        env.setdefault("MALLOC_ARENA_MAX", str(MALLOC_ARENAS))
        env.setdefault("MALLOC_MMAP_THRESHOLD_", str(MALLOC_MMAP_THRESHOLD))
        null = os.open(os.devnull, os.O_RDWR)
        try:
            os.posix_spawn(
                sys.executable,
                argv,
                env,
                file_actions=[(os.POSIX_SPAWN_DUP2, null, n) for n in (0, 1, 2)],
                setsid=True,
                setsigmask=(),
            )
        finally:
            os.close(null)
        log.debug("background.start", "started the walship background process", spool=spool.path)
        return True
    except OSError as exc:
        log.warning("background.error", f"cannot start the walship background process: {exc}")
        return False
    finally:
        os.close(fd)  # the process keeps the lock: same open file description


# ------------------------------------------------------------------ the process


class _FileLog:
    """Log lines appended to the spool's log, which calls take away (rename, read,
    unlink: walship/archive/lookahead.py, :func:`relay_log`).

    Each line is written under an ``flock`` of the file, and only if the file
    open is still the one named ``log``: a line is never written into a file
    a call has already taken and read (it would be lost with it), and a call
    that takes the file waits for a line being written to it.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def write(self, text: str) -> int:
        import fcntl

        data = text.encode("utf-8", "replace")
        try:
            if os.stat(self.path).st_size > LOG_LIMIT:
                os.replace(self.path, self.path + ".old")
        except OSError:
            pass
        for _ in range(100):  # another try only when a call took the file meanwhile
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                mine, named = os.fstat(fd), os.stat(self.path)
                if (mine.st_dev, mine.st_ino) == (named.st_dev, named.st_ino):
                    return os.write(fd, data)
            except FileNotFoundError:
                pass  # taken between the open and the stat: open the new one
            finally:
                os.close(fd)  # (and so unlock)
        return 0

    def flush(self) -> None:
        pass


#: Linux keeps a niceness per thread (setpriority on a thread id); elsewhere it
#: is the process's
_PER_THREAD_NICE = sys.platform.startswith("linux")


def _lower_priority() -> None:
    """Add :data:`NICE` to this thread's niceness (on Linux; else the process's).
    Threads it starts inherit it (the push's hashing thread)."""
    try:
        if _PER_THREAD_NICE:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + NICE)
        else:
            os.nice(NICE)
    except OSError:
        pass


#: a relay file (``log.<pid>``) older than this was left by a killed call
STALE_RELAY_SECONDS = 60.0
#: the spool of another configuration unused this long (no process, nothing changed
#: in it) is removed: its records and read-ahead are of use to no one
STALE_SPOOL_SECONDS = 7 * 86400.0


def _sweep(spool: Spool) -> None:
    """Remove what killed calls and old configurations left in ``pg_wal/.walship``."""
    import fcntl
    import shutil

    now = time.time()
    try:
        entries = os.listdir(spool.path)
    except OSError:
        entries = []
    for entry in entries:
        head, _, pid = entry.partition(".")
        if head == LOG and pid.isdigit():
            path = os.path.join(spool.path, entry)
            try:
                # ctime: the call's rename of the log sets it (not its mtime)
                if now - os.stat(path).st_ctime > STALE_RELAY_SECONDS:
                    os.unlink(path)
            except OSError:
                pass
    root = os.path.dirname(spool.path)
    try:
        others = [e for e in os.listdir(root) if e != spool.tag]
    except OSError:
        return
    for other in others:
        path = os.path.join(root, other)
        try:
            newest = max(
                os.stat(p).st_mtime
                for p in (path, os.path.join(path, "r"), os.path.join(path, "f"))
                if os.path.exists(p)
            )
            if now - newest < STALE_SPOOL_SECONDS:
                continue
            fd = os.open(os.path.join(path, LOCK), os.O_RDWR | os.O_CLOEXEC)
        except (OSError, ValueError):
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # no process serves it now
            shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass
        finally:
            os.close(fd)


def _code_stamp() -> tuple[int, int]:
    st = os.stat(os.path.join(os.path.dirname(os.path.abspath(__file__)), "__init__.py"))
    return (st.st_ino, st.st_mtime_ns)


def main() -> None:
    """Entry point of ``python -I -c ... main()`` (see :func:`start`); never returns."""
    code = 0
    try:
        os.chdir("/")
        from .proc import safe_sys_path

        safe_sys_path()  # nothing relative (so nothing of the caller's directory)
        os.umask(0o077)
        if not _PER_THREAD_NICE:
            _lower_priority()  # the whole process: the pushes ahead are what it mostly does
        lock_fd, pg_wal, pgdata, config_path, repo, log_format = sys.argv[1:7]
        _serve(int(lock_fd), pg_wal, pgdata, config_path or None, repo or None, log_format or None)
    except BaseException:
        code = 1
    os._exit(code)


def _serve(
    lock_fd: int,
    pg_wal: str,
    pgdata: str,
    config_path: str | None,
    repo: str | None,
    log_format: str | None,
) -> None:
    import fcntl

    from . import config, log

    fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours already (inherited): never waits
    try:
        # the caller's directory (PostgreSQL's data directory) again, now that nothing
        # relative is on sys.path: relative paths in the settings mean what they mean
        # to the calls
        os.chdir(pgdata)
    except OSError:
        pass
    overrides: dict[str, object] = {"repo": repo, "log_format": log_format}
    cfg = config.load(config_path=config_path, overrides=overrides)
    if cfg.pgdata is None:
        cfg.pgdata = pgdata
    spool = Spool(pg_wal, cfg)
    log.configure(level=cfg.log_level, fmt=cfg.log_format)
    log.set_stream(_FileLog(os.path.join(spool.path, LOG)))
    try:
        _Process(cfg, spool, lambda: _reload(config_path, overrides, pgdata), lock_fd).run()
    except Exception as exc:
        log.warning("background.error", f"the walship background process failed: {exc}")
        raise


def _reload(config_path: str | None, overrides: dict[str, object], pgdata: str) -> Config | None:
    from . import config
    from .errors import WalshipError

    try:
        cfg = config.load(config_path=config_path, overrides=overrides)
    except WalshipError:
        return None
    if cfg.pgdata is None:
        cfg.pgdata = pgdata
    return cfg


def concurrency(cfg: Config) -> int:
    """Pushes at once: ``push_concurrency``, or by default one per core for a local
    repository (compression is the work) and one per core plus one, at most
    16, for a remote store (one waits on the network while the others
    compress; each push holds ~15 MiB besides the read buffers, docs/benchmarks.md)."""
    if cfg.push_concurrency > 0:
        return int(cfg.push_concurrency)
    cores = os.cpu_count() or 1
    return cores if _local(cfg) else min(16, cores + 1)


#: segments fetched ahead at once from a remote store (latency-bound); a local
#: repository is read one segment at a time (CPU-bound, beside the replay)
REMOTE_FETCHES = 4


def _local(cfg: Config) -> bool:
    url = str(cfg.repo)
    return "://" not in url or url.startswith(("file:", "mem:"))


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class _Process:
    """The main loop: both roles share one backend; each has its own threads."""

    def __init__(
        self,
        cfg: Config,
        spool: Spool,
        reload: Callable[[], Config | None],
        lock_fd: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.spool = spool
        self.reload = reload
        #: the lock file this process holds: when its name leads elsewhere (the spool
        #: removed and made again), another process may serve the new one
        lock = os.fstat(lock_fd) if lock_fd is not None else os.stat(self._lock_path())
        self.lock_id = (lock.st_dev, lock.st_ino)
        self._backend: Backend | None = None
        self._opening = threading.Lock()
        #: set when a push ends: the next scan of archive_status starts at once
        self.wake = threading.Event()
        self.push = _Lookahead(self)
        self.read = _ReadAhead(self)

    def backend(self) -> Backend:
        """The repository, opened by the first thread that needs it."""
        with self._opening:
            if self._backend is None:
                from .storage.registry import open_backend

                self._backend = open_backend(self.cfg.require("repo"), self.cfg)
            return self._backend

    def _open_quietly(self) -> None:
        """Open the repository ahead of need; a failure is left to the push or fetch
        that needs it (which reports it under the normal rules)."""
        try:
            self.backend()
        except Exception:
            pass

    def run(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from . import log
        from .codec import compress, envelope

        if self.cfg.compression != "none":
            compress._zstd()  # loaded once here, not raced for by the threads
        envelope.keep_read_buffers()  # many files: one-call compression, kept buffers
        opener = None
        if not _local(self.cfg):
            # the storage SDK (~0.3 s of CPU, mostly holding the GIL) loads beside the
            # first reads and compressions (which release it), not before them
            opener = threading.Thread(target=self._open_quietly, name="walship-open")
            opener.start()
        self.push.clean_start()
        self.read.clean_start()
        try:
            self.spool.serving()  # which settings this process pushes with (for the calls)
        except OSError as exc:  # the calls then push their files themselves
            log.warning("background.error", f"cannot write to the spool: {exc.strerror}")
        _sweep(self.spool)
        stamp = _code_stamp()
        idle = float(self.cfg.background_idle)
        last_work = time.monotonic()
        next_check = next_scan = 0.0
        # pushes ahead at a lower priority than fetches ahead (see NICE)
        pushers = ThreadPoolExecutor(
            max_workers=self.push.workers,
            thread_name_prefix="walship-push",
            initializer=_lower_priority if _PER_THREAD_NICE else None,
        )
        # the oldest .ready file, when no push has it yet, is the one PostgreSQL's
        # archiver is on: its call waits for this push (a file handed over), which
        # therefore runs at the call's priority, not at NICE
        head = ThreadPoolExecutor(max_workers=1, thread_name_prefix="walship-push-head")
        fetchers = ThreadPoolExecutor(
            max_workers=self.read.workers, thread_name_prefix="walship-fetch"
        )
        log.debug(
            "background.ready",
            "background process ready",
            workers=self.push.workers + self.read.workers,
        )
        try:
            while True:
                now = time.monotonic()
                if now >= next_check:
                    reason = self._why_exit(stamp)
                    if reason is not None:
                        log.debug("background.exit", f"background process exiting: {reason}")
                        return
                    next_check = now + 1.0
                woken = self.wake.is_set()
                self.wake.clear()  # before the scan: a push ending during it wakes the next
                busy = self.read.step(fetchers)
                if now >= next_scan or woken:  # archive_status is listed less often
                    busy = self.push.step(pushers, head) or busy
                    next_scan = now + (POLL_SECONDS if self.push.inflight else IDLE_POLL_SECONDS)
                elif self.push.inflight:
                    busy = True
                if busy:
                    last_work = now
                elif now - last_work > idle:
                    log.debug("background.exit", f"idle for {idle:.0f} s: exiting")
                    return
                if now - self.read.requested < REQUEST_ACTIVE_SECONDS:
                    self.wake.wait(REQUEST_POLL_SECONDS)
                else:
                    self.wake.wait(max(0.0, min(next_scan, next_check) - time.monotonic()))
        finally:
            pushers.shutdown(wait=True)
            head.shutdown(wait=True)
            fetchers.shutdown(wait=True)
            if opener is not None:
                opener.join()
            if self._backend is not None:
                self._backend.close()

    def _in_recovery(self) -> bool:
        pgdata = str(self.cfg.pgdata or "")
        return any(
            os.path.exists(os.path.join(pgdata, f)) for f in ("recovery.signal", "standby.signal")
        )

    def _lock_path(self) -> str:
        return os.path.join(self.spool.path, LOCK)

    def _why_exit(self, stamp: tuple[int, int]) -> str | None:
        try:
            lock = os.stat(self._lock_path())
        except OSError:
            return "its spool was removed"
        if (lock.st_dev, lock.st_ino) != self.lock_id:
            return "its spool was removed (and made again)"
        if (
            os.path.isdir(self.spool.records)
            and self.spool.push_settings_announced()
            and not self.spool.push_settings_are_mine()
            and not os.path.isdir(self.spool.readahead)
            and not self._in_recovery()
        ):
            # the calls push with other settings (another --config or environment):
            # the next one starts a process with theirs (not during recovery, where the
            # process serves the fetches, whose settings may differ)
            return "archive_command's settings are not this process's"
        try:
            if _code_stamp() != stamp:
                return "walship was upgraded"
        except OSError:
            return "walship was removed"
        fresh = self.reload()
        if fresh is None or vars(fresh) != vars(self.cfg):
            return "the configuration changed"
        return None


class _Lookahead:
    """Push look-ahead: ``.ready`` files pushed, and recorded, ahead of their calls."""

    def __init__(self, proc: _Process) -> None:
        self.cfg = proc.cfg
        self.spool = proc.spool
        self.proc = proc
        self.workers = concurrency(proc.cfg)
        self.inflight: dict[str, Future[None]] = {}
        #: the file pushed at the caller's priority (see :meth:`step`), if any
        self.head: str | None = None
        self.retry_at: dict[str, float] = {}
        self.recorded: set[str] = set()
        from .archive.push import ConfirmedIdentities

        self.identities = ConfirmedIdentities()

    def clean_start(self) -> None:
        """Remove what a killed predecessor left: temp records and busy markers."""
        try:
            entries = os.listdir(self.spool.records)
        except OSError:
            return
        for entry in entries:
            if entry.startswith(TMP) or entry.endswith(".busy"):
                _unlink(os.path.join(self.spool.records, entry))

    def step(self, pool: ThreadPoolExecutor, head: ThreadPoolExecutor) -> bool:
        """One scan of archive_status; True while there is work.

        At most :attr:`workers` pushes at once: in ``pool`` (at NICE), but the
        oldest waiting file, when no push has it, in ``head`` (at the caller's
        priority): the archiver's call for it waits on that push."""
        for name, future in list(self.inflight.items()):
            if future.done():
                del self.inflight[name]
        if self.head not in self.inflight:
            self.head = None
        if not os.path.isdir(self.spool.records) or not self.spool.push_settings_are_mine():
            # no push asked for look-ahead (yet), or archive_command's settings are not
            # this process's: nothing pushed ahead (its records would not be trusted)
            return bool(self.inflight)
        ready = self.spool.ready()
        self._clean(set(ready))
        window = ready[: self.cfg.archive_lookahead]
        now = time.monotonic()
        waiting = False
        for position, name in enumerate(window):
            if name in self.inflight or name in self.recorded:
                continue
            if len(self.inflight) >= self.workers:
                waiting = True
                break
            to_head = position == 0 and self.head is None
            if self.retry_at.get(name, 0.0) > now:
                continue
            if self.spool.acknowledged(name, os.path.join(self.spool.pg_wal, name)):
                self.recorded.add(name)  # pushed by the call itself, or earlier
                continue
            try:
                with open(self.spool.busy_path(name), "wb"):
                    pass
            except OSError:
                return bool(self.inflight)  # the spool is going away
            future = (head if to_head else pool).submit(self._push_one, name)
            future.add_done_callback(lambda _f: self.proc.wake.set())
            self.inflight[name] = future
            if to_head:
                self.head = name
        return waiting or bool(self.inflight) or any(n not in self.recorded for n in window)

    def _clean(self, ready: set[str]) -> None:
        """Records of files no longer waiting are of no use: remove them (bounded spool)."""
        self.recorded &= ready
        for name in list(self.retry_at):
            if name not in ready:
                del self.retry_at[name]
        try:
            entries = os.listdir(self.spool.records)
        except OSError:
            return
        for entry in entries:
            if entry.startswith(TMP) or entry.endswith(".busy") or entry in ready:
                continue
            self.spool.remove(entry)

    def _push_one(self, name: str) -> None:
        from . import log
        from .archive import push
        from .errors import ConflictError, WalshipError

        path = os.path.join(self.spool.pg_wal, name)
        try:
            started = time.time_ns()
            try:
                before = stat_of(path)
            except FileNotFoundError:
                return  # archived and recycled meanwhile
            wait = settles_in(before, started)
            if wait > SETTLE_WAIT_SECONDS:  # whole-second timestamps: up to 3 s
                self.retry_at[name] = time.monotonic() + 0.1  # the call pushes it
                return
            if wait > 0:
                # written a moment ago (the archiver calls as soon as a segment is
                # done): wait it out holding the .busy marker, so that the call for
                # it waits for this push instead of making one of its own
                time.sleep(wait)
                started = time.time_ns()
                try:
                    before = stat_of(path)
                except FileNotFoundError:
                    return
                if not settled(before, started):
                    self.retry_at[name] = time.monotonic() + 0.1  # changing still
                    return
            # compressed before the repository is needed: the first pushes of a
            # process compress while the storage SDK loads (see _Process.run)
            prepared = push.prepare(self.cfg, path, name)
            result = push.store(self.cfg, self.proc.backend(), prepared, self.identities)
            if result.already:
                # the same line as a push of its own (a re-push after a crash, a standby
                # with archive_mode=always); logged before the record is written, so the
                # call the record answers relays it to the server log
                push.log_result(result)
            else:
                log.debug(
                    "push.ahead",
                    f"pushed {name} ahead",
                    stored_size=result.stored_size,
                    ms=round(result.seconds * 1000, 1),
                )
            if self.spool.record_if_unchanged(
                name, path, before, started, result.sha256, result.system_identifier
            ):
                self.recorded.add(name)
            else:
                log.debug("lookahead.changed", f"{name} changed while pushed ahead: not recorded")
                self.retry_at[name] = time.monotonic() + RETRY_SECONDS
        except ConflictError as exc:
            self.retry_at[name] = time.monotonic() + 10 * RETRY_SECONDS
            log.warning("lookahead.refused", f"not pushed ahead: {exc.one_line()}")
        except WalshipError as exc:
            self.retry_at[name] = time.monotonic() + RETRY_SECONDS
            log.warning("lookahead.error", f"pushing {name} ahead failed: {exc.one_line()}")
        except Exception as exc:
            self.retry_at[name] = time.monotonic() + RETRY_SECONDS
            log.warning(
                "lookahead.error", f"pushing {name} ahead failed: {type(exc).__name__}: {exc}"
            )
        finally:
            _unlink(self.spool.busy_path(name))


class _ReadAhead:
    """Fetch read-ahead: the window of the latest request kept spooled in ``f/``.

    A request (``f/want``) is taken by renaming it to ``f/serving``; files
    outside its window are deleted, the missing ones fetched in window order
    (each marked ``NAME.part`` meanwhile), and ``f/serving`` is removed once
    the window is filled or a fetch found the end of the archive or failed.
    A newer request replaces the one being served at once.
    """

    def __init__(self, proc: _Process) -> None:
        self.cfg = proc.cfg
        self.dir = proc.spool.readahead
        self.proc = proc
        self.workers = 1 if _local(proc.cfg) else REMOTE_FETCHES
        self.window: list[str] = []
        self.inflight: dict[str, Future[None]] = {}
        #: the file pushed at the caller's priority (see :meth:`step`), if any
        self.head: str | None = None
        self.request = 0  # which request the window is of
        self.stopped = -1  # the request whose window met an absent segment or an error
        self.serving = False
        self.requested = 0.0  # when the latest request was taken (monotonic)

    def clean_start(self) -> None:
        """Remove what a killed predecessor left: markers and temporary files."""
        from .archive.prefetch import PART

        try:
            entries = os.listdir(self.dir)
        except OSError:
            return
        for entry in entries:
            if entry.endswith(PART) or "tmp-" in entry:  # (fetch.py's temporary files too)
                _unlink(os.path.join(self.dir, entry))

    def step(self, pool: ThreadPoolExecutor) -> bool:
        """Take a new request, start what its window misses; True while there is work."""
        from .archive import prefetch

        for name, future in list(self.inflight.items()):
            if future.done():
                del self.inflight[name]
        serving = os.path.join(self.dir, prefetch.SERVING)
        try:
            os.replace(os.path.join(self.dir, prefetch.WANT), serving)
        except OSError:
            pass  # no new request (the usual case), or no f/ at all
        else:
            self.request += 1
            self.requested = time.monotonic()
            self.window = self._read(serving)
            self.serving = bool(self.window)
            self._clean()
        if not self.serving:
            return bool(self.inflight)
        for name in self.window:
            if self.stopped == self.request or len(self.inflight) >= self.workers:
                break
            path = os.path.join(self.dir, name)
            if name in self.inflight or os.path.exists(path):
                continue
            try:
                with open(path + prefetch.PART, "wb"):
                    pass
            except OSError:  # f/ was removed: recovery ended
                self.window, self.serving = [], False
                return bool(self.inflight)
            self.inflight[name] = pool.submit(self._fetch_one, name, self.request)
        if not self.inflight:
            _unlink(serving)  # filled, or stopped
            self.serving = False
        return True

    @staticmethod
    def _read(path: str) -> list[str]:
        from .archive.prefetch import parse_request

        try:
            with open(path, encoding="ascii") as fh:
                return parse_request(fh.read(256)) or []
        except (OSError, UnicodeDecodeError):
            return []

    def _clean(self) -> None:
        """Delete what is not in the window (nor being fetched): the spool stays bounded."""
        from .archive.prefetch import SERVING, WANT

        keep = {*self.window, *self.inflight, WANT, SERVING}
        try:
            entries = os.listdir(self.dir)
        except OSError:
            return
        for entry in entries:
            if entry.split(".", 1)[0] not in keep:
                _unlink(os.path.join(self.dir, entry))

    def _fetch_one(self, name: str, request: int) -> None:
        from . import log
        from .archive.fetch import fetch
        from .archive.prefetch import PART
        from .errors import NotFound, WalshipError

        path = os.path.join(self.dir, name)
        try:
            result = fetch(self.cfg, self.proc.backend(), name, path)
            log.debug("prefetch.done", f"prefetched {name}", ms=round(result.seconds * 1000, 1))
        except NotFound:
            self.stopped = request  # the end of the archive, for now
        except Exception as exc:
            self.stopped = request
            if os.path.isdir(self.dir):  # (else recovery ended: nothing to say)
                text = (
                    exc.one_line()
                    if isinstance(exc, WalshipError)
                    else f"{type(exc).__name__}: {exc}"
                )
                log.warning("prefetch.error", f"prefetch of {name} failed: {text}")
        finally:
            _unlink(path + PART)
