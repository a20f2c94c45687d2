"""Benchmarks with same-run baselines (see bench/README.md)."""
