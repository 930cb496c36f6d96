"""Training plugins: callbacks and hooks that recipes name by dotted path."""
