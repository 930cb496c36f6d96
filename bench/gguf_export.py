"""A GGUF model (dequantized on load) saved as a plain safetensors folder that every recipe loads by path.

The real models that reach a machine without the hub ship on PyPI as GGUF (``bench.smollm2``,
``bench.gemma3``); both are written out the same way, here.
"""

from __future__ import annotations

from pathlib import Path


def save_plain_model(folder: Path, gguf_name: str, out: Path, pad_token: str, eos_token: str | None = None) -> Path:
    """Load ``folder/gguf_name`` with transformers' GGUF reader in float32 and save tokenizer and
    weights to ``out``, with ``pad_token`` (and ``eos_token``, when given) in the generation config."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_name, dtype=torch.float32)
    # The weights are dequantized already; drop the GGUF quantizer so the folder loads as a plain model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.generation_config.pad_token_id = tokenizer.convert_tokens_to_ids(pad_token)
    if eos_token is not None:
        model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(eos_token)
    tokenizer.save_pretrained(out)
    model.save_pretrained(out)
    return out
