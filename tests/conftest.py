from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from pgharness import Workdir

# local storage servers (moto, SeaweedFS, fake-gcs-server, Azurite) and their fixtures
pytest_plugins = ["servers.plugin"]


@pytest.fixture(scope="session", autouse=True)
def agent_directory() -> Iterator[str]:
    """The walship agents this session's pushes and fetches start live here
    (WALSHIP_AGENT_DIR, inherited by the PostgreSQL servers), and are stopped
    by pid at the end. Mode 1777 like /tmp: each user makes its own 0700
    walship-agent-<uid> inside."""
    base = tempfile.mkdtemp(prefix="walship-agents-", dir="/tmp")
    os.chmod(base, 0o1777)
    previous = os.environ.get("WALSHIP_AGENT_DIR")
    os.environ["WALSHIP_AGENT_DIR"] = base
    yield base
    if previous is None:
        os.environ.pop("WALSHIP_AGENT_DIR", None)
    else:
        os.environ["WALSHIP_AGENT_DIR"] = previous
    stop_agents(base)
    shutil.rmtree(base, ignore_errors=True)


def stop_agents(base: str) -> None:
    """Stop every agent under ``base`` (SIGTERM to the pid its lock file names)."""
    from walship import agent

    for sub in os.listdir(base):
        if sub.startswith("walship-agent-"):
            agent.stop(os.path.join(base, sub))


@pytest.fixture
def work() -> Iterator[Workdir]:
    """A scratch directory owned by the server user (tests/pgharness.py), removed after."""
    w = Workdir()
    yield w
    w.close()
