"""Real PostgreSQL recoveries through ``walship fetch``: restore_command latency as
the server sees it, with and without encryption and read-ahead (``fetch_prefetch``).

    python3.11 -m venv /tmp/wv && /tmp/wv/bin/pip install -U pip
    /tmp/wv/bin/pip install '.[crypto]'
    /tmp/wv/bin/python benchmarks/bench_recovery.py [--segments 40] [--reps 3] [--prefetch 8]

Uses the ``walship`` beside this Python (the venv must be readable by the
``postgres`` user: PostgreSQL runs restore_command as that user; a venv under
/tmp made from /usr/bin/python3.11 is). Needs root (or the postgres user) and
PostgreSQL 15 (tests/pgharness.py).

What it does: a PostgreSQL 15 primary archives with ``cp`` while ``pgbench``
runs after a base backup, until ``--segments`` segments are archived; every
archived file is then pushed with ``walship push`` into a plain and an
encrypted (symmetric) repository. Each configuration (plain / symmetric x
prefetch off / on) then recovers a copy of the base backup to the end of the
archive, in interleaved order, ``--reps`` times. restore_command is
``bash timed.sh %f %p``: bash's ``$EPOCHREALTIME`` around ``walship fetch``
(no extra processes), so every call's wall time is what the server waited.
Reported: median and p90 per restored segment, the total the server waited
on restore_command, and the recovery time from the server log ("starting
archive recovery" to "archive recovery complete").
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import shutil
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import pgharness as pgh  # noqa: E402

WALSHIP = os.path.join(os.path.dirname(sys.executable), "walship")
TIMED = """#!/bin/bash
# $1 = %f, $2 = %p: one restore_command call, timed without extra processes
s=$EPOCHREALTIME
{walship} --config {config} fetch "$1" "$2"
r=$?
e=$EPOCHREALTIME
echo "$1 $r $s $e" >> {log}
exit $r
"""


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def make_archive(wd: pgh.Workdir, segments: int) -> tuple[str, str]:
    """(base backup dir, archive dir of cp'ed WAL files)."""
    archive = wd.mkdir("archive")
    cluster = pgh.Cluster(15, wd, "primary")
    cluster.initdb(
        {
            "archive_mode": "on",
            "archive_command": f"'cp %p {archive}/%f'",
            "checkpoint_timeout": "30s",
            "max_wal_size": "1GB",
        }
    )
    cluster.start()
    try:
        cluster.pgbench("-i", "-s", "10", "-q")
        backup = os.path.join(wd.path, "backup")
        cluster.basebackup(backup)
        while sum(1 for f in os.listdir(archive) if len(f) == 24) < segments:
            cluster.pgbench("-T", "5", "-c", "2", "-j", "2", "-n")
        last = cluster.switch_wal()
        cluster.wait_archived(last)
    finally:
        cluster.stop("fast")
    return backup, archive


def push_all(archive: str, config: str) -> None:
    for name in sorted(os.listdir(archive)):
        pgh.run([WALSHIP, "-q", "--config", config, "push", os.path.join(archive, name), name])


def recover(
    wd: pgh.Workdir, backup: str, config: str, label: str, rep: int
) -> tuple[list[float], float, float]:
    """(per-segment restore_command seconds, total waited, recovery seconds)."""
    name = f"r-{label}-{rep}"
    timelog = os.path.join(wd.path, f"{name}.times")
    script = wd.write(
        f"{name}.sh", TIMED.format(walship=WALSHIP, config=config, log=timelog), mode=0o755
    )
    cluster = pgh.restore_cluster(
        15,
        wd,
        backup,
        name,
        {"restore_command": f"'bash {script} %f %p'", "recovery_target_action": "'promote'"},
    )
    try:
        cluster.start()
        cluster.wait_promoted(timeout=600)
    finally:
        cluster.stop("immediate")
    calls = []
    with open(timelog) as fh:
        for line in fh:
            fname, code, start, end = line.split()
            calls.append((fname, int(code), float(end) - float(start)))
    segments = [t for f, c, t in calls if c == 0 and len(f) == 24]
    waited = sum(t for _, _, t in calls)
    text = cluster.log()
    recovery = _log_span(text, "starting archive recovery", "archive recovery complete")
    # the background process (read-ahead) exits by itself once its spool is gone
    shutil.rmtree(cluster.datadir, ignore_errors=True)
    return segments, waited, recovery


def _log_span(text: str, first: str, last: str) -> float:
    def stamp(marker: str) -> datetime.datetime:
        for line in text.splitlines():
            if marker in line:
                return datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f")
        raise RuntimeError(f"{marker!r} not in the server log")

    return (stamp(last) - stamp(first)).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=40)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--prefetch", type=int, default=8)
    parser.add_argument(
        "--agent",
        choices=("both", "on", "off"),
        default="on",
        help="the agent setting of the recoveries (both: each configuration with and without)",
    )
    args = parser.parse_args()
    if not os.access(WALSHIP, os.X_OK):
        sys.exit(f"no walship beside {sys.executable}")

    wd = pgh.Workdir("walship-bench-recovery-")
    # this run's walship agents (the server's restore_command starts them) live here
    agents = wd.mkdir("agents")
    os.environ["WALSHIP_AGENT_DIR"] = agents
    try:
        log(f"making {args.segments} segments of WAL (PostgreSQL 15 + pgbench)")
        backup, archive = make_archive(wd, args.segments)
        key = os.path.join(wd.path, "sym.key")
        pgh.run([WALSHIP, "keygen", key])
        configs: dict[str, str] = {}
        for enc in ("plain", "symmetric"):
            repo = wd.mkdir(f"repo-{enc}")
            settings: dict[str, object] = {"repo": repo}
            if enc == "symmetric":
                settings.update(encryption="symmetric", encryption_key_file=key)
            push_cfg = pgh.walship_config(wd, settings, name=f"push-{enc}.toml")
            log(f"pushing the archive into {repo}")
            push_all(archive, push_cfg)
            agent_values = {"both": (True, False), "on": (True,), "off": (False,)}[args.agent]
            for prefetch in (0, args.prefetch):
                for agent_on in agent_values:
                    label = f"{enc}, prefetch {prefetch}" if prefetch else f"{enc}, prefetch off"
                    if args.agent == "both":
                        label += ", agent" if agent_on else ", agent off"
                    configs[label] = pgh.walship_config(
                        wd,
                        {**settings, "fetch_prefetch": prefetch, "agent": agent_on},
                        name=f"{enc}-{prefetch}-{agent_on}.toml",
                    )
        results: dict[str, list[tuple[list[float], float, float]]] = {k: [] for k in configs}
        rng = random.Random(7)
        for rep in range(args.reps):
            order = list(configs)
            rng.shuffle(order)
            for label in order:
                log(f"rep {rep + 1}: recovering with {label}")
                tag = label.replace(", ", "-").replace(" ", "")
                results[label].append(recover(wd, backup, configs[label], tag, rep))
    finally:
        wd.close()

    print(
        f"Recovery of a PostgreSQL 15 base backup through {args.segments}+ archived 16 MiB "
        f"segments (pgbench -s 10, then pgbench -c 2), {args.reps} repetitions per "
        f"configuration, interleaved; {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; agent: {args.agent}."
    )
    print()
    print(
        "| configuration | restore_command per segment, median ms | mean ms | p90 ms "
        "| server waited on restore_command, s (median) | recovery s (median) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    medians: dict[str, float] = {}
    means: dict[str, float] = {}
    for label, runs in results.items():
        per = [t for segs, _, _ in runs for t in segs]
        per.sort()
        medians[label] = statistics.median(per)
        means[label] = statistics.fmean(per)
        p90 = per[int(0.9 * (len(per) - 1))]
        waited = statistics.median(w for _, w, _ in runs)
        rec = statistics.median(r for _, _, r in runs)
        print(
            f"| {label} | {medians[label] * 1000:.1f} | {means[label] * 1000:.1f} "
            f"| {p90 * 1000:.1f} | {waited:.2f} | {rec:.2f} |"
        )
    print()
    for label in medians:
        if label.startswith("plain, "):
            rest = label[len("plain, ") :]
            plain, enc = medians[label], medians[f"symmetric, {rest}"]
            plain_mean, enc_mean = means[label], means[f"symmetric, {rest}"]
            print(
                f"- encryption adds {100 * (enc - plain) / plain:+.1f} % (medians), "
                f"{100 * (enc_mean - plain_mean) / plain_mean:+.1f} % (means) per restored "
                f"segment ({rest})"
            )


if __name__ == "__main__":
    main()
