"""The consultant's command line: ``cskit run``, ``cskit batch``, ``cskit simulate``.

Exit codes: 0 success; 2 bad params or data (the message says what and how to fix); 1 anything else
(a short message naming the failing notebook cell and where the executed notebook is). A consultant
never sees a Python traceback: every error is caught here and turned into one message.

Paths: a relative ``data`` is resolved against the current directory and passed to the notebook as an
absolute path; the current directory is never changed (papermill's ``cwd`` is process-wide and not
safe with parallel runs). Everything is written under ``<out>/<client>/``.
"""
from __future__ import annotations

import os
import threading
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cskit.errors import CskitError
from cskit.params import Params, load_params
from cskit.warehouse import kernel_environment, mask, secrets_of

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Customer-success diagnosis for B2B SaaS clients.",
)
err = Console(stderr=True, highlight=False, soft_wrap=True)
console = Console(highlight=False)

NOTEBOOK_ENV = "CSKIT_NOTEBOOK"
# BLAS / OpenMP sum in a thread-count-dependent order, which changes the last digits of model fits;
# one thread per kernel makes results byte-identical across machines (batch runs clients in parallel).
SINGLE_THREAD = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass
class RunResult:
    """Outcome of one client's run: ``code`` is the exit code (0, 1 or 2)."""

    params_path: str
    client: str
    code: int
    message: str
    seconds: float
    folder: str = ""


def notebook_path() -> Path:
    """The diagnosis notebook to execute.

    ``$CSKIT_NOTEBOOK`` wins (a client-specific variant). Otherwise the notebook that ships inside the
    package (``cskit/notebooks/diagnosis.ipynb``, if a wheel build copies it there), else the
    repository's ``notebooks/diagnosis.ipynb`` next to the ``cskit`` package: the kit is installed
    editable (``pip install -e .``, which ``make`` does), so the package lives in the repository.
    """
    candidates = []
    if os.environ.get(NOTEBOOK_ENV):
        candidates.append(Path(os.environ[NOTEBOOK_ENV]))
    here = Path(__file__).resolve().parent
    candidates += [here / "notebooks" / "diagnosis.ipynb", here.parent / "notebooks" / "diagnosis.ipynb"]
    for c in candidates:
        if c.is_file():
            return c
    raise CskitError(
        "The diagnosis notebook was not found (looked in: "
        + ", ".join(str(c) for c in candidates)
        + "). Install cskit from its repository with `pip install -e .` (or `make demo`), "
        f"or set {NOTEBOOK_ENV} to the notebook's path."
    )


def client_folder(out_dir: Path, client: str) -> Path:
    """``out_dir/client``, refusing any client name that would leave ``out_dir``."""
    root = out_dir.resolve()
    folder = (root / client).resolve()
    if folder.parent != root:
        raise CskitError(
            f"Refusing client name {client!r}: its output folder {folder} is not directly inside {root}. "
            "Use letters, digits, '-' and '_' only."
        )
    return folder


def prepare(params_path: str | Path, out_dir: str | Path) -> tuple[Params, Path]:
    """Validate params, resolve paths, and load the data once to fail fast. Returns (params, folder)."""
    from cskit.panel import build_panel
    from cskit.pipeline import absolute_data, load, require_churn

    from cskit.changes import results_folder

    params = absolute_data(load_params(params_path), base=Path.cwd())
    folder = client_folder(Path(out_dir), params.client)
    if params.previous:
        results_folder(params.previous)
    data = load(params, base=Path.cwd())
    require_churn(build_panel(data), data)
    return params, folder


def execute(params: Params, folder: Path, html: bool = True, progress_bar: bool = False) -> Path:
    """Execute the notebook with papermill into ``folder`` and (optionally) render the HTML copy.

    The kernel logs at ERROR level only: its "running over TCP without encryption" warning (a local
    kernel on this machine) is noise on a consultant's screen.
    """
    import papermill as pm

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "diagnosis.ipynb"
    parameters = params.papermill_parameters()  # data: a URL without its password
    parameters["output_dir"] = str(folder.parent)
    with kernel_environment(params.data):  # the password reaches the kernel in PGPASSWORD only
        pm.execute_notebook(
            str(notebook_path()),
            str(target),
            parameters=parameters,
            kernel_name="python3",
            progress_bar=progress_bar,
            log_output=False,
            language="python",
            extra_arguments=["--IPKernelApp.log_level=ERROR"],
        )
    if html:
        render_html(target, folder / "diagnosis.html", params.language)
    return target


def render_html(notebook: Path, target: Path, language: str) -> Path:
    """Reviewer's copy: code cells and prompts hidden, images embedded, ``<html lang>`` = ja / en."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        embed_images=True,
    )
    exporter.language_code = language
    title = {"ja": "カスタマーサクセス診断", "en": "Customer-success diagnosis"}[language]
    resources = {"metadata": {"name": f"{title}: {target.parent.name}"}}  # the page's <title>
    body, _ = exporter.from_notebook_node(nbformat.read(str(notebook), as_version=4), resources=resources)
    target.write_text(body, encoding="utf-8")
    return target


def failure_message(exc: BaseException, notebook: Path) -> tuple[int, str]:
    """(exit code, one message) for an exception raised while executing the notebook."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        if exc.ename == "CskitError":
            return 2, str(exc.evalue)
        return 1, (
            f"The diagnosis notebook failed in cell [{exc.exec_count}] ({exc.ename}: {exc.evalue}). "
            f"The executed notebook, with the error in place, is {notebook}."
        )
    if isinstance(exc, CskitError):
        return 2, str(exc)
    return 1, f"{type(exc).__name__}: {exc}. The executed notebook (if any) is {notebook}."


def run_client(params_path: str, out_dir: str, html: bool = True, progress_bar: bool = False) -> RunResult:
    """One client end to end; never raises (the outcome is in the result, its message with any
    database password masked)."""
    res = _run_client(params_path, out_dir, html, progress_bar)
    res.message = mask(res.message, secrets_of(_raw_data(params_path)))
    return res


def _raw_data(params_path: str) -> str | None:
    import yaml

    try:
        raw = yaml.safe_load(Path(params_path).read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - an unreadable file has no password to mask
        return None
    return raw.get("data") if isinstance(raw, dict) and isinstance(raw.get("data"), str) else None


def _run_client(params_path: str, out_dir: str, html: bool, progress_bar: bool) -> RunResult:
    t0 = time.perf_counter()
    client = Path(params_path).stem
    try:
        params, folder = prepare(params_path, out_dir)
        client = params.client
    except CskitError as e:
        return RunResult(str(params_path), client, 2, str(e), time.perf_counter() - t0)
    except Exception as e:  # noqa: BLE001 - the consultant gets one line, not a traceback
        return RunResult(str(params_path), client, 1, f"{type(e).__name__}: {e}", time.perf_counter() - t0)
    try:
        execute(params, folder, html=html, progress_bar=progress_bar)
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, KeyboardInterrupt):
            raise
        code, message = failure_message(e, folder / "diagnosis.ipynb")
        return RunResult(str(params_path), client, code, message, time.perf_counter() - t0, str(folder))
    return RunResult(str(params_path), client, 0, "ok", time.perf_counter() - t0, str(folder))


@app.command()
def run(
    params: Path = typer.Argument(..., help="params/<client>.yaml"),
    out: Path = typer.Option(Path("output"), "--out", help="Output folder; results go to OUT/<client>/."),
    html: bool = typer.Option(True, "--html/--no-html", help="Also write diagnosis.html (code hidden)."),
) -> None:
    """Diagnose one client: validate, load, execute the notebook, render the HTML."""
    res = run_client(str(params), str(out), html=html, progress_bar=sys.stderr.isatty())
    if res.code:
        err.print(f"[bold red]cskit run failed[/] ({res.params_path}):", markup=True)
        err.print(res.message, markup=False)
        raise typer.Exit(res.code)
    console.print(f"Done: {res.folder} ({res.seconds:.1f} s)", markup=False)


@app.command()
def batch(
    params: list[Path] = typer.Argument(..., help="Several params files, e.g. params/*.yaml"),
    out: Path = typer.Option(Path("output"), "--out", help="Output folder; one subfolder per client."),
    jobs: int = typer.Option(2, "--jobs", "-j", min=1, help="Clients run in parallel (processes)."),
    html: bool = typer.Option(True, "--html/--no-html"),
) -> None:
    """Diagnose many clients in parallel; one failure does not stop the others."""
    duplicates = _duplicate_clients(params)
    if duplicates:
        err.print(f"Several params files name the same client (they would overwrite each other): {duplicates}. "
                  "Give each a different `client:`.", markup=False)
        raise typer.Exit(2)
    results: list[RunResult] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err) as progress, ProcessPoolExecutor(max_workers=jobs) as pool:
        task = progress.add_task("clients", total=len(params))
        futures = [pool.submit(run_client, str(p), str(out), html, False) for p in params]
        for fut in as_completed(futures):
            results.append(fut.result())
            progress.advance(task)
    results.sort(key=lambda r: r.params_path)
    table = Table(title="cskit batch")
    for col in ("params", "client", "status", "seconds", "message"):
        table.add_column(col)
    for r in results:
        status = "ok" if r.code == 0 else ("bad input" if r.code == 2 else "failed")
        table.add_row(r.params_path, r.client, status, f"{r.seconds:.1f}", r.message.splitlines()[0][:200])
    console.print(table)
    failed = [r for r in results if r.code]
    if failed:
        raise typer.Exit(max(r.code for r in failed))


def _duplicate_clients(paths: list[Path]) -> list[str]:
    import yaml

    seen: dict[str, int] = {}
    for p in paths:
        try:
            raw = yaml.safe_load(Path(p).read_text(encoding="utf-8")) or {}
            name = str(raw.get("client", "demo")) if isinstance(raw, dict) else p.stem
        except Exception:  # noqa: BLE001 - reported per client by run_client
            continue
        seen[name] = seen.get(name, 0) + 1
    return sorted(n for n, k in seen.items() if k > 1)


@app.command()
def simulate(
    accounts: int = typer.Option(500, "--accounts", min=1),
    months: int = typer.Option(24, "--months", min=2),
    seed: int = typer.Option(0, "--seed", min=0),
    out: Path = typer.Option(..., "--out", help="Folder to write accounts.csv, revenue.csv, kpis.csv, ... into."),
    events: bool = typer.Option(False, "--events", help="Also write a raw events log (events.parquet) holding "
                                "the usage KPIs (aggregate it with the events_kpis of params/demo-events.yaml)."),
) -> None:
    """Write a synthetic client (with planted truth) for trying the kit."""
    from cskit import simulate as sim

    sim.main(["--events"] if events else [], accounts=accounts, months=months, seed=seed, out=out)


def _quiet_thread_error(args: threading.ExceptHookArgs) -> None:
    """A background thread of the kernel client (e.g. its heartbeat, when a kernel is shut down under
    load) must not print a traceback on a consultant's screen: one line is enough."""
    err.print(f"(note: a kernel connection thread stopped: {args.exc_type.__name__})", markup=False)


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point (``cskit``). Pins BLAS to one thread unless the caller set it."""
    for var in SINGLE_THREAD:
        os.environ.setdefault(var, "1")
    threading.excepthook = _quiet_thread_error
    try:
        app(args=argv, standalone_mode=True)
    except CskitError as e:
        err.print(str(e), markup=False)
        sys.exit(2)
