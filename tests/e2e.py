"""Small helpers shared by the end-to-end tests (real PostgreSQL, real walship)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable

from pgharness import (
    WALSHIP,
    Cluster,
    Workdir,
    archive_command,
    restore_cluster,
    restore_command,
    run,
)

#: the pgbench state the point-in-time tests compare
BALANCES = "SELECT sum(abalance)::text || ':' || count(*) FROM pgbench_accounts"


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


def archiving_primary(major: int, work: Workdir, config: str) -> Cluster:
    """A started PostgreSQL ``major`` server archiving every WAL file with
    ``walship --config config push``. The caller stops it."""
    primary = Cluster(major, work)
    primary.initdb(
        {"archive_mode": "on", "archive_command": archive_command(config), "archive_timeout": "0"}
    )
    primary.start()
    return primary


def mark_target_time(
    primary: Cluster, *, after: int = 200, timeout: float = 60
) -> tuple[str, str, str]:
    """Commit batch 1 of a ``marker`` table, take T, then commit batch 2 and
    ``after`` pgbench transactions; switch WAL and wait until it is archived.
    Returns (T, the pgbench balances at T, the last segment archived)."""
    primary.psql("CREATE TABLE marker(batch int, note text)")
    primary.psql("INSERT INTO marker VALUES (1, 'before T')")
    expected = primary.psql(BALANCES)
    time.sleep(1.1)
    target = primary.psql("SELECT now()::text")
    time.sleep(1.1)
    primary.psql("INSERT INTO marker VALUES (2, 'after T')")
    primary.pgbench("-t", str(after), "-c", "2", "-n")
    last = primary.switch_wal()
    primary.wait_archived(last, timeout=timeout)
    return target, expected, last


def restore_to_time(
    major: int, work: Workdir, backup: str, config: str, target: str, name: str = "restored"
) -> Cluster:
    """Restore ``backup`` through ``walship fetch`` to ``target`` and wait for promotion.
    The caller stops the returned cluster (it is started)."""
    restored = restore_cluster(
        major,
        work,
        backup,
        name,
        {
            "restore_command": restore_command(config),
            "recovery_target_time": f"'{target}'",
            "recovery_target_action": "'promote'",
        },
    )
    try:
        restored.start()
        restored.wait_promoted()
    except BaseException:
        restored.stop("immediate")
        raise
    return restored


def assert_at_target(restored: Cluster, expected: str) -> None:
    """Batch 1 of the marker table and the balances at T, nothing after T."""
    assert restored.psql("SELECT string_agg(batch::text, ',') FROM marker") == "1"
    assert restored.psql(BALANCES) == expected
    assert "recovery stopping before commit" in restored.log()
