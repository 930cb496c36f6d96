"""The machinery behind the ``recipes`` commands, grouped by concern.

- ``config``: the key schema, parsing a recipe and its overrides, values, validation, ``--help``
- ``training``: the trainer path, model and tokenizer set-up, data, smoke assets, model card
- ``rundir``: a run's output directory: its manifest and status, checkpoints, the run lock
- ``runtime``: what keeps a run safe: stop signals, guards, write faults, out of memory,
  atomic writes, file checks, the CUDA allocator and known library noise
- ``fast_paths``: fused LoRA forward, fused q/k/v, PyTorch varlen attention
- ``inference``: a trained run loaded back, answers, scoring, evaluation
- ``cli``: every command's error -> message -> exit status, with named exit codes

Data flows one way: ``recipes`` (the commands) and ``plugins`` use this package; nothing in it
imports them.
"""

from recipekit.runtime.allocator import prefer_expandable_segments
from recipekit.runtime.quiet import quiet_known_noise

# Before anything imports transformers (which imports bitsandbytes): the filters are narrow, one
# known message each (see recipekit/runtime/quiet.py), and every command imports this package.
quiet_known_noise()
# Before anything touches CUDA: reserved memory close to what is in use (see recipekit/runtime/allocator.py).
prefer_expandable_segments()
