"""Declarative YAML recipes that train LoRA / QLoRA adapters with TRL's SFTTrainer."""
