"""Benchmarks: measured numbers for the docs (bench/README.md), never asserted in tests."""

# The project package first: its import sets the CUDA allocator and the noise filters that every
# command of the project runs with, so what a benchmark measures is what users get.
import recipes  # noqa: F401
