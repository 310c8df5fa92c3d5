"""`make demo` (scripts/demo.py), the README's first command, end to end.

The demo runs walship's own flow against a scratch PostgreSQL 15: push as
archive_command, backup-push, backup-list, plan-restore, backup-fetch with a
target time, a start of the restored copy, a data comparison, verify. These
tests run the script as `make demo` does (the venv's Python) so that the
README's command cannot break unnoticed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "scripts", "demo.py")


@pytest.fixture
def parent() -> Iterator[str]:
    """A directory the demo makes its scratch directory in (the server user's)."""
    path = tempfile.mkdtemp(prefix="walship-demo-test-", dir="/tmp")
    os.chmod(path, 0o755)
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _processes_naming(path: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read().decode(errors="replace")
        except OSError:
            continue
        if path + "/" in cmdline:
            found.append(f"{pid}: {cmdline.replace(chr(0), ' ')}")
    return found


@pytest.mark.slow
@pytest.mark.pg
def test_demo_backs_up_and_restores_to_the_target_time(parent: str) -> None:
    proc = subprocess.run(
        [sys.executable, DEMO, "--workdir", parent],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "Traceback" not in out + proc.stderr

    # backup-push named a backup; backup-list, backup-fetch and the verdict name it
    pushed = re.search(r"^   backup (\d{8}T\d{6}Z(?:-\d+)?): \d+ files, .* raw", out, re.M)
    assert pushed, out
    name = pushed.group(1)
    assert re.search(rf"^   {name}\s+demo\s+.*\sok$", out, re.M), out  # backup-list row
    assert f"restored backup {name} into " in out, out  # backup-fetch LATEST chose it
    assert "REACHABLE" in out, out  # plan-restore --time T
    assert f"demo passed: backup {name} restored to T = " in out, out

    # the restored copy holds exactly the rows of T (1000 transactions), not the later 600
    rows = re.search(r"^   restored: (\d+) pgbench_history rows \(at T: (\d+)\)$", out, re.M)
    assert rows, out
    assert rows.group(1) == rows.group(2) == "1000", out
    assert "marker rows: before T" in out, out
    assert re.search(
        r"^   verified file://.*: \d+ segments on 1 timeline\(s\), 1 backup\(s\)$", out, re.M
    )

    # everything it started is gone: scratch directory, servers, background processes
    assert os.listdir(parent) == [], os.listdir(parent)
    assert _processes_naming(parent) == []


def test_demo_without_postgresql_is_one_clear_line(parent: str) -> None:
    proc = subprocess.run(
        [sys.executable, DEMO, "--workdir", parent],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "WALSHIP_DEMO_PG_BINDIR": os.path.join(parent, "no-such-bin")},
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("demo FAILED: "), proc.stderr
    assert "not found: apt-get install postgresql-15" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert os.listdir(parent) == []
