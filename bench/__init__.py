"""Benchmarks: `python -m bench` (or `make bench`) runs every module that defines `TITLE` and `run()`."""
