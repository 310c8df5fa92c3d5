"""Operations: check, status, metrics, drill (docs/operations.md)."""
