"""Encryption overhead: whole-process ``walship push`` / ``walship fetch`` per 16 MiB segment.

Runs the installed ``walship`` (beside this Python, e.g. ``.venv/bin/walship``)
exactly as PostgreSQL would, once per segment, against three local
repositories: plain, symmetric (AES-256-GCM) and public-key (X25519 +
AES-256-GCM). Configurations are interleaved segment by segment so drift in
machine load affects them alike. Prints a Markdown table for
docs/benchmarks.md ("Encryption overhead").

    .venv/bin/python benchmarks/bench_crypto.py [--segments 40] [--dir DIR] [--random]
    .venv/bin/python benchmarks/bench_crypto.py --wal /tmp/walship-bench/segments --reps 3

``--wal DIR`` uses the real segments in DIR (for example the pgbench WAL that
benchmarks/bench_push_fetch.py caches in /tmp/walship-bench/segments), each
pushed and fetched ``--reps`` times into fresh repositories; otherwise
segments are generated: WAL-like (about 4:1 with zstd, more bytes to encrypt
than real pgbench WAL) or, with ``--random``, incompressible (the worst case
for encryption: every byte of the segment is encrypted).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

SEG = 16 << 20
SYSID = 7312345678901234567
WALSHIP = os.path.join(os.path.dirname(sys.executable), "walship")


def segment(segno: int, rng: random.Random, incompressible: bool) -> bytes:
    """A WAL-like segment: valid long page header, then 8 KiB pages.

    Default pages mix 2 KiB of random bytes with repetitive record-like data
    (zstd -1 gets about 3:1, close to pgbench WAL); ``incompressible`` pages
    are all random.
    """
    header = struct.pack("<HHIQI4xQII", 0xD110, 2, 1, segno * SEG, 0, SYSID, SEG, 8192)
    if incompressible:
        body = rng.randbytes(SEG - len(header))
        return header + body
    out = bytearray(header)
    record = bytes(range(48)) * 4
    while len(out) < SEG:
        page = bytearray(rng.randbytes(2048))
        n = 0
        while len(page) < 8192:
            page += struct.pack("<IQ", n, segno) + record
            n += 1
        out += page[:8192]
    return bytes(out[:SEG])


def name_of(segno: int) -> str:
    return f"{1:08X}{segno // 256:08X}{segno % 256:08X}"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list[str], env: dict[str, str], cwd: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one whole walship process."""
    cpu = _cpu()
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return elapsed, _cpu() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=40)
    parser.add_argument("--dir", default=None, help="work directory (default: a temp dir)")
    parser.add_argument("--random", action="store_true", help="incompressible segments")
    parser.add_argument("--wal", default=None, help="directory of real WAL segments to use")
    parser.add_argument("--reps", type=int, default=1, help="repetitions per --wal segment")
    args = parser.parse_args()
    real: list[str] = []
    if args.wal:
        real = sorted(
            os.path.join(args.wal, f)
            for f in os.listdir(args.wal)
            if len(f) == 24 and os.path.getsize(os.path.join(args.wal, f)) == SEG
        )[: args.segments]
        if not real:
            sys.exit(f"no 16 MiB WAL segments in {args.wal}")

    work = tempfile.mkdtemp(prefix="walship-bench-crypto-", dir=args.dir)
    try:
        base = {k: v for k, v in os.environ.items() if not k.startswith("WALSHIP_")}
        base["WALSHIP_LOG_LEVEL"] = "warning"
        # like an installed package: bytecode compiled once, not on every run
        base.pop("PYTHONDONTWRITEBYTECODE", None)
        base["PYTHONPYCACHEPREFIX"] = os.path.join(work, "pycache")
        keys = os.path.join(work, "keys")
        os.mkdir(keys)
        for cmd in (
            [WALSHIP, "keygen", os.path.join(keys, "sym.key")],
            [WALSHIP, "keygen", "--mode", "public-key", os.path.join(keys, "pk.key")],
        ):
            subprocess.run(cmd, env=base, check=True, capture_output=True)
        configs: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
        settings = {
            "plain": ({}, {}),
            "symmetric": (
                {"ENCRYPTION": "symmetric", "ENCRYPTION_KEY_FILE": f"{keys}/sym.key"},
                {"ENCRYPTION_KEY_FILE": f"{keys}/sym.key"},
            ),
            "public-key": (
                {"ENCRYPTION": "public-key", "ENCRYPTION_KEY_FILE": f"{keys}/pk.key.pub"},
                {"ENCRYPTION_KEYRING": f"{keys}/pk.key"},
            ),
        }
        for label, (push_extra, fetch_extra) in settings.items():
            common = {**base, "WALSHIP_REPO": os.path.join(work, f"repo-{label}")}
            configs[label] = (
                {**common, **{f"WALSHIP_{k}": v for k, v in push_extra.items()}},
                {**common, **{f"WALSHIP_{k}": v for k, v in fetch_extra.items()}},
            )
        src_dir = os.path.join(work, "pg_wal")
        out_dir = os.path.join(work, "restore")
        os.mkdir(src_dir)
        os.mkdir(out_dir)
        rng = random.Random(1)
        push_t: dict[str, list[float]] = {k: [] for k in configs}
        fetch_t: dict[str, list[float]] = {k: [] for k in configs}
        push_cpu: dict[str, list[float]] = {k: [] for k in configs}
        fetch_cpu: dict[str, list[float]] = {k: [] for k in configs}
        stored: dict[str, int] = dict.fromkeys(configs, 0)
        warmup = 2
        rounds = len(real) * args.reps if real else args.segments
        for i in range(rounds + warmup):
            rep = 0
            if real:
                rep, index = divmod(max(i - warmup, 0), len(real))
                name = os.path.basename(real[index])
                path = os.path.join(src_dir, name)
                shutil.copyfile(real[index], path)
            else:
                segno = 16 + i
                name = name_of(segno)
                path = os.path.join(src_dir, name)
                with open(path, "wb") as fh:
                    fh.write(segment(segno, rng, args.random))
            order = list(configs)
            rng.shuffle(order)
            for label in order:
                push_env, fetch_env = (
                    {**env, "WALSHIP_REPO": f"{env['WALSHIP_REPO']}-{i if i < warmup else rep}"}
                    for env in configs[label]
                )
                t_push, c_push = timed([WALSHIP, "push", path, name], push_env, src_dir)
                dest = os.path.join(out_dir, f"{label}-{name}")
                t_fetch, c_fetch = timed([WALSHIP, "fetch", name, dest], fetch_env, out_dir)
                os.unlink(dest)
                if i >= warmup:
                    push_t[label].append(t_push)
                    fetch_t[label].append(t_fetch)
                    push_cpu[label].append(c_push)
                    fetch_cpu[label].append(c_fetch)
                    repo = push_env["WALSHIP_REPO"]
                    stored[label] += os.path.getsize(os.path.join(repo, "wal", name[:16], name))
            os.unlink(path)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    n = rounds
    if real:
        kind = f"real WAL from {args.wal} ({len(real)} segments x {args.reps})"
    else:
        kind = "incompressible" if args.random else "WAL-like (~4:1 with zstd -1)"
    print(
        f"{n} pushes and fetches of 16 MiB segments per repository, {kind}; "
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print()
    print(
        "| repository | push wall ms (median / min) | push CPU ms (median / min) "
        "| fetch wall ms (median / min) | fetch CPU ms (median / min) | stored MiB/segment |"
    )
    print("|---|---|---|---|---|---|")

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:.1f} / {min(values) * 1000:.1f}"

    for label in configs:
        print(
            f"| {label} | {ms(push_t[label])} | {ms(push_cpu[label])} "
            f"| {ms(fetch_t[label])} | {ms(fetch_cpu[label])} "
            f"| {stored[label] / n / (1 << 20):.2f} |"
        )
    print()
    print(
        "Added time against the plain repository: of the medians / of the minima / "
        "median of the paired per-segment ratios (same segment, same moment):"
    )
    print()
    print("| repository | push wall | push CPU | fetch wall | fetch CPU |")
    print("|---|---|---|---|---|")
    for label in ("symmetric", "public-key"):
        cells = []
        for table in (push_t, push_cpu, fetch_t, fetch_cpu):
            parts = []
            for stat in (statistics.median, min):
                plain, enc = stat(table["plain"]), stat(table[label])
                parts.append(f"{100 * (enc - plain) / plain:+.1f} %")
            paired = statistics.median(
                e / p - 1 for e, p in zip(table[label], table["plain"], strict=True)
            )
            parts.append(f"{100 * paired:+.1f} %")
            cells.append(" / ".join(parts))
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
