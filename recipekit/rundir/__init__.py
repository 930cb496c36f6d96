"""A run's output directory, owned here alone: its manifest and status, checkpoints, and the lock."""
