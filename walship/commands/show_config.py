from __future__ import annotations

import argparse
import json

from ..config import Config


def configure(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace, cfg: Config) -> int:
    print(json.dumps(cfg.redacted(), indent=2, sort_keys=True))
    return 0
