"""The local backend run as root in a repository another user owns.

A first-time user ran ``walship plan-restore`` as root on a local repository:
it indexed segments and created ``index/`` directories as root:root 0750, and
from then on plan-restore and backup-fetch as postgres failed with ``cannot
list .../repo/index: Permission denied``. What root creates in a repository is
now given to the owner of the repository's root directory.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys

import pytest

from tests.pgharness import Workdir
from walship.storage.base import CREATE, OVERWRITE
from walship.storage.local import LocalBackend

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="what root creates: the test runs as root (as CI does)"
)

AS_POSTGRES = """
import sys
from walship.storage.local import LocalBackend
b = LocalBackend(sys.argv[1])
print(sorted(i.key for i in b.list("index/")))
b.put("index/00000001/more", [b"postgres"])
b.put("index/00000002/new", [b"postgres"])
b.put("index/00000001/seg", [b"again"], mode="overwrite")
print(b"".join(b.open("index/00000001/seg")).decode())
"""


def owner(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_uid, st.st_gid


def test_what_root_writes_belongs_to_the_repositorys_owner(work: Workdir) -> None:
    pg = pwd.getpwnam("postgres")
    repo = work.mkdir("repo")  # postgres:postgres, as `walship init`/the docs set it up
    backend = LocalBackend(repo)
    backend.put("index/00000001/seg", [b"root"], mode=CREATE)  # new directories and a file
    backend.put("index/00000001/state", [b"root"], mode=OVERWRITE)
    for path in ("index", "index/00000001", "index/00000001/seg", "index/00000001/state"):
        assert owner(os.path.join(repo, path)) == (pg.pw_uid, pg.pw_gid), path
    assert not [n for n in os.listdir(os.path.join(repo, "index/00000001")) if n.startswith(".")]

    out = subprocess.run(
        ["runuser", "-u", "postgres", "--", sys.executable, "-c", AS_POSTGRES, repo],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "['index/00000001/seg', 'index/00000001/state']",
        "again",
    ], out.stdout


def test_a_root_owned_repository_stays_roots(work: Workdir) -> None:
    repo = os.path.join(work.path, "rootrepo")
    os.mkdir(repo, 0o700)  # root:root: nothing to give away
    LocalBackend(repo).put("index/x", [b"root"])
    assert owner(os.path.join(repo, "index")) == (0, 0)
    assert owner(os.path.join(repo, "index/x")) == (0, 0)
