"""The walkthrough notebook runs end to end on the smoke settings (CPU, offline)."""

from __future__ import annotations

import os

import nbformat
from nbclient import NotebookClient

from tests.conftest import REPO_ROOT

NOTEBOOK = REPO_ROOT / "examples" / "nemotron_fiqa_lora.ipynb"


def test_notebook_runs_on_the_smoke_recipe(tmp_path, monkeypatch):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    parameters = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    assert "USE_SMOKE_RECIPE = False" in parameters.source  # users get the real recipe by default
    output_dir = tmp_path / "notebook-run"
    parameters.source += f"\nUSE_SMOKE_RECIPE = True\nOUTPUT_DIR = {str(output_dir)!r}\n"

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO_ROOT / "examples")}}).execute()

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "trainable parameters: 16,384" in text
    assert "A (base model):" in text
    assert str(output_dir / "adapter_model.safetensors") in text
    images = [o for o in outputs if o.output_type in ("display_data", "execute_result") and "image/png" in o.get("data", {})]
    assert len(images) >= 4  # the histogram, the loss and learning-rate charts, the similarity histogram
    assert "Similarity gain (tuned - base)" in text and "| eval loss |" in text
    assert (output_dir / "loss.png").is_file() and (output_dir / "adapter_model.safetensors").is_file()
