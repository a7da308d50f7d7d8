"""Benchmarks: run with `make bench` (see bench/README.md)."""
