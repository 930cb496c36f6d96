"""After training: a run loaded back, answers in its prompt format, scoring and evaluation."""
