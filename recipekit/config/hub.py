"""Whether a run with ``push_to_hub: true`` could publish when it ends, asked before the model loads.

A run that cannot publish (no token, a hub that does not answer) is refused in seconds rather
than after hours of training; ``recipekit.rundir.publish`` does the upload itself.
"""

from __future__ import annotations

import threading
from typing import Any

HUB_ANSWER_SECONDS = 15


def hub_token(values: dict[str, Any]) -> str | None:
    from huggingface_hub import get_token

    return values.get("hub_token") or get_token()


def whoami(token: str) -> dict:
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
        whoami(token)
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
