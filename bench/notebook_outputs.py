"""Re-run the walkthrough notebook in place and store its outputs, as committed.

The stored outputs are the ones a reader sees first, so they come from a real run, not an
edit: this executes every cell (the ``injected-parameters`` cell included: SmolLM2 on the
FiQA sample) with the hub off, the way ``tests/test_notebook.py`` checks them afterwards.

    python -m bench.smollm2 --out runs/smollm2-135m-instruct   # once
    python -m bench.notebook_outputs                          # ~25 min on a 2-core CPU
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO_ROOT / "examples" / "nemotron_fiqa_lora.ipynb"


def execute_in_place(notebook_path: Path, timeout_s: int) -> None:
    """Run all cells from the examples folder with the repository on PYTHONPATH; write only on success."""
    import nbformat
    from nbclient import NotebookClient

    from recipekit.runtime.atomic_io import atomic_write_text

    notebook = nbformat.read(notebook_path, as_version=4)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    NotebookClient(notebook, timeout=timeout_s, kernel_name="python3",
                   resources={"metadata": {"path": str(notebook_path.parent)}}).execute()
    atomic_write_text(notebook_path, nbformat.writes(notebook) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notebook", type=Path, default=NOTEBOOK)
    parser.add_argument("--cell_timeout_s", type=int, default=3600)
    args = parser.parse_args(argv)
    execute_in_place(args.notebook, args.cell_timeout_s)
    print(f"stored the outputs of a fresh run in {args.notebook}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
