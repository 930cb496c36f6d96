"""Declarative YAML recipes that train LoRA / QLoRA adapters with TRL's SFTTrainer, and the commands around them."""

from recipes.allocator import prefer_expandable_segments
from recipes.quiet import quiet_known_noise

# Before anything imports transformers (which imports bitsandbytes): the filters are narrow, one
# known message each (see recipes/quiet.py), and every command of the project imports this package.
quiet_known_noise()
# Before anything touches CUDA: reserved memory close to what is in use (see recipes/allocator.py).
prefer_expandable_segments()
