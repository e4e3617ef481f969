"""Docket's benchmarks: run them with ``python -m benchmarks`` (``make bench``)."""
