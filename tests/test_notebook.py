"""The diagnosis notebook: committed without outputs, a complete `parameters` cell, and it executes
through papermill (the production path) on a small simulated client."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import nbformat
import pytest

from cskit.params import Params

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "diagnosis.ipynb"


@pytest.fixture(scope="module")
def nb():
    return nbformat.read(str(NOTEBOOK), as_version=4)


def test_committed_without_outputs(nb):
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    assert nb.metadata["kernelspec"]["name"] == "python3"


def _parameters(nb) -> dict:
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    tree = ast.parse(tagged[0].source)
    return {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)}


def test_parameters_cell_has_every_params_key_at_its_default(nb):
    values = _parameters(nb)
    defaults = Params().model_dump(mode="json")
    assert set(values) == set(defaults) | {"output_dir", "params_file"}
    for key, value in defaults.items():
        assert values[key] == value, key


def test_no_analysis_logic_in_cells(nb):
    """Cells call cskit and display; no pandas arithmetic or model fitting lives in the notebook."""
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    for banned in ("import pandas", "import numpy", "statsmodels", "lifelines", ".groupby(", ".merge(", ".fit("):
        assert banned not in source, banned


def test_executes_with_papermill_on_a_small_client(tmp_path):
    import papermill as pm

    from cskit.simulate import simulate_client, write_client

    data = tmp_path / "data"
    write_client(simulate_client(n_accounts=300, n_months=24, seed=5, mc_paths=0), data)
    out = tmp_path / "out"
    executed = out / "nbtest" / "diagnosis.ipynb"
    executed.parent.mkdir(parents=True)
    params = Params(client="nbtest", language="en", data=str(data), bootstrap=10).papermill_parameters()
    pm.execute_notebook(str(NOTEBOOK), str(executed), parameters=params | {"output_dir": str(out)},
                        kernel_name="python3", progress_bar=False)
    run = nbformat.read(str(executed), as_version=4)
    outputs = [o for c in run.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    for heading in ("# Customer-success diagnosis: nbtest", "## 1. SaaS metrics", "## 2. Triggers",
                    "## 3. Improvement potential", "## 4. Health score", "## 5. Data and quality", "## 6. Methods",
                    "## Appendix"):
        assert heading in text, heading
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 6
    assert (out / "nbtest" / "results" / "drivers.csv").is_file()
    # inside the kernel the CSVs are read by DuckDB, as in a plain process (a progress-bar setting that
    # raises in Jupyter once sent every read to the pandas fallback, with a note per table)
    quality = json.loads((out / "nbtest" / "results" / "quality.json").read_text(encoding="utf-8"))
    assert not [w for w in quality["warnings"] if w.get("code") == "read_with_pandas"]


def test_a_kernel_in_notebooks_writes_under_the_repositorys_output(tmp_path, monkeypatch):
    """JupyterLab and nbval start the kernel in notebooks/: a relative output_dir then means the
    repository's git-ignored output/, never notebooks/output/; elsewhere the current directory's."""
    from cskit.pipeline import REPO_ROOT, output_folder

    monkeypatch.chdir(REPO_ROOT / "notebooks")
    assert output_folder("output", "demo") == REPO_ROOT / "output" / "demo"
    monkeypatch.chdir(tmp_path)
    assert output_folder("output", "demo") == tmp_path.resolve() / "output" / "demo"
    assert output_folder(tmp_path / "x", "demo") == tmp_path / "x" / "demo"
    ignored = (REPO_ROOT / ".gitignore").read_text(encoding="utf-8").split()
    assert "output/" in ignored or "/output/" in ignored or "output" in ignored


def test_nbstripout_finds_nothing_to_strip():
    """What `make test` checks first: the committed notebook is exactly as nbstripout leaves it
    (no outputs, no execution counts, its own cell ids)."""
    import shutil
    import subprocess

    tool = shutil.which("nbstripout") or str(Path(__import__("sys").executable).with_name("nbstripout"))
    done = subprocess.run([tool, "--verify", str(NOTEBOOK)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
