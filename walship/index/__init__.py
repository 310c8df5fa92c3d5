"""The segment index: per-segment WAL summaries stored in the repository.

Planning a restore needs to know which segment holds the first commit after a
time, a given xid or a named restore point, without downloading the archive.
``walship index`` (and, with ``index_on_push``, every ``walship push``) reads
segments with :mod:`walship.pg.records` and stores what it found::

    index/<TLI+log, 16 hex>/<segment>        one "loose" object per segment
    index/packs/<TLI 8 hex>/<bucket 8 hex>.<digest 16 hex>
                                             sparse entries of up to
                                             PACK_SEGMENTS segments

Every object is an envelope (compressed, encrypted like the WAL it describes).
A loose object holds a JSON entry (the SegmentSummary fields, the events that
are not commits/aborts, the xact_* statistics and the bytes needed to join a
record that crosses into the next segment) followed by the segment's
commit/abort events in compact columns. A pack holds only JSON entries, so
loading a summary of every segment costs one listing of ``index/`` plus one
GET per pack (and one per loose object not yet packed).

Summaries returned by :func:`load_summaries` are *sparse*: ``events`` leaves
out the commit/abort records (``XACT_END_KINDS``), which are described by the
``xact_*`` fields; :func:`load_events` reads one segment's full list. The one
exception is the event of a record that starts in the segment and ends in the
next: it is always in ``events`` (whatever its kind) once joined.

Index objects are derived data: they can be deleted and rebuilt
(``walship index --rebuild``) at any time.

Modules: :mod:`.entries` (object keys, entries and their encoding; no I/O),
:mod:`.load` (reading the index: :func:`~walship.index.load.load_summaries`,
:func:`~walship.index.load.load_events`), :mod:`.build` (the push hook and
``walship index``: writing entries and packs). The index reads archived
segments through :mod:`walship.repository` and :mod:`walship.codec.objects`,
never through :mod:`walship.archive`.
"""
