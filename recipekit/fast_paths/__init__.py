"""Opt-in fast paths (recipe keys), each checked against the plain path it replaces."""
