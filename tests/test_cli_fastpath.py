"""The push/fetch argument fast path gives exactly what argparse gives, or steps aside."""

from __future__ import annotations

import pytest

from walship import cli

CASES = [
    ["push", "pg_wal/000000010000000000000001", "000000010000000000000001"],
    ["--repo", "/x", "push", "a", "b"],
    ["--config", "c", "-v", "-v", "--repo", "r", "fetch", "n", "d"],
    ["-q", "--log-format", "json", "push", "p", "f"],
    ["--verbose", "--quiet", "fetch", "x", "y"],
    ["--config", "push", "push", "a", "b"],
    ["--config", "", "push", "a", ""],
    ["--log-format", "xml", "push", "a", "b"],
    ["push", "a"],
    ["push", "a", "b", "c"],
    ["push", "--repo", "x", "a", "b"],
    ["--repo=x", "push", "a", "b"],
    ["--conf", "x", "push", "a", "b"],
    ["-vv", "fetch", "a", "b"],
    ["fetch", "a", "-b"],
    ["--repo", "-x", "push", "a", "b"],
    ["push", "--", "a", "b"],
    ["show-config"],
    [],
]


@pytest.mark.parametrize("argv", CASES, ids=" ".join)
def test_fast_path_matches_argparse(argv: list[str]) -> None:
    command = cli._find_command(argv)
    fast = cli._fast_args(argv, command)
    if fast is None:
        return  # argparse handles it, as before
    slow = cli.build_parser(command).parse_args(argv)
    assert vars(fast) == vars(slow)


@pytest.mark.parametrize("command", cli.FAST_COMMANDS)
def test_fast_path_is_taken_for_postgres_style_calls(command: str) -> None:
    argv = ["--config", "/etc/walship.toml", command, "a", "b"]
    assert cli._fast_args(argv, command) is not None
