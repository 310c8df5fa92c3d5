"""``cli.main`` keeps no state between calls; the fetch exit-code policy is fetch's.

In-process calls of ``cli.main`` (the console script's exit codes are in
tests/test_cli.py): one call's configuration must not decide the exit code of
the next, and every command in the table loads by a plain import.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import make_segment, segment_name

from walship import cli
from walship.commands import fetch
from walship.config import load

NAME = segment_name(3)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in list(os.environ):
        if key.startswith("WALSHIP_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pg_wal").mkdir()
    (tmp_path / "pg_wal" / NAME).write_bytes(make_segment(3))
    (tmp_path / "missing.toml").write_text(
        f'repo = "{tmp_path / "repo"}"\nfetch_error_exit = "missing"\narchive_lookahead = 0\n'
    )
    (tmp_path / "broken.toml").write_text("repo = [\n")
    return tmp_path


def test_a_fetch_does_not_leave_its_policy_to_the_next(site: Path) -> None:
    config = str(site / "missing.toml")
    assert cli.main(["--config", config, "push", f"pg_wal/{NAME}", NAME]) == 0
    assert cli.main(["--config", config, "fetch", NAME, "out"]) == 0
    assert (site / "out").read_bytes() == (site / "pg_wal" / NAME).read_bytes()
    # this configuration does not load: its fetch_error_exit is unknown, so abort
    # (the earlier call's "missing" must not turn it into a quiet "absent")
    assert cli.main(["--config", str(site / "broken.toml"), "fetch", NAME, "out2"]) == 255
    assert cli.main(["--config", config, "fetch", segment_name(9), "out3"]) == 1
    assert not (site / "out2").exists() and not (site / "out3").exists()


def test_error_exit_follows_the_loaded_configuration_or_the_environment(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load(config_path=str(site / "missing.toml"))
    assert fetch.error_exit(cfg) == 1
    assert fetch.error_exit(None) == fetch.ABORT_EXIT
    monkeypatch.setenv("WALSHIP_FETCH_ERROR_EXIT", "missing")
    assert fetch.error_exit(None) == 1
    monkeypatch.setenv("WALSHIP_FETCH_ERROR_EXIT", "sometimes")  # not clear: abort
    assert fetch.error_exit(None) == fetch.ABORT_EXIT
    monkeypatch.setenv("WALSHIP_FETCH_ERROR_EXIT", "auto")
    monkeypatch.setenv("WALSHIP_PGDATA", str(site))
    assert fetch.error_exit(None) == fetch.ABORT_EXIT
    (site / "standby.signal").touch()
    assert fetch.error_exit(None) == 1


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_in_the_table_loads(command: str) -> None:
    module = cli.load(command)
    assert module.__name__ == "walship.commands." + command.replace("-", "_")
    assert callable(module.configure) and callable(module.run)


def test_an_unknown_command_does_not_load() -> None:
    with pytest.raises(KeyError):
        cli.load("agent")
