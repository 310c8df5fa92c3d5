"""``walship drill`` (being written: see the issue)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:
    import argparse

    from ..config import Config


def configure(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace, cfg: Config) -> int:
    raise UsageError("walship drill is not implemented yet")
