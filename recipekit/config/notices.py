"""What a recipe does beyond training here, said before it happens.

Recipes are shared in pull requests, so a recipe is input from someone else. Three keys make a
run do more than read its data and write its output_dir: a plugin outside the project runs its
own Python in this process; ``trust_remote_code: true`` runs the Python files of a model folder
or hub repository; ``push_to_hub: true`` uploads the finished run (and ``report_to`` sends the
metrics to a tracker). Each is printed as one ``notice:`` line before the code is imported, the
model loads or anything is sent, on the main process only, so the person who runs the recipe
sees it and a reviewer knows what to look for.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

# Trackers that log only into output_dir: nothing leaves the machine.
LOCAL_TRACKERS = {"none", "tensorboard"}


def _plugin_source(path: str) -> str:
    module_name = path.rpartition(".")[0]
    try:
        spec = importlib.util.find_spec(module_name.partition(".")[0])  # the top package: nothing is run
    except (ImportError, ValueError):
        spec = None
    origin = getattr(spec, "origin", None) or "not found"
    return f"`{path}` ({origin})"


def outside_effects(values: dict[str, Any], plugins: list[str], builtin_plugins: tuple[str, ...]) -> list[str]:
    """One sentence for each thing this recipe does outside training here."""
    said = []
    outside = [p for p in plugins if p not in builtin_plugins]
    if outside:
        said.append("runs plugin code from outside the project: " + ", ".join(map(_plugin_source, outside)))
    if values.get("trust_remote_code"):
        said.append(f"runs the Python files of the model `{values.get('model_name_or_path')}` "
                    "(`trust_remote_code: true`)")
    if values.get("push_to_hub"):
        target = values.get("hub_model_id") or "a repository named after output_dir"
        said.append(f"uploads the finished run (adapter, card, recipe, manifest, metrics) to the Hugging Face Hub as `{target}` (`push_to_hub: true`)")
    trackers = values.get("report_to")
    trackers = [trackers] if isinstance(trackers, str) else list(trackers or [])
    remote = [t for t in trackers if t not in LOCAL_TRACKERS]
    if remote:
        said.append(f"sends its metrics to {', '.join(remote)} (`report_to`)")
    return said


def announce(recipe_path: object, values: dict[str, Any], plugins: list[str], builtin_plugins: tuple[str, ...]) -> None:
    """Print the notices, once per run (the main process of a launch)."""
    if os.environ.get("RANK", "0") != "0":
        return
    for sentence in outside_effects(values, plugins, builtin_plugins):
        print(f"notice: recipe {recipe_path} {sentence}.", file=sys.stderr)
