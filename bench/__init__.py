"""The benchmark harness (issue #9): ``python -m bench`` writes BENCHMARKS.md and its JSON."""
