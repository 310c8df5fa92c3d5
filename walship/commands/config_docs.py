from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import Config, markdown_table

if TYPE_CHECKING:
    import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace, cfg: Config) -> int:
    print(markdown_table(), end="")
    return 0
