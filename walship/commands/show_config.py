from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ..config import Config

if TYPE_CHECKING:
    import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace, cfg: Config) -> int:
    print(json.dumps(cfg.redacted(), indent=2, sort_keys=True))
    return 0
