"""The ways a file we read can be wrong, each named in one sentence, for every reader to share.

Recipe YAML, FiQA CSVs, JSONL splits and the run's JSON files are read by different modules,
but fail the same ways: not a regular file, not readable, not UTF-8 (Latin-1, UTF-16),
control bytes, nesting deep enough to exhaust the parser. :func:`read_text` turns each into
a ``RecipeError`` naming the file and the fix; :func:`control_character` finds stray
control bytes in text that should hold none.
"""

from __future__ import annotations

import re
from pathlib import Path

from recipekit.errors import RecipeError

# C0 control characters other than tab, newline and carriage return, and DEL.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def unreadable_reason(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file, or None."""
    if not path.exists() and not path.is_symlink():
        return "does not exist"
    if path.is_symlink() and not path.exists():
        return "is a broken symbolic link"
    if path.is_dir():
        return "is a folder, not a file"
    if not path.is_file():
        return "is not a regular file (a pipe or a device)"
    return None


def starts_as_utf16(data: bytes) -> bool:
    """A UTF-16 byte-order mark: text saved by an editor or spreadsheet as UTF-16, not UTF-8."""
    return data.startswith((b"\xff\xfe", b"\xfe\xff"))


def encoding_problem(data: bytes, error: UnicodeDecodeError) -> str:
    if starts_as_utf16(data):
        return "is UTF-16 text; save it as UTF-8"
    return f"is not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}); save it as UTF-8"


def read_text(path: Path, what: str, fix: str) -> str:
    """The UTF-8 text of ``path`` (a leading BOM dropped), or a RecipeError saying why not."""
    reason = unreadable_reason(path)
    if reason:
        raise RecipeError(f"{what} {path} {reason}. {fix}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RecipeError(f"{what} {path} cannot be read ({exc.strerror or exc}). {fix}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{what} {path} {encoding_problem(data, exc)}. {fix}") from None


def control_character(text: str) -> str | None:
    """The first control character in ``text`` other than tab and line breaks, shown as an escape."""
    found = _CONTROL.search(text)
    return None if found is None else repr(found.group())
