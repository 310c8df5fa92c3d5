"""Restore planning and archive verification.

planner.py    pure: repository inventory + target in, restore plan out
verify.py     pure: inventory in, list of problems out
inventory.py  reads the repository (one listing, history/backup files, index)
backups.py    where base backups come from (PostgreSQL .backup files, ...)
report.py     text and JSON rendering of plans, overviews and problems
"""
