"""Recipe parsing: YAML + overrides, unknown keys, bad values, and the shipped recipes' settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from recipekit.config.parse import DEFAULT_RECIPE, RecipeError, parse_recipe
from recipes.run import main
from tests.conftest import REPO_ROOT

RECIPES = REPO_ROOT / "recipes"
# The GPU recipes ask for bf16; parsing them on a CPU needs use_cpu, which changes nothing else.
ON_CPU = ["--use_cpu", "true"]


def write_recipe(tmp_path: Path, text: str) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return str(path)


def test_command_line_overrides_recipe_values(tmp_path):
    path = write_recipe(tmp_path, "model_name_or_path: m\nlearning_rate: 2.0e-4\nlora_r: 8\npacking: false\nbf16: false\ndata_dir: a\n")
    recipe = parse_recipe(
        [path, "--learning_rate", "1e-3", "--packing", "true", "--data_dir", "b", "--max_length", "64"],
        check_environment=False,
    )
    assert recipe.training.learning_rate == 1e-3
    assert recipe.training.packing is True
    assert recipe.training.max_length == 64
    assert recipe.recipe.data_dir == "b"
    assert recipe.model.lora_r == 8  # untouched recipe value
    assert recipe.resolved["learning_rate"] == 1e-3 and recipe.resolved["max_length"] == 64
    assert recipe.name == "recipe"


def test_settings_transformers_turns_into_objects_are_recorded_as_plain_values(tmp_path):
    """transformers builds an AcceleratorConfig from `accelerator_config`; the run's recipe.yaml,
    its manifest and a resume's comparison need the values it holds, which a rerun parses alike."""
    import json

    import yaml

    path = write_recipe(tmp_path, "model_name_or_path: m\nbf16: false\ndata_dir: a\n")
    recipe = parse_recipe([path, "--accelerator_config", '{"non_blocking": true}'], check_environment=False)
    assert recipe.training.accelerator_config.non_blocking is True
    assert recipe.resolved["accelerator_config"] == {"non_blocking": True}  # the values set, not every default
    text = yaml.safe_dump(recipe.resolved)  # a settings object here would raise
    assert json.loads(json.dumps(recipe.resolved)) == recipe.resolved
    rerun = write_recipe(tmp_path / "..", text)
    assert parse_recipe([rerun], check_environment=False).resolved == recipe.resolved


def test_a_resume_reads_a_settings_object_an_earlier_version_recorded_as_text(tmp_path):
    import json

    from recipekit.rundir.manifest import MANIFEST_NAME, resume_differences

    path = write_recipe(tmp_path, f"model_name_or_path: m\nbf16: false\ndata_dir: a\noutput_dir: {tmp_path / 'run'}\n")
    recipe = parse_recipe([path, "--accelerator_config", '{"non_blocking": true}'], check_environment=False)
    (tmp_path / "run").mkdir()
    manifest = tmp_path / "run" / MANIFEST_NAME
    as_text = {**recipe.resolved, "accelerator_config": str(recipe.training.accelerator_config)}
    manifest.write_text(json.dumps({"recipe": as_text}))
    assert resume_differences(recipe, {}) == []
    other = parse_recipe([path], check_environment=False)  # the default, blocking copies
    changes = resume_differences(other, {})
    assert len(changes) == 1 and changes[0].startswith("`accelerator_config` 'AcceleratorConfig(")


def test_a_requeued_rerun_that_spells_its_paths_another_way_resumes_the_same_run(tmp_path, monkeypatch):
    """A requeued job reruns the command from another folder, or with absolute paths: the same
    output_dir, data and model folder, spelled otherwise, are the same run; a changed setting is not."""
    import json

    from recipekit.rundir.manifest import MANIFEST_NAME, resume_differences

    (tmp_path / "runs" / "x").mkdir(parents=True)
    (tmp_path / "models" / "m").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    first = parse_recipe([write_recipe(tmp_path, "model_name_or_path: models/m\nbf16: false\ndata_dir: data/fiqa\n"
                                                 "output_dir: runs/x\n")], check_environment=False)
    (tmp_path / "runs" / "x" / MANIFEST_NAME).write_text(json.dumps({"recipe": first.resolved,
                                                                    "working_dir": str(tmp_path)}))
    monkeypatch.chdir(tmp_path / "runs")  # the rerun starts elsewhere and names everything absolutely
    again = parse_recipe([write_recipe(tmp_path / "runs", f"model_name_or_path: {tmp_path}/models/./m\nbf16: false\n"
                                                          f"data_dir: /mnt/new/fiqa\noutput_dir: ./x\n")],
                         check_environment=False)
    assert resume_differences(again, {}) == []
    changed = parse_recipe([write_recipe(tmp_path / "runs", f"model_name_or_path: {tmp_path}/models/m\nbf16: false\n"
                                                            "output_dir: ./x\nlearning_rate: 0.5\n")],
                           check_environment=False)
    assert [c.split()[0] for c in resume_differences(changed, {})] == ["`learning_rate`"]


@pytest.mark.parametrize("manifest", ["{torn", "[1, 2]", "DIRECTORY"])
def test_an_unreadable_manifest_does_not_switch_the_resume_check_off(tmp_path, manifest):
    from recipekit.rundir.manifest import MANIFEST_NAME, resume_differences

    path = write_recipe(tmp_path, f"model_name_or_path: m\nbf16: false\noutput_dir: {tmp_path / 'run'}\n")
    recipe = parse_recipe([path], check_environment=False)
    (tmp_path / "run").mkdir()
    assert resume_differences(recipe, {}) == []  # no manifest yet: a run killed before writing one
    if manifest == "DIRECTORY":
        (tmp_path / "run" / MANIFEST_NAME).mkdir()
    else:
        (tmp_path / "run" / MANIFEST_NAME).write_text(manifest)
    (change,) = resume_differences(recipe, {})
    assert change.startswith(f"its {MANIFEST_NAME}, which records what that run trained, ")
    assert "nothing shows that this recipe and data are the ones it trained with" in change


def test_yaml_scientific_notation_without_dot_is_a_float(tmp_path):
    # PyYAML reads `2e-4` as a string; the parser converts it like a command-line value.
    recipe = parse_recipe([write_recipe(tmp_path, "model_name_or_path: m\nlearning_rate: 2e-4\nbf16: false\n")], check_environment=False)
    assert recipe.training.learning_rate == pytest.approx(2e-4)


GOOD = "model_name_or_path: m\nbf16: false\n"

# Each row: a bad recipe (YAML text + command-line overrides) and the message that must name it.
BAD_RECIPES = [
    ("misspelt key", GOOD + "learnig_rate: 1.0e-4\n", [], "unknown key `learnig_rate` in the recipe. Did you mean `learning_rate`?"),
    ("misspelt override", GOOD, ["--lora_alhpa", "4"], "unknown key `lora_alhpa` on the command line. Did you mean `lora_alpha`?"),
    ("key removed from TRL", GOOD + "evaluation_strategy: steps\n", [], "Did you mean `eval_strategy`?"),
    ("key renamed in TRL", GOOD + "max_seq_length: 512\n", [], "Did you mean `max_length`?"),
    ("wrong type (override)", GOOD, ["--learning_rate", "fast"], "`learning_rate`: invalid float value: 'fast'"),
    ("wrong type (recipe)", GOOD + "num_train_epochs: many\n", [], "`num_train_epochs`: invalid float value: 'many'"),
    ("bad choice", GOOD + "eval_strategy: sometimes\n", [], "`eval_strategy`: invalid choice 'sometimes' (choose from no, steps, epoch)"),
    ("bad choice, long list", GOOD + "lr_scheduler_type: cosin\n", [], "invalid choice 'cosin' (closest: cosine"),
    ("learning rate out of range", GOOD + "learning_rate: 3\n", [], "`learning_rate` is 3: use a value in (0, 1)"),
    ("zero batch", GOOD, ["--per_device_train_batch_size", "0"], "`per_device_train_batch_size` is 0: it must be at least 1"),
    ("LoRA rank zero", GOOD + "lora_r: 0\n", [], "`lora_r` is 0: the LoRA rank must be at least 1"),
    ("dropout out of range", GOOD + "lora_dropout: 1.5\n", [], "`lora_dropout` is 1.5: use a value in [0, 1)"),
    ("nothing to train", GOOD + "num_train_epochs: 0\n", [], "nothing to train"),
    ("packing without max_length", GOOD + "packing: true\n", ["--max_length", "None"], "`packing: true` needs `max_length`"),
    ("4 and 8 bit", GOOD + "load_in_4bit: true\nload_in_8bit: true\n", [], "`load_in_4bit` and `load_in_8bit` are both on"),
    ("best model without evaluation", GOOD + "load_best_model_at_end: true\n", [],
     "`load_best_model_at_end: true` needs evaluation to choose the best checkpoint"),
    ("best model, schedules differ", GOOD + "load_best_model_at_end: true\neval_strategy: steps\nsave_strategy: epoch\n", [],
     "`save_strategy` is epoch and `eval_strategy` is steps"),
    ("best model, steps misaligned", GOOD + "load_best_model_at_end: true\neval_strategy: steps\neval_steps: 10\nsave_steps: 15\n", [],
     "`save_steps` (15) is not a multiple of `eval_steps` (10)"),
    ("fp16 adapters", GOOD + "autocast_adapter_dtype: false\n", ["--fp16", "true", "--bf16", "false"],
     "`autocast_adapter_dtype: false` with `fp16: true` would train float16 adapter weights"),
    ("no model", "bf16: false\n", [], "`model_name_or_path` is not set"),
    ("not a mapping", "- a\n- b\n", [], "must be a mapping of `key: value` lines"),
    ("not YAML", "a: [\n", [], "is not valid YAML"),
]


@pytest.mark.parametrize(("kind", "text", "argv", "expected"), BAD_RECIPES, ids=[row[0] for row in BAD_RECIPES])
def test_bad_recipes_raise_a_recipe_error_naming_the_problem(tmp_path, kind, text, argv, expected):
    with pytest.raises(RecipeError) as info:
        parse_recipe([write_recipe(tmp_path, text), *argv], check_environment=False)
    assert expected in str(info.value)


ENVIRONMENT_PROBLEMS = [
    ("missing training data", ["--data_dir", "{tmp}/none"], "python -m preprocess.fiqa --out {tmp}/none"),
    ("evaluation without evaluation data", ["--data_dir", "{tmp}/train-only", "--eval_strategy", "steps"],
     "evaluation is on (`eval_strategy: steps`) but the evaluation data"),
    ("resume from a missing checkpoint", ["--data_dir", "{tmp}/train-only", "--resume_from_checkpoint", "{tmp}/ckpt-9"],
     "is not a folder"),
    ("4-bit without a GPU", ["--data_dir", "{tmp}/train-only", "--load_in_4bit", "true"],
     "bitsandbytes quantization (load_in_4bit / load_in_8bit)"),
    ("bf16 without a GPU", ["--data_dir", "{tmp}/train-only", "--bf16", "true"], "bf16 mixed precision, which needs a CUDA GPU"),
]


@pytest.mark.parametrize(("kind", "argv", "expected"), ENVIRONMENT_PROBLEMS, ids=[row[0] for row in ENVIRONMENT_PROBLEMS])
def test_recipes_that_cannot_run_here_are_refused_before_loading(tmp_path, kind, argv, expected):
    import torch

    if "GPU" in kind and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")  # CI and the dev machines have none
    (tmp_path / "train-only").mkdir()
    (tmp_path / "train-only" / "train.jsonl").write_text('{"prompt": "p", "completion": " c"}\n')
    path = write_recipe(tmp_path, GOOD)
    with pytest.raises(RecipeError) as info:
        parse_recipe([path, *[a.format(tmp=tmp_path) for a in argv]])
    assert expected.format(tmp=tmp_path) in str(info.value)


def test_every_problem_is_reported_at_once(tmp_path):
    text = GOOD + "learnig_rate: 1\nlora_r: 0\nnum_train_epochs: many\neval_strategy: sometimes\n"
    with pytest.raises(RecipeError) as info:
        parse_recipe([write_recipe(tmp_path, text), "--per_device_train_batch_size", "0", "--lora_alhpa", "2"],
                     check_environment=False)
    message = str(info.value)
    assert "has 6 problems" in message
    for expected in ("`learnig_rate`", "`lora_r` is 0", "`num_train_epochs`: invalid", "`eval_strategy`: invalid",
                     "`per_device_train_batch_size` is 0", "`lora_alhpa`"):
        assert expected in message


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        parse_recipe([str(tmp_path / "nope.yaml")])


def test_no_recipe_means_the_smoke_recipe():
    assert parse_recipe([]).path == DEFAULT_RECIPE == RECIPES / "smoke.yaml"


def test_main_reports_errors_in_one_line_and_exits_non_zero(tmp_path, capsys):
    assert main([write_recipe(tmp_path, "lora_alpah: 16\n")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Did you mean `lora_alpha`?" in err and "Traceback" not in err


def test_missing_data_names_the_preprocess_command(tmp_path, tiny_model_dir, capsys):
    argv = [
        str(RECIPES / "smoke.yaml"),
        "--build_smoke_assets", "false",
        "--model_name_or_path", str(tiny_model_dir),
        "--data_dir", str(tmp_path / "nothing-here"),
        "--output_dir", str(tmp_path / "run"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"python -m preprocess.fiqa --out {tmp_path / 'nothing-here'}" in err and "Traceback" not in err


def test_gpu_recipe_on_a_cpu_machine_says_what_to_do(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")  # CI and the dev machines have none
    assert main([str(RECIPES / "nemotron_fiqa_qlora.yaml")]) == 2
    err = capsys.readouterr().err
    assert "needs a CUDA GPU" in err and "--bf16 false" in err


def test_qlora_on_cpu_is_refused_before_loading(tmp_path, capsys):
    argv = [str(RECIPES / "nemotron_fiqa_qlora.yaml"), *ON_CPU, "--bf16", "false", "--output_dir", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "bitsandbytes quantization" in err and "python -m preprocess.fiqa --out data/fiqa" in err


def test_qlora_recipe_settings():
    recipe = parse_recipe([str(RECIPES / "nemotron_fiqa_qlora.yaml"), *ON_CPU], check_environment=False)
    model, args = recipe.model, recipe.training
    assert model.model_name_or_path == "nvidia/Llama-3.1-Nemotron-Nano-8B-v1"
    assert model.load_in_4bit and model.bnb_4bit_quant_type == "nf4" and model.use_bnb_nested_quant
    assert model.dtype == "bfloat16"
    assert (model.lora_r, model.lora_alpha, model.lora_dropout) == (8, 32, 0.0)
    assert model.lora_target_modules == "all-linear"
    assert args.learning_rate == 2e-4 and args.lr_scheduler_type.value == "cosine"
    assert "adamw" in args.optim.value
    # Packed: one 7680-token pack per step (~27 FiQA examples), padding-free, flex attention.
    assert args.packing is True and args.packing_strategy == "bfd" and args.max_length == 7680
    assert model.attn_implementation == "flex_attention" and args.use_liger_kernel is True
    assert recipe.recipe.fused_lora_forward is True
    assert args.num_train_epochs == 3
    assert args.activation_checkpointing is False  # no recompute: the 7680-token packs fit 40 GiB without it
    assert args.eval_strategy.value == "steps" and args.load_best_model_at_end
    assert args.metric_for_best_model == "eval_loss" and args.save_total_limit
    assert args.completion_only_loss is True
    assert args.pad_token == "<|finetune_right_pad_id|>" and args.eos_token == "<|eot_id|>"
    # No trainer token count (a host sync every step); the throughput plugin divides TRL's num_tokens.
    assert args.include_num_input_tokens_seen == "no" and "plugins.throughput.Throughput" in recipe.resolved["plugins"]


def test_lora_recipe_differs_only_where_it_should():
    qlora = parse_recipe([str(RECIPES / "nemotron_fiqa_qlora.yaml"), *ON_CPU], check_environment=False).resolved
    lora = parse_recipe([str(RECIPES / "nemotron_fiqa_lora.yaml"), *ON_CPU], check_environment=False).resolved
    assert lora["lora_target_modules"] == ["q_proj", "k_proj", "v_proj"]
    assert "load_in_4bit" not in lora
    differing = {k for k in qlora.keys() | lora.keys() if qlora.get(k) != lora.get(k)}
    assert differing == {
        "load_in_4bit", "bnb_4bit_quant_type", "use_bnb_nested_quant", "bnb_4bit_quant_storage", "lora_target_modules",
        "output_dir",
        "max_length",  # LoRA: 8192-token packs (QLoRA: 7680, to stay under 40 GiB)
        "autocast_adapter_dtype",  # LoRA: bf16 adapters (TRL already casts QLoRA's to bf16)
        "attn_implementation",  # LoRA: PyTorch's varlen flash kernel (QLoRA: flex attention, faster there)
        "fused_lora_qkv",  # LoRA: q/k/v in one autograd node (a plain bf16 base; QLoRA's is 4-bit)
    }
    assert lora["attn_implementation"] == "torch_varlen" and lora["fused_lora_forward"] is True
    assert lora["fused_lora_qkv"] is True
    for resolved in (qlora, lora):  # the batch's copy to the GPU does not wait for the step before
        assert resolved["accelerator_config"]["non_blocking"] is True
    assert lora["autocast_adapter_dtype"] is False


def test_lean_qlora_recipe_only_adds_full_checkpointing():
    qlora = parse_recipe([str(RECIPES / "nemotron_fiqa_qlora.yaml"), *ON_CPU], check_environment=False).resolved
    lean = parse_recipe([str(RECIPES / "nemotron_fiqa_qlora_lean.yaml"), *ON_CPU], check_environment=False).resolved
    differing = {k for k in qlora.keys() | lean.keys() if qlora.get(k) != lean.get(k)}
    assert differing == {"max_length", "activation_checkpointing", "output_dir"}
    assert lean["activation_checkpointing"] is True and "activation_checkpointing_kwargs" not in lean  # every layer
    assert lean["max_length"] == 8192


def nemotron_shaped_meta_model():
    """Llama-3.1-Nemotron-Nano-8B-v1's exact shape, on the meta device (no memory, no weights)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
        intermediate_size=14336, vocab_size=128256, max_position_embeddings=131072,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192,
                      "low_freq_factor": 1.0, "high_freq_factor": 4.0},
    )
    with torch.device("meta"):
        return LlamaForCausalLM(config)


@pytest.mark.parametrize(
    ("recipe_file", "trainable", "percent"),
    [("nemotron_fiqa_qlora.yaml", 20_971_520, 0.26), ("nemotron_fiqa_lora.yaml", 4_718_592, 0.059)],
)
def test_recipe_lora_trains_the_documented_parameter_count(recipe_file, trainable, percent):
    from peft import get_peft_model

    from recipekit.training.model import build_peft_and_quantization

    recipe = parse_recipe([str(RECIPES / recipe_file), *ON_CPU], check_environment=False)
    peft_config, _ = build_peft_and_quantization(recipe.model)
    model = get_peft_model(nemotron_shaped_meta_model(), peft_config)
    count, total = model.get_nb_trainable_parameters()
    assert count == trainable
    assert round(100 * count / total, 3 if percent < 0.1 else 2) == percent


def test_help_lists_recipe_keys():
    result = subprocess.run(
        [sys.executable, "-m", "recipes.run", "--help"], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120
    )
    assert result.returncode == 0
    assert "--learning_rate" in result.stdout and "--data_dir" in result.stdout and "--lora_r" in result.stdout


def test_building_refuses_4bit_without_a_gpu_even_when_validation_was_skipped(tmp_path):
    import torch

    from recipekit.training.trainer import build_trainer

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")  # CI and the dev machines have none
    recipe = parse_recipe([str(RECIPES / "smoke.yaml"), "--load_in_4bit", "true", "--output_dir", str(tmp_path)],
                          check_environment=False)
    with pytest.raises(RecipeError, match=r"bitsandbytes quantization \(load_in_4bit / load_in_8bit\)"):
        build_trainer(recipe)


def test_a_model_that_cannot_be_loaded_is_named_without_a_traceback(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text('{"prompt": "p", "completion": " c"}\n')
    argv = [str(RECIPES / "smoke.yaml"), "--build_smoke_assets", "false", "--model_name_or_path",
            str(tmp_path / "no-such-model"), "--data_dir", str(tmp_path / "data"), "--eval_strategy", "no",
            "--load_best_model_at_end", "false", "--output_dir", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"could not load '{tmp_path / 'no-such-model'}'" in err and "model_name_or_path" in err
    assert "Traceback" not in err


def test_fsdp_launch_of_a_4bit_recipe_needs_a_floating_point_storage(monkeypatch):
    from types import SimpleNamespace

    from recipekit.config.parse import parse_recipe
    from recipekit.config.validate import check_launch
    from recipekit.training.model import fsdp_device_map

    qlora = {"load_in_4bit": True, "bnb_4bit_quant_storage": "uint8"}
    assert check_launch(qlora) == []  # no FSDP: any storage works
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    (no_gpu,) = check_launch({"load_in_4bit": False, "bnb_4bit_quant_storage": None})  # this CPU machine
    assert "FSDP config, but no CUDA GPU is visible" in no_gpu and "cpu_multi_process.yaml" in no_gpu
    monkeypatch.setattr("recipekit.config.validate.gpu_available", lambda: True)
    (problem,) = check_launch(qlora)
    assert "stores its weights as uint8" in problem and "bnb_4bit_quant_storage: bfloat16" in problem
    assert check_launch({**qlora, "bnb_4bit_quant_storage": "bfloat16"}) == []
    assert check_launch({"load_in_4bit": False, "bnb_4bit_quant_storage": None}) == []
    for name in ("nemotron_fiqa_qlora.yaml", "nemotron_fiqa_qlora_lean.yaml"):
        recipe = parse_recipe([str(RECIPES / name), *ON_CPU], check_environment=False)
        assert recipe.model.bnb_4bit_quant_storage == "bfloat16"
    # where each FSDP process loads the model: a 4-bit copy on its own GPU, a bf16 one on the CPU
    assert fsdp_device_map(SimpleNamespace(load_in_4bit=True, load_in_8bit=False)) == {"": 0}
    assert fsdp_device_map(SimpleNamespace(load_in_4bit=False, load_in_8bit=False)) is None


def test_the_chat_recipe_is_the_qlora_recipe_in_nemotron_chat_format():
    qlora = parse_recipe([str(RECIPES / "nemotron_fiqa_qlora.yaml"), *ON_CPU], check_environment=False).resolved
    chat = parse_recipe([str(RECIPES / "nemotron_fiqa_chat_qlora.yaml"), *ON_CPU], check_environment=False).resolved
    changed = {k for k in set(qlora) | set(chat) if qlora.get(k) != chat.get(k)}
    assert changed == {"data_dir", "output_dir", "plugins", "generation_eval_questions", "generation_eval_max_new_tokens"}
    assert chat["data_dir"] == "data/fiqa-nemotron-chat" and "plugins.generation_eval.GenerationEval" in chat["plugins"]


@pytest.mark.slow
def test_an_unreachable_hub_is_named_within_seconds(tmp_path, fiqa_jsonl_dir):
    """No HF_HUB_OFFLINE, a hub id not in the cache, and a hub that does not answer: one error, fast."""
    import os
    import time

    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf-home"),
           "PYTHONPATH": str(REPO_ROOT)}
    env.pop("HF_HUB_OFFLINE", None)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "recipes.run", str(RECIPES / "smoke.yaml"), "--build_smoke_assets", "false",
         "--model_name_or_path", "someone/not-cached-model", "--data_dir", str(fiqa_jsonl_dir)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "hub (http://127.0.0.1:9) cannot be reached" in result.stderr and "HF_HUB_OFFLINE=1" in result.stderr
    assert time.monotonic() - started < 60  # start-up included; the retries took ~75 s before


def test_model_init_kwargs_are_the_ones_trl_sft_builds():
    """recipekit.training.model.model_init_kwargs repeats the model-init block of TRL's `trl sft` script
    (there is no function to call); evaluate that block's own expressions here, so any change in
    TRL's keys or values fails this test."""
    import ast
    import inspect

    import trl.scripts.sft as sft

    from recipekit.training.model import model_init_kwargs

    tree = ast.parse(inspect.getsource(sft))
    block = next(node.value for node in ast.walk(tree) if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                 and any(getattr(t, "id", None) == "model_init_kwargs" for t in node.targets))
    recipe = parse_recipe([str(RECIPES / "smoke.yaml"), "--model_init_kwargs", '{"low_cpu_mem_usage": true}'],
                          check_environment=False)
    names = {"model_args": recipe.model, "training_args": recipe.training}
    expected = {kw.arg: eval(compile(ast.Expression(kw.value), "sft.py", "eval"), names) for kw in block.keywords}
    expected.update(recipe.training.model_init_kwargs)  # as sft.py: the recipe's own kwargs on top
    assert model_init_kwargs(recipe.model, recipe.training) == expected


ALIAS_BOMB = b"a: &a [x, x, x, x, x, x, x, x, x]\n" + b"".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n".encode() for i in range(9))  # 9**10 values


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"model_name_or_path: m\n# recip\xe9 in Latin-1\n", "is not UTF-8 text (byte 0xe9"),
        ("model_name_or_path: m\n".encode("utf-16"), "is UTF-16 text; save it as UTF-8"),
        (b"model_name_or_path: m\noutput_dir: a\noutput_dir: b\n", "key `output_dir` appears twice (lines 2 and 3)"),
        (b"model_name_or_path: m\nx: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nests its values too deeply"),
        (b"model_name_or_path: m\x00\n", "holds the control character '\\x00'"),
        (b"model_name_or_path: m\nnum_train_epochs: .inf\n", "`num_train_epochs` is inf: it must be a finite number"),
        (b"model_name_or_path: m\nmax_grad_norm: .nan\n", "`max_grad_norm` is nan: it must be a finite number"),
        (b"model_name_or_path: m\nseed: 99999999999\n", "`seed` is 99999999999: use a value in [0, 2**32)"),
        (ALIAS_BOMB, "expands, through its YAML anchors and aliases (&name / *name), into more than 100,000 values"),
        (b"model_name_or_path: m\n" + b"# padding\n" * 200_000, "is 2 MiB; a recipe is a page of `key: value` lines"),
    ],
    ids=["latin-1", "utf-16", "duplicate key", "deep nesting", "NUL", "inf", "nan", "seed", "alias bomb", "huge file"],
)
def test_a_malformed_recipe_file_is_named_in_one_paragraph(tmp_path, content, says):
    path = tmp_path / "recipe.yaml"
    path.write_bytes(content)
    with pytest.raises(RecipeError) as info:
        parse_recipe([str(path)], check_environment=False)
    assert says in str(info.value)


def test_a_folder_given_as_the_recipe_is_named(tmp_path):
    with pytest.raises(RecipeError, match="is a folder, not a file"):
        parse_recipe([str(tmp_path)], check_environment=False)


def test_text_values_must_be_text(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text('model_name_or_path: m\nrecipe_name: "a\\ud800b"\n')
    with pytest.raises(RecipeError, match="`recipe_name` holds an unpaired surrogate escape"):
        parse_recipe([str(path)], check_environment=False)


def test_a_folder_where_the_run_keeps_its_manifest_is_named(tmp_path):
    (tmp_path / "run" / "run_manifest.json").mkdir(parents=True)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text('{"prompt": "p", "completion": " c"}\n')
    with pytest.raises(RecipeError, match="run_manifest.json is a folder where the run keeps a file"):
        parse_recipe([str(RECIPES / "smoke.yaml"), "--output_dir", str(tmp_path / "run"), "--data_dir",
                      str(tmp_path / "data"), "--build_smoke_assets", "false", "--eval_strategy", "no",
                      "--load_best_model_at_end", "false"])


def test_what_a_shared_recipe_does_beyond_training_is_named():
    from recipekit.config.notices import outside_effects
    from recipekit.config.schema import BUILTIN_PLUGINS

    values = {"trust_remote_code": True, "model_name_or_path": "org/model", "push_to_hub": True,
              "hub_model_id": "me/adapter", "report_to": ["tensorboard", "wandb"]}
    said = outside_effects(values, ["plugins.loss_curves.LossCurves", "json.JSONDecoder"], BUILTIN_PLUGINS)
    assert said[0].startswith("runs plugin code from outside the project: `json.JSONDecoder` (")
    assert "json/__init__.py" in said[0]
    assert said[1:] == ["runs the Python files of the model `org/model` (`trust_remote_code: true`)",
                        "uploads the finished run (adapter, card, recipe, manifest, metrics) to the Hugging Face Hub "
                        "as `me/adapter` (`push_to_hub: true`)",
                        "sends its metrics to wandb (`report_to`)"]
    quiet = {"trust_remote_code": False, "push_to_hub": False, "report_to": "tensorboard"}
    assert outside_effects(quiet, ["plugins.loss_curves.LossCurves"], BUILTIN_PLUGINS) == []


def test_a_plugin_from_outside_the_project_is_named_before_its_code_runs(tmp_path, monkeypatch, capsys):
    (tmp_path / "shared_plugin.py").write_text(
        "import sys\nprint('PLUGIN CODE RAN', file=sys.stderr)\nfrom plugins.base import RecipePlugin\n"
        "class Shared(RecipePlugin):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    parse_recipe([str(RECIPES / "smoke.yaml"), "--plugins", "plugins.loss_curves.LossCurves", "shared_plugin.Shared"])
    err = capsys.readouterr().err
    notice = f"notice: recipe {RECIPES / 'smoke.yaml'} runs plugin code from outside the project: `shared_plugin.Shared`"
    assert notice in err and err.index(notice) < err.index("PLUGIN CODE RAN")


def test_push_to_hub_offline_is_refused_before_anything_loads(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RecipeError, match="`push_to_hub: true` uploads the finished run .* HF_HUB_OFFLINE is set"):
        parse_recipe([str(RECIPES / "smoke.yaml"), "--push_to_hub", "true", "--hub_model_id", "me/adapter"])
