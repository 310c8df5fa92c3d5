"""``walship agent status|stop``: the walship agents of this user (walship/agent.py).

``status`` lists the running agents of this user in the agent directory
(``$WALSHIP_AGENT_DIR/walship-agent-<uid>``, default base ``/tmp``) with their
pids; ``stop`` asks them to exit and waits until they have (requests being
served finish first; the next push or fetch runs itself and starts a new
agent, unless ``agent = off``). Run it as the user PostgreSQL runs as.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import agent
from ..config import Config

if TYPE_CHECKING:
    import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=("status", "stop"),
        help="status: list this user's agents; stop: make them exit",
    )


def run(args: argparse.Namespace, cfg: Config) -> int:
    where = agent.directory()
    if args.action == "stop":
        stopped = agent.stop(where)
        for pid in stopped:
            print(f"stopped walship agent {pid}")
        if not stopped:
            print(f"no walship agent runs in {where}")
        return 0
    found = agent.running(where)
    for pid, name in found:
        print(f"walship agent {pid} ({name}) in {where}")
    if not found:
        state = "on" if cfg.agent else "off"
        print(f"no walship agent runs in {where} (agent setting: {state})")
    return 0
