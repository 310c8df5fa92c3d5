from __future__ import annotations

import argparse

from ..config import Config, markdown_table


def configure(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace, cfg: Config) -> int:
    print(markdown_table(), end="")
    return 0
