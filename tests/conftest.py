from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from pgharness import Workdir

# local storage servers (moto, SeaweedFS, fake-gcs-server, Azurite) and their fixtures
pytest_plugins = ["servers.plugin"]


# How long the longer tests take (seconds, setup + call + teardown, from a
# `make pytest` run; tests/durations.json, refreshed with
# `make pytest PYTEST_ARGS="--record-durations tests/durations.json"`).
# Under pytest-xdist the workers are handed tests one at a time (the Makefile's
# --maxschedchunk 1), longest first, then the rest in file order: a long test
# started last would otherwise run alone at the end. A serial run (-n 0,
# -p no:xdist) keeps file order. Stale or missing entries only change the order.
DURATIONS = os.path.join(os.path.dirname(__file__), "durations.json")
RECORD_AT_LEAST = 4.0  # seconds: shorter tests are not worth ordering


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--record-durations",
        metavar="FILE",
        help=f"write the tests that took {RECORD_AT_LEAST:g} s or more to FILE (JSON), "
        "the order in which parallel runs hand tests out",
    )


def _known_durations() -> dict[str, float]:
    try:
        with open(DURATIONS) as fh:
            known: dict[str, float] = json.load(fh)
    except FileNotFoundError:
        return {}
    return known


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not hasattr(config, "workerinput"):  # not an xdist worker: keep file order
        return
    known = _known_durations()
    order = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda item: (-known.get(item.nodeid, 0.0), order[id(item)]))


_taken: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _taken[report.nodeid] = _taken.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("record_durations")
    if not path or hasattr(session.config, "workerinput"):  # the controller writes it
        return
    longer = {n: round(t) for n, t in _taken.items() if t >= RECORD_AT_LEAST}
    with open(path, "w") as fh:
        json.dump(dict(sorted(longer.items(), key=lambda kv: (-kv[1], kv[0]))), fh, indent=1)
        fh.write("\n")


@pytest.fixture
def work() -> Iterator[Workdir]:
    """A scratch directory owned by the server user (tests/pgharness.py), removed after."""
    w = Workdir()
    yield w
    w.close()
