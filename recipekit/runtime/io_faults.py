"""Recognise a failed write (a full disk, a quota, a read-only or failing file system) in
whatever form the writing library reports it.

Python raises ``OSError`` with an errno; ``torch.save`` raises a ``RuntimeError`` saying
"file write failed"; safetensors a ``SafetensorError`` that quotes the OS error. A run that
hits one of them ends with one paragraph naming the fault and what to do, exit status 74
(``EX_IOERR``), and a manifest that says how it ended; what it left half-written is never
trusted later (checkpoints are checked before a resume, every other file is written
atomically).
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

_BY_ERRNO = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EIO: "the disk reported an I/O error",
}
# How the same faults read when a library passes on only the text.
_BY_TEXT = {
    "no space left on device": "the disk is full",
    "storagefull": "the disk is full",
    "disk quota exceeded": "the disk quota is used up",
    "read-only file system": "the file system is read-only",
    "input/output error": "the disk reported an I/O error",
    "file write failed": "a write failed",  # torch.save's message, whatever the cause
}


def _chain(error: BaseException):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def io_fault(error: BaseException) -> tuple[str, str | None] | None:
    """``(what happened, the file)`` when ``error`` is a failed write, else None."""
    for link in _chain(error):
        if isinstance(link, OSError) and link.errno in _BY_ERRNO:
            return _BY_ERRNO[link.errno], link.filename
        text = str(link).lower()
        for needle, what in _BY_TEXT.items():
            if needle in text:
                return what, None
    return None


def free_space_line(folder: str | Path) -> str:
    folder = Path(folder).resolve()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return ""
    return f"; {free / 2**30:.2f} GiB free on the disk of {folder} now"


def _fault_words(error: BaseException) -> tuple[str, str, str | None]:
    """What failed and where ("the disk is full while writing X"), the library's own words, the file."""
    what, filename = io_fault(error) or ("a write failed", None)
    where = f" while writing {filename}" if filename else ""
    return what + where, f"{type(error).__name__}: {' '.join(str(error).split())[:200]}", filename


def io_fault_message(error: BaseException, output_dir: str, during: str, last_good: str | None) -> str:
    """One paragraph: what failed, where and when, what the library said, the disk's free space
    now, the checkpoint a rerun will continue from, and what to do."""
    what, said, _ = _fault_words(error)
    return (
        f"{what}, {during} ({said}){free_space_line(output_dir)}. The run stopped; "
        "files it was writing are not trusted later (a partial checkpoint is skipped on resume). The newest whole "
        f"checkpoint is {last_good or '(none yet)'}. Free some space (or choose an `output_dir` on a larger disk, "
        "or lower `save_total_limit`), then rerun the same command: with `resume_from_checkpoint: auto` it "
        "continues from there."
    )


def command_write_fault_message(error: BaseException) -> str:
    """One paragraph for a failed write in a command other than training (preprocess, evaluate,
    merge, replot): what failed and where, the library's words, the free space, what to do."""
    what, said, filename = _fault_words(error)
    return (f"{what} ({said}){free_space_line(filename or '.')}. Nothing half-written "
            "was put in place: each output file is written whole or not at all. Free some space, or write to a "
            "folder on another disk that you can write to, then rerun the same command.")
