"""The two command-line flags of a plan, taken out of ``recipes.run``'s arguments before the recipe is read.

``--plan`` and ``--gpu_hour_price`` are not recipe keys (a recipe file must not say "do not
train"), so they are removed here and the rest is parsed as any recipe's ``--key value`` list.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from recipekit.errors import RecipeError

PLAN_FLAG = "--plan"
PRICE_FLAG = "--gpu_hour_price"


@dataclass(frozen=True)
class PlanRequest:
    """What ``--plan`` asked for: the recipe's own arguments and an optional price per GPU hour."""

    argv: list[str]
    gpu_hour_price: float | None = None


def _price(text: str | None) -> float:
    """A price per GPU hour: a finite number >= 0 (any currency: the plan prints it back in the same units)."""
    try:
        value = float(text) if text is not None else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        shown = "nothing" if text is None else repr(text)
        raise RecipeError(f"`{PRICE_FLAG}` needs the price of one GPU hour as a number of 0 or more, e.g. "
                          f"`{PRICE_FLAG} 2.5`, but got {shown}.")
    return value


def take_plan_flags(argv: list[str]) -> PlanRequest | None:
    """``PlanRequest`` when ``--plan`` is given (the recipe's arguments without the two flags), else None.

    ``--gpu_hour_price`` without ``--plan`` is refused rather than ignored: the user expected a cost.
    """
    rest, wanted, price, index = [], False, None, 0
    while index < len(argv):
        item = argv[index]
        if item == PLAN_FLAG:
            wanted = True
        elif item == PRICE_FLAG or item.startswith(PRICE_FLAG + "="):
            if "=" in item:
                text = item.split("=", 1)[1]
            else:
                index += 1
                text = argv[index] if index < len(argv) else None
            price = _price(text)
        else:
            rest.append(item)
        index += 1
    if price is not None and not wanted:
        raise RecipeError(f"`{PRICE_FLAG}` prices a plan: add `{PLAN_FLAG}` to print the plan and its cost "
                          "without training.")
    return PlanRequest(rest, price) if wanted else None
