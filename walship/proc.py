"""Safety rules for walship's background processes (look-ahead, the read-ahead helper).

Two rules, one place:

- :func:`safe_sys_path`: a process that runs requests for callers in the
  callers' working directories imports modules lazily; no entry of its
  ``sys.path`` may depend on the working directory (``''``, a relative
  path), or a ``difflib.py`` planted where ``walship push`` runs would be
  executed.
- :func:`signal_proven`: a pid is signalled only once it is proven to be the
  process meant: it is pinned first (a pidfd, which a reused pid cannot
  redirect), then the caller's proof is checked (a lock still held by it, a
  connection it still holds open), then the pinned process is signalled.

Only ``os`` and ``sys`` at module level.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def safe_sys_path() -> None:
    """Drop every ``sys.path`` entry that is relative (``''`` is the working directory)."""
    sys.path[:] = [p for p in sys.path if os.path.isabs(p)]


def signal_proven(pid: int, signum: int, proof: Callable[[], bool]) -> bool:
    """Send ``signum`` to ``pid`` if ``proof()`` holds once the pid is pinned.

    ``proof`` must show that the process meant is alive *now* (a lock it
    holds, a socket only it keeps open): then the pidfd opened before it
    refers to that process, never to one that reused its pid. Where pidfds
    are not available (Linux before 5.3), the proof is checked just before
    ``kill``. Returns whether the signal was sent.
    """
    if pid <= 1 or pid == os.getpid():
        return False
    pidfd = -1
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except (AttributeError, OSError):  # no pidfd_open: fall back to kill after the proof
        pass
    try:
        if not proof():
            return False
        if pidfd >= 0:
            import _signal  # type: ignore[import-not-found]  # signal.py would import enum

            _signal.pidfd_send_signal(pidfd, signum)
        else:
            os.kill(pid, signum)
        return True
    except OSError:
        return False
    finally:
        if pidfd >= 0:
            os.close(pidfd)
