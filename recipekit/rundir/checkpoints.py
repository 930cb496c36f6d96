"""Which checkpoint to resume from, and whether an output dir holds a finished run.

``resume_from_checkpoint: auto`` lets the same command be rerun after a crash, a
``kill -9`` or a preemption: it picks the newest *whole* checkpoint (see
:func:`checkpoint_problem`), skipping, and naming, any newer one that was cut short or
damaged, so a torn file never makes every rerun crash.
"""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path

from recipekit.rundir.manifest import MANIFEST_NAME, run_status

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def safetensors_problem(path: Path) -> str | None:
    """A truncated, torn or padded safetensors file: safetensors' own reader checks that the header
    parses and that its tensors cover the file exactly, without loading a tensor."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy"):  # reads the header only; "pt" would import torch
            return None
    except SafetensorError as exc:  # e.g. "incomplete metadata, file not fully covered"
        return f"{path.name} is truncated or damaged (safetensors: {exc})"
    except OSError as exc:
        return f"{path.name} cannot be read ({exc.strerror or exc})"


def _torch_archive_problem(path: Path) -> str | None:
    """torch.save writes a zip archive whose directory comes last, so a cut-off file does not open."""
    try:
        with zipfile.ZipFile(path) as archive:
            archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return f"{path.name} is cut off or damaged"
    return None


def checkpoint_problem(folder: Path) -> str | None:
    """Why a checkpoint cannot be resumed from, or None when it is whole.

    Complete means written to the end and consistent: the trainer state (the Trainer writes it
    last) parses and its global_step is the folder's number and no lower than any step it logged,
    the weights are there (a file, or an FSDP sharded checkpoint whose ``.metadata``, written
    after every rank's shard, exists) and are not truncated, and the optimizer, scheduler and
    RNG archives open.
    """
    state = folder / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json: the save was cut short"
    try:
        trainer_state = json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return "trainer_state.json does not parse (a torn write)"
    if not isinstance(trainer_state, dict) or not isinstance(trainer_state.get("global_step"), int) \
            or not isinstance(trainer_state.get("log_history", []), list):
        return "trainer_state.json is not a trainer state (no integer global_step)"
    step = trainer_state["global_step"]
    named = _CHECKPOINT.match(folder.name)
    if named and int(named.group(1)) != step:  # the Trainer names the folder after the step it saved
        return f"its trainer_state.json says global_step {step}, but the folder is {folder.name}"
    logged = [e.get("step") for e in trainer_state.get("log_history", []) if isinstance(e, dict)]
    if any(isinstance(s, int) and s > step for s in logged):
        return f"its trainer_state.json logs steps after its global_step {step}"
    weight_files = [folder / w for w in ("adapter_model.safetensors", "model.safetensors") if (folder / w).is_file()]
    legacy = any((folder / w).is_file() for w in ("adapter_model.bin", "pytorch_model.bin"))
    sharded = any((shards / ".metadata").is_file() for shards in folder.glob("pytorch_model_fsdp_*"))
    if not (weight_files or legacy or sharded):
        return "no weights (nor a sharded checkpoint with its .metadata)"
    for path in weight_files:
        if problem := safetensors_problem(path):
            return problem
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        if (folder / name).is_file() and (problem := _torch_archive_problem(folder / name)):
            return problem
    return None


def adapter_rank_problem(checkpoint: str | Path, lora_r: int) -> str | None:
    """Why a checkpoint's LoRA weights cannot be loaded into an adapter of rank ``lora_r``, or None.

    Other settings (alpha, learning rate, data) are compared with the run manifest and can be
    overridden; a rank that differs cannot: the saved matrices have another shape.
    """
    config = Path(checkpoint) / "adapter_config.json"
    try:
        saved = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None  # no adapter config (a full-model or sharded checkpoint): nothing to compare here
    rank = saved.get("r") if isinstance(saved, dict) else None
    if not isinstance(rank, int) or rank == lora_r:
        return None
    return (f"{checkpoint} holds a LoRA adapter of rank {rank}, and this recipe trains rank {lora_r} (`lora_r`), so "
            f"its weights cannot be loaded. Resume with `--lora_r {rank}`, or train the new rank into another "
            "`output_dir`.")


def usable_checkpoints(output_dir: str | Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest whole checkpoint, and the newer ones skipped on the way with the reason for each."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None, []
    numbered = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir()]
    skipped = []
    for _, path in sorted(numbered, reverse=True):
        problem = checkpoint_problem(path)
        if problem is None:
            return path, skipped
        skipped.append((path, problem))
    return None, skipped


def newest_complete_checkpoint(output_dir: str | Path) -> Path | None:
    return usable_checkpoints(output_dir)[0]


def saved_adapter_problem(run_dir: str | Path) -> str | None:
    """Why the adapter saved in a run dir must not be used, or None: a run that failed while
    writing it (its manifest says so), or an adapter file cut short."""
    run = Path(run_dir)
    status = run_status(run)
    if status is not None and status.startswith("failed"):
        return f"the run ended with `{status}` (its manifest), so the adapter may be half-written"
    weights = run / "adapter_model.safetensors"
    return safetensors_problem(weights) if weights.is_file() else None


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
