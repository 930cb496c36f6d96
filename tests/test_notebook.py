"""The walkthrough notebook runs end to end on the smoke settings (CPU, offline)."""

from __future__ import annotations

import os

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO_ROOT

NOTEBOOK = REPO_ROOT / "examples" / "nemotron_fiqa_lora.ipynb"


@pytest.mark.slow
def test_notebook_runs_on_the_smoke_recipe(tmp_path, monkeypatch):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # The stored outputs come from a run whose settings sit in a cell tagged injected-parameters
    # (papermill's convention); CI runs the notebook as a user gets it, on the smoke settings.
    notebook.cells = [c for c in notebook.cells if "injected-parameters" not in c.metadata.get("tags", [])]
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
    assert "Answers of the base model + this run's adapter" in text and "Answers of the base model alone" in text
    assert "loaded without PEFT: LlamaForCausalLM" in text
    assert (tmp_path / "notebook-run-merged" / "model.safetensors").is_file()


def test_the_stored_notebook_shows_a_real_run_phase_by_phase():
    """Committed with the outputs of a real run (not the tiny random model): every code cell ran, in order."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    injected = [c for c in notebook.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "smollm2" in injected[0].source.lower()
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert not [o for c in code for o in c.get("outputs", []) if o.output_type == "error"]
    text = "".join(o.get("text", "") for c in code for o in c.get("outputs", []) if o.output_type == "stream")
    # Library noise and stray return values stay out of what a reader sees first.
    assert "Failed to load" not in text and "IProgress not found" not in text and "Warning" not in text
    results = [o for c in code for o in c.get("outputs", []) if o.output_type == "execute_result"]
    assert not [o for o in results if set(o.get("data", {})) == {"text/plain"}], "a cell shows its return value"
    for phase in ("recipe smollm2_fiqa_cpu", "trainable parameters: 2,442,240", "Similarity gain (tuned - base)",
                  "Answers of the base model + this run's adapter", "loaded without PEFT"):
        assert phase in text
