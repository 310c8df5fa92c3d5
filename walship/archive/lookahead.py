"""Push look-ahead: the spool of "already pushed" records and the backlog.

PostgreSQL calls ``walship push %p %f`` once per WAL file, serially. While the
archiver is behind, the walship background process (walship/background.py)
pushes the files waiting in ``pg_wal/archive_status/*.ready`` ahead of those
calls, several at once, and leaves a *record* for each one it stored; the
call for that file then only checks the record and exits (the fast path:
this module imports nothing but ``os`` and ``time``).

Spool: ``<pg_wal>/.walship/<tag>/`` where ``tag`` digests the uid and the
repository's identity (URL and the endpoint settings that decide which store
it names). It holds:

    lock            flock held by the background process serving this spool
    config.push     the fingerprint of archive_command's settings (written by
                    the calls): the process pushes ahead only while it is its own
    config.process  the fingerprint of the running process's settings
    log             that process's log lines (the next push or fetch copies
                    them to its stderr, i.e. the server log)
    r/<name>        one record per file pushed (one line, see :class:`Record`)
    r/<name>.busy   the background process is pushing that file right now
    r/.tmp-*        a record being written (temp + fsync + rename)
    f/              fetch read-ahead (walship/archive/prefetch.py)

A record is written only after the object is durable in the repository,
names the fingerprint of the settings it was pushed with (a call acknowledges
only a record of its own settings), and holds (dev, inode, size, mtime_ns,
ctime_ns) of the file as stat'ed
before the push read it and again after; both must be equal, and the
file's ctime must be older than the read by more than the file system's
timestamp granularity, else no record is written. The fast path acknowledges
a file only if its stat now gives exactly the recorded values (see
docs/push-fetch.md for why that cannot let unarchived bytes through).

Records for files that are no longer ``.ready`` are removed; walship never
renames or removes PostgreSQL's archive_status files.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..config import Config

SPOOL = ".walship"
#: where fetch read-ahead spooled segments before the one background process (walship
#: 0.1 before issue 11); a push outside recovery removes it
LEGACY_READAHEAD = ".walship-prefetch"
RECORDS = "r"
READAHEAD = "f"
LOCK = "lock"
LOG = "log"
PUSH_CONFIG = "config.push"
PROCESS_CONFIG = "config.process"
BUSY = ".busy"
TMP = ".tmp-"
MAGIC = "walship-record/2"
#: settings a fingerprint leaves out: they change neither what a push stores nor how
#: (the background process fills in pgdata; the log settings change what is logged;
#: the keyring holds keys for reading; the others are other commands')
UNFINGERPRINTED = frozenset(
    {
        "pgdata",
        "config",
        "log_level",
        "log_format",
        "agent",
        "agent_dir",
        "background_idle",
        "conninfo",
        "encryption_keyring",
    }
)
UNFINGERPRINTED_PREFIXES = ("fetch_", "check_", "drill_", "retention_", "metrics_", "backup_")
#: settings naming a file whose contents a push uses: its absolute path and its stat
#: identity go into the fingerprint (a key replaced in place, a relative path
#: resolved in another directory)
FINGERPRINTED_FILES = ("encryption_key_file", "gcs_credentials_file")
#: the environment the storage SDKs read besides walship's settings (endpoints,
#: profiles, credentials, proxies, CA bundles)
FINGERPRINTED_ENV_PREFIXES = ("AWS_", "GOOGLE_", "AZURE_", "CLOUDSDK_")
FINGERPRINTED_ENV = frozenset(
    {
        "STORAGE_EMULATOR_HOST",
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "NO_PROXY",
        "https_proxy",
        "http_proxy",
        "no_proxy",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
    }
)
#: a file whose ctime is this close to the moment its read started is not recorded
#: (a later change could carry the same timestamp); see :func:`settled`
MARGIN_NS = 50_000_000
#: ... on file systems with whole-second timestamps
COARSE_MARGIN_NS = 3_000_000_000
#: longest a push waits for the background process to finish the file it asked for
WAIT_SECONDS = 60.0
#: longest a push waits for a running background process to take its file (it looks
#: at archive_status every 0.1 s when idle) before pushing the file itself
TAKE_SECONDS = 2.0
#: ... for the process the push has just started (interpreter start and imports
#: first; one that fails to start releases its lock, which ends the wait at once)
START_TAKE_SECONDS = 10.0
#: a file that takes longer than this to settle (see :func:`settled`) is not pushed
#: ahead: its call pushes it (the background process uses the same rule)
SETTLE_WAIT_SECONDS = 0.1
POLL_SECONDS = 0.003


def pg_wal_of(path: str) -> str | None:
    """The ``pg_wal`` directory holding ``path``, when PostgreSQL archives from it."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.basename(directory) != "pg_wal":
        return None
    if not os.path.isdir(os.path.join(directory, "archive_status")):
        return None
    return directory


def identity_text(cfg: Config) -> str:
    """What decides where objects go: the repository and the store it names."""
    fields = [
        MAGIC,
        str(os.getuid()),
        str(cfg.repo),
        str(cfg.s3_endpoint_url),
        str(cfg.gcs_endpoint_url),
        str(cfg.azure_account_url),
        str(cfg.azure_account_name),
    ]
    return "\n".join(fields)


def sha256_hex(data: bytes) -> str:
    """SHA-256 of ``data``, hex: CPython's built-in module, not hashlib, which loads
    OpenSSL (~2 ms, on the fast path). The module is ``_sha256`` in Python 3.11 and
    ``_sha2`` from 3.12; hashlib where neither is built (a FIPS-style build)."""
    try:
        from _sha256 import sha256  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        try:
            from _sha2 import sha256  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            from hashlib import sha256
    return str(sha256(data).hexdigest())


def tag_of(cfg: Config) -> str:
    return sha256_hex(identity_text(cfg).encode("utf-8", "surrogateescape"))[:16]


def fingerprint_of(cfg: Config) -> str:
    """A digest of what decides what a push stores and how: the settings but those of
    other commands (:data:`UNFINGERPRINTED`), the key and credential files' paths and
    stat identities, and the storage SDKs' environment. The calls and the background
    process compare theirs, so that a process started with other settings (another
    ``--config``, environment or file contents, a key replaced) pushes nothing that
    a call acknowledges. Secrets go in only digested with the rest."""
    from ..config import SETTINGS

    lines = [
        f"{s.name}={getattr(cfg, s.name)!r}"
        for s in SETTINGS
        if s.name not in UNFINGERPRINTED and not s.name.startswith(UNFINGERPRINTED_PREFIXES)
    ]
    for name in FINGERPRINTED_FILES:
        value = getattr(cfg, name)
        if value:
            path = os.path.abspath(str(value))
            try:
                st = os.stat(path)
                identity = f"{st.st_dev} {st.st_ino} {st.st_size} {st.st_mtime_ns}"
            except OSError:
                identity = "-"
            lines.append(f"{name}@{path} {identity}")
    lines.extend(
        f"${key}={value}"
        for key, value in sorted(os.environ.items())
        if key.startswith(FINGERPRINTED_ENV_PREFIXES) or key in FINGERPRINTED_ENV
    )
    return sha256_hex("\n".join(lines).encode("utf-8", "surrogateescape"))[:32]


Stat = tuple[int, int, int, int, int]


def stat_of(path: str) -> Stat:
    """(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns): what a record compares."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def settled(st: Stat, read_started_ns: int) -> bool:
    """Whether any change after ``read_started_ns`` must give the file another ctime.

    The kernel stamps a change with a clock that ticks at most every few
    milliseconds (whole seconds on some file systems): a file changed within
    one tick of the read's start could be changed again with the same ctime.
    """
    return settles_in(st, read_started_ns) == 0.0


def settles_in(st: Stat, now_ns: int) -> float:
    """Seconds until a read started then would make :func:`settled` true (0: now)."""
    ctime = st[4]
    margin = COARSE_MARGIN_NS if ctime % 1_000_000_000 == 0 else MARGIN_NS
    return max(0.0, (ctime + margin + 1 - now_ns) / 1e9)


class Record:
    """What was pushed: ``MAGIC tag fingerprint name sha256 sysid dev ino size mtime_ns
    ctime_ns``."""

    __slots__ = ("fingerprint", "name", "sha256", "stat", "sysid", "tag")

    def __init__(
        self, tag: str, fingerprint: str, name: str, sha256: str, sysid: str, stat: Stat
    ) -> None:
        self.tag = tag
        self.fingerprint = fingerprint
        self.name = name
        self.sha256 = sha256
        self.sysid = sysid
        self.stat = stat

    def line(self) -> str:
        fields = [MAGIC, self.tag, self.fingerprint, self.name, self.sha256, self.sysid]
        return " ".join([*fields, *map(str, self.stat)]) + "\n"

    @classmethod
    def parse(cls, text: str) -> Record | None:
        fields = text.split()
        if len(fields) != 11 or fields[0] != MAGIC or not text.endswith("\n"):
            return None
        try:
            stat = tuple(int(f) for f in fields[6:])
        except ValueError:
            return None
        tag, fingerprint, name, sha256, sysid = fields[1:6]
        return cls(tag, fingerprint, name, sha256, sysid, stat)  # type: ignore[arg-type]


class Spool:
    def __init__(self, pg_wal: str, cfg: Config) -> None:
        self.pg_wal = pg_wal
        self.tag = tag_of(cfg)
        self._cfg = cfg
        self._fingerprint: str | None = None
        self.path = os.path.join(pg_wal, SPOOL, self.tag)
        self.records = os.path.join(self.path, RECORDS)
        self.readahead = os.path.join(self.path, READAHEAD)
        self.status = os.path.join(pg_wal, "archive_status")

    @property
    def fingerprint(self) -> str:
        """:func:`fingerprint_of` the settings, computed when first needed (a fetch that
        claims a spooled segment, or a path wanted from the spool, needs none)."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint_of(self._cfg)
        return self._fingerprint

    # ---------------------------------------------------------- records

    def record_path(self, name: str) -> str:
        return os.path.join(self.records, name)

    def read(self, name: str, any_settings: bool = False) -> Record | None:
        try:
            with open(self.record_path(name), encoding="ascii") as fh:
                text = fh.read(512)
        except (OSError, UnicodeDecodeError):
            return None
        record = Record.parse(text)
        if record is None or record.tag != self.tag or record.name != name:
            return None
        if record.fingerprint != self.fingerprint and not any_settings:
            return None  # pushed with other settings: not this call's to acknowledge
        return record

    def acknowledged(self, name: str, path: str, any_settings: bool = False) -> Record | None:
        """The record for ``name`` if the file at ``path`` is exactly what it recorded
        (and it was pushed with this spool's settings, unless ``any_settings``: a
        report of what is pushed ahead, from a shell with other settings)."""
        record = self.read(name, any_settings)
        if record is None:
            return None
        try:
            now = stat_of(path)
        except OSError:
            return None
        return record if now == record.stat else None

    def write(self, record: Record) -> None:
        """Write a record atomically (temp, fsync, rename). Only after the object is durable.

        Into ``r/`` only if it exists: ``r/`` is what asks the background process
        for look-ahead, and only a push that starts the process makes it."""
        final = self.record_path(record.name)
        temp = os.path.join(self.records, f"{TMP}{os.getpid()}-{record.name}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, record.line().encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, final)

    def remove(self, name: str) -> None:
        try:
            os.unlink(self.record_path(name))
        except OSError:
            pass

    def record_if_unchanged(
        self, name: str, path: str, before: Stat, started_ns: int, sha256: str, sysid: str
    ) -> bool:
        """After a durable push of ``path``: record it if the file did not change meanwhile
        (and look-ahead is on: without ``r/`` nothing pushes ahead, so nothing reads it)."""
        if not os.path.isdir(self.records):
            return False
        try:
            after = stat_of(path)
        except OSError:
            return False
        if after != before or not settled(before, started_ns):
            return False
        self.write(Record(self.tag, self.fingerprint, name, sha256, sysid, before))
        return True

    def prune(self, ready: list[str]) -> None:
        """Remove the records of files no longer waiting (of no use to anyone): what
        the background process does, for calls that push their files themselves
        while none runs (the spool stays bounded)."""
        try:
            entries = os.listdir(self.records)
        except OSError:
            return
        waiting = None
        for entry in entries:
            if entry.startswith(TMP) or entry.endswith(BUSY):
                continue  # a running process's (it removes its own)
            if waiting is None:
                waiting = set(ready)
            if entry not in waiting:
                self.remove(entry)

    # ---------------------------------------------------------- settings

    def _read_small(self, name: str) -> str | None:
        try:
            with open(os.path.join(self.path, name), encoding="ascii") as fh:
                return fh.read(128).strip()
        except (OSError, UnicodeDecodeError):
            return None

    def _write_small(self, name: str, text: str) -> None:
        """Atomically, not fsynced: after a crash it may be missing or stale, which
        only means that nothing is pushed ahead until a call writes it again."""
        final = os.path.join(self.path, name)
        temp = os.path.join(self.path, f"{TMP}{os.getpid()}-{name}")
        with open(temp, "w", encoding="ascii") as fh:
            fh.write(text + "\n")
        os.replace(temp, final)

    def announce(self) -> None:
        """(A push call) make this call's settings the ones to push ahead with."""
        if self._read_small(PUSH_CONFIG) != self.fingerprint:
            try:
                self._write_small(PUSH_CONFIG, self.fingerprint)
            except OSError:
                pass  # no spool (yet): nothing pushes ahead

    def push_settings_are_mine(self) -> bool:
        """(The background process) whether the calls push with this process's settings."""
        return self._read_small(PUSH_CONFIG) == self.fingerprint

    def push_settings_announced(self) -> bool:
        """Whether any push call has said which settings it pushes with."""
        return self._read_small(PUSH_CONFIG) is not None

    def serving(self) -> None:
        """(The background process, at its start) publish its settings' fingerprint."""
        self._write_small(PROCESS_CONFIG, self.fingerprint)

    def process_is_mine(self) -> bool:
        """(A call) whether the running process has this call's settings."""
        return self._read_small(PROCESS_CONFIG) == self.fingerprint

    # ---------------------------------------------------------- in flight

    def busy_path(self, name: str) -> str:
        return self.record_path(name) + BUSY

    def wait_for_background(self, name: str, path: str) -> Record | None:
        """If the background process is pushing ``name``, wait for its record."""
        busy = self.busy_path(name)
        if not os.path.exists(busy) or not self.background_running():
            return None
        if not self.process_is_mine():
            return None  # its record would not be this call's to acknowledge
        deadline = time.monotonic() + WAIT_SECONDS
        check_lock = time.monotonic() + 0.1
        while True:
            record = self.acknowledged(name, path)
            if record is not None:
                return record
            if not os.path.exists(busy):
                return self.acknowledged(name, path)  # finished (or gave up) meanwhile
            now = time.monotonic()
            if now > deadline:
                return None
            if now > check_lock:
                if not self.background_running():
                    return None
                check_lock = now + 0.1
            time.sleep(POLL_SECONDS)

    def will_take(self, name: str, path: str, just_started: bool = False) -> bool:
        """Whether a running background process would push ``name`` if handed it:
        it was asked for look-ahead (``r/`` exists) with this call's settings (the
        process ``just_started`` by this call has them), holds no record of that
        name (a record that no longer matches the file, after a ``chmod`` say,
        keeps it from pushing the file again), and the file settles in time."""
        if not os.path.isdir(self.records) or os.path.exists(self.record_path(name)):
            return False
        if not just_started and not self.process_is_mine():
            return False
        try:
            st = stat_of(path)
        except OSError:
            return False
        return settles_in(st, time.time_ns()) <= SETTLE_WAIT_SECONDS

    def hand_over(self, name: str, path: str, just_started: bool = False) -> Record | None:
        """Let the running background process push ``name`` (a ``.ready`` file).

        A push that finds the background process running but not (yet) on its
        file waits until it takes it (its ``.busy`` marker), then for its record,
        instead of pushing the file too: two pushes of one file are safe
        (identical content is success) but cost twice, and a push of its own
        would load the storage SDK the background process already has. None
        when it does not take the file within :data:`TAKE_SECONDS`
        (:data:`START_TAKE_SECONDS` for a process the call has just started) or
        stops: the call then pushes the file itself.
        """
        deadline = time.monotonic() + (START_TAKE_SECONDS if just_started else TAKE_SECONDS)
        busy = self.busy_path(name)
        check_lock = 0.0
        while True:
            record = self.acknowledged(name, path)
            if record is not None:
                return record
            if os.path.exists(busy):  # taken (and maybe done since: look again)
                return self.wait_for_background(name, path) or self.acknowledged(name, path)
            now = time.monotonic()
            if now > deadline:
                return None
            if now > check_lock:
                if not self.background_running():
                    return self.acknowledged(name, path)
                check_lock = now + 0.1
            time.sleep(POLL_SECONDS)

    # ---------------------------------------------------------- background

    def background_running(self) -> bool:
        """Whether a process holds this spool's lock (never blocks)."""
        import fcntl

        try:
            fd = os.open(os.path.join(self.path, LOCK), os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)
        return False

    def relay_log(self) -> None:
        """Copy what the background process logged to this process's stderr."""
        relay_log(os.path.join(self.path, LOG))

    # ---------------------------------------------------------- backlog

    def ready(self) -> list[str]:
        """The files waiting to be archived, in the order PostgreSQL archives them."""
        return ready_names(self.status)


def relay_log(path: str) -> None:
    import sys

    taken = f"{path}.{os.getpid()}"
    try:
        os.rename(path, taken)
    except OSError:
        return  # nothing logged (the usual case)
    try:
        import fcntl

        with open(taken, "rb") as fh:
            # a line being written is finished first; the background process
            # writes no more into a file it no longer finds under its name
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            # all of it: the process rotates the file to log.old past 1 MiB
            text = fh.read().decode("utf-8", "replace")
        if sys.stderr is not None:
            sys.stderr.write(text)
            sys.stderr.flush()
    except OSError:
        pass
    finally:
        try:
            os.unlink(taken)
        except OSError:
            pass


def archive_order(name: str) -> tuple[int, str]:
    """PostgreSQL's archiver takes timeline history files first, then the lowest name."""
    return (0 if name.endswith(".history") else 1, name)


def ready_names(status_dir: str) -> list[str]:
    try:
        entries = os.listdir(status_dir)
    except OSError:
        return []
    names = [e[: -len(".ready")] for e in entries if e.endswith(".ready")]
    names.sort(key=archive_order)
    return names


class Backlog:
    """How far archiving is behind: ``.ready`` files and the oldest one's age."""

    __slots__ = ("oldest", "oldest_age", "ready")

    def __init__(self, ready: int, oldest: str | None, oldest_age: float | None) -> None:
        self.ready = ready
        self.oldest = oldest
        self.oldest_age = oldest_age


def backlog(status_dir: str) -> Backlog:
    names = ready_names(status_dir)
    if not names:
        return Backlog(0, None, None)
    oldest_age = None
    oldest = None
    now = time.time()
    for name in names:
        try:
            mtime = os.stat(os.path.join(status_dir, name + ".ready")).st_mtime
        except OSError:
            continue
        age = max(0.0, now - mtime)
        if oldest_age is None or age > oldest_age:
            oldest_age, oldest = age, name
    return Backlog(len(names), oldest, oldest_age)
