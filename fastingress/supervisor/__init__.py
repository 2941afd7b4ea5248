"""The supervisor: wires sources, store, compiler and table writer together (and, offline, the CLI's tools)."""
