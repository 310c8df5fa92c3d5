"""Peak memory of large uploads through each cloud emulator (issue 10, item 6).

A part larger than ``parts.SPOOL_OVER`` (64 MiB) is spooled to a temporary
file; every backend must send it from there, never as one bytes object. With
the part size set to 128 MiB, a few hundred MiB of generated data make every
part a spooled one, so a backend that reads a part back into memory grows by
at least a part (128 MiB) while one that streams grows by a few MiB.

The upload runs in a fresh ``python`` subprocess that reports its own RSS
high-water mark (``VmHWM`` in /proc/self/status) once after a warm-up put
(imports, connection pool, credentials) and once after the large puts; the
test bounds the difference. Contents are checked by SHA-256 afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import environment_without_settings

pytestmark = [pytest.mark.cloud, pytest.mark.slow]

MIB = 1 << 20
PART = 128 * MIB
CHUNK = 1 * MIB  # the size of each chunk handed to put()
# one object below the part size (a single request, spooled) and one of three
# parts (128 + 128 + 16 MiB, the first two spooled)
SIZES = (80 * MIB, 272 * MIB)
# What streaming needs, measured on S3 (boto3 sends the spool file): the
# chunk being split into parts, the chunk being generated, and HTTP/SDK
# buffers. A backend holding a part in memory exceeds this by ~100 MiB.
BOUND = 2 * CHUNK + 24 * MIB

CHILD = r"""
import hashlib, json, os, random, sys

from walship import config
from walship.storage.registry import open_backend

def hwm():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise SystemExit("no VmHWM in /proc/self/status")

sizes, chunk = json.loads(sys.argv[1]), int(sys.argv[2])
backend = open_backend(os.environ["WALSHIP_REPO"], config.load(config_path=os.devnull))
backend.put("warm-up", [b"w" * 4096])
b"".join(backend.open("warm-up"))
baseline = hwm()

def generated(seed, size, digest):
    rng = random.Random(seed)
    while size:
        n = min(chunk, size)
        block = rng.randbytes(n)
        digest.update(block)
        size -= n
        yield block

sent = []
for i, size in enumerate(sizes):
    digest = hashlib.sha256()
    info = backend.put(f"big-{i}", generated(i, size, digest))
    sent.append((info.size, digest.hexdigest()))
peak = hwm()

stored = []
for i in range(len(sizes)):
    digest, n = hashlib.sha256(), 0
    stream = backend.open(f"big-{i}")
    try:
        for block in stream:
            digest.update(block)
            n += len(block)
    finally:
        stream.close()
    stored.append((n, digest.hexdigest()))
backend.delete([f"big-{i}" for i in range(len(sizes))] + ["warm-up"])
backend.close()
print(json.dumps({"baseline": baseline, "peak": peak, "sent": sent, "stored": stored}))
"""

SETTING = {
    "s3": "WALSHIP_S3_PART_SIZE",
    "gcs": "WALSHIP_GCS_CHUNK_SIZE",
    "azure": "WALSHIP_AZURE_BLOCK_SIZE",
}


@pytest.mark.parametrize(
    ("kind", "fixture"),
    [("s3", "s3_repo_env"), ("gcs", "gcs_repo_env"), ("azure", "azure_repo_env")],
)
def test_upload_with_spooled_parts_stays_within_memory_bound(
    kind: str, fixture: str, request: pytest.FixtureRequest
) -> None:
    env = environment_without_settings()
    env.update(request.getfixturevalue(fixture))
    env[SETTING[kind]] = str(PART)
    env["WALSHIP_CONFIG"] = os.devnull
    env["WALSHIP_RETRY_DEADLINE"] = "60"
    env["WALSHIP_RETRY_ATTEMPT_TIMEOUT"] = "60"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(SIZES), str(CHUNK)],
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["stored"] == report["sent"]
    assert [size for size, _ in report["sent"]] == list(SIZES)
    growth = report["peak"] - report["baseline"]
    print(f"{kind}: baseline {report['baseline'] / MIB:.1f} MiB, growth {growth / MIB:.1f} MiB")
    assert growth < BOUND, (
        f"{kind}: uploading {sum(SIZES) // MIB} MiB in {PART // MIB} MiB parts grew RSS by "
        f"{growth / MIB:.1f} MiB (bound {BOUND / MIB:.0f} MiB)"
    )
