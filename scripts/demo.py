"""walship demo: back up a scratch PostgreSQL 15 and restore it to a point in time.

Run by ``make demo`` with the venv's Python (walship must be installed in it,
with the ``backup`` extra). Every step is real and uses walship's own flow:
initdb, ``archive_command = 'walship push %p %f'`` into a local repository,
``walship backup-push``, pgbench changes, a recorded time T, more changes,
``walship backup-list``, ``walship plan-restore --time T``, ``walship
backup-fetch LATEST DIR --target-time T`` (which writes the recovery
settings), a start of the restored server, a comparison of its data with the
data at T, and ``walship verify``.

As root, PostgreSQL and walship commands run as the ``postgres`` user
(``runuser``); as any other user they run as that user. Exits non-zero with a
``demo FAILED:`` line when anything is wrong; the servers it started are
stopped (``pg_ctl stop`` on their data directories) and the scratch directory
removed in every case (``--keep`` keeps the directory for a look).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence

BINDIR = os.environ.get("WALSHIP_DEMO_PG_BINDIR", "/usr/lib/postgresql/15/bin")
WALSHIP = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "walship")
AS_ROOT = os.geteuid() == 0

CHECKSUM_SQL = (
    "SELECT md5(string_agg(aid || ':' || abalance, ',' ORDER BY aid)) "
    "|| '/' || (SELECT sum(bbalance) FROM pgbench_branches) "
    "|| '/' || (SELECT count(*) FROM pgbench_history) FROM pgbench_accounts"
)
ROWS_SQL = "SELECT count(*) FROM pgbench_history"


class DemoError(Exception):
    pass


def step(text: str) -> None:
    print(text, flush=True)


def detail(text: str) -> None:
    for line in text.splitlines() or [""]:
        print(f"   {line}", flush=True)


def run(
    cmd: Sequence[str],
    *,
    cwd: str = "/tmp",
    timeout: float = 300,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run ``cmd`` (as postgres when root); its stdout and stderr as printed, stripped."""
    full = ["runuser", "-u", "postgres", "--", *cmd] if AS_ROOT else list(cmd)
    proc = subprocess.Popen(
        full,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        end(proc)
        raise DemoError(f"{cmd[0]} did not finish within {timeout}s") from None
    except BaseException:
        end(proc)
        raise
    if proc.returncode != 0:
        raise DemoError(f"{' '.join(cmd)} exited {proc.returncode}\n{out[-4000:]}")
    return out.strip()


def end(proc: subprocess.Popen[str]) -> None:
    """Stop our own child (not yet reaped, so its pid is still ours): SIGTERM,
    which runuser passes on, so that e.g. backup-push ends its backup; SIGKILL
    only if it is still there after 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    def __init__(self, work: str, name: str) -> None:
        self.work = work
        self.name = name
        self.datadir = os.path.join(work, name)
        self.logfile = os.path.join(work, f"{name}.log")
        self.port = free_port()
        self.started = False

    @property
    def libpq_env(self) -> dict[str, str]:
        """How walship backup-push reaches this server: libpq's own variables."""
        return {"PGHOST": self.work, "PGPORT": str(self.port), "PGUSER": "postgres"}

    def configure(self, settings: dict[str, str]) -> None:
        settings = {
            **settings,
            "port": str(self.port),
            "listen_addresses": "''",
            "unix_socket_directories": f"'{self.work}'",
        }
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as fh:
            fh.write(f"\n# walship demo ({self.name})\n")
            fh.writelines(f"{k} = {v}\n" for k, v in settings.items())

    def start(self) -> None:
        self.started = True
        pg_ctl = f"{BINDIR}/pg_ctl"
        run([pg_ctl, "-D", self.datadir, "-l", self.logfile, "-w", "-t", "120", "start"])

    def stop(self) -> None:
        # by its data directory (pg_ctl reads the postmaster's pid from
        # postmaster.pid there): only the server this demo started
        if self.started or os.path.exists(os.path.join(self.datadir, "postmaster.pid")):
            try:
                run([f"{BINDIR}/pg_ctl", "-D", self.datadir, "-m", "fast", "-w", "stop"])
            except DemoError:
                pass
            self.started = False

    def sql(self, query: str) -> str:
        return run(
            [
                f"{BINDIR}/psql",
                "-h",
                self.work,
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-X",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                query,
                "postgres",
            ]
        )

    def pgbench(self, *args: str) -> None:
        run(
            [
                f"{BINDIR}/pgbench",
                "-h",
                self.work,
                "-p",
                str(self.port),
                "-U",
                "postgres",
                *args,
                "postgres",
            ]
        )

    def log(self) -> str:
        try:
            with open(self.logfile, errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""

    def wait(self, what: str, query: str, expected: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.sql(query) == expected:
                    return
            except DemoError:
                pass
            time.sleep(0.3)
        raise DemoError(f"{what}: not within {timeout}s\n{self.log()[-3000:]}")


def make_workdir(keep_in: str | None) -> str:
    work = tempfile.mkdtemp(prefix="walship-demo-", dir=keep_in or "/tmp")
    os.chmod(work, 0o700)
    if AS_ROOT:
        shutil.chown(work, "postgres", "postgres")
    return work


def write(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)
    if AS_ROOT:
        shutil.chown(path, "postgres", "postgres")


def backup_name(output: str) -> str:
    """The name from backup-push's result line ``backup NAME: ...``."""
    for line in output.splitlines():
        if line.startswith("backup ") and ":" in line:
            return line.split()[1].rstrip(":")
    raise DemoError(f"walship backup-push printed no 'backup NAME: ...' line:\n{output}")


def demo(work: str) -> None:
    for tool in ("initdb", "pg_ctl", "psql", "pgbench", "postgres"):
        if not os.access(f"{BINDIR}/{tool}", os.X_OK):
            raise DemoError(f"{BINDIR}/{tool} not found: apt-get install postgresql-15")
    if not os.access(WALSHIP, os.X_OK):
        raise DemoError(f"{WALSHIP} not found: run the demo with the venv's python (make demo)")
    try:
        import psycopg  # noqa: F401  (walship backup-push needs it)
    except ImportError:
        raise DemoError(
            f"psycopg is not installed in {sys.prefix}: "
            f"{sys.executable} -m pip install 'walship[backup]' (or make demo)"
        ) from None
    version = run([WALSHIP, "--version"])
    pg_version = run([f"{BINDIR}/postgres", "--version"])
    step(f"walship demo: {version}, {pg_version}, scratch directory {work}")

    repo = os.path.join(work, "repo")
    config = os.path.join(work, "walship.toml")
    write(config, f'repo = "{repo}"\n')
    ws = [WALSHIP, "--config", config]
    # a walship background process that push starts (look-ahead, docs/push-fetch.md)
    # lives in the primary's pg_wal/.walship and exits once that directory is removed
    push = f"{WALSHIP} --config {config} push %p %f"

    primary = Server(work, "primary")
    restored = Server(work, "restored")
    try:
        step("1. initdb a scratch cluster (data checksums on) that archives through walship")
        run(
            [
                f"{BINDIR}/initdb",
                "-D",
                primary.datadir,
                "-U",
                "postgres",
                "--auth=trust",
                "-N",
                "-k",
            ]
        )
        primary.configure(
            {
                "wal_level": "replica",
                "archive_mode": "on",
                "archive_command": f"'{push}'",
                "fsync": "off",
                "timezone": "'UTC'",
                "log_timezone": "'UTC'",
            }
        )
        detail(f"archive_command = '{push}'")
        detail(f"repository: {repo} (local directory)")
        primary.start()

        step("2. pgbench -i: a small bank (100000 accounts)")
        primary.pgbench("-i", "-s", "1", "-q")

        step("3. base backup: walship backup-push --fast (as the server's user, reads PGDATA)")
        detail(f"connection: PGHOST={work} PGPORT={primary.port} PGUSER=postgres")
        out = run([*ws, "backup-push", "--fast", "--label", "demo"], env=primary.libpq_env)
        detail(out)
        name = backup_name(out)

        step("4. changes: 1000 pgbench transactions, then a marker row; T is recorded")
        primary.pgbench("-n", "-c", "2", "-t", "500")
        primary.sql("CREATE TABLE demo_marker(note text)")
        primary.sql("INSERT INTO demo_marker VALUES ('before T')")
        at_target = primary.sql(CHECKSUM_SQL)
        rows_at_target = primary.sql(ROWS_SQL)
        time.sleep(1.1)
        target = primary.sql("SELECT now()::text")
        time.sleep(1.1)
        detail(f"T = {target}")
        detail(f"at T: {rows_at_target} pgbench_history rows, data checksum {at_target}")

        step("5. more changes after T: 600 transactions and a second marker row")
        primary.sql("INSERT INTO demo_marker VALUES ('after T')")
        primary.pgbench("-n", "-c", "2", "-t", "300")
        final = primary.sql(CHECKSUM_SQL)
        if final == at_target:
            raise DemoError("the changes after T did not change the data")
        detail(f"now: {primary.sql(ROWS_SQL)} pgbench_history rows")
        last = primary.sql("SELECT pg_walfile_name(pg_switch_wal())")
        primary.wait(
            f"archiving {last}",
            f"SELECT last_archived_wal >= '{last}' FROM pg_stat_archiver",
            "t",
        )
        failed = primary.sql("SELECT failed_count FROM pg_stat_archiver")
        if failed != "0":
            raise DemoError(f"archive_command failed {failed} times:\n{primary.log()[-3000:]}")
        detail(f"archived up to {last}")
        primary.stop()
        detail("primary stopped")

        step("6. walship backup-list")
        out = run([*ws, "backup-list"])
        detail(out)
        if name not in out:
            raise DemoError(f"walship backup-list does not list the backup {name}")

        step(f"7. walship plan-restore --time '{target}'")
        out = run([*ws, "plan-restore", "--time", target])
        detail(out)

        step(f"8. walship backup-fetch LATEST {restored.datadir} --target-time '{target}'")
        out = run(
            [
                *ws,
                "backup-fetch",
                "LATEST",
                restored.datadir,
                "--target-time",
                target,
                "--target-action",
                "promote",
            ]
        )
        detail(out)
        if name not in out:
            raise DemoError(f"walship backup-fetch LATEST did not restore the backup {name}")
        with open(os.path.join(restored.datadir, "postgresql.auto.conf")) as fh:
            auto_conf = fh.read()
        if f"recovery_target_time = '{target}'" not in auto_conf or not os.path.exists(
            os.path.join(restored.datadir, "recovery.signal")
        ):
            raise DemoError(
                "walship backup-fetch did not write recovery_target_time and recovery.signal"
            )
        # the restored copy must not archive into the primary's repository
        restored.configure({"archive_mode": "off"})

        step("9. start the restored server: PostgreSQL replays WAL through walship fetch to T")
        detail(f"{BINDIR}/pg_ctl -D {restored.datadir} start  (archive_mode = off on this copy)")
        restored.start()
        restored.wait("recovery", "SELECT pg_is_in_recovery()", "f")
        log = restored.log()
        fetched = log.count("restored log file")
        stop_line = next((ln for ln in log.splitlines() if "recovery stopping" in ln), "")
        detail(f"{fetched} WAL files restored from the repository")
        if stop_line:
            detail(stop_line.split("LOG:", 1)[-1].strip())

        step("10. compare with the data at T")
        got = restored.sql(CHECKSUM_SQL)
        rows = restored.sql(ROWS_SQL)
        markers = restored.sql("SELECT string_agg(note, ', ') FROM demo_marker")
        detail(f"restored: {rows} pgbench_history rows (at T: {rows_at_target})")
        detail(f"restored data checksum: {got}")
        detail(f"marker rows: {markers}")
        if got != at_target or rows != rows_at_target or markers != "before T":
            raise DemoError(
                f"data differs: expected {at_target} ({rows_at_target} rows) and only "
                f"'before T', got {got} ({rows} rows) and {markers}"
            )
        restored.stop()
        detail("restored server stopped")

        step("11. walship verify")
        out = run([*ws, "verify"])
        detail(out)
        print(
            f"demo passed: backup {name} restored to T = {target}; the data equals the "
            "primary's at T, later changes absent"
        )
    except DemoError as exc:
        # the cause is usually in a server log (e.g. archive_command failing makes
        # backup-push wait for the WAL)
        logs = "".join(
            f"\n--- {s.logfile} (last lines):\n" + "\n".join(s.log().splitlines()[-25:])
            for s in (primary, restored)
            if s.log()
        )
        raise DemoError(f"{exc}{logs}") from None
    finally:
        restored.stop()
        primary.stop()


def wait_for_background(work: str, timeout: float = 15) -> None:
    """Wait (never signal) for the walship background processes of this demo.

    ``walship push``/``fetch`` start them in the servers' ``pg_wal/.walship``;
    they exit on their own once that directory is gone. Only processes whose
    command line names this demo's own scratch directory are looked at.
    """
    deadline = time.monotonic() + timeout
    while True:
        left = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    args = fh.read().decode(errors="replace").split("\0")
            except OSError:
                continue
            if any(a.startswith(work + "/") for a in args):
                left.append(pid)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if left:
        print(
            f"note: walship background processes {', '.join(left)} still running", file=sys.stderr
        )


def _interrupted(signo: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--keep", action="store_true", help="keep the scratch directory (servers are stopped)"
    )
    parser.add_argument(
        "--workdir",
        metavar="DIR",
        help="make the scratch directory inside DIR (default /tmp)",
    )
    args = parser.parse_args(argv)
    # stopped by a signal, the demo still stops its servers and removes its files
    for signo in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signo, _interrupted)
    work = make_workdir(args.workdir)
    try:
        demo(work)
        return 0
    except DemoError as exc:
        print(f"demo FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("demo interrupted", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(
                f"scratch directory kept: {work} (walship background processes there exit "
                "when idle, or when it is removed)"
            )
        else:
            shutil.rmtree(work, ignore_errors=True)
            wait_for_background(work)


if __name__ == "__main__":
    sys.exit(main())
