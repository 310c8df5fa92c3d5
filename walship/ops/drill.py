"""``walship drill``: restore a backup into a scratch server and measure the recovery.

Steps (docs/operations.md, "Restore drills"):

1. clean up what an earlier drill left after a crash (its lock is free): its
   server is stopped only once proven to be that drill's own (the pid in the
   scratch ``postmaster.pid``, a live process of this user whose working
   directory is that scratch data directory), then the directory is removed;
2. plan: the planner picks the walship backup for the target (``latest`` or a
   time); an unreachable target (a gap, no backup) fails here, before any
   disk is used; free disk is checked against the backup's size;
3. restore: ``walship backup-fetch NAME DIR`` (with the target, action
   promote) into ``<drill_dir>/drill-<time>-<random>/data``;
4. recover: the backup's major version's ``postgres`` runs as this process's
   child with a private socket directory (mode 0700), no TCP listener,
   archiving off and every setting that could reach outside the scratch
   directory overridden (hba/ident files, pid file, logging collector,
   archive/recovery-end commands); recovery fetches WAL with ``walship fetch``;
5. check: it accepts connections, recovery stopped where the target says (the
   new timeline's history file: its switch point and reason), ``drill_sql``,
   ``pg_amcheck`` when installed;
6. stop (SIGINT to the child, then SIGQUIT), remove the directory (unless
   ``--keep``), report restore time, replay time, RTO, WAL replayed and RPO,
   and store the report under ``drills/`` in the repository.

SIGINT and SIGTERM stop the drill at any step with the same cleanup. Never
touches the real data directory, ports or sockets. Pure helpers:
:func:`need_bytes`, :func:`parse_postmaster_pid`, :func:`parse_history_end`,
:func:`judge_reached`, :func:`settings_overrides`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any

from .. import __version__, log
from ..errors import UsageError, WalshipError
from ..pg import format_lsn, segno_of_end_lsn
from . import records

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ..config import Config
    from ..manifest import Manifest
    from ..restore.planner import Plan
    from ..storage.base import Backend

#: exit code of a failed drill (docs/exit-codes.md)
EXIT_FAILED = 22
SCHEMA = 1
PREFIX = "drill-"
LOCK = "lock"
STATE = "drill.json"
#: margin over the backup's raw size and its WAL (pg_wal during replay, logs)
MARGIN = 256 << 20
#: WAL segments pg_wal may hold at once during replay (recycled), counted for disk
WAL_SEGMENTS_AT_ONCE = 64


class DrillFailed(WalshipError):
    """The drill ran and found a problem (exit 22)."""

    exit_code = EXIT_FAILED


class Interrupted(BaseException):
    """SIGINT or SIGTERM during a drill: clean up and stop."""


# --- pure helpers ---------------------------------------------------------------------------


def need_bytes(raw_size: int, wal_segments: int, seg_size: int) -> int:
    return raw_size + min(wal_segments, WAL_SEGMENTS_AT_ONCE) * seg_size + MARGIN


def parse_postmaster_pid(text: str) -> tuple[int, str] | None:
    """(pid, data directory) from postmaster.pid's first two lines."""
    lines = text.splitlines()
    if len(lines) < 2:
        return None
    try:
        pid = int(lines[0].strip())
    except ValueError:
        return None
    return (pid, lines[1].strip()) if pid > 0 else None


def parse_history_end(text: str) -> tuple[int, int, str] | None:
    """(parent timeline, switch point, reason) of a history file's last entry."""
    from ..pg import parse_lsn

    last = None
    for line in text.splitlines():
        words = line.strip().split(None, 2)
        if len(words) >= 2 and not words[0].startswith("#"):
            try:
                last = (int(words[0]), parse_lsn(words[1]), words[2] if len(words) > 2 else "")
            except ValueError:
                continue
    return last


NO_TARGET = "no recovery target specified"


def judge_reached(
    kind: str, switchpoint: int, reason: str, plan_end: int, seg_size: int
) -> str | None:
    """None when recovery stopped where the target says; else why not."""
    if kind == "latest":
        if segno_of_end_lsn(switchpoint, seg_size) < segno_of_end_lsn(plan_end, seg_size):
            return (
                f"recovery ended at {format_lsn(switchpoint)}, before the end of the archived "
                f"WAL ({format_lsn(plan_end)})"
            )
        return None
    if reason.strip() == NO_TARGET or not reason.strip():
        return f"recovery ended at {format_lsn(switchpoint)} without reaching the target"
    return None


def settings_overrides(
    *, data: str, sockdir: str, port: int, hba: str, ident: str, major: int
) -> dict[str, str]:
    """What the scratch server runs with, whatever the restored configuration says."""
    out = {
        "data_directory": data,
        "hba_file": hba,
        "ident_file": ident,
        "external_pid_file": "",
        "port": str(port),
        "listen_addresses": "",
        "unix_socket_directories": sockdir,
        "unix_socket_permissions": "0700",
        "unix_socket_group": "",
        "archive_mode": "off",
        "archive_command": "",
        "archive_cleanup_command": "",
        "recovery_end_command": "",
        "primary_conninfo": "",
        "primary_slot_name": "",
        "hot_standby": "off",
        "logging_collector": "off",
        "log_destination": "stderr",
        "ssl": "off",
        "shared_buffers": "128MB",
        "cluster_name": "walship-drill",
        "max_wal_senders": "0",
        "max_replication_slots": "0",
        "wal_level": "replica",
        "synchronous_standby_names": "",
    }
    if major >= 15:
        out["archive_library"] = ""
    return out


# --- the scratch directory --------------------------------------------------------------------


def drill_root(cfg: Config) -> str:
    return os.path.abspath(cfg.drill_dir or f"/var/tmp/walship-drill-{os.getuid()}")


def _own_root(root: str) -> None:
    os.makedirs(root, mode=0o700, exist_ok=True)
    st = os.lstat(root)
    if not os.path.isdir(root) or os.path.islink(root) or st.st_uid != os.getuid():
        raise UsageError(
            f"drill directory {root} is not a directory owned by this user",
            hint="set drill_dir to a directory of your own",
        )
    if st.st_mode & 0o022:
        raise UsageError(
            f"drill directory {root} is writable by others (mode {st.st_mode & 0o777:o})",
            hint=f"chmod go-w {root}",
        )


def proven_ours(pid: int, data: str, proc: str = "/proc") -> bool:
    """Whether ``pid`` is a live PostgreSQL server of this user running in ``data``.

    A postmaster's working directory is its data directory: with the uid and
    the program name that is proof enough to signal it.
    """
    try:
        st = os.stat(f"{proc}/{pid}")
        cwd = os.readlink(f"{proc}/{pid}/cwd")
        with open(f"{proc}/{pid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
    except OSError:
        return False
    if st.st_uid != os.getuid():
        return False
    program = os.path.basename(argv[0].decode(errors="replace")) if argv else ""
    if program not in ("postgres", "postmaster"):
        return False
    return os.path.realpath(cwd) == os.path.realpath(data)


def _wait_gone(pid: int, data: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not proven_ours(pid, data):
            return True
        time.sleep(0.1)
    return not proven_ours(pid, data)


def _stop_stale_server(data: str) -> None:
    try:
        with open(os.path.join(data, "postmaster.pid")) as fh:
            parsed = parse_postmaster_pid(fh.read())
    except OSError:
        return
    if parsed is None:
        return
    pid, _ = parsed
    if not proven_ours(pid, data):
        return  # not running (or not ours: never signalled)
    log.warning("drill.stale", f"stopping the server (pid {pid}) a crashed drill left in {data}")
    for sig, wait in ((signal.SIGINT, 30.0), (signal.SIGQUIT, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if _wait_gone(pid, data, wait):
            return
    raise WalshipError(
        f"the server (pid {pid}) of an earlier drill in {data} does not stop",
        hint="stop it by hand (pg_ctl -D DATA stop -m immediate), then run the drill again",
    )


def lock_root(root: str) -> int:
    """The drill lock (``<root>/lock``, held for a whole drill): one drill at a time."""
    fd = os.open(os.path.join(root, LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UsageError(
            f"another walship drill is running in {root}",
            hint="wait for it to finish (one drill at a time)",
        ) from None
    return fd


def clean_stale(root: str) -> list[str]:
    """Remove what crashed drills left; call it holding :func:`lock_root` (so every
    ``drill-*`` directory is a leftover). The names removed."""
    removed = []
    for entry in sorted(os.listdir(root)):
        path = os.path.join(root, entry)
        if not entry.startswith(PREFIX) or os.path.islink(path) or not os.path.isdir(path):
            continue
        _stop_stale_server(os.path.join(path, "data"))
        shutil.rmtree(path)
        removed.append(entry)
    if removed:
        log.info("drill.cleaned", f"removed the leftovers of {len(removed)} earlier drill(s)")
    return removed


# --- the drill ------------------------------------------------------------------------------


def find_bindir(cfg: Config, major: int) -> str:
    candidates = []
    if cfg.drill_bindir:
        candidates.append(cfg.drill_bindir.replace("{major}", str(major)))
    else:
        candidates += [f"/usr/lib/postgresql/{major}/bin", f"/usr/pgsql-{major}/bin"]
        pg_config = shutil.which("pg_config")
        if pg_config:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                out = subprocess.run(
                    [pg_config, "--bindir"], capture_output=True, text=True, timeout=10
                )
                candidates.append(out.stdout.strip())
    for d in candidates:
        exe = os.path.join(d, "postgres")
        if not os.path.exists(exe):
            continue
        try:
            out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            continue
        words = out.stdout.split()
        if words and words[-1].split(".")[0] == str(major):
            return d
    raise DrillFailed(
        f"no PostgreSQL {major} server binaries found (looked in {', '.join(candidates)})",
        hint=f"install PostgreSQL {major} (e.g. postgresql-{major}) or set drill_bindir",
    )


def _walship_argv(cfg: Config) -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "walship")
    argv = [exe] if os.path.exists(exe) else [sys.executable, "-m", "walship"]
    if cfg.config:
        argv += ["--config", os.path.abspath(cfg.config)]
    if cfg.repo:
        argv += ["--repo", str(cfg.repo)]
    return argv


def _last_line(text: str, prefer: tuple[str, ...] = ("FATAL", "PANIC", "error")) -> str:
    """The line of a child's output that says what went wrong (walship's own prefix and
    ``error=Class`` field stripped)."""
    import re

    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = next((ln for ln in reversed(lines) if any(p in ln for p in prefer)), "")
    line = line or (lines[-1] if lines else "")
    line = re.sub(r"^walship\[\d+\]: (ERROR|WARNING) ", "", line)
    return re.sub(r" error=\w+$", "", line)


class Drill:
    def __init__(self, cfg: Config, target: str, keep: bool) -> None:
        self.cfg = cfg
        self.target_text = target
        self.keep = keep
        self.started = time.time()
        self.t0 = time.monotonic()
        self.report: dict[str, Any] = {
            "walship_drill": SCHEMA,
            "version": __version__,
            "host": socket.gethostname(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "timestamp": self.started,
            "target": target,
            "ok": False,
            "reason": None,
            "backup": None,
            "steps": [],
        }
        self.dir: str | None = None
        self.fetch: subprocess.Popen[bytes] | None = None
        self.server: subprocess.Popen[bytes] | None = None

    def step(self, name: str, status: str, detail: str) -> None:
        self.report["steps"].append({"name": name, "status": status, "detail": detail})
        log.debug(f"drill.{name}", f"{status} {name}: {detail}")

    # planning --------------------------------------------------------------------------
    def plan(self, backend: Backend) -> tuple[Plan, Manifest]:
        from ..backup import catalog
        from ..restore import planner
        from ..restore.inventory import load_inventory

        if self.target_text == "latest":
            target = planner.Target("latest")
        else:
            try:
                target = planner.Target("time", planner.parse_time(self.target_text))
            except ValueError as exc:
                raise UsageError(str(exc), hint="--target latest or a time with a zone") from None
        inv, _ = load_inventory(self.cfg, backend)
        inv.backups = [b for b in inv.backups if b.source == "walship"]
        plan = planner.plan(inv, target, action="promote")
        if plan.verdict == planner.NEEDS_INDEX:
            from ..index.build import update_index

            update_index(self.cfg, backend)
            inv, _ = load_inventory(self.cfg, backend)
            inv.backups = [b for b in inv.backups if b.source == "walship"]
            plan = planner.plan(inv, target, action="promote")
        if not plan.reachable or plan.backup is None:
            raise DrillFailed(
                f"{target.describe()} is not restorable ({plan.verdict}): {plan.reason}",
                hint=plan.hint or "see `walship plan-restore`",
            )
        manifest = catalog.read_manifest(self.cfg, backend, plan.backup.name)
        self.report["backup"] = manifest.name
        self.report["wal_segments"] = plan.segment_count()
        self.step(
            "plan",
            "OK",
            f"{target.describe()} from backup {manifest.name} "
            f"({plan.segment_count()} segment(s) of WAL)",
        )
        return plan, manifest

    # the scratch server ------------------------------------------------------------------
    def run(self) -> dict[str, Any]:

        if os.geteuid() == 0:
            raise UsageError(
                "walship drill runs a PostgreSQL server, which refuses to run as root",
                hint="run it as the postgres user (runuser -u postgres -- walship drill)",
            )
        root = drill_root(self.cfg)
        _own_root(root)
        lock = lock_root(root)
        try:
            clean_stale(root)
            return self._locked(root)
        finally:
            os.close(lock)

    def _locked(self, root: str) -> dict[str, Any]:
        from ..storage.registry import open_backend

        backend = open_backend(self.cfg.require("repo"), self.cfg)
        try:
            try:
                with self._signals():
                    self._run(backend, root)
                self.report["ok"] = True
            except DrillFailed as exc:
                self.report["reason"] = exc.one_line()
                self.step("result", "FAIL", exc.one_line())
            except Interrupted:
                self.report["reason"] = "interrupted (SIGINT/SIGTERM); cleaned up"
                self._finish(backend)
                raise KeyboardInterrupt from None
            except WalshipError as exc:
                self.report["reason"] = exc.one_line()
                self.step("result", "FAIL", exc.one_line())
            self._finish(backend)
        finally:
            backend.close()
        return self.report

    def _finish(self, backend: Backend) -> None:
        self._cleanup()
        self.report["duration_seconds"] = round(time.monotonic() - self.t0, 3)
        try:
            key = records.save_drill(self.cfg, backend, self.report, self.started)
            self.report["stored"] = f"{backend.url}/{key}"
        except WalshipError as exc:
            log.warning("drill.store", f"the drill report was not stored: {exc.one_line()}")

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        def handler(signum: int, frame: object) -> None:
            raise Interrupted

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def _run(self, backend: Backend, root: str) -> None:
        plan, manifest = self.plan(backend)
        major = manifest.pg_version // 10000
        bindir = find_bindir(self.cfg, major)
        need = need_bytes(manifest.raw_size, plan.segment_count(), manifest.wal_segment_size)
        st = os.statvfs(root)
        free = st.f_bavail * st.f_frsize
        if free < need:
            raise DrillFailed(
                f"the drill needs about {need / 2**30:.1f} GiB free in {root}, "
                f"{free / 2**30:.1f} GiB are free",
                hint="set drill_dir to a file system with more room",
            )
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.started))
        self.dir = tempfile.mkdtemp(prefix=f"{PREFIX}{stamp}-", dir=root)
        with open(os.path.join(self.dir, STATE), "w") as fh:
            json.dump({"pid": os.getpid(), "started": self.started}, fh)
        data = os.path.join(self.dir, "data")
        self._restore(manifest, plan, data)
        self._recover(plan, manifest, bindir, data)

    def _restore(self, manifest: Manifest, plan: Plan, data: str) -> None:
        assert self.dir is not None
        argv = [*_walship_argv(self.cfg), "backup-fetch", manifest.name, data]
        if plan.target.kind == "time":
            from ..restore import planner

            assert isinstance(plan.target.value, int)
            argv += [
                "--target-time",
                str(planner.format_time(plan.target.value)),
                "--target-action",
                "promote",
            ]
        t = time.monotonic()
        with open(os.path.join(self.dir, "backup-fetch.log"), "wb") as out:
            self.fetch = subprocess.Popen(
                argv,
                preexec_fn=_die_with_parent,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            rc = self.fetch.wait()
            self.fetch = None
        seconds = time.monotonic() - t
        if rc != 0:
            with open(os.path.join(self.dir, "backup-fetch.log"), errors="replace") as fh:
                why = _last_line(fh.read(), ("error", "ERROR", "failed", "corrupt", "digest"))
            raise DrillFailed(f"backup-fetch of {manifest.name} failed (exit {rc}): {why}")
        self.report["restore_seconds"] = round(seconds, 3)
        self.report["restored_bytes"] = manifest.raw_size
        self.step("restore", "OK", f"backup {manifest.name} restored in {seconds:.1f}s")

    def _recover(self, plan: Plan, manifest: Manifest, bindir: str, data: str) -> None:
        assert self.dir is not None and plan.stop is not None
        sockdir = os.path.join(self.dir, "sock")
        os.mkdir(sockdir, 0o700)
        hba = os.path.join(self.dir, "pg_hba.conf")
        ident = os.path.join(self.dir, "pg_ident.conf")
        with open(hba, "w") as fh:
            fh.write("# walship drill: the private socket directory only\nlocal all all trust\n")
        with open(ident, "w") as fh:
            fh.write("")
        conf = os.path.join(self.dir, "postgresql.conf")
        with open(conf, "w") as fh:
            fh.write(f"include_if_exists '{os.path.join(data, 'postgresql.conf')}'\n")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        major = manifest.pg_version // 10000
        settings = settings_overrides(
            data=data, sockdir=sockdir, port=port, hba=hba, ident=ident, major=major
        )
        argv = [os.path.join(bindir, "postgres"), "-D", data, "-c", f"config_file={conf}"]
        for k, v in settings.items():
            argv += ["-c", f"{k}={v}"]
        logfile = os.path.join(self.dir, "server.log")
        t = time.monotonic()
        with open(logfile, "wb") as out:
            self.server = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=data,
                start_new_session=True,
            )
        conninfo = (
            f"host={sockdir} port={port} dbname={self.cfg.drill_database} "
            f"user={self.cfg.drill_user or _os_user()}"
        )
        conn = self._wait_ready(conninfo, logfile)
        replay = time.monotonic() - t
        self.report["replay_seconds"] = round(replay, 3)
        self.report["rto_seconds"] = round(self.report["restore_seconds"] + replay, 3)
        self.step("recover", "OK", f"server accepted connections after {replay:.1f}s of replay")
        try:
            self._checks(conn, plan, manifest, data, bindir, sockdir, port)
        finally:
            conn.close()

    def _wait_ready(self, conninfo: str, logfile: str) -> Any:
        import psycopg

        deadline = time.monotonic() + self.cfg.drill_timeout
        assert self.server is not None
        while True:
            if self.server.poll() is not None:
                with open(logfile, errors="replace") as fh:
                    why = _last_line(fh.read())
                raise DrillFailed(
                    f"the drill server exited during recovery (exit {self.server.returncode}): "
                    f"{why}"
                )
            try:
                return psycopg.connect(conninfo, autocommit=True, connect_timeout=5)
            except psycopg.OperationalError:
                pass
            if time.monotonic() > deadline:
                raise DrillFailed(
                    f"recovery did not finish within drill_timeout = {self.cfg.drill_timeout:g}s"
                )
            time.sleep(0.2)

    def _checks(
        self,
        conn: Any,
        plan: Plan,
        manifest: Manifest,
        data: str,
        bindir: str,
        sockdir: str,
        port: int,
    ) -> None:
        assert plan.stop is not None
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_is_in_recovery(), pg_walfile_name(pg_current_wal_lsn()), "
                "extract(epoch FROM pg_last_xact_replay_timestamp())::float8"
            )
            in_recovery, walfile, last_xact = cur.fetchone()
        if in_recovery:
            raise DrillFailed("the drill server is still in recovery after it accepted connections")
        tli = int(str(walfile)[:8], 16)
        history = os.path.join(data, "pg_wal", f"{tli:08X}.history")
        try:
            with open(history) as fh:
                end = parse_history_end(fh.read())
        except OSError:
            end = None
        if end is None:
            raise DrillFailed(f"recovery ended without a new timeline ({history} is missing)")
        _parent, switchpoint, reason = end
        why = judge_reached(
            plan.target.kind, switchpoint, reason, plan.stop.end_lsn, manifest.wal_segment_size
        )
        if why is not None:
            raise DrillFailed(why)
        self.report["recovery_end_lsn"] = format_lsn(switchpoint)
        self.report["recovery_stop_reason"] = reason
        self.report["wal_replayed_bytes"] = max(0, switchpoint - manifest.start_lsn)
        reference = self.started
        if plan.target.kind == "time" and isinstance(plan.target.value, int):
            reference = plan.target.value / 1e6
        self.report["last_transaction_time"] = (
            None
            if last_xact is None
            else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(last_xact))
        )
        self.report["rpo_seconds"] = (
            None if last_xact is None else round(max(0.0, reference - float(last_xact)), 3)
        )
        self.step(
            "target",
            "OK",
            f"recovery ended at {format_lsn(switchpoint)} ({reason or 'end of WAL'}), "
            f"{self.report['wal_replayed_bytes'] / 2**20:.0f} MiB of WAL replayed",
        )
        if self.cfg.drill_sql:
            try:
                with conn.cursor() as cur:
                    cur.execute(self.cfg.drill_sql)
                    row = cur.fetchone()
            except Exception as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                raise DrillFailed(f"drill_sql failed on the restored server: {first}") from None
            value = None if row is None else row[0]
            if not value:
                raise DrillFailed(f"drill_sql returned {value!r} on the restored server")
            self.step("sql", "OK", f"drill_sql returned {value!r}")
        amcheck = os.path.join(bindir, "pg_amcheck")
        if self.cfg.drill_amcheck and os.path.exists(amcheck):
            user = self.cfg.drill_user or _os_user()
            out = subprocess.run(
                [
                    amcheck,
                    "-h",
                    sockdir,
                    "-p",
                    str(port),
                    "-U",
                    user,
                    "--all",
                    "--install-missing",
                    "--no-password",
                ],
                capture_output=True,
                text=True,
                timeout=self.cfg.drill_timeout,
            )
            if out.returncode != 0:
                raise DrillFailed(
                    f"pg_amcheck found problems: {_last_line(out.stdout + out.stderr, ('',))}"
                )
            self.step("amcheck", "OK", "pg_amcheck --all found no corruption")

    # cleanup ---------------------------------------------------------------------------------
    def _cleanup(self) -> None:
        if self.fetch is not None:
            with contextlib.suppress(ProcessLookupError):
                self.fetch.terminate()
            try:
                self.fetch.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.fetch.kill()
                self.fetch.wait()
            self.fetch = None
        if self.server is not None:
            for sig, wait in (
                (signal.SIGINT, 60.0),
                (signal.SIGQUIT, 15.0),
                (signal.SIGKILL, 15.0),
            ):
                if self.server.poll() is not None:
                    break
                self.server.send_signal(sig)  # our own child: its pid is ours to signal
                try:
                    self.server.wait(timeout=wait)
                except subprocess.TimeoutExpired:
                    continue
            self.server = None
        if self.dir is not None:
            if self.keep:
                self.report["kept"] = self.dir
                log.info("drill.kept", f"the restored copy is kept in {self.dir}/data (--keep)")
            else:
                shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


def _die_with_parent() -> None:
    """In the backup-fetch child: SIGTERM when the drill dies (Linux), so a crashed
    drill leaves no writer in its scratch directory."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _os_user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def text(report: dict[str, Any]) -> str:
    lines = [f"{s['status']:<4} {s['name']}: {s['detail']}" for s in report["steps"]]
    if report["ok"]:
        rpo = report.get("rpo_seconds")
        lines.append(
            f"drill: passed: backup {report['backup']}, restore {report['restore_seconds']:.1f}s, "
            f"replay {report['replay_seconds']:.1f}s, RTO {report['rto_seconds']:.1f}s, "
            f"WAL replayed {report['wal_replayed_bytes'] / 2**20:.0f} MiB, RPO "
            + ("-" if rpo is None else f"{rpo:.1f}s")
        )
    else:
        lines.append(f"drill: FAILED: {report['reason']}")
    if report.get("kept"):
        lines.append(f"kept: {report['kept']}")
    return "\n".join(lines) + "\n"
