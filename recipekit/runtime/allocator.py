"""PyTorch's CUDA allocator with expandable segments, unless the user configured it.

Training and evaluation interleave allocations of very different sizes (packs of thousands of
tokens, then evaluation batches), and the default allocator keeps the freed blocks it cannot
reuse: on the lean QLoRA recipe with evaluation on, it reserved 10.7 GiB for 9.0 GiB in use, and
the process outgrew a 12 GB card (bench/results/memory_with_eval_h200_2026-11-30.json).
Expandable segments grow and shrink mapped memory instead of carving fixed blocks, so reserved
stays close to allocated. The setting is read when CUDA first allocates, so it is set at import,
before any command of the project touches the GPU; a value the user set wins.
"""

from __future__ import annotations

import os

SETTING = "expandable_segments:True"


def prefer_expandable_segments() -> None:
    if "PYTORCH_CUDA_ALLOC_CONF" not in os.environ and "PYTORCH_ALLOC_CONF" not in os.environ:
        os.environ["PYTORCH_CUDA_ALLOC_CONF"] = SETTING
