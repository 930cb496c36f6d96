"""``report_to``: every experiment tracker named must be installed, said before anything loads.

transformers finds out only when it builds the tracker's callback, after the tokenizer, the
data and the model have loaded, and then raises a bare ``RuntimeError``. The table below
names, for each of transformers' trackers, what it needs, so the recipe check can say which
package to install in the first second. ``tests/test_trackers.py`` holds it against
transformers' own list of integrations.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

# report_to name -> (modules of which one must be importable, the pip package to install)
TRACKER_PACKAGES: dict[str, tuple[tuple[str, ...], str]] = {
    "azure_ml": (("azureml.core",), "azureml-core"),
    "clearml": (("clearml",), "clearml"),
    "codecarbon": (("codecarbon",), "codecarbon"),
    "comet_ml": (("comet_ml",), "comet-ml"),
    "dagshub": (("dagshub",), "dagshub mlflow"),
    "dvclive": (("dvclive",), "dvclive"),
    "flyte": (("flytekit",), "flytekit flytekitplugins-deck-standard"),
    "mlflow": (("mlflow",), "mlflow"),
    "neptune": (("neptune",), "neptune"),
    "swanlab": (("swanlab",), "swanlab"),
    "tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
    "trackio": (("trackio",), "trackio"),
    "wandb": (("wandb",), "wandb"),
}
# Trackers that need a service rather than a package: the variable that names it.
TRACKER_SERVICES = {"kubeflow": "KUBEFLOW_TRAINER_SERVER_URL"}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing (azureml for azureml.core)
        return False


def named_trackers(report_to: Any) -> list[str]:
    """The trackers ``report_to`` names (``all`` and ``none`` name none by themselves)."""
    names = report_to if isinstance(report_to, list) else [report_to]
    return [str(n) for n in names if n is not None and str(n) not in ("none", "all")]


def tracker_problems(report_to: Any) -> list[str]:
    """A sentence for each tracker in ``report_to`` that is unknown or not installed."""
    problems = []
    for name in named_trackers(report_to):
        if name in TRACKER_SERVICES:
            if os.environ.get(TRACKER_SERVICES[name]) is None:
                problems.append(f"`report_to: {name}` reports to a Kubeflow Trainer server, and "
                                f"{TRACKER_SERVICES[name]} is not set. Run inside Kubeflow Trainer, or remove it.")
            continue
        if name not in TRACKER_PACKAGES:
            known = ", ".join(sorted([*TRACKER_PACKAGES, *TRACKER_SERVICES]))
            problems.append(f"`report_to` names `{name}`, which is no tracker transformers knows. Choose from: {known} "
                            "(or none, or all: every one installed).")
            continue
        modules, package = TRACKER_PACKAGES[name]
        if not any(_installed(m) for m in modules):
            problems.append(f"`report_to` names {name}, which is not installed, so the run would stop after the "
                            f"model has loaded. Run `pip install {package}` (or `pip install -e \".[trackers]\"` for "
                            f"the common ones), or remove {name} from report_to.")
    return problems
