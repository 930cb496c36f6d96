"""``run_manifest.json``: what produced a run, so a result can be trusted and reproduced.

Written when training starts (status ``running``) and rewritten when it ends
(``finished``, ``preempted``, ``interrupted``, ``stopped: non-finite loss`` or
``failed: <the write fault>``), atomically, by the main
process: the resolved recipe, package versions, the git commit of this project, sha256 of
the data files, the hardware, and start and end times.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from dataclasses import fields, is_dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from recipekit.runtime.atomic_io import atomic_write_text

MANIFEST_NAME = "run_manifest.json"  # its status turns to "finished" after the final save


def run_status(output_dir: str | Path) -> str | None:
    """The manifest's status (``running``, ``finished``, ``preempted``, ``failed: ...``), or None
    when there is no readable manifest."""
    manifest = Path(output_dir) / MANIFEST_NAME
    try:
        status = json.loads(manifest.read_text(encoding="utf-8")).get("status")
    except (OSError, ValueError, AttributeError):
        return None
    return status if isinstance(status, str) else None


def is_finished_run(output_dir: str | Path) -> bool:
    return run_status(output_dir) == "finished"


PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes", "tokenizers")
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state(root: Path = PROJECT_ROOT) -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hardware(world_size: int) -> dict[str, Any]:
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {
        "gpus": gpus,
        "cuda": torch.version.cuda,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "world_size": world_size,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


class RunManifest:
    """Holds the manifest of one run and rewrites it as the run progresses."""

    def __init__(self, recipe, data: dict[str, dict], prompt_format: str | None = None) -> None:
        self.path = Path(recipe.training.output_dir) / MANIFEST_NAME
        self.content: dict[str, Any] = {
            "recipe_name": recipe.name,
            "recipe_path": str(recipe.path),
            "command": sys.argv,
            "working_dir": os.getcwd(),  # what the recipe's relative paths were relative to
            "recipe": recipe.resolved,
            "packages": package_versions(),
            "git": git_state(),
            "data": data,  # per source and split: path, sha256, rows (and rows used, weight)
            "prompt_format": prompt_format,
            "hardware": hardware(recipe.training.world_size),
            "started_at": now(),
            "ended_at": None,
            "status": "running",
        }

    def write(self, **updates: Any) -> None:
        self.content.update(updates)
        atomic_write_text(self.path, json.dumps(self.content, indent=2, default=str) + "\n")

    def finish(self, status: str, **extra: Any) -> None:
        self.write(status=status, ended_at=now(), **extra)


# Settings that may change between a run and its resumption without changing what is trained.
RESUME_NEUTRAL_KEYS = frozenset({
    "resume_from_checkpoint", "resume_despite_changes", "overwrite_output_dir", "recipe_name", "report_to",
    "logging_steps", "logging_first_step", "dataloader_num_workers", "per_device_eval_batch_size", "plugins",
})


# Where a run's files are, not what it trains. The run being resumed is the one in this output_dir,
# and its data is compared by sha256 below: a requeued job that spells a path another way
# (./runs/x, an absolute path, a new mount point) is resuming the same run.
LOCATION_KEYS = frozenset({"output_dir", "data_dir", "logging_dir"})


def same_setting(old: Any, new: Any, old_working_dir: str | None) -> bool:
    """Equal values, or two spellings of one existing local path (a model folder, say); the old
    value, if relative, is read from the folder the earlier run started in."""
    if old == new:
        return True
    if not (isinstance(old, str) and isinstance(new, str)):
        return False
    before = Path(old_working_dir or ".") / old
    return before.exists() and Path(new).exists() and before.resolve() == Path(new).resolve()


def data_hashes(data_files: dict[str, Path]) -> dict[str, dict[str, str]]:
    return {role: {"path": str(p), "sha256": sha256_of(p)} for role, p in data_files.items() if p.is_file()}


def recorded_as_text(old_value: Any, key: str, recipe) -> bool:
    """An earlier version wrote settings objects (``accelerator_config``) into the manifest as
    their text; the same text now is the same setting."""
    if not isinstance(old_value, str):
        return False
    current = next((getattr(c, key) for c in (recipe.recipe, recipe.training, recipe.model) if hasattr(c, key)), None)
    return is_dataclass(current) and old_value == str(current)


def resume_differences(recipe, data: dict[str, dict]) -> list[str]:
    """What differs between this recipe and data and those recorded by the run being resumed.

    Plugin keys and the settings in ``RESUME_NEUTRAL_KEYS`` are left out. A missing manifest (a
    run killed before it wrote one) gives nothing to compare; an unreadable or foreign one is a
    difference in itself, since nothing then shows the resume continues the same training.
    """
    path = Path(recipe.training.output_dir) / MANIFEST_NAME
    unknown = (f"its {MANIFEST_NAME}, which records what that run trained, {{}}, so nothing shows that this "
               "recipe and data are the ones it trained with")
    if not path.exists():
        return []  # a run killed before it wrote one: nothing to compare
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        return [unknown.format(f"cannot be read ({getattr(exc, 'strerror', None) or type(exc).__name__})")]
    if not isinstance(before, dict) or not isinstance(before.get("recipe") or {}, dict) \
            or not isinstance(before.get("data") or {}, dict) \
            or not all(isinstance(e, dict) for e in (before.get("data") or {}).values()):
        return [unknown.format("is not a manifest this project writes")]
    # Only the keys of TRL's configs and the project's own: plugin keys (of this run or the earlier
    # one) change what is logged, not what is trained.
    trained = {f.name for config in (recipe.recipe, recipe.training, recipe.model) for f in fields(config)}
    compared = trained - RESUME_NEUTRAL_KEYS - LOCATION_KEYS
    old, new = before.get("recipe") or {}, recipe.resolved
    changes = [
        f"`{key}` {old.get(key, '(not set)')!r} -> {new.get(key, '(not set)')!r}"
        for key in sorted((set(old) | set(new)) & compared)
        if not same_setting(old.get(key), new.get(key), before.get("working_dir"))
        and not recorded_as_text(old.get(key), key, recipe)
    ]
    old_data = {role: entry.get("sha256") for role, entry in (before.get("data") or {}).items()}
    for role, entry in data.items():
        if role in old_data and old_data[role] != entry["sha256"]:
            changes.append(f"the {role} data ({entry['path']}) changed since (sha256 differs)")
    return changes
