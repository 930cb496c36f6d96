"""Tokens per word of a real tokenizer on preprocessed FiQA: the ratio ``recipes.run --plan``
assumes when the recipe's own tokenizer cannot be loaded (the Nemotron tokenizer offline).

    python -m bench.tokens_per_word --tokenizer PATH/tokenizer.json --tokenizer_name "..." \\
        --data_dir data/fiqa-sample --data_dir data/fiqa-sample-nemotron-chat \\
        --out bench/results/tokens_per_word_llama3_fiqa-sample_$(date +%F).json

Each record's texts (the prompt and completion strings, or each chat message's content) are
encoded without special tokens, and the sum of their tokens is divided by the sum of their
words (``recipekit.planning.words``, the plan's own count). Chat-template and special tokens
are left out on both sides: the plan's estimate leaves them out too, and says so.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from datetime import date
from pathlib import Path

from recipekit.planning.words import record_words, text_pieces


def measure(tokenizer, data_dir: Path, split: str) -> dict:
    """Words and tokens of one preprocessed split; ``kind`` is "chat" for message records, else "text"."""
    words = tokens = examples = 0
    kind = "text"
    for line in (data_dir / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        kind = "chat" if isinstance(record["prompt"], list) else "text"
        pieces = [t for name in ("prompt", "completion") for t in text_pieces(record[name])]
        tokens += sum(len(tokenizer.encode(t, add_special_tokens=False).ids) for t in pieces)
        words += record_words(record)
        examples += 1
    return {"data_dir": str(data_dir), "split": split, "kind": kind, "examples": examples, "words": words,
            "tokens": tokens, "tokens_per_word": round(tokens / words, 4)}


def main(argv: list[str] | None = None) -> int:
    from tokenizers import Tokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", type=Path, required=True, help="a tokenizer.json file")
    parser.add_argument("--tokenizer_name", required=True, help="what the tokenizer is and where it came from")
    parser.add_argument("--data_dir", type=Path, action="append", required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    tokenizer = Tokenizer.from_file(str(args.tokenizer))
    report = {
        "date": date.today().isoformat(),
        "tokenizer": {"name": args.tokenizer_name, "sha256": hashlib.sha256(args.tokenizer.read_bytes()).hexdigest(),
                      "vocab_size": tokenizer.get_vocab_size(),
                      "check_hello_world_ids": tokenizer.encode("Hello world", add_special_tokens=False).ids},
        "words": "whitespace-separated, recipekit.planning.words.record_words",
        "results": [measure(tokenizer, d, args.split) for d in args.data_dir],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for row in report["results"]:
        print(f"{row['data_dir']} ({row['kind']}): {row['tokens']:,} tokens / {row['words']:,} words = "
              f"{row['tokens_per_word']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
