"""walship: PostgreSQL WAL archiving you can trust with your data."""

__version__ = "0.1.0"
