"""Turn a recipe's values (YAML) and ``--key value`` overrides into typed values, key by key.

The rules are those of ``trl sft`` and transformers' ``HfArgumentParser`` (a list key takes
several values, a bool key takes true/false or stands alone, a dict key takes JSON text,
``None`` clears an optional key), applied from :mod:`recipekit.config.schema` so that no
library has to be imported to check a recipe. Each bad value becomes one sentence; the
caller reports them all at once.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from recipekit.config.schema import KeySpec

# transformers' string_to_bool, as `trl sft` reads a bool: nothing more, so a recipe means the same to both.
_TRUE, _FALSE = {"yes", "true", "t", "y", "1"}, {"no", "false", "f", "n", "0"}
_NULL = {"none", "null", "~"}
_INT = re.compile(r"^[+-]?\d+$")
_NOT_SET = object()


def split_overrides(overrides: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """``--key v1 [v2 ...]`` / ``--key=v`` / ``--flag`` into {key: [values]}; stray values are problems."""
    values: dict[str, list[str]] = {}
    problems: list[str] = []
    key = None
    for token in overrides:
        if token.startswith("--") and len(token) > 2:
            name, has_value, value = token[2:].partition("=")
            key = name.replace("-", "_")
            values[key] = [value] if has_value else []
            if has_value:
                key = None  # `--key=value` takes exactly that value
        elif key is not None:
            values[key].append(token)
        else:
            problems.append(f"unexpected value `{token}` on the command line: overrides are `--key value` pairs "
                            "after the recipe file.")
    return values, problems


def _kind_name(spec: KeySpec) -> str:
    return next((k for k in spec.kinds if k != "null"), "value")


def _invalid(spec: KeySpec, value: Any) -> str:
    return f"`{spec.name}`: invalid {_kind_name(spec)} value: {str(value)!r}."


def _scalar(spec: KeySpec, value: Any) -> Any:
    """One value as the key's kinds admit it, trying them in a fixed order; _NOT_SET if none does."""
    kinds = spec.kinds
    if value is None:
        return None if "null" in kinds else _NOT_SET
    if isinstance(value, str) and value.strip().lower() in _NULL and "null" in kinds and "str" not in kinds:
        return None  # `--max_length None`; where text is allowed, "none" stays text (`report_to: none`)
    if isinstance(value, bool):
        return value if "bool" in kinds else _NOT_SET
    text = value.strip() if isinstance(value, str) else None
    if text is not None and "bool" in kinds and text.lower() in _TRUE | _FALSE:
        return text.lower() in _TRUE
    if "int" in kinds:
        if isinstance(value, int):
            return value
        if text is not None and _INT.match(text):
            return int(text)
    if "float" in kinds and isinstance(value, (int, float)):
        return value  # as YAML wrote it: `learning_rate: 3` is reported as 3
    if "float" in kinds and text is not None:
        try:
            return float(text)
        except ValueError:
            pass
    if "dict" in kinds:
        if isinstance(value, dict):
            return value
        if text is not None and text.startswith("{"):
            try:
                parsed = json.loads(text)
            except ValueError:
                return _NOT_SET
            return parsed if isinstance(parsed, dict) else _NOT_SET
    if "str" in kinds and isinstance(value, (str, int, float)):
        return str(value)
    if "list" in kinds and isinstance(value, list):
        return [str(v) for v in value]
    if "list" in kinds and isinstance(value, str):
        return [value]
    if "object" in kinds and not isinstance(value, str):
        return value
    return _NOT_SET


def coerce(spec: KeySpec, value: Any, from_cli: bool = False) -> tuple[Any, str | None]:
    """``(typed value, None)`` or ``(None, the problem)`` for one key's recipe or command-line value.

    ``value`` is what YAML gave, or (``from_cli``) the list of tokens that followed ``--key``.
    """
    if spec.name == "datasets" and spec.owner == "RecipeArguments":  # a list of mappings, by its own rules
        from recipekit.training.sources import parse_sources

        return parse_sources(list(value) if from_cli else value)
    if from_cli and "list" not in spec.kinds:
        if len(value) == 0:
            if "bool" in spec.kinds:
                return True, None  # a bare --flag
            return None, f"`{spec.name}` needs a value on the command line (`--{spec.name} VALUE`)."
        if len(value) > 1:
            return None, f"`{spec.name}` takes one value, not {len(value)}: {' '.join(map(str, value))}."
        value = value[0]
    elif from_cli:
        if not value:
            return None, f"`{spec.name}` needs at least one value on the command line."
        if len(value) == 1 and value[0].strip().lower() in _NULL and "null" in spec.kinds and "str" not in spec.kinds:
            return None, None
        return _listed(spec, list(value))
    if isinstance(value, list) and "list" in spec.kinds:
        return _listed(spec, [str(v) for v in value])  # as the recipe lists it (an empty list too)
    typed = _scalar(spec, value)
    if typed is _NOT_SET:
        return None, _invalid(spec, value)
    if isinstance(typed, float) and not math.isfinite(typed):
        return None, f"`{spec.name}` is {typed}: it must be a finite number."
    if isinstance(typed, int) and not isinstance(typed, bool) and abs(typed) >= 2**63:
        return None, f"`{spec.name}` is {typed}: too large for a 64-bit integer."
    if isinstance(typed, str):
        try:
            typed.encode("utf-8")
        except UnicodeEncodeError:
            return None, f"`{spec.name}` holds an unpaired surrogate escape: it is not text."
    if spec.choices and isinstance(typed, str) and typed not in spec.choices:
        return None, invalid_choice_message(spec.name, typed, list(spec.choices))
    return typed, None


def _listed(spec: KeySpec, items: list[str]) -> tuple[list[str] | None, str | None]:
    """A list value, each item checked against the key's choices when it has them."""
    for item in items:
        if spec.choices and item not in spec.choices:
            return None, invalid_choice_message(spec.name, item, list(spec.choices))
    return items, None


def invalid_choice_message(key: str, value: Any, choices: list[str]) -> str:
    """Name the allowed values, or for long lists the closest few."""
    import difflib

    if len(choices) <= 8:
        allowed = f"choose from {', '.join(choices)}"
    else:
        close = difflib.get_close_matches(str(value), choices, n=3, cutoff=0.4)
        allowed = (f"closest: {', '.join(close)}; " if close else "") + "`--help` lists all"
    return f"`{key}`: invalid choice {value!r} ({allowed})."


def as_text(value: Any) -> str:
    """A config value as text: an enum (transformers' ``IntervalStrategy``...) by its value."""
    return str(getattr(value, "value", value))


def evaluation_on(eval_strategy: Any) -> bool:
    """Whether a run evaluates during training, from ``eval_strategy`` as a recipe or ``SFTConfig`` holds it."""
    return as_text(eval_strategy) != "no"


def saving_on(save_strategy: Any) -> bool:
    """Whether a run writes checkpoints, from ``save_strategy`` as a recipe or ``SFTConfig`` holds it."""
    return as_text(save_strategy) != "no"
