"""The example notebook, executed headless: it launches a run, shows the dashboard, reads the record."""
from __future__ import annotations

import pytest

from conftest import EXAMPLES


def test_the_example_notebook_runs_headless(provdir, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="the test extras install nbformat")
    nbclient = pytest.importorskip("nbclient", reason="the test extras install nbclient")
    monkeypatch.setenv("CLOWDR_EXAMPLE_PROVDIR", str(provdir))
    monkeypatch.setenv("CLOWDR_EXAMPLES", str(EXAMPLES))
    notebook = nbformat.read(EXAMPLES / "clowdr-notebook.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=180, kernel_name="python3").execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    text = "\n".join(str(output.get("text", "")) + str(output.get("data", {}).get("text/plain", "")) for output in outputs)
    assert "3 succeeded, 0 failed" in text
    dashboard = [o for o in outputs if "application/vnd.holoviews_load.v0+json" in o.get("data", {})
                 or "text/html" in o.get("data", {}) or "application/vnd.bokehjs_exec.v0+json" in o.get("data", {})]
    assert dashboard, "the dashboard cell displayed nothing"
    assert list(provdir.glob("*/clowdr/task-2-summary.json"))
