"""Which checkpoint to resume from, and whether an output dir holds a finished run.

``resume_from_checkpoint: auto`` lets the same command be rerun after a crash, a
``kill -9`` or a preemption: it picks the newest *complete* checkpoint (one whose trainer
state was written, which the Trainer does last), so a checkpoint cut short mid-write is
never loaded.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

MANIFEST_NAME = "run_manifest.json"  # its status turns to "finished" after the final save
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def is_complete_checkpoint(folder: Path) -> bool:
    """Trainer state written, and weights: a file, or an FSDP sharded checkpoint whose ``.metadata``
    (torch.distributed.checkpoint writes it after every rank's shard) is there."""
    weights = ("adapter_model.safetensors", "model.safetensors", "adapter_model.bin", "pytorch_model.bin")
    has_weights = any((folder / w).is_file() for w in weights) or any(
        (shards / ".metadata").is_file() for shards in folder.glob("pytorch_model_fsdp_*"))
    return (folder / "trainer_state.json").is_file() and has_weights


def newest_complete_checkpoint(output_dir: str | Path) -> Path | None:
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    numbered = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir()]
    for _, path in sorted(numbered, reverse=True):
        if is_complete_checkpoint(path):
            return path
    return None


def is_finished_run(output_dir: str | Path) -> bool:
    manifest = Path(output_dir) / MANIFEST_NAME
    if not manifest.is_file():
        return False
    try:
        return json.loads(manifest.read_text(encoding="utf-8")).get("status") == "finished"
    except (OSError, ValueError):
        return False


def clear_finished_run(output_dir: str | Path) -> None:
    """Forget a finished run before overwriting it: `auto` must not resume from its checkpoints, and its
    evaluation reports (``eval-*``, written by recipes.evaluate) would describe an adapter that is gone."""
    folder = Path(output_dir)
    for path in [*folder.glob("checkpoint-*"), *folder.glob("eval-*")]:
        shutil.rmtree(path, ignore_errors=True)
    (folder / MANIFEST_NAME).unlink(missing_ok=True)


def resolve_resume(setting: str | None, output_dir: str | Path) -> str | None:
    """The checkpoint path for ``Trainer.train``: ``auto`` -> the newest complete one, or None."""
    if setting is None or setting == "":
        return None
    if setting == "auto":
        found = newest_complete_checkpoint(output_dir)
        return str(found) if found else None
    return setting
