"""The key schema that lets a recipe be checked before torch loads: equal to what the pinned TRL,
transformers and plugins declare, and used without importing them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from recipekit.config.help import GROUPS, help_text
from recipekit.config.parse import parse_recipe
from recipekit.config.schema import SCHEMA_FILE, build_schema, schema_text
from recipekit.errors import RecipeError
from tests.conftest import REPO_ROOT


def test_the_committed_schema_equals_the_installed_libraries_fields():
    """Fails when TRL or transformers change a field; `python -m recipekit.config.schema` rewrites it."""
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text(build_schema())


def test_every_key_of_sftconfig_and_modelconfig_is_a_recipe_key_with_its_kinds():
    import dataclasses

    from trl import ModelConfig, SFTConfig

    schema = json.loads(SCHEMA_FILE.read_text())
    for config in (SFTConfig, ModelConfig):
        assert {f.name for f in dataclasses.fields(config) if f.init} <= set(schema)
    assert schema["learning_rate"]["kinds"] == ["float"] and schema["eval_strategy"]["choices"] == ["no", "steps", "epoch"]
    assert set(schema["include_num_input_tokens_seen"]["kinds"]) == {"str", "bool"}  # "non_padding" is expressible


CHECK_WITHOUT_LIBRARIES = textwrap.dedent(
    """
    import sys
    from recipes.run import main
    code = main(sys.argv[1:])
    heavy = sorted(m for m in ("torch", "transformers", "trl", "peft", "datasets") if m in sys.modules)
    print("CODE", code, "HEAVY", ",".join(heavy) or "none")
    """
)


@pytest.mark.parametrize(
    ("argv", "code", "says"),
    [
        (["{recipe}", "--lerning_rate", "1e-3"], 2, "Did you mean `learning_rate`?"),
        (["{recipe}", "--num_train_epochs", "many"], 2, "`num_train_epochs`: invalid float value: 'many'"),
        (["{recipe}", "--eval_strategy", "sometimes"], 2, "invalid choice 'sometimes'"),
        (["{recipe}", "--lora_r", "0"], 2, "`lora_r` is 0"),
        (["--help"], 0, "--learning_rate"),
        (["{recipe}", "--help"], 0, "--learning_rate float  [recipe: 0.01; TRL: 2e-05]"),
    ],
)
def test_a_bad_recipe_and_help_are_answered_without_importing_torch_or_trl(argv, code, says):
    recipe = str(REPO_ROOT / "recipes" / "smoke.yaml")
    done = subprocess.run([sys.executable, "-c", CHECK_WITHOUT_LIBRARIES, *[a.format(recipe=recipe) for a in argv]],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert f"CODE {code} HEAVY none" in done.stdout, done.stdout + done.stderr[-2000:]
    assert says in done.stdout + done.stderr


def test_help_leads_with_the_keys_people_change_and_names_the_defaults_source():
    text = help_text({"learning_rate": 2.0e-4})
    order = [text.index(f"{group}:\n") for group in GROUPS]
    assert order == sorted(order)  # model, data, LoRA, optimisation, evaluation, output
    assert "--learning_rate float  [recipe: 0.0002; TRL: 2e-05]" in text
    assert "--data_dir str  [project: data/fiqa]" in text and "--use_peft bool  [project: true]" in text
    assert "more keys of TRL's SFTConfig" in text and "--help all" in text
    assert len(text.splitlines()) < 200
    everything = help_text(None, everything=True)
    assert "--neftune_noise_alpha" in everything and "--neftune_noise_alpha" not in text


@pytest.mark.parametrize(
    ("override", "attribute", "expected"),
    [
        (["--include_num_input_tokens_seen", "non_padding"], ("training", "include_num_input_tokens_seen"), "non_padding"),
        (["--include_num_input_tokens_seen", "true"], ("training", "include_num_input_tokens_seen"), "all"),
        (["--lora_target_modules", "q_proj", "v_proj"], ("model", "lora_target_modules"), ["q_proj", "v_proj"]),
        (["--model_init_kwargs", '{"low_cpu_mem_usage": true}'], ("training", "model_init_kwargs"), {"low_cpu_mem_usage": True}),
        (["--max_length", "None"], ("training", "max_length"), None),
        (["--report_to", "none"], ("training", "report_to"), []),
        (["--activation_checkpointing"], ("training", "activation_checkpointing"), True),
        (["--per-device-train-batch-size=2"], ("training", "per_device_train_batch_size"), 2),
    ],
)
def test_override_values_follow_trl_rules(override, attribute, expected):
    recipe = parse_recipe([str(REPO_ROOT / "recipes" / "smoke.yaml"), *override], check_environment=False)
    config, name = attribute
    assert getattr(getattr(recipe, config), name) == expected


@pytest.mark.parametrize(
    ("override", "says"),
    [
        (["--lora_r", "8", "16"], "`lora_r` takes one value, not 2"),
        (["--lora_r"], "`lora_r` needs a value on the command line"),
        (["stray"], "unexpected value `stray` on the command line"),
        (["--bf16", "maybe"], "`bf16`: invalid bool value: 'maybe'"),
        (["--model_init_kwargs", "{not json"], "`model_init_kwargs`: invalid dict value"),
    ],
)
def test_override_mistakes_are_named(override, says):
    with pytest.raises(RecipeError, match=says):
        parse_recipe([str(REPO_ROOT / "recipes" / "smoke.yaml"), *override], check_environment=False)
