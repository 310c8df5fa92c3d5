"""Base backup and restore of a real PostgreSQL 15 cluster, side by side with other tools.

    .venv/bin/python benchmarks/bench_backup.py --out /tmp/bench-backup.json
    .venv/bin/python benchmarks/bench_backup.py --sizes 0.5 --tools pgbackrest,pg_basebackup

Run as root with the checkout's dev venv. ``--walship`` is the walship
executable under test: a venv made from /usr/bin/python3.11 that the
``postgres`` user can run, with the ``backup`` extra (default: the venv of
this checkout, from .cache/venv-path). Needs PostgreSQL 15, pgBackRest
(Debian package) and zstd.

One run:

1. Per size (``--sizes``, GiB of data; default 0.5 and 2), a PostgreSQL 15
   cluster with data checksums, ``pgbench -i -s N`` (about 15.6 MiB per scale
   unit), checkpointed and stopped. It is cached in ``--cache``
   (/var/tmp/walship-bench-backup) between runs; ``--rebuild`` makes it anew.
   Each run starts from a fresh copy (``cp -a``: its files are in the page
   cache for every tool alike), archive_mode on, fsync on.
2. Per tool and size, ``--reps`` times, tools interleaved:

   * walship: ``walship backup-push --fast`` into a local repository
     (archive_command = ``walship push`` into the same one; backup-push ends
     when the WAL that makes the backup consistent is in the repository), then
     ``walship backup-fetch LATEST`` into an empty directory;
   * pgbackrest: ``pgbackrest backup --type=full --start-fast``
     (compress-type=zst, level 3; process-max=2; archive_command =
     ``pgbackrest archive-push``; it too waits for the WAL to be archived),
     then ``pgbackrest restore``;
   * pg_basebackup: ``pg_basebackup -Ft -Z zstd -c fast`` into a local
     directory (client-side zstd, WAL streamed into pg_wal.tar.zst), then
     ``tar -I zstd -xf`` of both archives ("restore"; tar does not fsync).

   Every tool runs as the postgres user. Recorded: wall time, MB/s of raw
   data (the data directory's bytes outside pg_wal, the same for every
   tool), stored bytes (walship: the repository's basebackups/; pgBackRest:
   backup/; pg_basebackup: its output, WAL included), and peak memory of the
   whole process tree of the command: every process's VmHWM (its own peak)
   sampled from /proc every 0.1 s and summed over the tree (a process that
   lives less than that is covered by wait4's ru_maxrss, also recorded).
   The server's own processes (walsender, archiver) are not counted.
3. Unless ``--no-verify``: walship's and pg_basebackup's restored copies are
   checked with ``pg_verifybackup`` (``--no-parse-wal`` for walship: its
   restore fetches WAL at recovery). Untimed.

Every server is stopped by its pid; processes the servers left behind
(walship's background process) are found by a token in their environment and
signalled through a pidfd (bench_drain's sweep).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import pgharness as pgh  # noqa: E402
from bench_drain import (  # noqa: E402
    TOKEN_VAR,
    _vm_hwm_kib,
    default_walship,
    git_head,
    log,
    sql_literal,
    sweep_leftovers,
    tree_bytes,
    walship_version,
)

MIB = 1 << 20
GIB = 1 << 30
MAJOR = 15
ALL_TOOLS = ("walship", "pgbackrest", "pg_basebackup")
CACHE_DEFAULT = "/var/tmp/walship-bench-backup"
CACHE_VERSION = "v2"  # bumped when the way the clusters are made changes
#: pgbench -i data per scale unit (accounts heap 13.1 MiB + its index 2.1 MiB + the rest)
MIB_PER_SCALE = 15.6
SAMPLE_SECONDS = 0.1
TOOL_TIMEOUT = 3600.0


# --- peak memory of a process tree ------------------------------------------------
def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # the command name is in parentheses and may hold spaces: fields follow the last ")"
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return int(fields[1])
    except (IndexError, ValueError):
        return None


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return ""


class TreeMemory:
    """Every process's VmHWM in the tree under ``root`` (our child), summed.

    The tree is found from /proc's parent links at each sample, so only
    descendants of the process we started are read. The ``runuser`` wrapper
    (root of the tree when run as root) is not the tool and is left out.
    """

    def __init__(self, root: int) -> None:
        self.root = root
        self.peaks: dict[int, tuple[str, int]] = {}  # pid -> (comm, KiB)

    def sample(self) -> None:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                parent = _ppid(int(entry))
                if parent is not None:
                    children.setdefault(parent, []).append(int(entry))
        stack = [self.root]
        while stack:
            pid = stack.pop()
            stack.extend(children.get(pid, ()))
            comm = _comm(pid)
            if pid == self.root and comm == "runuser":
                continue
            kib = _vm_hwm_kib(pid)
            if kib is not None:
                old = self.peaks.get(pid, (comm, 0))[1]
                self.peaks[pid] = (comm, max(old, kib))

    def total_mib(self) -> float:
        return sum(kib for _, kib in self.peaks.values()) / 1024

    def processes(self) -> dict[str, int]:
        """comm -> how many processes of that name were seen."""
        seen: dict[str, int] = {}
        for comm, _ in self.peaks.values():
            seen[comm] = seen.get(comm, 0) + 1
        return seen


@dataclass
class Measured:
    seconds: float
    tree_peak_mib: float
    maxrss_mib: float
    processes: dict[str, int]
    stderr: str


def measure(cmd: list[str], env: dict[str, str] | None = None, cwd: str = "/tmp") -> Measured:
    """Run ``cmd`` as the postgres user; wall time and peak memory of its process tree."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    t0 = time.monotonic()
    proc = subprocess.Popen(
        pgh._as_postgres(cmd),
        env=full_env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    os.set_blocking(proc.stderr.fileno(), False)
    memory = TreeMemory(proc.pid)
    err = bytearray()
    usage = None
    status = 0
    while True:
        memory.sample()
        chunk = proc.stderr.read()
        if chunk:
            err += chunk
            del err[:-20000]
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() - t0 > TOOL_TIMEOUT:
            proc.kill()  # our child, by its Popen handle
            proc.wait()
            raise RuntimeError(f"{cmd[0]} still running after {TOOL_TIMEOUT:.0f}s")
        time.sleep(SAMPLE_SECONDS)
    seconds = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    os.set_blocking(proc.stderr.fileno(), True)
    err += proc.stderr.read() or b""
    proc.stderr.close()
    text = err.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {text[-2000:].strip()}")
    assert usage is not None
    return Measured(seconds, memory.total_mib(), usage.ru_maxrss / 1024, memory.processes(), text)


# --- the cluster ------------------------------------------------------------------
def scale_for(size_gib: float) -> int:
    return max(1, math.ceil(size_gib * 1024 / MIB_PER_SCALE))


def cached_cluster(wd: pgh.Workdir, cache: str, scale: int, rebuild: bool) -> str:
    """The stopped data directory of a checksummed PG 15 cluster after pgbench -i -s scale."""
    path = os.path.join(cache, f"pg{MAJOR}-s{scale}-{CACHE_VERSION}")
    done = path + ".complete"
    if os.path.exists(done) and os.path.isdir(path) and not rebuild:
        return path
    for stale in (done, path):
        if os.path.isdir(stale):
            shutil.rmtree(stale)
        elif os.path.exists(stale):
            os.unlink(stale)
    log(f"making the pgbench -s {scale} cluster (cached in {path})")
    started = time.monotonic()
    cluster = pgh.Cluster(MAJOR, wd, f"build-s{scale}")
    pgh.run(
        [
            cluster.bin("initdb"),
            "-D",
            cluster.datadir,
            "-U",
            "postgres",
            "--auth=trust",
            "--data-checksums",
            "-N",
        ]
    )
    cluster.configure(
        {
            "listen_addresses": "''",
            "fsync": "off",
            "max_wal_size": "'4GB'",
            "checkpoint_timeout": "'1h'",
            "timezone": "'UTC'",
            "log_timezone": "'UTC'",
        }
    )
    try:
        cluster.start()
        cluster.pgbench("-i", "-s", str(scale), "-q")
        # the load's WAL (as much as the data) is not kept: checkpoints with a
        # small max_wal_size remove it, so each run copies the data alone
        for sql in (
            "ALTER SYSTEM SET max_wal_size = '32MB'",
            "ALTER SYSTEM SET min_wal_size = '32MB'",
            "SELECT pg_reload_conf()",
            "CHECKPOINT",
            "SELECT pg_switch_wal()",
            "CHECKPOINT",
            "ALTER SYSTEM RESET ALL",
            "SELECT pg_reload_conf()",
        ):
            cluster.psql(sql)
    finally:
        cluster.stop()
    os.makedirs(cache, exist_ok=True)
    os.rename(cluster.datadir, path)  # same file system: /tmp and /var/tmp
    Path(done).write_text(f"pgbench -i -s {scale}, {time.monotonic() - started:.0f}s\n")
    return path


def data_bytes(datadir: str) -> int:
    """What a base backup copies: the data directory outside pg_wal."""
    return tree_bytes(datadir) - tree_bytes(os.path.join(datadir, "pg_wal"))


def set_archive_command(cluster: pgh.Cluster, command: str) -> None:
    cluster.psql(f"ALTER SYSTEM SET archive_command = {sql_literal(command)}")
    cluster.psql("SELECT pg_reload_conf()")


def wait_archiver_idle(cluster: pgh.Cluster, timeout: float = 120) -> None:
    """No .ready file left: the previous tool's WAL is archived before the next starts."""
    status = os.path.join(cluster.datadir, "pg_wal", "archive_status")
    deadline = time.monotonic() + timeout
    while any(n.endswith(".ready") for n in os.listdir(status)):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"archiver still busy after {timeout:.0f}s:\n{cluster.log()[-2000:]}"
            )
        time.sleep(0.2)


# --- tools ------------------------------------------------------------------------
@dataclass
class Ctx:
    wd: pgh.Workdir
    walship: str
    cluster: pgh.Cluster

    def libpq_env(self) -> dict[str, str]:
        return {
            "PGHOST": self.cluster.sockdir,
            "PGPORT": str(self.cluster.port),
            "PGUSER": "postgres",
            "PGDATABASE": "postgres",
        }


class Tool:
    name = ""
    settings = ""

    def __init__(self, ctx: Ctx, tag: str) -> None:
        self.ctx = ctx
        self.tag = tag
        self.repo = ctx.wd.mkdir(f"repo-{tag}")
        self.prepared = False

    def archive_command(self) -> str | None:
        """The archive_command this tool's backups need (None: archiving not needed)."""
        return None

    def clear(self) -> None:
        """Before each backup (repositories that keep every backup: nothing)."""

    def prepare(self) -> None:
        """Untimed set-up with the server running, before its archive_command is set."""

    def backup(self) -> Measured:
        raise NotImplementedError

    def restore(self, dest: str) -> Measured:
        raise NotImplementedError

    def stored_bytes(self) -> int:
        """Bytes of the tool's backups so far (a backup's size: the growth across it)."""
        return tree_bytes(self.repo)

    def verify(self, dest: str) -> str | None:
        """Check the restored copy (untimed); None when the tool has no such check."""
        return None

    def close(self) -> None:
        shutil.rmtree(self.repo, ignore_errors=True)


class Walship(Tool):
    name = "walship"

    def __init__(self, ctx: Ctx, tag: str) -> None:
        super().__init__(ctx, tag)
        self.conf = pgh.walship_config(ctx.wd, {"repo": self.repo}, name=f"walship-{tag}.toml")
        self.settings = "default settings (workers = cores), local repository"

    def _cmd(self, *args: str) -> list[str]:
        return [self.ctx.walship, "--config", self.conf, *args]

    def archive_command(self) -> str:
        return f"{self.ctx.walship} --config {self.conf} push %p %f"

    def backup(self) -> Measured:
        cmd = self._cmd("backup-push", "--pgdata", self.ctx.cluster.datadir, "--fast")
        return measure(cmd, self.ctx.libpq_env())

    def restore(self, dest: str) -> Measured:
        return measure(self._cmd("backup-fetch", "LATEST", dest))

    def stored_bytes(self) -> int:
        backups = os.path.join(self.repo, "basebackups")
        return tree_bytes(backups) if os.path.isdir(backups) else tree_bytes(self.repo)

    def verify(self, dest: str) -> str | None:
        proc = pgh.run(
            [self.ctx.cluster.bin("pg_verifybackup"), "--no-parse-wal", dest], check=False
        )
        return "ok" if proc.returncode == 0 else (proc.stdout + proc.stderr).strip()[-500:]


class PgBackRest(Tool):
    name = "pgbackrest"
    settings = "compress-type=zst (level 3), process-max=2, full backup, --start-fast"

    def __init__(self, ctx: Ctx, tag: str) -> None:
        super().__init__(ctx, tag)
        self.logdir = ctx.wd.mkdir(f"pgbr-log-{tag}")
        self.lockdir = ctx.wd.mkdir(f"pgbr-lock-{tag}")
        cluster = ctx.cluster
        lines = [
            "[global]",
            f"repo1-path={self.repo}",
            "repo1-retention-full=99",
            "compress-type=zst",
            "process-max=2",
            f"log-path={self.logdir}",
            f"lock-path={self.lockdir}",
            "log-level-console=warn",
            "[bench]",
            f"pg1-path={cluster.datadir}",
            f"pg1-port={cluster.port}",
            f"pg1-socket-path={cluster.sockdir}",
        ]
        self.conf = ctx.wd.write(f"pgbackrest-{tag}.conf", "\n".join(lines) + "\n")

    def _cmd(self, *args: str) -> list[str]:
        return ["pgbackrest", f"--config={self.conf}", "--stanza=bench", *args]

    def archive_command(self) -> str:
        return " ".join(self._cmd("archive-push", "%p"))

    def prepare(self) -> None:
        pgh.run(self._cmd("stanza-create"))

    def backup(self) -> Measured:
        return measure(self._cmd("backup", "--type=full", "--start-fast"))

    def restore(self, dest: str) -> Measured:
        return measure(self._cmd("restore", f"--pg1-path={dest}"))

    def stored_bytes(self) -> int:
        return tree_bytes(os.path.join(self.repo, "backup"))


class PgBaseBackup(Tool):
    name = "pg_basebackup"
    settings = (
        "-Ft -Z zstd (client, level 3) -c fast -X stream (pg_wal.tar not compressed); "
        "restore: tar -I zstd -xf"
    )

    def __init__(self, ctx: Ctx, tag: str) -> None:
        super().__init__(ctx, tag)
        self.out = os.path.join(self.repo, "base")

    def stored_bytes(self) -> int:
        return tree_bytes(self.out) if os.path.isdir(self.out) else 0

    def clear(self) -> None:
        """Each repetition writes its output anew (before it is measured)."""
        if os.path.exists(self.out):
            pgh.run(["rm", "-rf", self.out])

    def backup(self) -> Measured:
        c = self.ctx.cluster
        cmd = [
            c.bin("pg_basebackup"),
            "-h",
            c.sockdir,
            "-p",
            str(c.port),
            "-U",
            "postgres",
            "-D",
            self.out,
            "-Ft",
            "-Z",
            "zstd",
            "-c",
            "fast",
        ]
        return measure(cmd)

    def restore(self, dest: str) -> Measured:
        # PostgreSQL 15 compresses base.tar with zstd but writes pg_wal.tar as is
        wal = next(n for n in sorted(os.listdir(self.out)) if n.startswith("pg_wal.tar"))
        unpack = "-I zstd " if wal.endswith(".zst") else ""
        script = (
            'set -e; tar -I zstd -xf "$1/base.tar.zst" -C "$2"; '
            f'mkdir -p "$2/pg_wal"; tar {unpack}-xf "$1/{wal}" -C "$2/pg_wal"; '
            'cp "$1/backup_manifest" "$2/"'  # beside the tars, for pg_verifybackup
        )
        return measure(["/bin/sh", "-c", script, "sh", self.out, dest])

    def verify(self, dest: str) -> str | None:
        proc = pgh.run([self.ctx.cluster.bin("pg_verifybackup"), dest], check=False)
        return "ok" if proc.returncode == 0 else (proc.stdout + proc.stderr).strip()[-500:]


def make_tool(name: str, ctx: Ctx, tag: str) -> Tool:
    if name == "walship":
        return Walship(ctx, tag)
    if name == "pgbackrest":
        return PgBackRest(ctx, tag)
    if name == "pg_basebackup":
        return PgBaseBackup(ctx, tag)
    raise ValueError(name)


# --- one size ---------------------------------------------------------------------
def run_size(
    args: argparse.Namespace, wd: pgh.Workdir, size: float, tools: list[str], token: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    scale = scale_for(size)
    cached = cached_cluster(wd, args.cache, scale, args.rebuild)
    name = f"data-s{scale}"
    cluster = pgh.Cluster(MAJOR, wd, name)
    log(f"s{scale}: copying the cluster")
    pgh.run(["cp", "-a", cached, cluster.datadir])
    raw = data_bytes(cluster.datadir)
    info = {"size_gib": size, "scale": scale, "raw_bytes": raw}
    cluster.configure(
        {
            "fsync": "on",
            "archive_mode": "on",
            "archive_command": "''",
            "wal_level": "replica",
            "max_wal_senders": "5",
            "checkpoint_timeout": "'1h'",
            "max_wal_size": "'4GB'",
        }
    )
    rows: list[dict[str, Any]] = []
    ctx = Ctx(wd, args.walship, cluster)
    made: dict[str, Tool] = {}
    try:
        cluster.start()
        for rep in range(args.reps):
            for tool_name in tools:
                row: dict[str, Any] = {"size_gib": size, "scale": scale, "tool": tool_name}
                row["rep"] = rep + 1
                dest = os.path.join(wd.path, f"restore-{tool_name}")
                try:
                    tool = made.get(tool_name)
                    if tool is None:
                        tool = made[tool_name] = make_tool(tool_name, ctx, f"s{scale}-{tool_name}")
                    if not tool.prepared:  # before its archive_command: pgBackRest's
                        tool.prepare()  # archive-push fails until stanza-create
                        tool.prepared = True
                    command = tool.archive_command()
                    if command is not None:
                        set_archive_command(cluster, command)
                    wait_archiver_idle(cluster)
                    row["settings"] = tool.settings
                    row["load_1m_before"] = os.getloadavg()[0]
                    log(f"s{scale}/{tool_name} #{rep + 1}: backup")
                    tool.clear()
                    stored_before = tool.stored_bytes()
                    backup = tool.backup()
                    row.update(
                        backup_s=backup.seconds,
                        backup_mb_s=raw / 1e6 / backup.seconds,
                        backup_peak_mib=backup.tree_peak_mib,
                        backup_maxrss_mib=backup.maxrss_mib,
                        backup_processes=backup.processes,
                        stored_bytes=tool.stored_bytes() - stored_before,
                    )
                    pgh.run(["rm", "-rf", dest])
                    os.makedirs(dest, mode=0o700)
                    if os.geteuid() == 0:
                        shutil.chown(dest, "postgres", "postgres")
                    log(f"s{scale}/{tool_name} #{rep + 1}: {backup.seconds:.1f}s; restore")
                    restored = tool.restore(dest)
                    row.update(
                        restore_s=restored.seconds,
                        restore_mb_s=raw / 1e6 / restored.seconds,
                        restore_peak_mib=restored.tree_peak_mib,
                        restore_maxrss_mib=restored.maxrss_mib,
                        restore_processes=restored.processes,
                        restored_bytes=data_bytes(dest),
                    )
                    log(f"s{scale}/{tool_name} #{rep + 1}: restore {restored.seconds:.1f}s")
                    if args.verify:
                        verdict = tool.verify(dest)
                        if verdict is not None:
                            row["verified"] = verdict
                except Exception as exc:  # one tool's failure must not lose the others
                    row["error"] = str(exc)
                    log(f"s{scale}/{tool_name}: FAILED: {str(exc)[:2000]}")
                finally:
                    pgh.run(["rm", "-rf", dest], check=False)
                rows.append(row)
    finally:
        cluster.stop()
        # what the server left behind (walship's background process); the server
        # itself carries the token too, so never while it runs
        sweep_leftovers(token, set())
        for tool in made.values():
            tool.close()
        pgh.run(["rm", "-rf", cluster.datadir], check=False)
    return info, rows


# --- report -----------------------------------------------------------------------
def median_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (size, tool): medians over the repetitions that succeeded."""
    keys: list[tuple[float, str]] = []
    for r in rows:
        if (r["size_gib"], r["tool"]) not in keys:
            keys.append((r["size_gib"], r["tool"]))
    out = []
    for size, tool in keys:
        group = [r for r in rows if r["size_gib"] == size and r["tool"] == tool]
        good = [r for r in group if "error" not in r]
        if not good:
            out.append({"size_gib": size, "tool": tool, "error": group[-1]["error"]})
            continue
        merged: dict[str, Any] = {"size_gib": size, "tool": tool, "reps": len(good)}
        for key, value in good[0].items():
            if isinstance(value, float | int) and key not in ("size_gib", "rep", "scale"):
                merged[key] = statistics.median(r[key] for r in good)
        merged["verified"] = ", ".join(sorted({str(r.get("verified", "-")) for r in good}))
        out.append(merged)
    return out


def table(rows: list[dict[str, Any]], sizes: dict[float, dict[str, Any]]) -> str:
    lines = []
    for size, info in sizes.items():
        lines.append(
            f"{info['raw_bytes'] / 1e9:.2f} GB of data (pgbench -i -s {info['scale']}, "
            "data checksums on)"
        )
        lines.append("")
        lines.append(
            "| tool | backup s | backup MB/s | backup peak memory | stored | restore s "
            "| restore MB/s | restore peak memory | verified |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in (r for r in median_rows(rows) if r["size_gib"] == size):
            if "error" in r:
                first = r["error"].strip().splitlines()[0][:100] if r["error"].strip() else "?"
                lines.append(f"| {r['tool']} | failed: {first} ||||||||")
                continue
            lines.append(
                f"| {r['tool']} | {r['backup_s']:.1f} | {r['backup_mb_s']:.0f} "
                f"| {r['backup_peak_mib']:.0f} MiB | {r['stored_bytes'] / MIB:.0f} MiB "
                f"| {r['restore_s']:.1f} | {r['restore_mb_s']:.0f} "
                f"| {r['restore_peak_mib']:.0f} MiB | {r['verified']} |"
            )
        lines.append("")
    return "\n".join(lines)


# --- driver -----------------------------------------------------------------------
def check_prerequisites(args: argparse.Namespace, tools: list[str]) -> str | None:
    if os.geteuid() != 0:
        return "run as root: the servers and the tools run as the postgres user through runuser"
    if not os.path.exists(os.path.join(pgh.DEBIAN_BINDIR.format(major=MAJOR), "postgres")):
        return "PostgreSQL 15 is missing: apt-get install postgresql-15"
    if not shutil.which("zstd"):
        return "zstd is missing: apt-get install zstd"
    if "pgbackrest" in tools and not shutil.which("pgbackrest"):
        return "pgBackRest is missing: apt-get install pgbackrest"
    if "walship" in tools:
        if pgh.run([args.walship, "--version"], check=False).returncode != 0:
            return (
                f"the postgres user cannot run {args.walship}: make the venv from "
                "/usr/bin/python3.11 somewhere postgres can read (e.g. /var/tmp) and pass --walship"
            )
        for command, flag in (("backup-push", "--pgdata"), ("backup-fetch", "LATEST")):
            proc = pgh.run([args.walship, command, "--help"], check=False)
            if flag not in proc.stdout:
                return (
                    f"{args.walship} has no {command} yet (a walship with issue 13's base "
                    "backups is needed), or leave walship out: --tools pgbackrest,pg_basebackup"
                )
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--walship", default=default_walship(), help="walship executable")
    parser.add_argument(
        "--sizes", default="0.5,2", help="cluster sizes in GiB of data, comma-separated"
    )
    parser.add_argument("--tools", default=",".join(ALL_TOOLS))
    parser.add_argument("--reps", type=int, default=1, help="repetitions per tool (median)")
    parser.add_argument("--cache", default=CACHE_DEFAULT, help="where the clusters are kept")
    parser.add_argument("--rebuild", action="store_true", help="make the cached clusters anew")
    parser.add_argument(
        "--no-verify", dest="verify", action="store_false", help="skip pg_verifybackup"
    )
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    args.walship = os.path.abspath(args.walship)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    for t in tools:
        if t not in ALL_TOOLS:
            print(
                f"bench_backup: unknown tool {t!r}; choose from {','.join(ALL_TOOLS)}",
                file=sys.stderr,
            )
            return 2
    try:
        sizes = [float(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        print(
            f"bench_backup: --sizes {args.sizes!r}: expected GiB numbers like 0.5,2",
            file=sys.stderr,
        )
        return 2
    if not sizes or any(s <= 0 for s in sizes) or args.reps < 1:
        print("bench_backup: --sizes must be positive and --reps at least 1", file=sys.stderr)
        return 2
    problem = check_prerequisites(args, tools)
    if problem:
        print(f"bench_backup: {problem}", file=sys.stderr)
        return 2

    load_start = os.getloadavg()
    token = uuid.uuid4().hex
    os.environ[TOKEN_VAR] = token  # inherited by everything started from here on
    wd = pgh.Workdir("walship-bench-backup-")
    rows: list[dict[str, Any]] = []
    infos: dict[float, dict[str, Any]] = {}
    started = time.monotonic()
    try:
        for size in sizes:
            info, size_rows = run_size(args, wd, size, tools, token)
            infos[size] = info
            rows.extend(size_rows)
    finally:
        sweep_leftovers(token, set())
        wd.close()

    report = {
        "benchmark": "bench_backup",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "arch": platform.machine(),
            "cpus": os.cpu_count(),
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg(),
            "python": platform.python_version(),
        },
        "walship": {"path": args.walship, "version": walship_version(args.walship)}
        if "walship" in tools
        else None,
        "checkout": git_head(),
        "pgbackrest": subprocess.run(
            ["pgbackrest", "version"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if shutil.which("pgbackrest")
        else None,
        "total_s": time.monotonic() - started,
        "sizes": list(infos.values()),
        "results": rows,
        "medians": median_rows(rows),
    }
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(table(rows, infos))
    loads = [r["load_1m_before"] for r in rows if "load_1m_before" in r]
    print(
        f"total {report['total_s']:.0f}s; load average (1 min) at the start {load_start[0]:.1f}, "
        f"before each tool {min(loads, default=0):.1f}-{max(loads, default=0):.1f}, "
        f"at the end {os.getloadavg()[0]:.1f}"
    )
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
