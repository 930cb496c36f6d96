"""A small synthetic FiQA copy in the hub layout, written by the project itself.

Tests and the smoke recipe need FiQA-shaped input without network access. The rows are
templated (so a tiny model can learn them and its loss visibly falls) and exercise what
the real files hold: several ground truths per row, quotes and commas inside answers,
non-ASCII text, and one answer long enough that truncating it would be noticed.
"""

from __future__ import annotations

import csv
from pathlib import Path

from preprocess.fiqa_source import SPLIT_FILES

TOPICS: list[tuple[str, str, str]] = [
    ("an index fund", "a fund that holds every stock of a market index", "an S&P 500 fund owns all 500 companies"),
    ("a bond", "a loan you make to a company or a government for interest", "a 10-year Treasury pays interest twice a year"),
    ("a dividend", "a share of profit that a company pays to its owners", "a stock at $50 paying $2 a year yields 4%"),
    ("an ETF", "a fund that trades on an exchange like a single stock", "you can buy one share of a bond ETF at any time"),
    ("a Roth IRA", "a retirement account funded with taxed money that grows tax-free", "withdrawals after 59½ owe no tax"),
    ("capital gains tax", "the tax on the profit when you sell an asset for more than you paid", "selling at $120 what cost $100 taxes $20"),
    ("an expense ratio", "the yearly fee a fund charges as a share of your money", "0.05% costs $5 a year on $10,000"),
    ("dollar-cost averaging", "investing the same amount on a fixed schedule", "buying $200 of a fund every month"),
    ("a margin account", "a brokerage account that lends you money to buy securities", "a 2:1 margin doubles gains and losses"),
    ("an emergency fund", "cash set aside for unexpected costs", "three to six months of expenses in savings"),
    ("a credit score", "a number lenders use to judge how likely you are to repay", "paying bills on time raises it"),
    ("compound interest", "interest earned on earlier interest", "$1,000 at 5% becomes $1,629 after ten years"),
    ("a mortgage", "a loan secured by the house it buys", "a 30-year fixed mortgage keeps the same payment"),
    ("inflation", "the rise of prices over time, which shrinks what money buys", "3% inflation halves value in about 24 years"),
    ("a stock split", "a company dividing each share into several cheaper ones", "a 2-for-1 split turns one $100 share into two $50 shares"),
    ("an annuity", "a contract that pays you income for a period or for life", "a lump sum at 65 buys monthly payments"),
]

QUESTION_TEMPLATES = ("What is {term}?", "How does {term} work for a small investor?", "Should I care about {term}?")

# Characters the real CSVs contain and a naive parser gets wrong.
TRICKY_ANSWER = (
    'It depends: "risk" means different things — to a saver it\'s losing money, to a trader '
    "it's volatility, and to a retiree (€, £ or $) it's running out, so ask which one, then plan."
)


def answer_for(term: str, definition: str, example: str, variant: int) -> str:
    """A templated answer whose wording depends on the variant, so the three questions differ."""
    core = f"{term[0].upper()}{term[1:]} is {definition}. For example, {example}."
    if variant == 0:
        return core
    if variant == 1:
        return f"{core} It works best when you keep costs low and hold for years, and it is simple to start."
    return f"{core} Whether you should care depends on your goals, your time horizon and how much risk you can take."


def long_answer() -> str:
    """An answer of well over 300 words: the preprocessing must keep every word of it."""
    sentences = [
        f"Point {i}: spread money across assets, keep fees low, rebalance once a year, and write the plan down."
        for i in range(1, 41)
    ]
    return " ".join(sentences) + " The end."


def fixture_rows() -> dict[str, list[tuple[str, list[str]]]]:
    """Rows per split: (question, ground_truths). Train gets most topics; each split is disjoint."""
    rows: list[tuple[str, list[str]]] = []
    for term, definition, example in TOPICS:
        for variant, template in enumerate(QUESTION_TEMPLATES):
            first = answer_for(term, definition, example, variant)
            others = [f"Another view: {term} matters less than saving steadily."] if variant == 2 else []
            rows.append((template.format(term=term), [first, *others]))
    train, validation, test = rows[:36], rows[36:42], rows[42:]
    train.append(("Which risk matters for \"safe\" investing, and why?", [TRICKY_ANSWER, "Short: all of them."]))
    train.append(("How should I plan my whole investment life?", [long_answer()]))
    return {"train": train, "validation": validation, "test": test}


def write_fiqa_fixture(directory: str | Path) -> Path:
    """Write ``train.csv``, ``dev.csv`` and ``test.csv`` like the hub dataset; returns the folder."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    for split, split_rows in fixture_rows().items():
        with (target / SPLIT_FILES[split]).open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["question", "ground_truths"])
            for question, ground_truths in split_rows:
                writer.writerow([question, repr(ground_truths)])
    return target
