"""``push_to_hub: true``: the finished run goes to the Hugging Face Hub whole, once it is written.

The Trainer's own push happens inside ``save_model``, before this project writes the model
card, the manifest and the charts, so the hub would get the generic card and no record of
what was trained. Instead the Trainer's push is switched off and the run folder is uploaded
with ``huggingface_hub``'s ``upload_folder`` after everything is in it: the adapter, the
tokenizer with its serving template and generation config, the model card, the resolved
recipe, the run manifest, the metrics, the truncation report and the charts (checkpoints
stay local). With ``push_merged_model: true`` the merged model goes under ``merged/``.

Whether a token is there and the hub answers is asked before the model loads, so a run
that cannot publish is refused in seconds rather than after hours of training.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any

# Left out of the upload: checkpoints are for resuming here, the lock is this machine's.
LOCAL_ONLY = ["checkpoint-*", "checkpoint-*/**", ".run.lock", "*.partial", "*.partial/**"]
HUB_ANSWER_SECONDS = 15


def hub_token(values: dict[str, Any]) -> str | None:
    from huggingface_hub import get_token

    return values.get("hub_token") or get_token()


def _whoami(token: str) -> dict:
    """``HfApi.whoami``, given at most :data:`HUB_ANSWER_SECONDS` to answer."""
    from huggingface_hub import HfApi

    answer: dict[str, Any] = {}

    def ask() -> None:
        try:
            answer["user"] = HfApi().whoami(token=token)
        except Exception as exc:  # noqa: BLE001 - reported by the caller in words
            answer["error"] = exc

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(HUB_ANSWER_SECONDS)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {HUB_ANSWER_SECONDS} s")
    if "error" in answer:
        raise answer["error"]
    return answer["user"]


def hub_problem(values: dict[str, Any]) -> str | None:
    """Why the run could not be published when it ends, or None (only asked with push_to_hub)."""
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError

    if not values.get("push_to_hub") or constants.HF_HUB_OFFLINE:
        return None  # offline is named by the recipe check itself
    token = hub_token(values)
    if not token:
        return ("`push_to_hub: true` needs a Hugging Face token with write access, and none is set. Run "
                "`hf auth login`, or set HF_TOKEN (or `hub_token`); or set push_to_hub: false and upload the "
                "output_dir later with `hf upload`.")
    try:
        _whoami(token)
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            return (f"`push_to_hub: true`, but the hub refuses the token ({status}). Log in again with "
                    "`hf auth login` or set a valid HF_TOKEN.")
        return f"`push_to_hub: true`, but the hub at {constants.ENDPOINT} answered with an error: {exc}."
    except Exception as exc:  # noqa: BLE001 - a network that does not answer, in any of its forms
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return (f"`push_to_hub: true`, but the Hugging Face Hub ({constants.ENDPOINT}) cannot be reached: {first}. "
                "Check the network or proxy, or set push_to_hub: false and upload the output_dir later with "
                "`hf upload`.")
    return None


def publish_run(recipe, push_merged_model: bool) -> str:
    """Upload the finished run (and the merged model, when asked); returns the repository's URL."""
    from huggingface_hub import HfApi

    args = recipe.training
    out = Path(args.output_dir)
    token = hub_token({"hub_token": args.hub_token})
    api = HfApi(token=token)
    repo_id = args.hub_model_id or f"{_whoami(token)['name']}/{out.resolve().name}"
    url = api.create_repo(repo_id, private=args.hub_private_repo, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(out), ignore_patterns=LOCAL_ONLY,
                      commit_message=f"{recipe.name}: the finished run (adapter, card, recipe, manifest, metrics)")
    if push_merged_model:
        from recipekit.inference.merging import merge_run

        with tempfile.TemporaryDirectory(prefix=".merged-", dir=out.resolve().parent) as work:
            merged = merge_run(out, Path(work) / "merged")
            api.upload_folder(repo_id=repo_id, folder_path=str(merged), path_in_repo="merged",
                              commit_message=f"{recipe.name}: the merged model")
    return str(url)
