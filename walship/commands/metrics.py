"""``walship metrics``: Prometheus metrics (walship/ops/metrics.py).

``--textfile PATH`` writes them atomically for node_exporter's textfile
collector (run it from a timer); ``--listen ADDR`` serves them for a scrape;
without either they are printed to stdout.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from ..ops import metrics

if TYPE_CHECKING:
    import argparse

    from ..config import Config


def configure(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--textfile", metavar="PATH", help="write the metrics to PATH (atomically), then exit"
    )
    where.add_argument(
        "--listen", metavar="ADDR", help="serve /metrics on ADDR (HOST:PORT) until stopped"
    )
    parser.add_argument("--pgdata", metavar="DIR", help="data directory, for the .ready backlog")
    parser.add_argument(
        "--refresh",
        action="store_true",
        help="refresh the cached repository summary now (default: when older than "
        "metrics_cache_max_age)",
    )


def run(args: argparse.Namespace, cfg: Config) -> int:
    if args.refresh:
        import time

        metrics.repository_parts(cfg, now=time.time(), force=True)
    if args.textfile:
        metrics.write_textfile(cfg, args.pgdata, args.textfile)
        return 0
    if args.listen:
        try:
            metrics.serve(cfg, args.pgdata, args.listen)
        except KeyboardInterrupt:
            return 0
        return 0
    if args.refresh:
        return 0
    reg = metrics.registry(cfg, args.pgdata)
    from prometheus_client import generate_latest

    sys.stdout.write(generate_latest(reg).decode())
    return 0
