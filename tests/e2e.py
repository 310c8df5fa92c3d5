"""Small helpers shared by the end-to-end tests (real PostgreSQL, real walship)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable

from pgharness import WALSHIP, Cluster, Workdir, run


def repo_files(repo: str) -> set[str]:
    """Keys of the objects in a local repository (temp files excluded)."""
    out: set[str] = set()
    for directory, _, files in os.walk(repo):
        for name in files:
            if not name.startswith(".walship-tmp-"):
                out.add(os.path.relpath(os.path.join(directory, name), repo))
    return out


def key_for(name: str) -> str:
    """Where walship stores an archive file (walship/archive/layout.py)."""
    if name.endswith(".history"):
        return f"wal/history/{name}"
    return f"wal/{name[:16]}/{name}"


def wait_for(
    what: str,
    predicate: Callable[[], bool],
    clusters: Iterable[Cluster],
    timeout: float = 60,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    logs = "\n".join(f"--- {c.logfile}:\n{c.log()[-3000:]}" for c in clusters)
    raise TimeoutError(f"{what}: not within {timeout}s\n{logs}")


def wait_in_repo(repo: str, names: Iterable[str], clusters: Iterable[Cluster]) -> None:
    keys = {key_for(n) for n in names}
    wait_for(
        f"{sorted(keys)} in the repository",
        lambda: keys <= repo_files(repo),
        clusters,
    )


def fetch(work: Workdir, config: str, name: str) -> bytes:
    """Fetch one archive file with the real ``walship fetch`` as the server user."""
    dest = os.path.join(work.path, f"fetched-{name}")
    run([WALSHIP, "--config", config, "fetch", name, dest], cwd=work.path)
    with open(dest, "rb") as fh:
        data = fh.read()
    run(["rm", "-f", dest])
    return data


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def current_timeline(cluster: Cluster) -> int:
    return int(cluster.psql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), 16)


def archiver_failures(cluster: Cluster) -> int:
    return int(cluster.psql("SELECT failed_count FROM pg_stat_archiver"))


def history_parents(text: str) -> list[int]:
    """Parent timeline ids listed in a .history file, oldest first."""
    parents = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            parents.append(int(line.split()[0]))
    return parents


def history_switchpoint(text: str, parent: int) -> int:
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == str(parent):
            hi, lo = fields[1].split("/")
            return (int(hi, 16) << 32) | int(lo, 16)
    raise ValueError(f"timeline {parent} not in history:\n{text}")


def stop_all(clusters: Iterable[Cluster]) -> None:
    for cluster in clusters:
        try:
            cluster.stop("immediate")
        except Exception:  # keep stopping the others
            pass
