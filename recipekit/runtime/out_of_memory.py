"""A GPU that runs out of memory, said in one paragraph with the changes that fit the run in.

PyTorch reports it as a page of traceback ending in ``torch.OutOfMemoryError``; what a user
needs is where it happened, how much the GPU has, and which recipe keys trade speed for
memory. The remedies are the ones measured in ``bench/results/`` (the lean recipe, shorter
packs, activation checkpointing, a smaller evaluation batch).
"""

from __future__ import annotations

from transformers import TrainerCallback

LEAN_RECIPE = "recipes/nemotron_fiqa_qlora_lean.yaml"


def is_out_of_memory(error: BaseException) -> bool:
    """torch's own error, or the RuntimeError older paths raise with the same words."""
    try:
        import torch
    except ImportError:  # no torch, no GPU memory to run out of
        return False
    return isinstance(error, torch.OutOfMemoryError) or "CUDA out of memory" in str(error)


class EvaluationPhase(TrainerCallback):
    """Whether the Trainer is evaluating, from public callback events, so that an out-of-memory
    error can say where it happened: on from the step (or epoch) end at which the Trainer's flow
    asks for an evaluation until ``on_evaluate`` reports it done, and on after training, when the
    only GPU work left is the final evaluation. (transformers has no "evaluation begins" event.)"""

    def __init__(self) -> None:
        self.active = False

    def on_step_end(self, args, state, control, **kwargs):
        self.active = bool(control.should_evaluate)

    def on_epoch_end(self, args, state, control, **kwargs):
        self.active = bool(control.should_evaluate)

    def on_evaluate(self, args, state, control, **kwargs):
        self.active = False

    def on_train_end(self, args, state, control, **kwargs):
        self.active = True


def torch_figures(error: BaseException) -> str:
    """The sentences of torch's message that size the problem ("Tried to allocate ... GPU 0 has a
    total capacity of ... of which ... is free."), without its advice on allocator settings."""
    text = " ".join(str(error).split())
    kept = [s.strip() for s in text.split(". ") if s.startswith(("Tried to allocate", "GPU ", "Of the allocated"))]
    return (". ".join(kept).rstrip(".") + ".") if kept else text[:300]


def remedies(training_args, model_args) -> list[str]:
    """Recipe changes that lower the peak, the cheapest in speed first, skipping those already made."""
    steps = []
    if not getattr(training_args, "activation_checkpointing", False):
        steps.append("set `activation_checkpointing: true` (recomputes activations in the backward pass)")
    max_length = getattr(training_args, "max_length", None)
    if max_length and max_length > 2048:
        steps.append(f"lower `max_length` (now {max_length}; the tokens of one pack or example)")
    if not (getattr(model_args, "load_in_4bit", False) or getattr(model_args, "load_in_8bit", False)):
        steps.append("load the base in 4 bits (`load_in_4bit: true`, QLoRA)")
    steps.append(f"or start from {LEAN_RECIPE} (QLoRA with every memory saving on; bench/README.md has its "
                 "measured peak)")
    return steps


def out_of_memory_message(error: BaseException, training_args, model_args, where: str,
                          checkpoint: str | None) -> str:
    """One paragraph: where, torch's figures, what to change, and what was kept."""
    message = f"the GPU ran out of memory {where}: {torch_figures(error)} To fit, " + "; ".join(remedies(training_args, model_args)) + "."
    if "evaluat" in where:
        message += f" Evaluation alone: lower `per_device_eval_batch_size` (now {training_args.per_device_eval_batch_size})."
    if checkpoint:
        message += (f" The newest complete checkpoint is {checkpoint}; a run with changed settings resumes from it only "
                    "with `--resume_despite_changes true`.")
    return message
