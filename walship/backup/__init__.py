"""Base backups: backup-push, backup-fetch, the backup catalog, retention.

The manifest format and the repository keys of a backup are in
walship/manifest.py (below this package, so that walship/restore can read
backups for the planner). The SQL session is walship/pgsql.py.
"""
