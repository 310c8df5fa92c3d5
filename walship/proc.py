"""The rule for walship's background process about ``sys.path`` (walship/background.py).

The background process imports modules lazily, and its callers run in
directories they control (the data directory). No entry of its ``sys.path``
may depend on the working directory (``''``, a relative path), or a
``difflib.py`` planted where ``walship push`` runs would be executed. (It also
never signals anything: callers hand it work through files in its spool, and
it notices on its own when to stop.)

Only ``os`` and ``sys`` at module level.
"""

from __future__ import annotations

import os
import sys


def safe_sys_path() -> None:
    """Drop every ``sys.path`` entry that is relative (``''`` is the working directory)."""
    sys.path[:] = [p for p in sys.path if os.path.isabs(p)]
