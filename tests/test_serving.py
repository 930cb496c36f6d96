"""Serving parity: a merged model, loaded by plain transformers and asked with the user's question
alone, answers with exactly the tokens ``recipes.generate`` gives, in every prompt format."""

from __future__ import annotations

import json
import re

import pytest

from conftest import train_smoke_in

QUESTIONS = ["How do index funds work?", "Should I pay off my mortgage early?"]


def _generate_cli_answers(run_dir, capsys) -> list[str]:
    from recipes.generate import main

    capsys.readouterr()
    assert main([str(run_dir), *QUESTIONS, "--batch_size", "1"]) == 0
    printed = capsys.readouterr().out
    return [a.strip() for a in re.findall(r"^Answer: (.*?)\n\n(?=Question: |\Z)", printed, flags=re.S | re.M)]


def _plain_transformers_answers(folder) -> tuple[list[str], list[list[int]]]:
    """What any transformers user writes: the folder's tokenizer, chat template and generation config."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    texts, tokens = [], []
    for question in QUESTIONS:
        inputs = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                               return_tensors="pt", return_dict=True)
        with torch.no_grad():
            output = model.generate(**inputs)  # the folder's generation_config.json decides everything else
        new = output[0, inputs["input_ids"].shape[1]:].tolist()
        stops = model.generation_config.eos_token_id
        new = new[: next((i for i, t in enumerate(new) if t in stops), len(new))]
        tokens.append(new)
        texts.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    return texts, tokens


@pytest.mark.slow
@pytest.mark.parametrize("prompt_format", ["completion", "chat", "nemotron-chat"])
def test_merged_model_served_by_plain_transformers_answers_as_recipes_generate(
        tmp_path, fiqa_csv_dir, tiny_model_dir, prompt_format, capsys):
    from preprocess.fiqa import preprocess
    from recipekit.inference.serving import check_template
    from recipes.merge import merge_run

    data = tmp_path / "data"
    preprocess(data, source_dir=fiqa_csv_dir, prompt_format=prompt_format)
    run = train_smoke_in(tmp_path, "--build_smoke_assets", "false", "--model_name_or_path", str(tiny_model_dir),
                         "--data_dir", str(data), "--num_train_epochs", "2")
    merged = merge_run(run, tmp_path / "merged")

    config = json.loads((merged / "generation_config.json").read_text())
    assert config["do_sample"] is False and config["repetition_penalty"] == 1.2 and config["max_new_tokens"] == 256
    # The tiny model's <|eot_id|> (id 1) ends every answer in every format, as training taught.
    assert 1 in config["eos_token_id"]
    # The run folder itself serves the same way (an adapter served with its base model).
    assert json.loads((run / "generation_config.json").read_text())["eos_token_id"] == config["eos_token_id"]

    plain, tokens = _plain_transformers_answers(merged)
    assert _generate_cli_answers(run, capsys) == plain
    assert all(tokens), "every answer has at least one token"

    from transformers import AutoTokenizer

    served = AutoTokenizer.from_pretrained(merged)
    check_template(served, prompt_format, served.chat_template)  # raises if the prompt differs from training's


def test_a_conversation_with_its_own_system_turn_renders_as_the_model_template_does(tiny_tokenizer):
    """The serving template only fills in what training had and the user left out."""
    from preprocess.prompt_format import build_messages
    from recipekit.inference.serving import serving_chat_template

    for prompt_format in ("chat", "nemotron-chat"):
        template = serving_chat_template(tiny_tokenizer, prompt_format)
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a bond?"}]
        assert tiny_tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False) == \
            tiny_tokenizer.apply_chat_template(messages, tokenize=False)
        question_only = [{"role": "user", "content": "What is a bond?"}]
        assert tiny_tokenizer.apply_chat_template(question_only, chat_template=template, tokenize=False,
                                                  add_generation_prompt=True) == \
            tiny_tokenizer.apply_chat_template(build_messages("What is a bond?", prompt_format), tokenize=False,
                                               add_generation_prompt=True)
        # Writing it again over a folder that already has it (recipes.merge reads the run's) adds nothing.
        tiny_tokenizer_again = tiny_tokenizer.__class__.from_pretrained(tiny_tokenizer.name_or_path)
        tiny_tokenizer_again.chat_template = template
        assert serving_chat_template(tiny_tokenizer_again, prompt_format) == template


def test_completion_template_renders_the_plain_text_prompt_and_answers(tiny_tokenizer):
    from preprocess.prompt_format import build_completion, build_prompt
    from recipekit.inference.serving import serving_chat_template

    template = serving_chat_template(tiny_tokenizer, "completion")
    conversation = [{"role": "user", "content": "What is a bond?"}, {"role": "assistant", "content": "A loan."}]
    rendered = tiny_tokenizer.apply_chat_template(conversation, chat_template=template, tokenize=False)
    assert rendered == tiny_tokenizer.bos_token + build_prompt("What is a bond?") + build_completion("A loan.") + \
        tiny_tokenizer.eos_token


def test_stop_tokens_include_the_template_end_of_turn_and_the_base_eos_ids(tiny_tokenizer):
    from transformers import GenerationConfig

    from recipekit.inference.decoding import stop_token_ids

    base = GenerationConfig(eos_token_id=[0, 1, 5])
    assert stop_token_ids(tiny_tokenizer, "chat", base) == [1, 0, 5]
    assert stop_token_ids(tiny_tokenizer, "completion", None) == [tiny_tokenizer.eos_token_id]
