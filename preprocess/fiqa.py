"""``python -m preprocess.fiqa``: write FiQA as instruction JSONL for the recipes.

Reads the ``main`` config of ``explodinggradients/fiqa`` (from the hub, or ``--source DIR``
holding ``train.csv``, ``dev.csv`` and ``test.csv``), takes the first ground truth of each
row as the answer, verbatim, and writes ``train.jsonl``, ``validation.jsonl``,
``test.jsonl`` and ``manifest.json``. Every row is parsed before anything is written, and
each file is written atomically, so a failed run leaves the output folder as it was; a
rerun on the same input writes identical bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
from pathlib import Path

from preprocess.fiqa_source import (
    HUB_REPO_ID,
    SPLIT_FILES,
    ParsedSplit,
    hub_split_files,
    local_split_files,
    read_split_csv,
)
from preprocess.prompt_format import PROMPT_FORMATS, SYSTEM_PROMPT, build_example
from recipekit.cli import run_command
from recipekit.runtime.atomic_io import atomic_write_bytes, atomic_write_text

DEFAULT_OUT = "data/fiqa"


def answer_length_stats(answers: list[str]) -> dict:
    """Median / mean words and the share of short, medium and long answers."""
    words = [len(a.split()) for a in answers]
    if not words:
        return {"median_words": 0, "mean_words": 0, "share_under_100": 0, "share_100_300": 0, "share_300_plus": 0}
    n = len(words)
    return {
        "median_words": float(statistics.median(words)),
        "mean_words": round(statistics.fmean(words), 1),
        "share_under_100": round(sum(w < 100 for w in words) / n, 4),
        "share_100_300": round(sum(100 <= w < 300 for w in words) / n, 4),
        "share_300_plus": round(sum(w >= 300 for w in words) / n, 4),
    }


def render_jsonl(split: ParsedSplit, prompt_format: str) -> bytes:
    """One JSON object per line, keys in a fixed order, so reruns are byte-identical."""
    lines = [
        json.dumps(build_example(q, a, prompt_format), ensure_ascii=False) + "\n" for q, a in split.pairs
    ]
    return "".join(lines).encode("utf-8")


def build_manifest(source: str, prompt_format: str, splits: list[ParsedSplit], blobs: dict[str, bytes]) -> dict:
    """What was written, from where, and what was skipped: enough to trust or reproduce the data."""
    return {
        "source": source,
        "format": prompt_format,
        "system_prompt": SYSTEM_PROMPT,
        "splits": {
            s.name: {
                "file": f"{s.name}.jsonl",
                "source_file": s.source_file,
                "rows": len(s.pairs),
                "rows_skipped": sum(s.skipped.values()),
                "skipped_by_reason": dict(sorted(s.skipped.items())),
                "sha256": hashlib.sha256(blobs[s.name]).hexdigest(),
                "answer_length": answer_length_stats([a for _, a in s.pairs]),
            }
            for s in splits
        },
    }


def summary_table(manifest: dict) -> str:
    """A short human table of the manifest, printed at the end of a run."""
    header = f"{'split':<11}{'rows':>6}{'skipped':>9}{'median words':>14}{'mean words':>12}{'<100':>7}{'100-300':>9}{'300+':>7}"
    lines = [header, "-" * len(header)]
    for name, info in manifest["splits"].items():
        stats = info["answer_length"]
        lines.append(
            f"{name:<11}{info['rows']:>6}{info['rows_skipped']:>9}{stats['median_words']:>14}"
            f"{stats['mean_words']:>12}{stats['share_under_100']:>7.1%}{stats['share_100_300']:>9.1%}"
            f"{stats['share_300_plus']:>7.1%}"
        )
    return "\n".join(lines)


def preprocess(
    out_dir: Path,
    source_dir: Path | None = None,
    prompt_format: str = "completion",
    on_bad_row: str = "error",
    revision: str | None = None,
) -> dict:
    """Parse all three splits, then write the JSONL files and the manifest; returns the manifest."""
    if source_dir is not None:
        files = local_split_files(source_dir)
        source = str(source_dir)
    else:
        files = hub_split_files(HUB_REPO_ID, revision)
        source = f"hf://datasets/{HUB_REPO_ID}" + (f"@{revision}" if revision else "")
    splits = [read_split_csv(files[name], name, on_bad_row) for name in SPLIT_FILES]
    blobs = {s.name: render_jsonl(s, prompt_format) for s in splits}
    manifest = build_manifest(source, prompt_format, splits, blobs)
    for name, blob in blobs.items():
        atomic_write_bytes(out_dir / f"{name}.jsonl", blob)
    atomic_write_text(out_dir / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m preprocess.fiqa",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    parser.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument(
        "--source",
        type=Path,
        default=None,
        help="local folder with train.csv, dev.csv, test.csv in the hub layout (default: download from the hub)",
    )
    parser.add_argument(
        "--format",
        dest="prompt_format",
        choices=PROMPT_FORMATS,
        default="completion",
        help="completion: plain prompt/completion text; chat: system/user/assistant messages for the model's chat "
        "template; nemotron-chat: Nemotron-Nano's convention (system `detailed thinking off`, instructions in the user turn)",
    )
    parser.add_argument(
        "--on-bad-row",
        choices=("error", "skip"),
        default="error",
        help="error: stop at the first malformed row; skip: drop it and count it in the manifest",
    )
    parser.add_argument("--revision", default=None, help="hub revision (branch, tag or commit) to download")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    return run_command(lambda: preprocess_and_report(args))


def preprocess_and_report(args: argparse.Namespace) -> None:
    manifest = preprocess(args.out, args.source, args.prompt_format, args.on_bad_row, args.revision)
    print(f"FiQA ({manifest['format']} format) from {manifest['source']} -> {args.out}")
    print(summary_table(manifest))


if __name__ == "__main__":
    sys.exit(main())
