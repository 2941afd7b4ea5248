"""Integration tests: real processes and sockets on loopback."""
