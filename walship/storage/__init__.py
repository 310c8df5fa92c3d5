"""Storage backends: the protocol (base), the registry, and one module per store."""
