"""Benchmarks: `python -m bench [NAME ...]` (or `make bench`) runs them and appends dated results."""
