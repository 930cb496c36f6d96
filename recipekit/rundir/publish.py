"""``push_to_hub: true``: the finished run goes to the Hugging Face Hub whole, once it is written.

The Trainer's own push happens inside ``save_model``, before this project writes the model
card, the manifest and the charts, so the hub would get the generic card and no record of
what was trained. Instead the Trainer's push is switched off and the run folder is uploaded
with ``huggingface_hub``'s ``upload_folder`` after everything is in it: the adapter, the
tokenizer with its serving template and generation config, the model card, the resolved
recipe, the run manifest, the metrics, the truncation report and the charts (checkpoints
stay local). With ``push_merged_model: true`` the merged model goes under ``merged/``.

Whether a token is there and the hub answers is asked before the model loads
(``recipekit.config.hub``), so a run that cannot publish is refused in seconds rather than
after hours of training.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from recipekit.config.hub import hub_token, whoami

# Left out of the upload: checkpoints are for resuming here, the lock is this machine's.
LOCAL_ONLY = ["checkpoint-*", "checkpoint-*/**", ".run.lock", "*.partial", "*.partial/**"]


def publish_run(recipe, push_merged_model: bool) -> str:
    """Upload the finished run (and the merged model, when asked); returns the repository's URL."""
    from huggingface_hub import HfApi

    args = recipe.training
    out = Path(args.output_dir)
    token = hub_token({"hub_token": args.hub_token})
    api = HfApi(token=token)
    repo_id = args.hub_model_id or f"{whoami(token)['name']}/{out.resolve().name}"
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
