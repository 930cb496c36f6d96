"""Answer quality during training: greedy answers to validation questions at every evaluation.

A falling loss does not promise better answers (bench/README.md shows a run where it did
not), so this plugin asks the model being trained a fixed subset of the evaluation
split's questions at every evaluation, in the run's own prompt format, and scores the
answers like ``recipes.evaluate``::

    plugins:
      - plugins.generation_eval.GenerationEval
    generation_eval_questions: 16          # the first 16 questions of eval_split (0: all)
    metric_for_best_model: eval_similarity # keep the checkpoint whose answers are best
    greater_is_better: true

Each evaluation gains ``eval_similarity`` (mean cosine to the reference), ``eval_rougeL``,
``eval_answer_words`` (mean length) and ``eval_short_answers`` (share of answers that are
empty or under 10 words). They are added to the evaluation's metrics, so
``metric_for_best_model`` can choose by them, and logged as an entry of their own at the
same step, so the metrics files and the ``answer_quality.png`` chart of the loss-curves
plugin carry them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainerCallback

from plugins.base import RecipePlugin
from recipekit.errors import RecipeError
from recipekit.inference.decoding import DEFAULT_REPETITION_PENALTY
from recipekit.inference.scoring import DEFAULT_ENCODER, SHORT_ANSWER_WORDS

GENERATION_METRICS = ("eval_similarity", "eval_rougeL", "eval_answer_words", "eval_short_answers")


@dataclass
class GenerationEvalConfig:
    generation_eval_questions: int = field(
        default=16, metadata={"help": "How many questions of eval_split (the first N) to answer at each evaluation; 0: all."}
    )
    generation_eval_max_new_tokens: int = field(
        default=256, metadata={"help": "Longest answer, in tokens, generated at each evaluation."}
    )
    generation_eval_batch_size: int = field(default=16, metadata={"help": "Questions generated together (left-padded)."})
    generation_eval_repetition_penalty: float = field(
        default=DEFAULT_REPETITION_PENALTY,
        metadata={"help": "transformers' repetition_penalty for the greedy answers (1.0: none); 1.2 stops the loops "
                  "greedy decoding falls into after fine-tuning (bench/README.md)."},
    )
    generation_eval_encoder: str = field(
        default=DEFAULT_ENCODER, metadata={"help": "sentence-transformers model for the similarity score."}
    )


class GenerationEvalCallback(TrainerCallback):
    """Generates and scores at ``on_evaluate``, on every process (FSDP needs all ranks in a forward)."""

    def __init__(self, records: list[dict], prompt_format: str, config: GenerationEvalConfig) -> None:
        self.questions = [r["question"] for r in records]
        self.references = [r["answer"] for r in records]
        self.prompt_format = prompt_format
        self.config = config
        self.trainer = None  # set by GenerationEval.on_trainer_ready, to log through the trainer
        self.reference_embeddings = None  # the references do not change between evaluations: embedded once

    def score(self, model, tokenizer) -> dict[str, float]:
        from recipekit.inference.answers import generate_answers
        from recipekit.inference.scoring import cosines, embed, rouge_l

        was_training = model.training
        model.eval()
        try:
            answers = generate_answers(
                model, tokenizer, self.questions, self.prompt_format, self.config.generation_eval_max_new_tokens,
                self.config.generation_eval_batch_size, "answering validation questions",
                repetition_penalty=self.config.generation_eval_repetition_penalty,
            )
        finally:
            model.train(was_training)
        texts = [a.text for a in answers]
        encoder = self.config.generation_eval_encoder
        if self.reference_embeddings is None:
            self.reference_embeddings = embed(self.references, encoder)
        similarity = cosines(embed(texts, encoder), self.reference_embeddings)
        rouge = rouge_l(texts, self.references)
        words = [len(t.split()) for t in texts]
        n = len(texts)
        return {
            "eval_similarity": round(sum(similarity) / n, 4),
            "eval_rougeL": round(sum(rouge) / n, 4),
            "eval_answer_words": round(sum(words) / n, 1),
            "eval_short_answers": round(sum(w < SHORT_ANSWER_WORDS for w in words) / n, 4),
        }

    def on_evaluate(self, args, state, control, metrics=None, model=None, processing_class=None, **kwargs):
        if metrics is None or model is None or processing_class is None:
            return
        scores = self.score(model, processing_class)
        metrics.update(scores)  # the dict the trainer picks the best checkpoint from
        if self.trainer is not None:
            self.trainer.log(dict(scores))  # into log_history, trainer_state.json and the metrics files


class GenerationEval(RecipePlugin):
    """Scores greedy answers to validation questions at every evaluation."""

    config_class = GenerationEvalConfig
    order = 0  # after throughput, before the loss-curves writer renders at on_evaluate

    def on_recipe_parsed(self, recipe) -> None:
        config = self.config
        if config.generation_eval_questions < 0 or config.generation_eval_max_new_tokens < 1 or \
                config.generation_eval_batch_size < 1 or config.generation_eval_repetition_penalty <= 0:
            raise RecipeError(
                "the GenerationEval keys must be: generation_eval_questions >= 0, generation_eval_max_new_tokens >= 1, "
                "generation_eval_batch_size >= 1, generation_eval_repetition_penalty > 0."
            )
        if str(getattr(recipe.training.eval_strategy, "value", recipe.training.eval_strategy)) == "no":
            raise RecipeError(
                "plugins.generation_eval.GenerationEval answers questions at each evaluation, but `eval_strategy` is "
                "`no`. Set `eval_strategy: steps` (with `eval_steps`) or `epoch`, or remove the plugin."
            )

    def callbacks(self, recipe) -> list[TrainerCallback]:
        from preprocess.prompt_format import detect_prompt_format
        from recipekit.training.data import read_split
        from recipekit.training.sources import evaluation_folder

        records = read_split(evaluation_folder(recipe.recipe), recipe.recipe.eval_split)  # errors name the file and line
        wanted = self.config.generation_eval_questions
        subset = records[:wanted] if wanted else records
        return [GenerationEvalCallback(subset, detect_prompt_format(records[0]), self.config)]

    def on_trainer_ready(self, trainer, recipe) -> None:
        for callback in trainer.callback_handler.callbacks:
            if isinstance(callback, GenerationEvalCallback):
                callback.trainer = trainer
