"""`cskit run` as a consultant meets it: exit codes, messages without tracebacks, the files of DESIGN §6,
a code-free Japanese HTML, nothing written outside the output folder, byte-identical results."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

CSKIT = [sys.executable, "-c", "import sys; from cskit.cli import main; sys.argv[0] = 'cskit'; main()"]
RESULT_FILES = [
    "quality.json", "kpi_summary.json", "mrr_bridge.csv", "cohorts.csv", "survival.json", "drivers.csv",
    "potential.csv", "potential.xlsx", "health_weights.csv", "health_scores.csv", "health_validation.json",
    "playbook.csv",
]


def cskit(*args: str, cwd: Path, **env_vars: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200", **env_vars)
    return subprocess.run([*CSKIT, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


def write_params(folder: Path, **params) -> Path:
    path = folder / f"{params.get('client', 'p')}.yaml"
    path.write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    return path


def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_bad_params_exit_2_naming_the_keys(tmp_path):
    p = write_params(tmp_path, client="acme", data="nowhere", horizon_months=-3, bootstrapp=10)
    r = cskit("run", str(p), cwd=tmp_path)
    assert r.returncode == 2
    assert "horizon_months" in r.stderr and "bootstrapp" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert tree(tmp_path) == {"acme.yaml"}


def test_unsafe_client_is_refused_and_nothing_written(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    p = write_params(work, client="../x", data="nowhere")
    before = tree(tmp_path)
    r = cskit("run", str(p), "--out", "output", cwd=work)
    assert r.returncode == 2
    assert "client" in r.stderr and "../x" in r.stderr
    assert "Traceback" not in r.stderr
    assert tree(tmp_path) == before


def test_client_folder_refuses_escape(tmp_path):
    from cskit.cli import client_folder
    from cskit.errors import CskitError

    assert client_folder(tmp_path / "out", "acme") == (tmp_path / "out" / "acme").resolve()
    for bad in ("../x", "a/../../b", "/etc", ".."):
        with pytest.raises(CskitError):
            client_folder(tmp_path / "out", bad)


def test_missing_data_folder_exit_2_without_traceback(tmp_path):
    p = write_params(tmp_path, client="acme", data="no_such_folder")
    r = cskit("run", str(p), cwd=tmp_path)
    assert r.returncode == 2
    assert "no_such_folder" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert not (tmp_path / "output").exists()


def test_missing_params_file_exit_2(tmp_path):
    r = cskit("run", "params/none.yaml", cwd=tmp_path)
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def small_client(tmp_path_factory) -> Path:
    from cskit.simulate import simulate_client, write_client

    root = tmp_path_factory.mktemp("cli")
    write_client(simulate_client(n_accounts=400, n_months=24, seed=11, mc_paths=0), root / "data" / "small")
    write_params(root, client="small", data="data/small", bootstrap=20, seed=3)
    return root


@pytest.fixture(scope="module")
def two_runs(small_client: Path):
    """`cskit run` into out1; then `cskit batch` of the same client and a broken one into out2."""
    first = cskit("run", "small.yaml", "--out", "out1", cwd=small_client)
    write_params(small_client, client="broken", data="data/missing")
    second = cskit("batch", "small.yaml", "broken.yaml", "--jobs", "2", "--out", "out2", "--no-html", cwd=small_client)
    return small_client, first, second


def test_good_run_writes_every_result_file(two_runs):
    root, first, _ = two_runs
    assert first.returncode == 0, first.stderr[-3000:]
    folder = root / "out1" / "small"
    assert (folder / "diagnosis.ipynb").is_file()
    for name in RESULT_FILES:
        assert (folder / "results" / name).is_file(), name
    outside = {p for p in tree(root) if not p.startswith(("out1", "out2", "data", "small.yaml", "broken.yaml"))}
    assert outside == set()


def test_html_has_no_code_and_is_japanese(two_runs):
    root, first, _ = two_runs
    assert first.returncode == 0, first.stderr[-3000:]
    html = (root / "out1" / "small" / "diagnosis.html").read_text(encoding="utf-8")
    assert '<html lang="ja">' in html
    assert "<title>カスタマーサクセス診断: small</title>" in html
    assert "カスタマーサクセス診断" in html and "改善ポテンシャル" in html
    assert "cskit.analyse" not in html and 'class="jp-InputArea' not in html
    assert "data:image/png;base64" in html
    assert "Traceback" not in html


def test_batch_goes_on_after_a_failure(two_runs):
    root, _, second = two_runs
    assert second.returncode == 2, second.stderr[-3000:]
    assert "broken.yaml" in second.stdout and "bad input" in second.stdout
    assert "small.yaml" in second.stdout and "ok" in second.stdout
    assert "Traceback" not in second.stdout + second.stderr
    assert (root / "out2" / "small" / "diagnosis.ipynb").is_file()
    assert not (root / "out2" / "small" / "diagnosis.html").exists()
    # the broken client's whole message: on the screen, in the summary CSV and in its error.txt
    error = (root / "out2" / "broken" / "error.txt").read_text(encoding="utf-8")
    message = error.split("\n", 1)[1].strip()
    assert "data/missing" in message
    assert " ".join(message.split()) in " ".join(second.stderr.split())
    rows = list(csv.DictReader((root / "out2" / "batch-summary.csv").open(encoding="utf-8")))
    by = {r["client"]: r for r in rows}
    assert set(by) == {"small", "broken"} and by["broken"]["status"] == "bad input"
    assert by["broken"]["message"].strip() == message
    assert by["small"]["status"] == "ok" and by["small"]["message"] == "ok"
    # headline figures equal the client's result files
    summary = json.loads((root / "out2" / "small" / "results" / "kpi_summary.json").read_text(encoding="utf-8"))
    assert float(by["small"]["mrr"]) == summary["mrr"]["value"]
    scores = pd.read_csv(root / "out2" / "small" / "results" / "health_scores.csv")
    assert int(by["small"]["red_accounts"]) == int((scores["tier"] == "red").sum())
    assert not (root / "out2" / "small" / "error.txt").exists()


def test_two_runs_give_byte_identical_results(two_runs):
    root, first, _ = two_runs
    assert first.returncode == 0, first.stderr[-3000:]

    def digests(folder: Path) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}

    a = digests(root / "out1" / "small" / "results")
    b = digests(root / "out2" / "small" / "results")
    assert set(a) >= set(RESULT_FILES)
    assert a == b


def test_notebook_errors_become_one_message():
    from papermill.exceptions import PapermillExecutionError

    from cskit.cli import failure_message

    nb = Path("/x/out/acme/diagnosis.ipynb")
    planted = PapermillExecutionError(3, 4, "src", "CskitError", "No churn at all: add months.", [])
    assert failure_message(planted, nb) == (2, "No churn at all: add months.")
    code, message = failure_message(PapermillExecutionError(3, 4, "src", "ValueError", "bad shape", []), nb)
    assert code == 1 and "cell [4]" in message and "ValueError: bad shape" in message and str(nb) in message


def _failing_notebook(path: Path) -> Path:
    import nbformat

    params = nbformat.v4.new_code_cell('client = "x"\noutput_dir = "output"')
    params.metadata["tags"] = ["parameters"]
    fail = nbformat.v4.new_code_cell(
        "from cskit.errors import CskitError\n"
        "if client == 'planted':\n"
        "    raise CskitError('planted problem: fix the kpis table')\n"
        "1 / 0"
    )
    nb = nbformat.v4.new_notebook(cells=[params, fail])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


@pytest.mark.parametrize("client, code, words", [
    ("planted", 2, ["planted problem: fix the kpis table"]),
    ("crash", 1, ["cell [3]", "ZeroDivisionError", "diagnosis.ipynb"]),  # [1] parameters, [2] injected
])
def test_notebook_failure_exit_codes_without_traceback(small_client, tmp_path, client, code, words):
    notebook = _failing_notebook(tmp_path / "fail.ipynb")
    write_params(small_client, client=client, data="data/small")
    env = dict(os.environ, CSKIT_NOTEBOOK=str(notebook), COLUMNS="200")
    r = subprocess.run([*CSKIT, "run", f"{client}.yaml", "--out", "outfail", "--no-html"], cwd=small_client,
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == code, r.stderr[-2000:]
    for w in words:
        assert w in r.stderr
    assert "Traceback" not in r.stderr and "---->" not in r.stderr
    assert (small_client / "outfail" / client / "diagnosis.ipynb").is_file()


def test_thin_client_completes_and_says_what_was_not_estimated(tmp_path):
    """40 accounts, 12 months: every model is below its event floor, yet the run completes (exit 0),
    writes every result file, and the HTML says in words what could not be estimated."""
    import nbformat
    from test_pipeline import tiny_client

    tiny_client(tmp_path / "data" / "tiny")
    write_params(tmp_path, client="tiny", data="data/tiny", bootstrap=20, seed=1, language="en")
    r = cskit("run", "tiny.yaml", "--out", "out", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    folder = tmp_path / "out" / "tiny"
    for name in RESULT_FILES:
        assert (folder / "results" / name).is_file(), name
    html = (folder / "diagnosis.html").read_text(encoding="utf-8")
    assert "Parts of this diagnosis that could not be estimated" in html
    assert "The health score could not be built" in html
    assert "No KPI&#39;s improvement potential could be estimated" in html or \
        "No KPI's improvement potential could be estimated" in html
    assert "Traceback" not in html
    outputs = [
        o for c in nbformat.read(str(folder / "diagnosis.ipynb"), as_version=4).cells for o in c.get("outputs", [])
    ]
    assert not [o for o in outputs if o.output_type == "error" or o.get("name") == "stderr"]


def test_client_without_churn_exit_2_naming_the_column(tmp_path):
    from test_pipeline import zero_churn_client

    zero_churn_client(tmp_path / "data" / "calm")
    write_params(tmp_path, client="calm", data="data/calm")
    r = cskit("run", "calm.yaml", "--out", "out", "--no-html", cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "No churn at all" in r.stderr and "'accounts'" in r.stderr and "'churn_date'" in r.stderr
    assert "Fix:" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_version_and_a_no_html_rerun_removes_the_stale_html(two_runs):
    root, first, _ = two_runs
    from cskit import __version__

    assert cskit("--version", cwd=root).stdout.strip() == f"cskit {__version__}"
    folder = root / "out1" / "small"
    assert (folder / "diagnosis.html").is_file()
    run = json.loads((folder / "results" / "run.json").read_text(encoding="utf-8"))
    assert run["cskit_version"] == __version__ and run["params"]["client"] == "small"
    assert run["params_file"] == "small.yaml" and len(run["params_sha256"]) == 64
    data = root / "data" / "small"
    assert {r["file"] for r in run["inputs"]} == {p.name for p in data.iterdir() if p.is_file()}
    accounts = next(r for r in run["inputs"] if r["file"] == "accounts.csv")
    assert accounts["sha256"] == hashlib.sha256((data / "accounts.csv").read_bytes()).hexdigest()
    html = (folder / "diagnosis.html").read_text(encoding="utf-8")
    assert f"cskit {__version__}" in html and "results/run.json" in html  # the footer
    assert "rows read were used" in first.stdout or "rows were excluded" in first.stdout
    temp = root / "tmp-again"
    temp.mkdir()
    again = cskit("run", "small.yaml", "--out", "out1", "--no-html", cwd=root, TMPDIR=str(temp))
    assert again.returncode == 0, again.stderr[-2000:]
    assert not (folder / "diagnosis.html").exists()
    assert json.loads((folder / "results" / "run.json").read_text(encoding="utf-8"))["inputs"] == run["inputs"]
    assert not list(temp.glob("cskit-*"))  # the fingerprints taken beforehand (and their folder) are gone


def test_both_simulate_commands_share_the_simulators_defaults(tmp_path):
    """`cskit simulate` and `python -m cskit.simulate` with only --months / --seed write what
    simulate_client writes with its own defaults (no second set of defaults: it used to be 500 vs 2000)."""
    from typer.testing import CliRunner

    from cskit.cli import app
    from cskit.simulate import main, simulate_client

    result = CliRunner().invoke(app, ["simulate", "--months", "6", "--seed", "3", "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert main(["--months", "6", "--seed", "3", "--out", str(tmp_path / "module")]) == 0
    simulate_client(n_months=6, seed=3, mc_paths=0).write(tmp_path / "direct")
    for name in ("accounts.csv", "revenue.csv", "kpis.csv", "nps.csv"):
        direct = (tmp_path / "direct" / name).read_bytes()
        assert (tmp_path / "cli" / name).read_bytes() == direct, name
        assert (tmp_path / "module" / name).read_bytes() == direct, name
    assert "accounts" in result.output and "as_of" in result.output
