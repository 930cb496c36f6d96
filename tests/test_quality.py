"""Answer quality: paired statistics, the quality harness, Nemotron's chat format, and the
GenerationEval plugin, on the project's own tiny model and fixture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, train_smoke_in

SMOKE = str(REPO_ROOT / "recipes" / "smoke.yaml")


def test_paired_bootstrap_interval_follows_the_evidence():
    from recipekit.inference.scoring import paired_bootstrap

    constant = paired_bootstrap([0.3] * 20, [0.4] * 20)
    assert constant["mean"] == pytest.approx(0.1) and constant["ci95"] == pytest.approx([0.1, 0.1])

    noise = [((i * 37) % 11 - 5) / 50 for i in range(48)]  # symmetric, mean 0
    unclear = paired_bootstrap([0.5] * 48, [0.5 + n for n in noise])
    assert unclear["ci95"][0] < 0 < unclear["ci95"][1]

    clear = paired_bootstrap([0.5] * 48, [0.6 + n for n in noise])
    assert 0 < clear["ci95"][0] < clear["mean"] < clear["ci95"][1]
    assert clear["questions"] == 48

    # Pairing matters: the same scores shuffled between questions would hide a per-question gain.
    base = [i / 48 for i in range(48)]
    paired = paired_bootstrap(base, [b + 0.02 for b in base])
    assert paired["ci95"][0] > 0
    with pytest.raises(ValueError):
        paired_bootstrap([0.1, 0.2], [0.3])


def test_answer_lengths_count_empty_and_short_answers():
    from recipekit.inference.scoring import answer_lengths

    loop = "I think you should qualify for a 401-K Plan. " * 3
    counts = answer_lengths(["", "Buy an index fund.", " ".join(f"word{i}" for i in range(12)), loop])
    assert counts == {"answer_words_mean": 10.8, "empty_answers": 1, "short_answers": 2, "looping_answers": 1}
    assert answer_lengths(["I think so. " * 2])["looping_answers"] == 0  # two repeats are not a loop


def test_score_predictions_reports_both_sides_and_the_gain():
    from recipekit.inference.evaluation import score_predictions

    rows = [
        {"question": "q1", "reference": "An index fund holds the whole market at low cost.",
         "base": "My cat sleeps all day.", "tuned": "An index fund holds the whole market cheaply.",
         "base_stopped": True, "tuned_stopped": True},
        {"question": "q2", "reference": "A bond is a loan that pays interest.",
         "base": "", "tuned": "A bond is a loan paying interest to you.", "base_stopped": False, "tuned_stopped": True},
    ]
    losses = {"base": {"eval_loss": 3.0, "perplexity": 20.1}, "tuned": {"eval_loss": 2.5, "perplexity": 12.2}}
    report = score_predictions(rows, losses)
    assert report["questions"] == 2
    assert report["base"]["empty_answers"] == 1 and report["tuned"]["empty_answers"] == 0
    assert report["base"]["not_stopped"] == 1 and report["tuned"]["not_stopped"] == 0
    assert report["tuned"]["similarity"]["mean"] > report["base"]["similarity"]["mean"] + 0.3
    gain = report["similarity_gain"]
    assert gain["mean"] > 0.3 and gain["ci95"][0] <= gain["mean"] <= gain["ci95"][1]
    assert rows[0]["similarity_tuned"] > rows[0]["similarity_base"]  # per-answer scores are kept


def test_trial_specs_split_harness_keys_from_recipe_keys():
    from bench.quality import parse_trial

    trial = parse_trial("chat=recipes/smoke.yaml --data_format chat --learning_rate 5e-4 --repetition_penalty 1.2")
    assert trial["name"] == "chat" and trial["recipe"] == "recipes/smoke.yaml"
    assert trial["data_format"] == "chat" and trial["decoding"] == {"repetition_penalty": 1.2}
    assert trial["overrides"] == ["--learning_rate", "5e-4"]
    assert parse_trial("plain=recipes/smoke.yaml")["data_format"] == "completion"
    with pytest.raises(SystemExit, match="must be NAME=RECIPE.yaml"):
        parse_trial("recipes/smoke.yaml")


def test_the_tune_slice_is_carved_from_train_and_never_reported(tmp_path, fiqa_csv_dir):
    from bench.quality import prepare_data

    def questions(path: Path) -> list[str]:
        return [json.loads(line)["question"] for line in path.read_text().splitlines()]

    data = prepare_data(fiqa_csv_dir, tmp_path, "completion", tune_questions=6)
    train, tune, rest = (questions(data / f"{s}.jsonl") for s in ("train", "tune", "tune_train"))
    report = questions(data / "report.jsonl")
    assert len(tune) == 6 and sorted(tune + rest) == sorted(train) and not set(tune) & set(rest)
    assert report == questions(data / "validation.jsonl") + questions(data / "test.jsonl")
    assert not set(report) & set(train)
    again = prepare_data(fiqa_csv_dir, tmp_path / "again", "completion", tune_questions=6)
    assert questions(again / "tune.jsonl") == tune  # a fixed draw: every trial and rerun sees the same slice
    with pytest.raises(SystemExit, match="--tune_questions"):
        prepare_data(fiqa_csv_dir, tmp_path / "bad", "completion", tune_questions=len(train))


@pytest.mark.slow
def test_quality_harness_runs_trials_and_reports_the_one_chosen_on_the_tune_slice(tmp_path, fiqa_csv_dir,
                                                                                   tiny_model_dir):
    from bench.quality import main

    quick = (f"{SMOKE} --build_smoke_assets false --num_train_epochs 2 --eval_strategy epoch "
             "--save_strategy epoch --max_length 256")
    work = tmp_path / "work"
    assert main(["run", "--source", str(fiqa_csv_dir), "--work", str(work), "--model_dir", str(tiny_model_dir),
                 "--tune_questions", "6", "--max_new_tokens", "12", "--batch_size", "16",
                 "--trial", f"lr-high={quick} --learning_rate 1e-2",
                 "--trial", f"lr-high-rp={quick} --learning_rate 1e-2 --repetition_penalty 1.3",
                 "--trial", f"lr-zero={quick} --learning_rate 1e-9 --data_format chat"]) == 0
    second = json.loads((work / "trials/lr-high-rp/quality/trial.json").read_text())
    assert second["trained_in"] == "lr-high" and second["train_seconds"] == 0  # same training: reused

    out = tmp_path / "quality.json"
    assert main(["score", "--work", str(work), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    trials = {t["name"]: t for t in result["trials"]}
    assert set(trials) == {"lr-high", "lr-high-rp", "lr-zero"}
    assert result["chosen"] == max(trials, key=lambda n: trials[n]["tune"]["similarity_gain"]["mean"])
    report = result["report"]
    assert report["trial"] == result["chosen"] and report["questions"] == 12  # validation + test of the fixture
    for side in ("base", "tuned"):
        assert {"eval_loss", "similarity", "empty_answers"} <= set(report[side])
    assert len(report["similarity_gain"]["ci95"]) == 2
    # A learning rate of 1e-9 changes nothing: the tuned model answers exactly as the base does.
    zero = trials["lr-zero"]["report"]
    assert zero["similarity_gain"]["mean"] == 0 and zero["tuned"]["eval_loss"] == pytest.approx(zero["base"]["eval_loss"], abs=1e-3)
    high = trials["lr-high"]["report"]
    assert high["tuned"]["eval_loss"] < high["base"]["eval_loss"] - 0.5  # the fixture is learnable


def test_prompt_formats_round_trip_and_nemotron_puts_instructions_in_the_user_turn():
    from preprocess.prompt_format import (
        NEMOTRON_REASONING_OFF,
        PROMPT_FORMATS,
        SYSTEM_PROMPT,
        build_example,
        detect_prompt_format,
    )

    for prompt_format in PROMPT_FORMATS:
        assert detect_prompt_format(build_example("What is a bond?", "A loan.", prompt_format)) == prompt_format
    system, user = build_example("What is a bond?", "A loan.", "nemotron-chat")["prompt"]
    assert system == {"role": "system", "content": NEMOTRON_REASONING_OFF}
    assert user["role"] == "user" and user["content"] == f"{SYSTEM_PROMPT}\n\nWhat is a bond?"
    stray = {"question": "q", "prompt": [{"role": "user", "content": "something else"}]}
    with pytest.raises(ValueError, match="matches none"):
        detect_prompt_format(stray)


def test_nemotron_chat_trains_on_exactly_the_prompt_generation_sends(tmp_path, fiqa_csv_dir, tiny_model_dir, monkeypatch):
    """With a Llama-3-style chat template: the unsupervised part of every training example is
    token for token the prompt recipekit.inference.answers renders, and each answer ends in a supervised EOS."""
    from bench.masking_audit import audit
    from preprocess.fiqa import preprocess
    from recipekit.inference.answers import prompt_text

    data = tmp_path / "nemotron-chat"
    preprocess(data, source_dir=fiqa_csv_dir, prompt_format="nemotron-chat")
    monkeypatch.chdir(tmp_path)
    counts = audit([SMOKE, "--model_name_or_path", str(tiny_model_dir), "--data_dir", str(data),
                    "--build_smoke_assets", "false", "--eos_token", "<|eot_id|>", "--max_length", "2048"])
    assert counts["prompt_format"] == "nemotron-chat" and not counts["pad_is_eos"]
    assert counts["prompt_equals_generation_prompt"] == counts["examples"] == counts["training_examples"]
    assert counts["eos_supervised_at_the_end"] == counts["examples"] and counts["examples_with_pad_supervised"] == 0

    from transformers import AutoTokenizer

    rendered = prompt_text("What is a bond?", "nemotron-chat", AutoTokenizer.from_pretrained(tiny_model_dir))
    assert rendered.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\ndetailed thinking off<|eot_id|>")
    assert "<|start_header_id|>user<|end_header_id|>\n\nYou are a helpful financial assistant." in rendered
    assert rendered.endswith("What is a bond?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")


def test_packed_batches_keep_documents_apart_and_supervise_each_eos(tmp_path, fiqa_jsonl_dir, tiny_model_dir, monkeypatch):
    from bench.masking_audit import audit

    monkeypatch.chdir(tmp_path)
    counts = audit([SMOKE, "--model_name_or_path", str(tiny_model_dir), "--data_dir", str(fiqa_jsonl_dir),
                    "--build_smoke_assets", "false", "--packing", "true", "--max_length", "2048"])
    assert counts["packed"] and counts["packs"] < counts["examples"] == counts["documents"]
    assert counts["documents_starting_unsupervised"] == counts["documents"]
    assert counts["documents_with_supervised_eos_at_the_end"] == counts["documents"]


@pytest.fixture(scope="module")
def generation_eval_run(tmp_path_factory) -> Path:
    """A smoke run that keeps the checkpoint whose answers scored best."""
    return train_smoke_in(
        tmp_path_factory.mktemp("generation-eval"),
        "--plugins", "plugins.throughput.Throughput", "plugins.generation_eval.GenerationEval",
        "plugins.loss_curves.LossCurves", "--metric_for_best_model", "eval_similarity", "--greater_is_better",
        "true", "--generation_eval_questions", "4", "--generation_eval_max_new_tokens", "16",
    )


@pytest.mark.slow
def test_generation_eval_logs_answer_scores_and_picks_the_best_checkpoint_by_them(generation_eval_run):
    run = generation_eval_run
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    scored = [r for r in rows if "eval_similarity" in r]
    evaluations = [r for r in rows if r["kind"] == "eval" and "eval_loss" in r]
    assert len([r for r in scored if r["kind"] == "eval"]) == len(evaluations) >= 2
    for row in scored:
        assert -1 <= row["eval_similarity"] <= 1 and 0 <= row["eval_short_answers"] <= 1
        assert row["eval_answer_words"] >= 0 and 0 <= row["eval_rougeL"] <= 1
    state = json.loads((run / "trainer_state.json").read_text())
    checkpoints = {int(p.name.split("-")[1]) for p in run.glob("checkpoint-*")}
    kept = [r for r in scored if r["kind"] == "eval" and r["step"] in checkpoints]
    best = max(kept, key=lambda r: r["eval_similarity"])
    assert state["best_metric"] == pytest.approx(best["eval_similarity"])
    assert state["best_model_checkpoint"].endswith(f"checkpoint-{best['step']}")
    assert (run / "answer_quality.png").stat().st_size > 5000


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--metric_for_best_model", "eval_similarity"], "computed by the plugin plugins.generation_eval.GenerationEval"),
        (["--plugins", "plugins.generation_eval.GenerationEval", "plugins.loss_curves.LossCurves", "--eval_strategy",
          "no", "--load_best_model_at_end", "false"], "`eval_strategy` is `no`"),
    ],
)
def test_generation_eval_settings_that_cannot_work_are_refused(argv, expected):
    from recipekit.config.parse import parse_recipe
    from recipekit.errors import RecipeError

    with pytest.raises(RecipeError, match=expected):
        parse_recipe([SMOKE, *argv], check_environment=False)


def test_generation_leaves_the_tokenizer_as_it_was_and_says_when_an_answer_was_cut(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from recipekit.inference.answers import generate_answers

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    side = tokenizer.padding_side
    answers = generate_answers(model, tokenizer, ["What is a bond?", "Why diversify?"], "completion",
                               max_new_tokens=3, batch_size=2, progress=False)
    assert tokenizer.padding_side == side
    for answer in answers:
        assert answer.stopped or answer.new_tokens == 3  # an answer that did not end at EOS used them all


def test_generation_eval_embeds_its_references_once_across_evaluations(monkeypatch):
    """The validation references never change during a run, so each evaluation embeds only the new answers."""
    import torch

    import plugins.generation_eval as generation_eval
    import recipekit.inference.answers
    import recipekit.inference.scoring
    from recipekit.inference.answers import Answer
    from recipekit.inference.scoring import semantic_similarity

    records = [{"question": "What is a bond?", "answer": "A bond is a loan to an issuer that pays interest."},
               {"question": "What is an ETF?", "answer": "An ETF is a fund that trades on an exchange."}]
    answers = ["A bond pays interest.", "A fund traded on an exchange."]
    monkeypatch.setattr(recipekit.inference.answers, "generate_answers",
                        lambda *args, **kwargs: [Answer(text=a, new_tokens=5, stopped=True) for a in answers])
    embedded, real_embed = [], recipekit.inference.scoring.embed

    def counting_embed(texts, *args, **kwargs):
        embedded.append(list(texts))
        return real_embed(texts, *args, **kwargs)

    monkeypatch.setattr(recipekit.inference.scoring, "embed", counting_embed)
    callback = generation_eval.GenerationEvalCallback(records, "completion", generation_eval.GenerationEvalConfig())
    model = torch.nn.Linear(1, 1)
    first, second = callback.score(model, tokenizer=None), callback.score(model, tokenizer=None)
    references = [r["answer"] for r in records]
    assert embedded.count(references) == 1 and embedded.count(answers) == 2
    assert first == second
    assert first["eval_similarity"] == pytest.approx(sum(semantic_similarity(answers, references)) / 2, abs=1e-4)
    assert model.training  # put back in training mode after answering
