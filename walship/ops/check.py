"""``walship check``: everything a restore depends on, one line per check (docs/operations.md).

Order: the server's settings (SQL), the repository (identity, a probe object
written, read back and deleted through the codec), archiving right now (a
restore point and a WAL switch, then the segment in the repository with the
right digest), the keys (an existing object's key id and decryption), and the
backups (one exists, the planner restores ``latest``, the newest one's age, no
gap since it). On a standby, what applies without a WAL switch.

The judging functions (``judge_*``, :func:`parse_command`) are pure; :func:`run`
does the I/O. Each check is a :class:`Result`: OK, WARN (works, but look), FAIL
(a restore would fail, or archiving does not work) or SKIP (does not apply, or an
earlier failure makes it meaningless).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import socket
import sys
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import __version__, repository
from ..config import SYSTEM_CONFIG_PATH
from ..errors import ContainerNotFound, WalshipError
from ..pg import segno_of_lsn
from . import records

if TYPE_CHECKING:
    from ..config import Config
    from ..restore.planner import Inventory
    from ..storage.base import Backend

OK, WARN, FAIL, SKIP = "OK", "WARN", "FAIL", "SKIP"
#: exit code when at least one check failed (docs/exit-codes.md)
EXIT_FAILED = 21
SCHEMA = 1


class Result(NamedTuple):
    name: str
    status: str
    detail: str
    fix: str | None = None

    def line(self) -> str:
        text = f"{self.status:<4} {self.name}: {self.detail}"
        if self.fix and self.status in (FAIL, WARN):
            text += f"; fix: {self.fix}"
        return text

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


# --- commands in archive_command / restore_command (pure) ----------------------------


class Invocation(NamedTuple):
    """What a walship command line in a server setting asks for."""

    program: str  # the walship executable (or "python -m walship")
    subcommand: str | None
    config: str | None  # --config, or WALSHIP_CONFIG assigned on the line
    repo: str | None  # --repo, or WALSHIP_REPO on the line
    args: list[str]


def parse_command(text: str) -> Invocation | None:
    """The walship invocation in ``text``; None when it does not run walship."""
    try:
        words = shlex.split(text)
    except ValueError:
        return None
    env: dict[str, str] = {}
    i = 0
    if words and os.path.basename(words[0]) == "env":
        i = 1
    while i < len(words) and "=" in words[i] and not words[i].startswith("-"):
        key, _, value = words[i].partition("=")
        env[key] = value
        i += 1
    if i >= len(words):
        return None
    program = words[i]
    base = os.path.basename(program)
    i += 1
    if base.startswith("python") and words[i : i + 2] == ["-m", "walship"]:
        program = f"{program} -m walship"
        i += 2
    elif not (base == "walship" or base.startswith("walship")):
        return None
    config = env.get("WALSHIP_CONFIG")
    repo = env.get("WALSHIP_REPO")
    sub: str | None = None
    rest: list[str] = []
    takes_value = {"--config", "--repo", "--log-format"}
    while i < len(words):
        w = words[i]
        name, eq, value = w.partition("=")
        if name in takes_value:
            if not eq:
                value = words[i + 1] if i + 1 < len(words) else ""
                i += 1
            if name == "--config":
                config = value
            elif name == "--repo":
                repo = value
        elif w.startswith("-"):
            pass
        elif sub is None:
            sub = w
        else:
            rest.append(w)
        i += 1
    return Invocation(program, sub, config, repo, rest)


def same_path(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a == b
    return os.path.realpath(a) == os.path.realpath(b)


def normal_repo(url: str | None) -> str | None:
    if url is None:
        return None
    if "://" not in url:
        return os.path.realpath(url)
    if url.startswith("file://"):
        return os.path.realpath(url[len("file://") :])
    return url.rstrip("/")


def judge_command(
    setting: str,
    text: str,
    *,
    subcommand: str,
    placeholders: list[str],
    our_program: str | None,
    our_config: str | None,
    our_repo: str | None,
    their_repo_of: Any = None,
) -> Result:
    """Whether ``setting`` (archive_command, restore_command) calls this walship, with
    the same configuration. ``their_repo_of(config_path)`` gives the repository that
    config file names (or raises WalshipError)."""
    want = f"walship {subcommand} {' '.join(placeholders)}"
    inv = parse_command(text)
    if inv is None:
        return Result(
            setting,
            FAIL,
            f"{setting} = '{text}' does not call walship: WAL goes somewhere walship "
            "cannot restore from",
            f"set {setting} = '{our_program or 'walship'} {subcommand} {' '.join(placeholders)}'"
            + (f" with --config {our_config}" if our_config else ""),
        )
    if inv.subcommand != subcommand or inv.args[: len(placeholders)] != placeholders:
        return Result(
            setting,
            FAIL,
            f"{setting} = '{text}' does not run `{want}`",
            f"set {setting} = '{inv.program} {subcommand} {' '.join(placeholders)}'",
        )
    if inv.repo is not None:
        if normal_repo(inv.repo) != normal_repo(our_repo):
            return Result(
                setting,
                FAIL,
                f"{setting} uses --repo {inv.repo}, but this check's repository is {our_repo}",
                "use one repository setting (the config file) for both",
            )
    their_config = inv.config if inv.config is not None else _system_config()
    if not same_path(their_config, our_config):
        their_repo: str | None = None
        why = ""
        if inv.repo is not None:
            their_repo = inv.repo
        elif their_config is None:
            why = "no config file"
        elif their_repo_of is not None:
            try:
                their_repo = their_repo_of(their_config)
            except WalshipError as exc:
                why = exc.one_line()
        if their_repo is not None and normal_repo(their_repo) != normal_repo(our_repo):
            return Result(
                setting,
                FAIL,
                f"{setting} archives with config {their_config} into {their_repo}, but this "
                f"check's repository is {our_repo}",
                f"run walship check with --config {their_config}, or point {setting} at "
                f"--config {our_config or SYSTEM_CONFIG_PATH}",
            )
        if their_repo is None:
            return Result(
                setting,
                WARN,
                f"{setting} uses config {their_config or '(none)'}, this check uses "
                f"{our_config or '(none)'}; cannot tell its repository ({why})",
                "use the same --config in both",
            )
        return Result(
            setting,
            WARN,
            f"{setting} uses config {their_config}, this check {our_config}: same repository "
            f"{our_repo}, but other settings may differ",
            "use the same --config in both",
        )
    program = inv.program.split()[0]
    if (
        our_program
        and not inv.program.endswith("-m walship")
        and not same_path(program, our_program)
    ):
        return Result(
            setting,
            WARN,
            f"{setting} runs {program}, this check is {our_program} (walship {__version__}): "
            "two installations may differ",
            f"use {our_program} in {setting}, or run that walship's check",
        )
    return Result(setting, OK, f"'{text}'")


def _version(num: str | None) -> str:
    """``150018`` -> ``15.18``."""
    try:
        n = int(num or "")
    except ValueError:
        return "?"
    return f"{n // 10000}.{n % 10000}"


def _system_config() -> str | None:
    return SYSTEM_CONFIG_PATH if os.path.exists(SYSTEM_CONFIG_PATH) else None


def our_config_path(cfg: Config) -> str | None:
    return cfg.config or _system_config()


def our_program() -> str | None:
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0).startswith("walship") and os.path.exists(argv0):
        return os.path.abspath(argv0)
    exe = os.path.join(os.path.dirname(sys.executable), "walship")
    return exe if os.path.exists(exe) else None


# --- server settings (pure) ---------------------------------------------------------------

SETTINGS_SQL = (
    "SELECT name, setting, coalesce(unit, '') FROM pg_settings WHERE name IN ("
    "'wal_level', 'archive_mode', 'archive_command', 'archive_library', 'restore_command', "
    "'archive_timeout', 'data_checksums', 'wal_segment_size', 'server_version_num')"
)

_UNITS = {"": 1, "B": 1, "kB": 1024, "8kB": 8192, "MB": 1 << 20, "16MB": 16 << 20}


def segment_size(setting: str, unit: str) -> int:
    return int(setting) * _UNITS.get(unit, 1)


def judge_settings(
    settings: dict[str, str],
    in_recovery: bool,
    command_result: Any,
) -> list[Result]:
    """``settings``: name -> value from pg_settings. ``command_result(setting, text,
    subcommand, placeholders)`` judges a command line (:func:`judge_command`)."""
    out: list[Result] = []
    wal_level = settings.get("wal_level", "")
    if wal_level in ("replica", "logical"):
        out.append(Result("wal_level", OK, wal_level))
    else:
        out.append(
            Result(
                "wal_level",
                FAIL,
                f"wal_level = {wal_level or '?'}: WAL is not enough to restore a base backup",
                "set wal_level = replica in postgresql.conf and restart the server",
            )
        )
    mode = settings.get("archive_mode", "off")
    archiving = mode in ("on", "always")
    if not archiving:
        out.append(
            Result(
                "archive_mode",
                FAIL,
                f"archive_mode = {mode}: the server archives no WAL at all",
                "set archive_mode = on (always on a standby that should archive) and restart "
                "the server",
            )
        )
    elif in_recovery and mode == "on":
        out.append(
            Result("archive_mode", OK, "on (a standby archives nothing; the primary archives)")
        )
    else:
        out.append(Result("archive_mode", OK, mode))
    library = settings.get("archive_library", "")
    command = settings.get("archive_command", "")
    if library:
        out.append(
            Result(
                "archive_command",
                FAIL,
                f"archive_library = '{library}' is set: PostgreSQL uses it, not archive_command",
                "set archive_library = '' and archive_command = 'walship push %p %f'",
            )
        )
    elif archiving and not (in_recovery and mode == "on"):
        if not command:
            out.append(
                Result(
                    "archive_command",
                    FAIL,
                    "archive_command is empty: WAL files pile up in pg_wal and are never archived",
                    "set archive_command = 'walship push %p %f' and reload",
                )
            )
        else:
            out.append(command_result("archive_command", command, "push", ["%p", "%f"]))
    elif command:
        out.append(command_result("archive_command", command, "push", ["%p", "%f"]))
    restore = settings.get("restore_command", "")
    if restore:
        out.append(command_result("restore_command", restore, "fetch", ["%f", "%p"]))
    elif in_recovery:
        out.append(
            Result(
                "restore_command",
                WARN,
                "restore_command is empty: this standby cannot fall back to the archive",
                "set restore_command = 'walship fetch %f %p'",
            )
        )
    timeout = settings.get("archive_timeout", "0")
    if timeout in ("0", ""):
        out.append(
            Result(
                "archive_timeout",
                WARN,
                "archive_timeout = 0: on a quiet server the last changes may wait in an "
                "unarchived segment for hours",
                "set archive_timeout = '60s' (or what your RPO allows)",
            )
        )
    else:
        out.append(Result("archive_timeout", OK, f"{timeout}s"))
    if settings.get("data_checksums") == "on":
        out.append(Result("data_checksums", OK, "on"))
    else:
        out.append(
            Result(
                "data_checksums",
                WARN,
                "data checksums are off: corrupt pages are backed up and restored silently",
                "enable them with pg_checksums --enable (server stopped)",
            )
        )
    return out


def judge_identity(
    identity: repository.Identity, sysid: int | None, seg_size: int | None, url: str
) -> Result:
    if sysid is not None and identity.system_identifier != sysid:
        return Result(
            "repository.identity",
            FAIL,
            f"repository {url} belongs to database system {identity.system_identifier}, this "
            f"server is system {sysid}: another cluster's repository",
            "point repo at this cluster's own repository (one repository per cluster)",
        )
    if seg_size is not None and identity.wal_segment_size != seg_size:
        return Result(
            "repository.identity",
            FAIL,
            f"repository {url} holds {identity.wal_segment_size}-byte segments, this server "
            f"writes {seg_size}",
            "use a separate repository for this cluster",
        )
    return Result(
        "repository.identity",
        OK,
        f"system {identity.system_identifier}, {identity.wal_segment_size // (1 << 20)} MiB "
        "segments",
    )


def judge_backups(inv: Inventory, *, now: float, max_age_hours: float) -> list[Result]:
    """A backup exists, ``latest`` is restorable, the newest one is recent, no gap since."""
    from ..restore import planner

    if not inv.backups:
        if inv.backup_errors:
            key, why = sorted(inv.backup_errors.items())[-1]
            return [
                Result(
                    "backup.exists",
                    FAIL,
                    f"no usable base backup: {len(inv.backup_errors)} backup object(s) cannot "
                    f"be read, e.g. {key}: {why}",
                    "fix what the message names (often the encryption key settings)",
                )
            ]
        return [
            Result(
                "backup.exists",
                FAIL,
                f"repository {inv.url} holds no base backup: WAL alone cannot be restored",
                "take one now with `walship backup-push` and schedule it (docs/operations.md)",
            )
        ]
    out: list[Result] = []
    newest = max(inv.backups, key=lambda b: (b.stop_lsn, b.name))
    out.append(Result("backup.exists", OK, f"{len(inv.backups)} backup(s), newest {newest.name}"))
    plan = planner.plan(inv, planner.Target("latest"))
    if plan.reachable:
        assert plan.backup is not None
        out.append(
            Result(
                "backup.restorable",
                OK,
                f"--latest restores from {plan.backup.name}, {plan.segment_count()} segment(s) "
                "of WAL",
            )
        )
    else:
        out.append(
            Result(
                "backup.restorable",
                FAIL,
                f"--latest is not restorable ({plan.verdict}): {plan.reason}",
                plan.hint or "see `walship plan-restore --latest`",
            )
        )
    if newest.stop_time is None:
        out.append(Result("backup.age", WARN, f"{newest.name} has no stop time", None))
    else:
        age_h = (now - newest.stop_time / 1e6) / 3600
        if age_h > max_age_hours:
            out.append(
                Result(
                    "backup.age",
                    FAIL,
                    f"the newest backup {newest.name} is {age_h:.1f} h old (more than "
                    f"check_backup_max_age = {max_age_hours:g} h)",
                    "take a backup (`walship backup-push`) and check the backup schedule",
                )
            )
        else:
            out.append(Result("backup.age", OK, f"newest backup is {age_h:.1f} h old"))
    out.append(judge_gap_since(inv, newest.start_lsn, newest.start_tli, newest.name))
    return out


def judge_gap_since(inv: Inventory, start_lsn: int, tli: int, name: str) -> Result:
    from ..restore import planner

    first = segno_of_lsn(start_lsn, inv.seg_size)
    for t in planner.overview(inv):
        if t.tli < tli:
            continue
        for a, b in t.gaps:
            if b >= first:
                a = max(a, first)
                return Result(
                    "archive.gaps",
                    FAIL,
                    f"WAL is missing after the newest backup {name}: timeline {t.tli} "
                    f"{inv.seg_name(t.tli, a)}..{inv.seg_name(t.tli, b)} "
                    f"({b - a + 1} segment(s))",
                    "take a new base backup now (the WAL cannot be recovered); then find why "
                    "archiving skipped it (server log)",
                )
    return Result("archive.gaps", OK, f"no gap since {name}")


# --- I/O ------------------------------------------------------------------------------------


class _Checker:
    def __init__(self, cfg: Config, pgdata: str | None, wait: float | None) -> None:
        self.cfg = cfg
        self.pgdata_arg = pgdata
        self.wait = cfg.check_archive_wait if wait is None else wait
        self.results: list[Result] = []
        self.settings: dict[str, str] = {}
        self.in_recovery = False
        self.sysid: int | None = None
        self.seg_size: int | None = None
        self.datadir: str | None = None

    def add(self, r: Result) -> Result:
        self.results.append(r)
        return r

    def failed(self, *names: str) -> bool:
        return any(r.status == FAIL and r.name in names for r in self.results)

    # server -------------------------------------------------------------------
    def server(self) -> Any:
        from .. import pgsql

        try:
            conn = pgsql.connect(self.cfg, application="walship check")
        except WalshipError as exc:
            self.add(Result("server", FAIL, exc.one_line(), exc.hint))
            return None
        try:
            with conn.cursor() as cur:
                cur.execute(SETTINGS_SQL)
                rows = cur.fetchall()
                cur.execute("SELECT pg_is_in_recovery()")
                self.in_recovery = bool(cur.fetchone()[0])
                try:
                    cur.execute("SELECT system_identifier FROM pg_control_system()")
                    self.sysid = int(cur.fetchone()[0])
                except Exception:
                    self.sysid = None
                try:
                    cur.execute("SELECT current_setting('data_directory')")
                    self.datadir = str(cur.fetchone()[0])
                except Exception:
                    self.datadir = None
        except Exception as exc:
            self.add(Result("server", FAIL, f"the server refused the check's queries: {exc}"))
            conn.close()
            return None
        units: dict[str, str] = {}
        for name, setting, unit in rows:
            self.settings[str(name)] = str(setting)
            units[str(name)] = str(unit)
        if "wal_segment_size" in self.settings:
            self.seg_size = segment_size(
                self.settings["wal_segment_size"], units["wal_segment_size"]
            )
        role = "standby" if self.in_recovery else "primary"
        self.add(
            Result(
                "server",
                OK,
                f"{role}, PostgreSQL {_version(self.settings.get('server_version_num'))}, system "
                f"{self.sysid if self.sysid is not None else '? (pg_control_system not allowed)'}",
            )
        )
        repo = self.cfg.repo
        our_cfg = our_config_path(self.cfg)
        prog = our_program()

        def their_repo_of(path: str) -> str | None:
            from ..config import load

            return load(config_path=path).repo  # (the named file wins over WALSHIP_CONFIG)

        def command_result(setting: str, text: str, sub: str, ph: list[str]) -> Result:
            return judge_command(
                setting,
                text,
                subcommand=sub,
                placeholders=ph,
                our_program=prog,
                our_config=our_cfg,
                our_repo=repo,
                their_repo_of=their_repo_of,
            )

        for r in judge_settings(self.settings, self.in_recovery, command_result):
            self.add(r)
        return conn

    # repository ---------------------------------------------------------------
    def repository(self, backend: Backend, *, first: bool = False) -> bool | None:
        """True when usable; None when there is no repository yet and ``first`` (the
        caller switches WAL, which creates it, and asks again)."""
        from ..errors import RepositoryNotFound

        try:
            identity = repository.require_identity(backend)
        except RepositoryNotFound as exc:
            if first:
                return None
            self.add(Result("repository", FAIL, exc.one_line()))
            return False
        except WalshipError as exc:
            self.add(Result("repository", FAIL, exc.one_line()))
            return False
        self.add(Result("repository", OK, f"{backend.url} reachable"))
        self.add(judge_identity(identity, self.sysid, self.seg_size, backend.url))
        self.probe(backend)
        return True

    def probe(self, backend: Backend) -> None:
        import re

        from ..codec import objects

        host = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())[:64] or "host"
        key = f"{records.PROBE_PREFIX}{host}-{os.getpid()}-{os.urandom(4).hex()}"
        data = os.urandom(4096)
        encrypted = self.cfg.encryption != "none"
        step = "write"
        try:
            header = objects.new_header(
                key, "ops-probe", len(data), hashlib.sha256(data).hexdigest(), self.cfg
            )
            objects.put_object(self.cfg, backend, key, header, [data])
            step = "read back"
            if not (encrypted and self.cfg.encryption == "public-key" and not self._can_read()):
                with objects.open_object(self.cfg, backend, key) as obj:
                    back = b"".join(obj.raw)
                if back != data:
                    raise WalshipError(f"{backend.url}/{key} read back different bytes")
            step = "delete"
            backend.delete([key])
            if backend.head(key) is not None:
                raise WalshipError(f"{backend.url}/{key} is still there after its delete")
        except (WalshipError, OSError) as exc:
            text = exc.one_line() if isinstance(exc, WalshipError) else str(exc)
            self.add(
                Result(
                    "repository.write",
                    FAIL,
                    f"the probe object could not be {'written' if step == 'write' else step}: "
                    f"{text}",
                    "check the repository's permissions, credentials and free space"
                    + (" and the encryption key settings" if encrypted else ""),
                )
            )
            if step != "write":
                try:
                    backend.delete([key])
                except Exception:
                    pass
            return
        how = f" ({self.cfg.encryption} encryption)" if encrypted else ""
        self.add(Result("repository.write", OK, f"probe written, read back and deleted{how}"))

    def _can_read(self) -> bool:
        try:
            from ..codec import crypto

            return any(k.can_decrypt for k in crypto.keyring(self.cfg).keys.values())
        except WalshipError:
            return False

    # archiving now --------------------------------------------------------------
    def archive_now(self, conn: Any, backend: Backend) -> None:
        if self.in_recovery:
            self.add(
                Result(
                    "archive.now",
                    SKIP,
                    "standby: no WAL switch here (run walship check on the primary)",
                )
            )
            return
        if self.failed("archive_mode", "archive_command", "repository", "repository.identity"):
            self.add(
                Result("archive.now", SKIP, "archiving is misconfigured (see above): not tried")
            )
            return
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        try:
            with conn.cursor() as cur:
                try:
                    cur.execute("SELECT pg_create_restore_point(%s)", [f"walship-check-{stamp}"])
                except Exception:
                    pass  # needs superuser (or a grant); the switch below tells
                cur.execute("SELECT pg_walfile_name(pg_switch_wal())")
                name = str(cur.fetchone()[0])
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self.add(
                Result(
                    "archive.now",
                    FAIL,
                    f"cannot switch WAL: {first}",
                    "run walship check as a superuser, or GRANT EXECUTE ON FUNCTION "
                    "pg_switch_wal() TO the checking role",
                )
            )
            return
        from ..codec import objects

        key = repository.key_for(name)
        started = time.monotonic()
        stored: str | None = None
        while True:
            try:
                stored = objects.stored_digest(self.cfg, backend, key)
            except ContainerNotFound:
                stored = None  # a new repository: the first push creates it
            except WalshipError as exc:
                self.add(Result("archive.now", FAIL, f"{name}: {exc.one_line()}"))
                return
            if stored is not None or time.monotonic() - started > self.wait:
                break
            time.sleep(0.25)
        waited = time.monotonic() - started
        if stored is None:
            failure = self._archiver_failure(conn)
            self.add(
                Result(
                    "archive.now",
                    FAIL,
                    f"{name} (switched now) is not in {backend.url} after {self.wait:g}s"
                    + (f"; {failure}" if failure else ""),
                    "read the server log for the archive_command's error line",
                )
            )
            return
        local = self._local_digest(name)
        if local is not None and local != stored:
            self.add(
                Result(
                    "archive.now",
                    FAIL,
                    f"{name} in the repository has digest {stored[:12]}..., the file in pg_wal "
                    f"{local[:12]}...",
                    "another server archives into this repository, or the object is corrupt: "
                    "see `walship verify --deep`",
                )
            )
            return
        how = "digest matches pg_wal" if local is not None else "pg_wal copy already recycled"
        self.add(Result("archive.now", OK, f"{name} archived in {waited:.1f}s, {how}"))

    def _archiver_failure(self, conn: Any) -> str | None:
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT failed_count, last_failed_wal, last_failed_time::text, "
                    "last_archived_wal FROM pg_stat_archiver"
                )
                failed, wal, when, last = cur.fetchone()
        except Exception:
            return None
        if not failed:
            return f"pg_stat_archiver: no failure, last archived {last or '-'}"
        return (
            f"pg_stat_archiver: {failed} failure(s), the last for {wal} at {when}, last "
            f"archived {last or '-'}"
        )

    def _local_digest(self, name: str) -> str | None:
        pgdata = self.pgdata_arg or self.cfg.pgdata or self.datadir
        if not pgdata:
            return None
        path = os.path.join(pgdata, "pg_wal", name)
        try:
            before = os.stat(path)
            h = hashlib.sha256()
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            after = os.stat(path)
        except OSError:
            return None
        same = (before.st_ino, before.st_size, before.st_mtime_ns) == (
            after.st_ino,
            after.st_size,
            after.st_mtime_ns,
        )
        return h.hexdigest() if same else None  # recycled while read: no verdict

    # inventory: keys and backups ----------------------------------------------------------
    def inventory(self, backend: Backend) -> None:
        from ..restore.inventory import load_inventory

        try:
            inv, listing = load_inventory(self.cfg, backend)
        except WalshipError as exc:
            self.add(Result("backup.exists", FAIL, f"cannot read the repository: {exc.one_line()}"))
            return
        self.keys(backend, inv, listing)
        for r in judge_backups(inv, now=time.time(), max_age_hours=self.cfg.check_backup_max_age):
            self.add(r)

    def keys(self, backend: Backend, inv: Inventory, listing: Any) -> None:
        """The objects a restore of ``latest`` reads first (the newest backup's own
        object and the segment its WAL starts in) and the newest segment: each one's
        key id must be configured, and the ones this host can decrypt must decrypt."""
        from ..codec import envelope

        keys: list[str] = []
        if inv.backups:
            newest = max(inv.backups, key=lambda b: (b.stop_lsn, b.name))
            if newest.key:
                keys.append(newest.key)
            start = inv.seg_name(newest.start_tli, segno_of_lsn(newest.start_lsn, inv.seg_size))
            if any(name == start for name, _ in listing.segments):
                keys.append(repository.key_for(start))
        # backup objects the inventory could not read (a wrong key hides a backup there)
        keys += sorted(inv.backup_errors)[-3:]
        segs = [k for _, k in listing.segments] or [k for _, k in listing.histories]
        if segs:
            keys.append(max(segs))
        keys += [k for _, k in listing.histories][-3:]
        keys = list(dict.fromkeys(keys))
        if not keys:
            return
        seen: list[str] = []
        plain = 0
        for key in keys:
            try:
                stream = backend.open(key)
                try:
                    header, _, _ = envelope.read_header(iter(stream), f"{backend.url}/{key}")
                finally:
                    stream.close()
            except WalshipError as exc:
                self.add(Result("encryption", FAIL, exc.one_line()))
                return
            enc = header.get("encryption")
            if not enc:
                plain += 1
                continue
            verdict = self._key_of(backend, key, str(enc.get("key_id")))
            if verdict is not None:
                self.add(verdict)
                return
            seen.append(f"{key.rsplit('/', 1)[-1]} ({enc.get('key_id')})")
        if not seen:
            if self.cfg.encryption != "none":
                self.add(
                    Result(
                        "encryption",
                        WARN,
                        f"the objects a restore reads first are not encrypted although "
                        f"encryption = {self.cfg.encryption}",
                        "check that archive_command uses this configuration",
                    )
                )
            else:
                self.add(Result("encryption", OK, "none (objects are not encrypted)"))
            return
        extra = f"; {plain} plain" if plain else ""
        self.add(Result("encryption", OK, f"the configured keys read {', '.join(seen)}{extra}"))

    def _key_of(self, backend: Backend, key: str, key_id: str) -> Result | None:
        """None when ``key_id`` is configured and the object decrypts (or cannot be
        decrypted here by design: public-key mode); else the FAIL."""
        from ..codec import objects

        try:
            from ..codec import crypto

            ring = crypto.keyring(self.cfg)
        except WalshipError as exc:
            return Result("encryption", FAIL, exc.one_line(), exc.hint)
        have = ring.keys.get(key_id)
        if have is None:
            return Result(
                "encryption",
                FAIL,
                f"{key} is encrypted with key id {key_id}, which none of the configured keys "
                f"has ({ring.describe() or 'no key configured'}): a wrong or missing key; a "
                "restore would fail",
                "set encryption_key_file / encryption_keyring to the key file with that id "
                "(`walship keygen --show FILE` prints a file's id)",
            )
        if not have.can_decrypt:
            return None  # public key only: reading needs the private key, on the restore host
        try:
            with objects.open_object(self.cfg, backend, key) as obj:
                next(iter(obj.raw), b"")
        except WalshipError as exc:
            return Result("encryption", FAIL, f"{key} does not decrypt: {exc.one_line()}")
        return None


def run_checks(
    cfg: Config, *, pgdata: str | None = None, wait: float | None = None
) -> dict[str, Any]:
    """Every check; the result document (also stored as ops/check.json when possible)."""
    from ..storage.registry import open_backend

    started = time.time()
    t0 = time.monotonic()
    c = _Checker(cfg, pgdata, wait)
    conn = c.server()
    try:
        try:
            backend = open_backend(cfg.require("repo"), cfg)
        except WalshipError as exc:
            c.add(Result("repository", FAIL, exc.one_line(), exc.hint))
            backend = None
        if backend is not None:
            try:
                usable = c.repository(backend, first=conn is not None and not c.in_recovery)
                if usable is None:  # nothing archived yet: the WAL switch creates it
                    c.archive_now(conn, backend)
                    if c.repository(backend):
                        c.inventory(backend)
                elif usable:
                    if conn is not None:
                        c.archive_now(conn, backend)
                    else:
                        c.add(Result("archive.now", SKIP, "no server connection: not tried"))
                    c.inventory(backend)
                doc = _document(c, started, time.monotonic() - t0)
                if not c.failed("repository", "repository.write"):
                    try:
                        records.save_check(cfg, backend, doc)
                    except WalshipError as exc:
                        c.add(Result("repository.record", WARN, f"not stored: {exc.one_line()}"))
            finally:
                backend.close()
    finally:
        if conn is not None:
            conn.close()
    return _document(c, started, time.monotonic() - t0)


def _document(c: _Checker, started: float, duration: float) -> dict[str, Any]:
    failed = [r for r in c.results if r.status == FAIL]
    return {
        "walship_check": SCHEMA,
        "version": __version__,
        "host": socket.gethostname(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "timestamp": started,
        "duration_seconds": round(duration, 3),
        "ok": not failed,
        "failed": len(failed),
        "warnings": sum(1 for r in c.results if r.status == WARN),
        "reason": failed[0].line() if failed else None,
        "checks": [r.to_json() for r in c.results],
    }


def text(doc: dict[str, Any]) -> str:
    lines = [Result(**r).line() for r in doc["checks"]]
    n = doc["failed"]
    lines.append(
        f"check: {'FAILED, ' + str(n) + ' problem(s)' if n else 'passed'}"
        f" ({doc['warnings']} warning(s), {doc['duration_seconds']:.1f}s)"
    )
    return "\n".join(lines) + "\n"
