"""Benchmarks (not tests): run with `python -m loadtest.<name>`; none of them is part of `make test`."""
