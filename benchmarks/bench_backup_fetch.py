"""Restoring a base backup: ``walship backup-fetch`` beside ``pgbackrest restore`` and
extracting a ``pg_basebackup -Ft -Z zstd`` tar, from local disk (issue 13).

    python3.11 -m venv /tmp/wv && /tmp/wv/bin/pip install '.[backup]'
    /tmp/wv/bin/python benchmarks/bench_backup_fetch.py [--scale 150] [--reps 3]

Needs root (the servers and every tool run as the ``postgres`` user, see
tests/pgharness.py), PostgreSQL 15 (Debian) and pgBackRest (Debian package).

What it does: a PostgreSQL 15 cluster archiving through ``walship push``
gets ``pgbench -i -s SCALE`` (scale 150 is about 2.2 GB); then one backup of
each kind: ``walship backup-push --fast`` (zstd level 1, the default),
``pgbackrest backup --type=full`` (zstd, process-max 2, archive-check off:
the WAL goes to walship) and ``pg_basebackup -Ft -Z zstd -X none``. Each
restore then runs ``--reps`` times, interleaved, into a fresh directory:
``walship backup-fetch NAME DIR`` (workers: the number of cores), ``pgbackrest
restore --process-max 2`` and ``tar --zstd -xf base.tar.zst``. Reported:
wall seconds, MB/s of raw data (the backup's files), and peak RSS of the
largest process (GNU time's %M; for pgBackRest the largest of its
processes). The page cache is not dropped (the machine is shared): every
tool reads a repository that is likely cached, so the numbers compare CPU
and write paths more than disk reads.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import pgharness as pgh  # noqa: E402

WALSHIP = os.path.join(os.path.dirname(sys.executable), "walship")
TIME = "/usr/bin/time"


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def timed(cmd: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS in KiB) of one command run as the server user."""
    proc = pgh.run([TIME, "-f", "BENCH %e %M", *cmd], timeout=3600)
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("BENCH ")][-1]
    _, secs, rss = line.split()
    return float(secs), int(rss)


def du(path: str) -> int:
    total = 0
    for base, _dirs, files in os.walk(path):
        for name in files:
            p = os.path.join(base, name)
            if not os.path.islink(p):
                total += os.stat(p).st_size
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=150, help="pgbench scale (150: ~2.2 GB)")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    wd = pgh.Workdir("walship-bench-fetch-")
    cluster = pgh.Cluster(15, wd, "primary")
    repo = wd.mkdir("repo")
    cfg = pgh.walship_config(wd, {"repo": repo})
    try:
        cluster.initdb(
            {
                "archive_mode": "on",
                "archive_command": pgh.archive_command(cfg),
                "max_wal_size": "4GB",
                "checkpoint_timeout": "30min",
            }
        )
        cluster.start()
        cfg = pgh.walship_config(
            wd,
            {
                "repo": repo,
                "conninfo": f"host={cluster.sockdir} port={cluster.port} user=postgres",
            },
        )
        log(f"pgbench -i -s {args.scale}")
        cluster.pgbench("-i", "-s", str(args.scale), "-q")

        log("walship backup-push")
        pgh.run([WALSHIP, "--config", cfg, "backup-push", "--fast"], timeout=3600)
        rows = json.loads(pgh.run([WALSHIP, "--config", cfg, "backup-list", "--json"]).stdout)
        name, raw = rows[-1]["name"], int(rows[-1]["raw_size"])

        log("pgbackrest backup")
        pbr = wd.mkdir("pgbackrest")
        conf = wd.write(
            "pgbackrest.conf",
            "[global]\n"
            f"repo1-path={pbr}/repo\nlock-path={pbr}\nlog-path={pbr}\nlog-level-file=off\n"
            "compress-type=zst\nprocess-max=2\nstart-fast=y\narchive-check=n\n"
            "repo1-retention-full=1\n"
            f"[bench]\npg1-path={cluster.datadir}\npg1-socket-path={cluster.sockdir}\n"
            f"pg1-port={cluster.port}\npg1-user=postgres\n",
        )
        pb = ["pgbackrest", f"--config={conf}", "--stanza=bench"]
        pgh.run([*pb, "stanza-create"])
        pgh.run([*pb, "--type=full", "backup"], timeout=3600)

        log("pg_basebackup -Ft -Z zstd")
        tar_dir = os.path.join(wd.path, "tar")
        cluster.basebackup(tar_dir, "-Ft", "-Z", "zstd")
        # basebackup() passes -Fp; -Ft afterwards wins
        tarball = os.path.join(tar_dir, "base.tar.zst")

        kinds = {
            "walship backup-fetch": lambda d: [WALSHIP, "--config", cfg, "backup-fetch", name, d],
            "pgbackrest restore (process-max 2)": lambda d: [
                *pb,
                f"--pg1-path={d}",
                "--process-max=2",
                "--type=none",
                "restore",
            ],
            "tar --zstd -x (pg_basebackup -Ft -Z zstd)": lambda d: [
                "sh",
                "-c",
                f"mkdir -m 700 {d} && tar --zstd -xf {tarball} -C {d}",
            ],
        }
        results: dict[str, list[tuple[float, int]]] = {k: [] for k in kinds}
        for rep in range(args.reps):
            for i, (kind, cmd) in enumerate(kinds.items()):
                dest = os.path.join(wd.path, f"r{rep}-{i}")
                results[kind].append(timed(cmd(dest)))
                log(f"{kind} rep {rep}: {results[kind][-1]} ({du(dest) / 1e6:.0f} MB)")
                pgh.run(["rm", "-rf", dest])
        print(f"\nraw data: {raw / 1e6:,.0f} MB (pgbench scale {args.scale}), {os.cpu_count()} cores")
        print("| restore | seconds (median) | MB/s raw | peak RSS |")
        print("|---|---|---|---|")
        for kind, runs in results.items():
            secs = statistics.median(r[0] for r in runs)
            rss = max(r[1] for r in runs)
            print(f"| {kind} | {secs:.1f} | {raw / 1e6 / secs:.0f} | {rss / 1024:.0f} MiB |")
    finally:
        cluster.stop("fast")
        wd.close()


if __name__ == "__main__":
    main()
