"""Benchmarks: measured numbers for the README, never asserted in tests."""
