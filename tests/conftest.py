from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from pgharness import Workdir

# local storage servers (moto, SeaweedFS, fake-gcs-server, Azurite) and their fixtures
pytest_plugins = ["servers.plugin"]


@pytest.fixture
def work() -> Iterator[Workdir]:
    """A scratch directory owned by the server user (tests/pgharness.py), removed after."""
    w = Workdir()
    yield w
    w.close()
