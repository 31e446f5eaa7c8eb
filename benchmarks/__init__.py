"""Reproducible performance measurements (`make bench`); see benchmarks/README.md."""
