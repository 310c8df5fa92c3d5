"""Shared value types of the WAL reader, the segment index and the restore planner.

Times are integers: microseconds since the Unix epoch, UTC (the reader
converts PostgreSQL's 2000-01-01 epoch). LSNs are ints.
"""

from __future__ import annotations

from typing import Any, NamedTuple

# WalEvent.kind values
COMMIT = "commit"
ABORT = "abort"
COMMIT_PREPARED = "commit_prepared"
ABORT_PREPARED = "abort_prepared"
PREPARE = "prepare"
RESTORE_POINT = "restore_point"
CHECKPOINT_SHUTDOWN = "checkpoint_shutdown"
CHECKPOINT_ONLINE = "checkpoint_online"
SWITCH = "switch"
END_OF_RECOVERY = "end_of_recovery"
BACKUP_END = "backup_end"

#: kinds that recovery_target_time / recovery_target_xid examine
XACT_END_KINDS = frozenset({COMMIT, ABORT, COMMIT_PREPARED, ABORT_PREPARED})


class WalEvent(NamedTuple):
    """One WAL record that a recovery target or the planner cares about."""

    kind: str
    lsn: int  # start LSN of the record
    end_lsn: int  # LSN just past the record (what recovery reaches when it stops after it)
    xid: int | None = None  # top-level xid (for *_prepared: the prepared transaction's xid)
    time: int | None = None  # µs since Unix epoch UTC (xact time, restore point time, checkpoint)
    name: str | None = None  # restore point name, or the GID of a PREPARE
    extra: dict[str, Any] | None = None  # e.g. {"tli": 2, "prev_tli": 1}, {"redo": lsn}


class SegmentSummary(NamedTuple):
    """What one archived WAL segment holds, as far as recovery targets go.

    ``events`` are the records *starting* in this segment, in LSN order; a
    record that starts here and ends in the next segment is included once the
    index has joined both halves (``pending`` says one is still unresolved).
    """

    name: str  # segment file name (TLI + segment number)
    tli: int
    segno: int
    seg_size: int
    start_lsn: int  # segno * seg_size
    end_lsn: int  # end of the last valid record read (== start of next segment when full)
    events: tuple[WalEvent, ...]
    switch: bool = False  # an XLOG_SWITCH ends the WAL in this segment
    pending: bool = False  # a record of interest crosses into the next segment, unresolved
    sha256: str | None = None  # raw digest of the segment this summary was computed from
    # --- added by the WAL reader (walship.pg.records); all optional ---
    pg_version: int | None = None  # PostgreSQL major version (from the page magic)
    first_lsn: int | None = None  # start of the first record starting in this segment
    first_prev: int | None = None  # its xl_prev: equals the previous segment's last_lsn
    last_lsn: int | None = None  # start of the last record starting in this segment
    end_reason: str | None = None  # why valid WAL ended before end_lsn reached the segment end
    #: True when ``events`` leaves out the XACT_END_KINDS records (index summaries):
    #: they are counted in the xact_* fields; walship.index.load.load_events gives them all
    sparse: bool = False
    xact_count: int = 0  # XACT_END_KINDS records starting in this segment
    xact_time_min: int | None = None  # smallest / largest xact time among them
    xact_time_max: int | None = None
    xact_first_time: int | None = None  # time of the first / last of them in LSN order
    xact_last_time: int | None = None
    xid_min: int | None = None  # smallest / largest (raw 32-bit) xid among them
    xid_max: int | None = None
