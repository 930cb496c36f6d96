"""Evaluate, generate and merge on a run of the smoke recipe (tiny model, offline encoder)."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, train_smoke_in

SMOKE = str(REPO_ROOT / "recipes" / "smoke.yaml")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    """A finished smoke run; its relative paths resolve in this folder, which tests chdir into."""
    return train_smoke_in(tmp_path_factory.mktemp("eval-work"))


@pytest.fixture
def in_work_dir(smoke_run, monkeypatch):
    monkeypatch.chdir(smoke_run.parent.parent)
    return smoke_run


@pytest.mark.slow
def test_scores_are_what_they_claim():
    from recipekit.inference.scoring import rouge_l, semantic_similarity, summarise

    same = semantic_similarity(["An index fund holds a whole market."], ["An index fund holds a whole market."])
    assert same[0] == pytest.approx(1.0, abs=1e-4)
    related, unrelated = semantic_similarity(
        ["A bond is a loan to a company that pays interest.", "A bond is a loan to a company that pays interest."],
        ["Bonds are loans that pay you interest.", "My cat sleeps on the sofa all afternoon."],
    )
    assert related > unrelated + 0.3
    assert rouge_l(["the cat sat"], ["the cat sat"]) == [1.0] and rouge_l(["dog"], ["the cat sat"]) == [0.0]
    assert summarise([1.0, 2.0, 3.0, 4.0])["mean"] == 2.5


@pytest.mark.slow
def test_evaluate_reports_base_against_tuned(in_work_dir, capsys):
    from recipes.evaluate import main

    run = in_work_dir
    assert main([str(run), "--split", "validation", "--max_new_tokens", "24"]) == 0
    out = run / "eval-validation"
    report = json.loads((out / "eval_report.json").read_text())
    import hashlib

    assert report["adapter_sha256"] == hashlib.sha256((run / "adapter_model.safetensors").read_bytes()).hexdigest()
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    questions = [json.loads(line)["question"] for line in (run.parent / "smoke-assets/fiqa/validation.jsonl").read_text().splitlines()]

    assert report["questions"] == len(rows) == len(questions)
    assert [r["question"] for r in rows] == questions
    for side in ("base", "tuned"):
        assert report[side]["perplexity"] == pytest.approx(math.exp(report[side]["eval_loss"]), rel=1e-3)
        assert -1 <= report[side]["similarity"]["min"] <= report[side]["similarity"]["max"] <= 1
    assert report["tuned"]["eval_loss"] < report["base"]["eval_loss"]  # the adapter learned the fixture
    # Same format and masking as training: the tuned loss equals the run's own final eval loss.
    trained = json.loads((run / "all_results.json").read_text())["eval_loss"]
    assert report["tuned"]["eval_loss"] == pytest.approx(trained, abs=2e-3)
    assert all(isinstance(r["base"], str) and isinstance(r["tuned"], str) for r in rows)
    assert (out / "similarity.png").stat().st_size > 5000
    markdown = (out / "eval_report.md").read_text()
    assert "| eval loss |" in markdown and "## Examples" in markdown
    assert "| ROUGE-L (mean) |" in capsys.readouterr().out


def test_evaluate_limit_and_missing_split(in_work_dir, capsys):
    from recipes.evaluate import main

    assert main([str(in_work_dir), "--split", "test", "--limit", "2", "--max_new_tokens", "4",
                 "--out", str(in_work_dir / "eval-limited")]) == 0
    assert json.loads((in_work_dir / "eval-limited" / "eval_report.json").read_text())["questions"] == 2
    assert main([str(in_work_dir), "--split", "nope"]) == 2
    assert "nope.jsonl does not exist" in capsys.readouterr().err


def test_generation_uses_the_training_prompt_and_left_padding(in_work_dir):
    import torch

    from preprocess.prompt_format import build_prompt
    from recipekit.inference.answers import generate_answers, prompt_text
    from recipekit.inference.trained_run import (
        load_adapter_model,
        load_run_recipe,
        load_run_tokenizer,
    )

    recipe = load_run_recipe(in_work_dir)
    tokenizer = load_run_tokenizer(in_work_dir)
    model = load_adapter_model(in_work_dir, recipe)
    questions = ["What is a bond?", "How does an ETF work for a small investor?", "Should I care about inflation?"]
    assert prompt_text(questions[0], "completion", tokenizer) == build_prompt(questions[0])

    batched = generate_answers(model, tokenizer, questions, "completion", max_new_tokens=12, batch_size=3)
    one_by_one = generate_answers(model, tokenizer, questions, "completion", max_new_tokens=12, batch_size=1)
    assert batched == one_by_one  # left padding does not change greedy answers

    encoded = tokenizer(build_prompt(questions[0]), return_tensors="pt")
    with torch.no_grad():
        manual = model.generate(**encoded, max_new_tokens=12, do_sample=False,
                                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    expected = tokenizer.decode(manual[0, encoded["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    assert batched[0].text == expected


@pytest.mark.slow
def test_generation_shrinks_its_batch_on_out_of_memory_and_keeps_the_order(in_work_dir, monkeypatch):
    import torch

    from recipekit.inference.answers import generate_answers
    from recipekit.inference.trained_run import (
        load_adapter_model,
        load_run_recipe,
        load_run_tokenizer,
    )

    recipe = load_run_recipe(in_work_dir)
    tokenizer = load_run_tokenizer(in_work_dir)
    model = load_adapter_model(in_work_dir, recipe)
    questions = ["Why?", "What is a bond and who issues one?", "How does an ETF work for a small investor?",
                 "Is a Roth IRA worth it?", "Should I care about inflation?"]
    one_by_one = generate_answers(model, tokenizer, questions, "completion", max_new_tokens=8, batch_size=1)

    real_generate, batch_sizes = model.generate, []

    def generate_on_a_small_gpu(**inputs):  # a GPU that holds two questions at a time
        batch_sizes.append(inputs["input_ids"].shape[0])
        if inputs["input_ids"].shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_generate(**inputs)

    monkeypatch.setattr(model, "generate", generate_on_a_small_gpu)
    answers = generate_answers(model, tokenizer, questions, "completion", max_new_tokens=8, batch_size=8, progress=False)
    assert answers == one_by_one  # every question once, in the order asked
    # accelerate's find_executable_batch_size shrinks the batch after each failure until two fit
    assert batch_sizes[0] == 5 and batch_sizes[-3:] == [2, 2, 1], batch_sizes
    assert batch_sizes == sorted(batch_sizes, reverse=True), batch_sizes


def test_evaluate_refuses_batch_sizes_below_one(capsys):
    from recipes.evaluate import main

    assert main(["runs/anything", "--generation_batch_size", "0"]) == 2
    assert "--generation_batch_size is 0" in capsys.readouterr().err
    for wrong in ("many", "3.5", "\u00b2", "\u0663", ""):  # words, fractions, superscripts, other digits
        assert main(["runs/anything", "--generation_batch_size", wrong]) == 2
        assert f"--generation_batch_size is {wrong!r}; give a whole number of questions, or auto" in capsys.readouterr().err
    assert main(["runs/anything", "--generation_batch_size", "-3"]) == 2
    assert "--generation_batch_size is -3; it counts examples or tokens" in capsys.readouterr().err


@pytest.mark.parametrize(("given", "value"), [("auto", None), ("AUTO", None), (" 8 ", 8), ("+8", 8), ("648", 648)])
def test_generation_batch_size_values(given, value):
    from recipes.evaluate import generation_batch_size_value

    assert generation_batch_size_value(given) == value


def test_generation_batch_size_value_refuses_what_int_would_choke_on():
    from recipes.evaluate import generation_batch_size_value

    for wrong in ("--5", "+-5", "1e3", "0x10"):
        with pytest.raises(ValueError, match="give a whole number of questions, or auto"):
            generation_batch_size_value(wrong)


NEMOTRON_SHAPE = dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                      intermediate_size=14336, vocab_size=128256)


def test_bytes_per_question_counts_the_cache_the_prefill_and_the_logits():
    from transformers import LlamaConfig

    from recipekit.inference.answers import bytes_per_question

    config = LlamaConfig(**NEMOTRON_SHAPE)
    cache_per_token = 2 * 32 * 8 * 128 * 2  # keys and values, 32 layers, 8 KV heads of 128, bf16
    assert cache_per_token == 131072
    expected = (100 + 256) * cache_per_token + 100 * 4 * 14336 * 2 + 4 * 128256 * 4
    assert bytes_per_question(config, prompt_tokens=100, max_new_tokens=256) == expected


class FakeGpuModel:
    """Enough of a model for fitting_batch_size: bf16 parameters on CUDA devices, and a config."""

    def __init__(self, config=None, gpus=(0,)):
        import types

        import torch
        from transformers import LlamaConfig

        self.config = config if config is not None else LlamaConfig(**NEMOTRON_SHAPE)
        self.parameter_list = [types.SimpleNamespace(device=torch.device("cuda", gpu), dtype=torch.bfloat16,
                                                     is_floating_point=lambda: True) for gpu in gpus]

    def parameters(self):
        return iter(self.parameter_list)


def fake_gpu_memory(monkeypatch, free, reserved: int = 0, allocated: int = 0) -> None:
    """torch.cuda's memory figures as a card would give them: ``free`` bytes (or a function of the
    device), and the allocator's reserved and allocated bytes."""
    import torch

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free(device) if callable(free) else free, 0))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: reserved)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: allocated)


def test_auto_generation_batch_fills_free_gpu_memory_and_no_more(monkeypatch):
    from recipekit.inference.answers import (
        GPU_MEMORY_SHARE,
        bytes_per_question,
        fitting_batch_size,
    )

    model, gib = FakeGpuModel(), 2**30
    per_question = bytes_per_question(model.config, 120, 256)
    fake_gpu_memory(monkeypatch, 9 * gib, reserved=3 * gib, allocated=2 * gib)  # a 24 GB card
    fits = int((9 + 1) * gib * GPU_MEMORY_SHARE // per_question)  # free + the allocator's unused cache
    assert 100 < fits < 648
    assert fitting_batch_size(model, 648, 120, 256) == fits
    fake_gpu_memory(monkeypatch, 120 * gib, reserved=3 * gib, allocated=2 * gib)  # an H200
    assert fitting_batch_size(model, 648, 120, 256) == 648  # the whole FiQA test split in one batch
    fake_gpu_memory(monkeypatch, 0)
    assert fitting_batch_size(model, 648, 120, 256) == 1  # never zero: the out-of-memory path takes over


def test_auto_generation_batch_on_several_gpus_follows_the_fullest(monkeypatch):
    from recipekit.inference.answers import (
        GPU_MEMORY_SHARE,
        bytes_per_question,
        fitting_batch_size,
    )

    gib = 2**30
    model = FakeGpuModel(gpus=(0, 1))  # device_map="auto": layers split over two cards
    free = {0: 60 * gib, 1: 7 * gib}
    fake_gpu_memory(monkeypatch, lambda device: free[device.index])
    assert fitting_batch_size(model, 648, 120, 256) == int(7 * gib * GPU_MEMORY_SHARE // bytes_per_question(model.config, 120, 256))


def test_auto_generation_batch_for_configs_of_other_shapes(monkeypatch, capsys):
    from transformers import GPTNeoConfig, MambaConfig

    from recipekit.inference.answers import (
        FALLBACK_GENERATION_BATCH_SIZE,
        bytes_per_question,
        fitting_batch_size,
    )

    neo = GPTNeoConfig(hidden_size=256, num_layers=4, num_heads=8, vocab_size=1000,
                       attention_types=[[["global", "local"], 2]])  # intermediate_size None
    assert neo.intermediate_size is None
    assert bytes_per_question(neo, 10, 20) == 30 * (2 * 4 * 8 * 32 * 2) + 10 * 4 * (4 * 256) * 2 + 4 * 1000 * 4
    fake_gpu_memory(monkeypatch, 40 * 2**30)
    # A state-space model has no attention heads to size a KV cache from: the fixed batch, said once.
    assert fitting_batch_size(FakeGpuModel(MambaConfig()), 648, 120, 256) == FALLBACK_GENERATION_BATCH_SIZE
    assert "cannot be sized from MambaConfig" in capsys.readouterr().out


def test_auto_generation_batch_on_a_cpu(in_work_dir):
    from recipekit.inference.answers import (
        FALLBACK_GENERATION_BATCH_SIZE,
        fitting_batch_size,
    )
    from recipekit.inference.trained_run import load_adapter_model, load_run_recipe

    model = load_adapter_model(in_work_dir, load_run_recipe(in_work_dir))
    assert fitting_batch_size(model, 5, 40, 16) == 5
    assert fitting_batch_size(model, 1000, 40, 16) == FALLBACK_GENERATION_BATCH_SIZE


def test_scoring_embeds_the_references_once_for_both_sides(monkeypatch):
    import recipekit.inference.evaluation as evaluate

    calls = []
    real_embed = evaluate.embed

    def counting_embed(texts, encoder, device=None):
        calls.append(list(texts))
        return real_embed(texts, encoder, device="cpu")

    monkeypatch.setattr(evaluate, "embed", counting_embed)
    rows = [{"question": "q1", "reference": "Bonds pay interest.", "base": "Stocks.", "tuned": "Bonds pay coupons."},
            {"question": "q2", "reference": "An ETF trades on an exchange.", "base": "", "tuned": "ETFs trade."}]
    losses = {side: {"eval_loss": 1.0, "perplexity": 2.718} for side in ("base", "tuned")}
    report = evaluate.score_predictions(rows, losses)
    references = [r["reference"] for r in rows]
    assert calls.count(references) == 1 and len(calls) == 3  # references once, then each side's answers
    assert report["tuned"]["similarity"]["mean"] > report["base"]["similarity"]["mean"]
    assert rows[0]["similarity_tuned"] > rows[0]["similarity_base"]


def test_generate_cli(in_work_dir, tmp_path, capsys):
    from recipes.generate import main

    questions = tmp_path / "questions.txt"
    questions.write_text("What is a dividend?\n\nWhat is a mortgage?\n")
    assert main([str(in_work_dir), "What is an ETF?", "--file", str(questions), "--max_new_tokens", "8"]) == 0
    out = capsys.readouterr().out
    assert out.count("Question: ") == 3 and "Question: What is a mortgage?\nAnswer:" in out
    assert main([str(in_work_dir)]) == 2
    assert "no question given" in capsys.readouterr().err
    assert main([str(tmp_path), "What?"]) == 2
    assert "is not a finished run" in capsys.readouterr().err


def test_merge_gives_a_plain_model_with_the_same_outputs(in_work_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from recipekit.inference.trained_run import load_adapter_model, load_run_recipe
    from recipes.merge import main

    out = tmp_path / "merged"
    assert main([str(in_work_dir), "--out", str(out)]) == 0
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.pad_token == "<|finetune_right_pad_id|>"

    adapter_model = load_adapter_model(in_work_dir, load_run_recipe(in_work_dir))
    inputs = tokenizer("Question: What is a bond?\n\nAnswer:", return_tensors="pt")
    with torch.no_grad():
        expected = adapter_model(**inputs).logits
        actual = merged(**inputs).logits
    assert torch.allclose(actual, expected, atol=1e-4)
    with torch.no_grad(), adapter_model.disable_adapter():
        base = adapter_model(**inputs).logits
    assert not torch.allclose(actual, base, atol=1e-3)  # the merge changed the weights

    assert main([str(in_work_dir), "--out", str(out)]) == 2  # never overwrites silently


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "says"),
    [({"lora_alpha": "thirty-two"}, "has `lora_alpha` 'thirty-two', where a positive number belongs"),
     ({"r": 16}, "says rank 16, but the saved adapter matrices have rank 8"),
     ({"target_modules": 5}, "has `target_modules` 5, where module names belong"),
     ({"target_modules": ["no_such_proj"]}, "does not fit its base model")],
    ids=["text alpha", "another rank", "not names", "unknown modules"],
)
def test_a_damaged_adapter_config_is_one_error_in_every_reader(in_work_dir, tmp_path, capsys, change, says):
    from recipes.evaluate import main as evaluate
    from recipes.generate import main as generate
    from recipes.merge import main as merge

    run = tmp_path / "run"
    shutil.copytree(in_work_dir, run, ignore=shutil.ignore_patterns("checkpoint-*", "eval-*"))
    config = json.loads((run / "adapter_config.json").read_text())
    (run / "adapter_config.json").write_text(json.dumps({**config, **change}))
    for command in (lambda: evaluate([str(run), "--limit", "1"]), lambda: generate([str(run), "q"]),
                    lambda: merge([str(run), "--out", str(tmp_path / "merged")])):
        assert command() == 2
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err, err[-2000:]
    assert not (tmp_path / "merged").exists()


@pytest.mark.slow
def test_evaluate_and_merge_into_a_full_disk_are_one_paragraph(in_work_dir, tmp_path, monkeypatch, capsys):
    import errno

    import transformers

    import recipekit.inference.evaluation as evaluation
    from recipes.evaluate import main as evaluate
    from recipes.merge import main as merge

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(evaluation, "atomic_write_text", full)
    assert evaluate([str(in_work_dir), "--limit", "1", "--max_new_tokens", "4", "--out", str(tmp_path / "e")]) == 74
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith(f"error: the disk is full while writing {tmp_path / 'e'}")
    assert "Traceback" not in err
    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", lambda self, path, **kw: full(path))
    assert merge([str(in_work_dir), "--out", str(tmp_path / "merged")]) == 74
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: the disk is full while writing") and "Traceback" not in err
    assert not (tmp_path / "merged").exists()


def test_a_run_folder_that_a_run_is_training_into_is_refused_by_every_reader(tmp_path, capsys):
    """evaluate, generate and merge read the adapter a run in progress will replace: they wait for it."""
    from recipekit.rundir.lock import RunLock
    from recipes.evaluate import main as evaluate
    from recipes.generate import main as generate
    from recipes.merge import main as merge

    run = tmp_path / "runs" / "smoke"
    lock = RunLock(run)
    lock.acquire()  # this process, alive: a run in progress
    try:
        for command in (lambda: evaluate([str(run)]), lambda: generate([str(run), "q"]),
                        lambda: merge([str(run), "--out", str(tmp_path / "merged")])):
            assert command() == 2
            assert f"a run is training into {run} now (pid {os.getpid()}" in capsys.readouterr().err
    finally:
        lock.release()
    assert evaluate([str(run)]) == 2  # free again: now refused only for what the folder lacks
    assert "is not a finished run" in capsys.readouterr().err


@pytest.mark.parametrize("out", ["RUN", "RUN/merged", "RUN/..", "."])
def test_merge_refuses_an_out_folder_that_is_inside_or_holds_the_run(tmp_path, monkeypatch, capsys, out):
    """With --overwrite, --out is replaced: the run itself must never be what is replaced."""
    from recipes.merge import main

    run = tmp_path / "runs" / "smoke"
    run.mkdir(parents=True)
    kept = {name: f"{name} of the run" for name in ("adapter_model.safetensors", "run_manifest.json", "recipe.yaml")}
    for name, text in kept.items():
        (run / name).write_text(text)
    monkeypatch.chdir(run.parent)
    assert main([str(run), "--out", out.replace("RUN", str(run)), "--overwrite"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: --out ") and "would be lost" in error and "Traceback" not in error
    assert {p.name: p.read_text() for p in run.iterdir()} == kept


def test_merge_keeps_the_recipe_dtype_on_a_cpu(in_work_dir, tmp_path):
    """A bf16 run merged on a CPU machine gives a bf16 model, the size of its base, not float32."""
    import shutil

    import yaml
    from safetensors import safe_open

    from recipes.merge import main

    run = tmp_path / "bf16-run"
    shutil.copytree(in_work_dir, run, ignore=shutil.ignore_patterns("checkpoint-*", "eval-*"))
    recipe_text = (run / "recipe.yaml").read_text()
    (run / "recipe.yaml").write_text(yaml.safe_dump({**yaml.safe_load(recipe_text), "dtype": "bfloat16"}))
    assert main([str(run), "--out", str(tmp_path / "merged")]) == 0
    with safe_open(str(tmp_path / "merged" / "model.safetensors"), "pt") as weights:
        dtypes = {weights.get_tensor(name).dtype for name in weights.keys()}
    import torch

    assert dtypes == {torch.bfloat16}


def test_merge_overwrite_puts_the_old_model_back_if_the_new_one_cannot_be_placed(in_work_dir, tmp_path, monkeypatch):
    from pathlib import Path as _Path

    from recipes.merge import main

    out = tmp_path / "merged"
    out.mkdir()
    (out / "config.json").write_text('{"old": true}')
    real_rename = _Path.rename

    def failing_rename(self, target):
        if self.name.endswith(".partial"):
            raise OSError("disk full")
        return real_rename(self, target)

    monkeypatch.setattr(_Path, "rename", failing_rename)
    with pytest.raises(OSError, match="disk full"):
        main([str(in_work_dir), "--out", str(out), "--overwrite"])
    assert (out / "config.json").read_text() == '{"old": true}'  # the old model is still there, whole


def test_a_gpu_trained_run_can_be_read_on_a_cpu_machine(tmp_path):
    """Merging happens on CPU boxes too: the bf16 QLoRA recipe of a run must parse there."""
    import shutil

    import torch

    from recipekit.errors import RecipeError
    from recipekit.inference.trained_run import load_base_model, load_run_recipe

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")  # CI and the dev machines have none
    run = tmp_path / "gpu-run"
    run.mkdir()
    shutil.copy(REPO_ROOT / "recipes" / "nemotron_fiqa_qlora.yaml", run / "recipe.yaml")
    (run / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8}')
    recipe = load_run_recipe(run)
    assert recipe.model.load_in_4bit and recipe.training.bf16
    with pytest.raises(RecipeError, match="bitsandbytes quantization"):  # 4-bit loading still needs a GPU
        load_base_model(recipe, quantized=True)


@pytest.mark.parametrize(
    ("config", "says"),
    [("{", "cannot be read as JSON"), ("[]", "does not describe a LoRA adapter"),
     ('{"peft_type": "NOPE", "r": 8}', "does not describe a LoRA adapter"),
     ('{"peft_type": "LORA", "r": "eight"}', "no positive integer rank")],
)
def test_a_damaged_adapter_config_is_named_before_the_model_loads(tmp_path, config, says):
    from recipekit.errors import RecipeError
    from recipekit.inference.trained_run import load_run_recipe

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(REPO_ROOT / "recipes" / "smoke.yaml", run / "recipe.yaml")
    (run / "adapter_config.json").write_text(config)
    with pytest.raises(RecipeError, match=says):
        load_run_recipe(run)


def test_evaluation_needs_question_and_answer_before_the_model_loads(tmp_path):
    from recipekit.errors import RecipeError
    from recipekit.inference.evaluation import check_evaluation_records

    with pytest.raises(RecipeError, match=r"record 2: no `answer` text"):
        check_evaluation_records([{"question": "q", "answer": "a", "prompt": "p"}, {"question": "q", "prompt": "p"}],
                                 tmp_path / "test.jsonl")
