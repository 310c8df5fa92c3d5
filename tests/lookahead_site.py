"""A fake data directory for push look-ahead tests: pg_wal/ with segments and
archive_status/*.ready, as PostgreSQL leaves them, driven by real ``walship``
processes. ``archive()`` plays PostgreSQL's archiver: one call per .ready file,
oldest first, renaming .ready to .done after exit 0."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

from helpers import environment_without_settings, lock_held, make_segment, remove_tree, segment_name

#: the console script, as PostgreSQL runs it (``python -m`` would put the
#: working directory on sys.path of the calling process itself)
WALSHIP = [os.path.join(os.path.dirname(sys.executable), "walship")]


class Site:
    def __init__(self, root: Path, **settings: str) -> None:
        self.root = root
        self.repo = root / "repo"
        self.pgdata = root / "data"
        self.pg_wal = self.pgdata / "pg_wal"
        self.status = self.pg_wal / "archive_status"
        self.status.mkdir(parents=True)
        self.env = environment_without_settings()
        self.env.update(WALSHIP_REPO=str(self.repo), WALSHIP_LOG_LEVEL="debug")
        self.env.update({f"WALSHIP_{k.upper()}": v for k, v in settings.items()})

    def add(self, first: int, last: int) -> list[str]:
        """Complete segments first..last, each marked .ready."""
        names = []
        for segno in range(first, last + 1):
            name = segment_name(segno)
            (self.pg_wal / name).write_bytes(make_segment(segno))
            (self.status / f"{name}.ready").touch()
            names.append(name)
        return names

    def push(self, name: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*WALSHIP, "push", f"pg_wal/{name}", name],
            cwd=self.pgdata,
            env={**self.env, **env},
            capture_output=True,
            text=True,
        )

    def ready(self) -> list[str]:
        return sorted(p.name[: -len(".ready")] for p in self.status.glob("*.ready"))

    def archive(self, count: int | None = None) -> list[subprocess.CompletedProcess[str]]:
        """Play the archiver for ``count`` files (all by default)."""
        results = []
        for name in self.ready()[:count]:
            result = self.push(name)
            results.append(result)
            assert result.returncode == 0, result.stderr
            (self.status / f"{name}.ready").rename(self.status / f"{name}.done")
        return results

    def spools(self) -> list[Path]:
        root = self.pg_wal / ".walship"
        return sorted(p for p in root.iterdir()) if root.exists() else []

    def records(self) -> set[str]:
        out: set[str] = set()
        for spool in self.spools():
            if (spool / "r").exists():
                out |= {p.name for p in (spool / "r").iterdir()}
        return out

    def wait_recorded(self, names: list[str], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not set(names) <= self.records():
            assert time.monotonic() < deadline, (sorted(self.records()), self.log())
            time.sleep(0.02)

    def log(self) -> str:
        return "".join(p.read_text() for s in self.spools() for p in s.glob("log*"))

    def background_running(self) -> bool:
        return any(lock_held(s / "lock") for s in self.spools())

    def stop_background(self, timeout: float = 30) -> None:
        """Remove the spools; a background process exits when its spool is gone."""
        locks = []
        for spool in self.spools():
            try:
                locks.append(os.open(spool / "lock", os.O_RDONLY))
            except OSError:
                pass
        remove_tree(self.pg_wal / ".walship")
        deadline = time.monotonic() + timeout
        for fd in locks:
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                        break
                    except OSError:
                        assert time.monotonic() < deadline, "background process still running"
                        time.sleep(0.05)
            finally:
                os.close(fd)


def object_path(repo: Path, name: str) -> Path:
    return repo / "wal" / name[:16] / name
