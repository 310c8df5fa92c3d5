"""Test helpers shared by unit tests (no PostgreSQL needed)."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time

SEG = 16 << 20
SYSID = 7312345678901234567


def make_segment(
    segno: int = 3,
    *,
    tli: int = 1,
    sysid: int = SYSID,
    seg_size: int = SEG,
    magic: int = 0xD110,
    payload: bytes | None = None,
) -> bytes:
    """A file that passes walship's WAL checks: a valid long page header + data."""
    header = struct.pack("<HHIQI4xQII", magic, 2, tli, segno * seg_size, 0, sysid, seg_size, 8192)
    if payload is None:
        import hashlib

        seed = hashlib.sha256(f"{tli}/{segno}/{sysid}".encode()).digest()
        payload = (seed * 2048)[: 64 * 1024]
    body = payload
    return header + body + b"\0" * (seg_size - len(header) - len(body))


def segment_name(segno: int, tli: int = 1, seg_size: int = SEG) -> str:
    per = 0x1_0000_0000 // seg_size
    return f"{tli:08X}{segno // per:08X}{segno % per:08X}"


def environment_without_settings() -> dict[str, str]:
    """``os.environ`` without walship settings (``WALSHIP_*``), so that a test
    configures walship itself."""
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("WALSHIP_")}


def remove_tree(path: str | os.PathLike[str], timeout: float = 30.0) -> None:
    """``rm -rf`` that tolerates a process still writing into the tree (a
    background process notices its spool is gone only on its next step)."""
    deadline = time.monotonic() + timeout
    while True:
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.lexists(path):
            return
        assert time.monotonic() < deadline, f"{path} could not be removed"
        time.sleep(0.05)


def lock_held(path: str | os.PathLike[str]) -> bool:
    """Whether a process holds a flock on ``path`` (never blocks; absent: False)."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def imported_modules(stderr: str) -> set[str]:
    """The modules a ``python -X importtime`` run imported, from its stderr."""
    return {
        line.split("|")[2].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def run_bare_with_importtime(
    args: list[str], *, env: dict[str, str], cwd: str
) -> subprocess.CompletedProcess[str]:
    """bin/walship ARGS under ``python -S -X importtime``, walship found through
    PYTHONPATH: without site (an editable install's finder imports re at
    start-up), what is imported is the command's own doing."""
    import sys

    import walship

    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(walship.__file__)))
    walship_bin = os.path.join(os.path.dirname(sys.executable), "walship")
    return subprocess.run(
        [sys.executable, "-S", "-X", "importtime", walship_bin, *args],
        env={**env, "PYTHONPATH": package_parent},
        cwd=cwd,
        capture_output=True,
        text=True,
    )
