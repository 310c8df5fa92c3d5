"""Recovery settings as PostgreSQL reads them (12+): pure text, no I/O.

Archive recovery is asked for by a signal file in the data directory
(``recovery.signal``; ``standby.signal`` for a standby, which wins when both
exist) and configured by ordinary settings, for a restored copy best in
``postgresql.auto.conf`` (read after postgresql.conf, and later lines of it
win). A value is a single-quoted string with ``'`` doubled.

PostgreSQL allows at most one of ``recovery_target``,
``recovery_target_lsn``, ``recovery_target_name``, ``recovery_target_time``
and ``recovery_target_xid``; a backup taken from a server that was itself
restored to a target carries that setting, so the others are cleared
explicitly -- *before* the one set, since each assignment checks the ones
already set (xlogrecovery.c, ``error_multiple_recovery_targets``).
"""

from __future__ import annotations

RECOVERY_SIGNAL = "recovery.signal"
STANDBY_SIGNAL = "standby.signal"
AUTO_CONF = "postgresql.auto.conf"

#: the recovery target settings, of which PostgreSQL accepts one
TARGET_SETTINGS = (
    "recovery_target",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_xid",
)
#: target kind -> its setting (``immediate`` is recovery_target = 'immediate')
SETTING_OF_KIND = {
    "time": "recovery_target_time",
    "lsn": "recovery_target_lsn",
    "xid": "recovery_target_xid",
    "name": "recovery_target_name",
    "immediate": "recovery_target",
}
#: kinds for which recovery_target_inclusive means something
INCLUSIVE_KINDS = ("time", "lsn", "xid")
ACTIONS = ("pause", "promote", "shutdown")


def quote(value: str) -> str:
    """A setting value as postgresql.conf reads it."""
    return "'" + value.replace("'", "''") + "'"


def settings(
    kind: str,
    value: str | None,
    *,
    restore_command: str,
    timeline: str,
    inclusive: bool = True,
    action: str = "pause",
) -> dict[str, str]:
    """The settings for a recovery to a target, values quoted, in the order to write them.

    ``kind`` is one of time, lsn, xid, name, immediate or latest (no target:
    replay every archived segment); ``value`` the target as PostgreSQL reads
    it (``2026-11-23 14:30:00+00``, ``0/5000260``, ...); ``timeline`` the
    recovery_target_timeline (``latest``, ``current`` or a number).
    """
    target = SETTING_OF_KIND.get(kind)
    out = {"restore_command": quote(restore_command)}
    for other in TARGET_SETTINGS:
        if other != target:
            out[other] = "''"
    if target is not None:
        out[target] = "'immediate'" if kind == "immediate" else quote(value or "")
    if kind in INCLUSIVE_KINDS:
        # explicit, like the timeline: a backup's configuration may carry the other value
        out["recovery_target_inclusive"] = "'on'" if inclusive else "'off'"
    out["recovery_target_timeline"] = quote(timeline)
    if kind != "latest":
        out["recovery_target_action"] = quote(action)
    return out


def auto_conf_block(settings: dict[str, str], *, comment: str) -> str:
    """Lines to append to postgresql.auto.conf (values already quoted)."""
    lines = [f"# {line}" if line else "#" for line in comment.splitlines()]
    lines += [f"{name} = {value}" for name, value in settings.items()]
    return "\n".join(lines) + "\n"


def signal_file(standby: bool) -> str:
    """The signal file that starts archive recovery (or a standby)."""
    return STANDBY_SIGNAL if standby else RECOVERY_SIGNAL
