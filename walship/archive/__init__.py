"""WAL archiving: push (archive_command), fetch (restore_command), repository layout."""
