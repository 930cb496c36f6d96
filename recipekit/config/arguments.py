"""The keys this project adds to TRL's ``SFTConfig`` and ``ModelConfig``, as a dataclass.

Its fields are read into the key schema (``recipekit.config.schema``) with TRL's and
transformers', so they are checked, documented in ``--help`` and typed by the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RecipeArguments:
    """The keys this project adds to TRL's; everything else is an ``SFTConfig``/``ModelConfig`` field."""

    data_dir: str = field(
        default="data/fiqa",
        metadata={"help": "Folder of JSONL splits written by `python -m preprocess.fiqa --out DIR`."},
    )
    datasets: list[dict] | None = field(
        default=None,
        metadata={"help": "Several training sources instead of one data_dir: a list of `path:` (a folder from "
                  "preprocess.fiqa, a .jsonl/.csv/.parquet file of question/answer rows, or a hub dataset id), each "
                  "with optional `columns: {question: q, answer: a}`, `weight:` (a row count, or a share of the "
                  "mixture between 0 and 1), and for a hub id `name:` and `split:`. Evaluation uses the folders' "
                  "eval_split (docs/data.md)."},
    )
    prompt_format: str | None = field(
        default=None,
        metadata={"help": "The prompt format file and hub sources are written in: completion, chat or nemotron-chat. "
                  "Default: the format of the recipe's preprocess.fiqa folders, else completion.",
                  "choices": ["completion", "chat", "nemotron-chat"]},
    )
    train_split: str = field(default="train", metadata={"help": "Split file (without .jsonl) to train on."})
    eval_split: str = field(
        default="validation", metadata={"help": "Split file (without .jsonl) evaluated during training."}
    )
    build_smoke_assets: bool = field(
        default=False,
        metadata={
            "help": "Build the offline tiny Llama at model_name_or_path and the preprocessed fixture at "
            "data_dir when they are missing (smoke recipe only)."
        },
    )
    recipe_name: str | None = field(
        default=None, metadata={"help": "Name used in logs and plot titles; defaults to the recipe file's stem."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace a finished run in output_dir (its checkpoints are deleted first)."},
    )
    resume_despite_changes: bool = field(
        default=False,
        metadata={"help": "Resume from a checkpoint even when the recipe's training settings or the data differ "
                  "from the run that wrote it (the run refuses and lists the differences otherwise)."},
    )
    autocast_adapter_dtype: bool = field(
        default=True,
        metadata={"help": "PEFT's switch of that name. True (PEFT's default) keeps the LoRA weights of a bf16 model in "
                  "float32, so every adapter casts its input to float32 and back each step; False keeps them in the "
                  "model's dtype, as TRL already does for 4-bit and 8-bit bases (which this key does not change). "
                  "No effect under FSDP, whose mixed precision keeps trainable weights in float32; refused with fp16."},
    )
    fused_lora_forward: bool = field(
        default=False,
        metadata={"help": "Compute each LoRA adapter's scaled output and its addition to the frozen layer's output in one "
                  "matrix multiply (torch.addmm) instead of PEFT's separate multiply, scale and add (and, on a 4-bit "
                  "base, a copy): the same sum in fewer passes over memory (recipekit/fast_paths/fused_lora.py). Applies to plain "
                  "adapters (no dropout, DoRA or LoRA bias, weights in the input's dtype); any other call runs PEFT's "
                  "own forward."},
    )
    fused_lora_qkv: bool = field(
        default=False,
        metadata={"help": "With fused_lora_forward: an attention layer's q, k and v adapters in one autograd node, "
                  "whose backward accumulates the input gradient inside the matrix multiplies instead of writing six "
                  "and adding them (recipekit/fast_paths/fused_qkv.py). Applies where all three are plain adapters on a frozen "
                  "bf16 or float32 nn.Linear base (not 4-bit) and the model is not sharded by FSDP or DeepSpeed; "
                  "elsewhere each layer runs its own forward."},
    )
    regional_compilation: bool = field(
        default=False,
        metadata={"help": "With torch_compile: compile each repeated decoder layer on its own (one compiled graph that "
                  "every layer reuses) and the rest of the model module by module, instead of the whole model at once: "
                  "accelerate's use_regional_compilation (accelerate.utils.compile_regions), with torch_compile_backend "
                  "and torch_compile_mode. Fewer kernel launches and fused glue (LoRA adds, scaling, casts) at a "
                  "compile time of one layer. Same as accelerate's dynamo_config use_regional_compilation or "
                  "ACCELERATE_DYNAMO_USE_REGIONAL_COMPILATION=1, which also take effect without this key; with "
                  "activation checkpointing this key also lets each checkpointed layer compile whole (dynamo's "
                  "skip_fwd_side_effects_in_bwd_under_checkpoint)."},
    )
    push_merged_model: bool = field(
        default=False,
        metadata={"help": "With push_to_hub: also merge the adapter into the base model (as recipes.merge does) and "
                  "upload the merged model under merged/ in the same repository."},
    )
    plugins: list[str] = field(
        default_factory=list,
        metadata={"help": "Plugins by dotted path, e.g. plugins.loss_curves.LossCurves (see plugins/base.py)."},
    )
