"""Storage backends: the protocol (base), the registry, the remote-client layer
the cloud stores share (client, errormap, retry, parts), and one module per store."""
