"""walship demo: archive a scratch PostgreSQL 15 and restore it to a point in time.

Run by ``make demo`` with the venv's Python (walship must be installed in it).
Every step is real: initdb, ``archive_command = 'walship push %p %f'`` into a
local repository, pg_basebackup, pgbench changes, a recorded time T, more
changes, then a restore of the base backup to T with ``restore_command =
'walship fetch %f %p'``; the restored data is compared with the data at T.

As root, PostgreSQL commands run as the ``postgres`` user (``runuser``); as
any other user they run as that user. Exits non-zero when anything is wrong;
the servers are stopped and the scratch directory removed in every case
(``--keep`` keeps the directory for a look).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

BINDIR = os.environ.get("WALSHIP_DEMO_PG_BINDIR", "/usr/lib/postgresql/15/bin")
WALSHIP = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "walship")
AS_ROOT = os.geteuid() == 0

CHECKSUM_SQL = (
    "SELECT md5(string_agg(aid || ':' || abalance, ',' ORDER BY aid)) "
    "|| '/' || (SELECT sum(bbalance) FROM pgbench_branches) "
    "|| '/' || (SELECT count(*) FROM pgbench_history) FROM pgbench_accounts"
)


class DemoError(Exception):
    pass


def step(text: str) -> None:
    print(text, flush=True)


def detail(text: str) -> None:
    print(f"   {text}", flush=True)


def run(cmd: Sequence[str], *, cwd: str = "/tmp", timeout: float = 300) -> str:
    full = ["runuser", "-u", "postgres", "--", *cmd] if AS_ROOT else list(cmd)
    try:
        proc = subprocess.run(
            full, cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise DemoError(f"{cmd[0]} did not finish within {timeout}s") from None
    if proc.returncode != 0:
        raise DemoError(
            f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    return proc.stdout.strip()


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

    def configure(self, settings: dict[str, str]) -> None:
        settings = {
            **settings,
            "port": str(self.port),
            "listen_addresses": "''",
            "unix_socket_directories": f"'{self.work}'",
        }
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as fh:
            fh.write("\n# walship demo\n")
            fh.writelines(f"{k} = {v}\n" for k, v in settings.items())

    def start(self) -> None:
        self.started = True
        pg_ctl = f"{BINDIR}/pg_ctl"
        run([pg_ctl, "-D", self.datadir, "-l", self.logfile, "-w", "-t", "120", "start"])

    def stop(self) -> None:
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


def repo_summary(repo: str) -> tuple[int, int, int]:
    files = raw = stored = 0
    for directory, _, names in os.walk(os.path.join(repo, "wal")):
        for name in names:
            if name.startswith(".walship-tmp-"):
                continue
            files += 1
            stored += os.path.getsize(os.path.join(directory, name))
            raw += 16 << 20 if len(name) == 24 else 0
    return files, raw, stored


def demo(work: str) -> None:
    for tool in ("initdb", "pg_ctl", "psql", "pgbench", "pg_basebackup"):
        if not os.access(f"{BINDIR}/{tool}", os.X_OK):
            raise DemoError(f"{BINDIR}/{tool} not found: apt-get install postgresql-15")
    if not os.access(WALSHIP, os.X_OK):
        raise DemoError(f"{WALSHIP} not found: run the demo with the venv's python (make demo)")
    version = run([WALSHIP, "--version"])
    pg_version = run([f"{BINDIR}/postgres", "--version"])
    step(f"walship demo: {version}, {pg_version}, scratch directory {work}")

    repo = os.path.join(work, "repo")
    config = os.path.join(work, "walship.toml")
    write(config, f'repo = "{repo}"\n')
    # a walship background process that push starts (look-ahead, docs/push-fetch.md)
    # lives in the primary's pg_wal/.walship and exits once that directory is removed
    push = f"{WALSHIP} --config {config} push %p %f"
    fetch = f"{WALSHIP} --config {config} fetch %f %p"

    primary = Server(work, "primary")
    restored = Server(work, "restored")
    try:
        step("1. initdb a scratch cluster that archives through walship")
        run([f"{BINDIR}/initdb", "-D", primary.datadir, "-U", "postgres", "--auth=trust", "-N"])
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

        step("3. base backup with pg_basebackup (WAL comes from the archive, -X none)")
        backup = os.path.join(work, "backup")
        run(
            [
                f"{BINDIR}/pg_basebackup",
                "-h",
                work,
                "-p",
                str(primary.port),
                "-U",
                "postgres",
                "-D",
                backup,
                "-Fp",
                "-X",
                "none",
                "-c",
                "fast",
            ],
            timeout=180,
        )

        step("4. changes: 1000 pgbench transactions, then a marker row")
        primary.pgbench("-n", "-c", "2", "-t", "500")
        primary.sql("CREATE TABLE demo_marker(note text)")
        primary.sql("INSERT INTO demo_marker VALUES ('before T')")
        at_target = primary.sql(CHECKSUM_SQL)
        time.sleep(1.1)
        target = primary.sql("SELECT now()::text")
        time.sleep(1.1)
        detail(f"T = {target}")
        detail(f"data checksum at T: {at_target}")

        step("5. more changes after T: 600 transactions and a second marker row")
        primary.sql("INSERT INTO demo_marker VALUES ('after T')")
        primary.pgbench("-n", "-c", "2", "-t", "300")
        final = primary.sql(CHECKSUM_SQL)
        if final == at_target:
            raise DemoError("the changes after T did not change the data")
        last = primary.sql("SELECT pg_walfile_name(pg_switch_wal())")
        primary.wait(
            f"archiving {last}",
            f"SELECT last_archived_wal >= '{last}' FROM pg_stat_archiver",
            "t",
        )
        failed = primary.sql("SELECT failed_count FROM pg_stat_archiver")
        if failed != "0":
            raise DemoError(f"archive_command failed {failed} times:\n{primary.log()[-3000:]}")
        files, raw, stored = repo_summary(repo)
        detail(
            f"archived {files} WAL files: {raw / 2**20:.0f} MiB of segments stored "
            f"in {stored / 2**20:.1f} MiB (zstd)"
        )
        primary.stop()
        detail("primary stopped")

        step("6. restore the base backup to T through walship fetch")
        run(["cp", "-a", backup, restored.datadir])
        restored.configure(
            {
                "archive_mode": "off",
                "restore_command": f"'{fetch}'",
                "recovery_target_time": f"'{target}'",
                "recovery_target_action": "'promote'",
            }
        )
        run(["touch", os.path.join(restored.datadir, "recovery.signal")])
        detail(f"restore_command = '{fetch}'")
        detail(f"recovery_target_time = '{target}'")
        restored.start()
        restored.wait("recovery", "SELECT pg_is_in_recovery()", "f")
        log = restored.log()
        fetched = log.count("restored log file")
        stop_line = next((ln for ln in log.splitlines() if "recovery stopping" in ln), "")
        detail(f"{fetched} WAL files restored from the archive")
        if stop_line:
            detail(stop_line.split("LOG:", 1)[-1].strip())

        step("7. compare")
        got = restored.sql(CHECKSUM_SQL)
        markers = restored.sql("SELECT string_agg(note, ', ') FROM demo_marker")
        detail(f"restored data checksum: {got}")
        detail(f"marker rows: {markers}")
        if got != at_target or markers != "before T":
            raise DemoError(
                f"data differs: expected {at_target} and only 'before T', got {got} and {markers}"
            )
        restored.stop()
        print("data matches: the restored cluster equals the primary at T, later changes absent")
    except DemoError as exc:
        # the cause is usually in a server log (e.g. archive_command failing makes
        # pg_basebackup wait for the archive)
        logs = "".join(
            f"\n--- {s.logfile} (last lines):\n" + "\n".join(s.log().splitlines()[-25:])
            for s in (primary, restored)
            if s.log()
        )
        raise DemoError(f"{exc}{logs}") from None
    finally:
        restored.stop()
        primary.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--keep", action="store_true", help="keep the scratch directory (servers are stopped)"
    )
    args = parser.parse_args(argv)
    work = make_workdir(None)
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
            print(f"scratch directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
