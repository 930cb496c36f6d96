"""Declarative YAML recipes that train LoRA / QLoRA adapters with TRL's SFTTrainer, and the commands around them."""

from recipes.quiet import quiet_known_noise

# Before anything imports transformers (which imports bitsandbytes): the filters are narrow, one
# known message each (see recipes/quiet.py), and every command of the project imports this package.
quiet_known_noise()
