"""Object encoding: envelope (header), compression, encryption."""
