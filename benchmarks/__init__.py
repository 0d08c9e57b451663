"""Benchmarks that CI tracks: `python benchmarks/run.py --suite ci --out DIR` (docs/benchmarks.md)."""
