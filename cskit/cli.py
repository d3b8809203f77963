"""The consultant's command line: ``cskit run``, ``cskit batch``, ``cskit simulate``.

Exit codes: 0 success; 2 bad params or data (the message says what and how to fix); 1 anything else
(a short message naming the failing notebook cell and where the executed notebook is). A consultant
never sees a Python traceback: every error is caught here and turned into one message.

Paths: a relative ``data`` is resolved against the current directory and passed to the notebook as an
absolute path; the current directory is never changed (papermill's ``cwd`` is process-wide and not
safe with parallel runs). Everything is written under ``<out>/<client>/``.
"""
from __future__ import annotations

import csv
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
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
    """Validate params and resolve paths (the data is checked by :func:`execute`, beside the kernel's
    start). Returns (params, folder)."""
    from cskit.params import absolute_data  # not cskit.pipeline: this process stays without pandas

    params = absolute_data(load_params(params_path), base=Path.cwd())
    folder = client_folder(Path(out_dir), params.client)
    if params.previous:
        from cskit.changes import results_folder

        results_folder(params.previous)
    return params, folder


class DataCheckFailed(Exception):
    """The data check before the notebook (:func:`cskit.precheck.check_data`) failed: its exception is
    the ``__cause__``; nothing was written."""


# jsonschema (under papermill's nbformat) checks the "iri" string format with rfc3987_syntax when it is
# installed, which builds its grammar when imported: 1.5 of the 2.3 s papermill takes to import. No
# notebook schema has a format keyword, so the checker is never used: this process goes without it.
OPTIONAL_SLOW_IMPORTS = ("rfc3987_syntax",)
# papermill's hdfs:// handler imports pyarrow (~0.5 s) if it can: hidden while papermill is imported
# (this process reads no hdfs:// notebook), then visible again to any later import here.
HIDDEN_WHILE_IMPORTING = ("pyarrow",)


def _import_papermill() -> None:
    for name in OPTIONAL_SLOW_IMPORTS:
        sys.modules.setdefault(name, None)  # a None entry: "import name" raises ImportError, as if absent
    hidden = [name for name in HIDDEN_WHILE_IMPORTING if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None
    try:
        import papermill  # noqa: F401
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


def _check_data(params: Params) -> None:
    from cskit.precheck import check_data

    check_data(params)


def execute(params: Params, folder: Path, html: bool = True, progress_bar: bool = False,
            params_file: str | Path | None = None) -> Path:
    """Check the data, execute the notebook with papermill into ``folder`` and (optionally) render the
    HTML copy.

    The data check (:func:`cskit.precheck.check_data`: fail fast, before anything is written) runs in a
    forked child on Linux: what it imports and reads leaves with it, and this process stays small while
    the kernel runs. Meanwhile the notebook kernel starts and imports what the notebook uses
    (:mod:`cskit.kernel`; it boots for longer than the check and papermill's import here take); a failed
    check ends the kernel and raises :class:`DataCheckFailed`.
    """
    from cskit import kernel
    from cskit.parallel import Forked

    try:  # off Linux the check runs here and now, and fails here
        check = Forked(_check_data, params, parallel=sys.platform.startswith("linux"))
    except Exception as e:  # noqa: BLE001 - reported as the check's failure
        raise DataCheckFailed() from e
    km = None
    with kernel_environment(params.data), stage_progress(progress_bar), \
            input_fingerprints(params.data) as fingerprint:  # password: in PGPASSWORD only
        try:
            km = kernel.start()  # it inherits the environment set here
            try:
                check.result()
            except Exception as e:  # noqa: BLE001 - reported as the check's failure
                raise DataCheckFailed() from e
            _import_papermill()
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / "diagnosis.ipynb"
            stale = folder / "diagnosis.html"
            if not html and stale.exists():  # an HTML from an earlier run must not sit beside these results
                stale.unlink()
            parameters = params.papermill_parameters()  # data: a URL without its password
            parameters["output_dir"] = str(folder.parent)
            parameters["params_file"] = str(params_file or "")
            exporter = HtmlExporter() if html else None

            def first_cell() -> None:  # the kernel starts analysing: this process's own work, beside it
                fingerprint()
                if exporter is not None:
                    exporter.warm()

            kernel.execute(km, notebook_path(), target, parameters, progress_bar=False, log_output=False,
                           language="python", on_first_cell=first_cell)
        finally:
            check.cancel()
            kernel.stop(km)
    if html:
        render_html(target, folder / "diagnosis.html", params.language, name=params.client_name or params.client,
                    exporter=exporter)
    return target


@contextmanager
def input_fingerprints(data: str):
    """The input files' fingerprints for results/run.json, taken in this process while the kernel analyses
    (:func:`cskit.provenance.take_fingerprints` / ``save_fingerprints``; the kernel finds them through
    ``$CSKIT_FINGERPRINTS``, set here for the kernel to inherit, and hashes any file they do not cover itself:
    same bytes). Yields the function that starts the hashing, in a thread; on leaving, a thread still
    hashing stops after its current file and is joined (``cskit batch`` forks the next client's data check
    in this process: no thread may be running then)."""
    import shutil
    import tempfile

    from cskit.provenance import FINGERPRINTS_ENV, input_files

    files = input_files(data)
    folder = tempfile.mkdtemp(prefix="cskit-fingerprints-")  # this user's only
    path = os.path.join(folder, "fingerprints.json")  # written whole when the hashes are done
    old = os.environ.get(FINGERPRINTS_ENV)
    os.environ[FINGERPRINTS_ENV] = path
    threads: list[threading.Thread] = []
    ended = [False]
    lock = threading.Lock()  # the file is written, or the folder removed, never both at once

    def hash_files() -> None:
        from cskit.provenance import save_fingerprints, take_fingerprints

        try:
            entries = take_fingerprints(files, stop=lambda: ended[0])
            with lock:
                if not ended[0]:
                    save_fingerprints(entries, path)
        except Exception:  # noqa: BLE001 - none written: the kernel hashes the files itself
            pass

    def start() -> None:
        if files and not threads:
            threads.append(threading.Thread(target=hash_files, name="cskit-hash", daemon=True))
            threads[0].start()

    try:
        yield start
    finally:  # the hashes not waited for (a run that failed early need not); none written after this
        with lock:
            ended[0] = True
            shutil.rmtree(folder, ignore_errors=True)
        for thread in threads:
            thread.join()  # at most the file it is hashing
        if old is None:
            os.environ.pop(FINGERPRINTS_ENV, None)
        else:
            os.environ[FINGERPRINTS_ENV] = old


STAGES = ("load", "panel", "metrics", "triggers", "potential", "health", "report")
STAGE_NAMES = {"drivers": "triggers"}


@contextmanager
def stage_progress(show: bool):
    """On a terminal, show which stage the kernel is in (load, panel, metrics, triggers, potential,
    health, report): the kernel appends each stage to the file named by $CSKIT_PROGRESS
    (:func:`cskit.pipeline.report_stage`), a thread here reads it."""
    if not show:
        yield
        return
    import tempfile

    from cskit.pipeline import PROGRESS_ENV

    fd, path = tempfile.mkstemp(prefix="cskit-progress-", suffix=".txt")
    os.close(fd)
    old = os.environ.get(PROGRESS_ENV)
    os.environ[PROGRESS_ENV] = path
    done = threading.Event()
    t0 = time.perf_counter()

    def watch(status) -> None:
        seen = 0
        while not done.wait(0.2):
            lines = Path(path).read_text(encoding="utf-8").splitlines()
            for stage in lines[seen:]:
                name = STAGE_NAMES.get(stage, stage)
                k = STAGES.index(name) + 1 if name in STAGES else 0
                err.print(f"  {time.perf_counter() - t0:5.1f} s  {name}" + (f" ({k}/{len(STAGES)})" if k else ""),
                          markup=False)
                status.update(f"cskit run: {name}")
            seen = len(lines)

    try:
        with err.status("cskit run: starting the notebook kernel") as status:
            thread = threading.Thread(target=watch, args=(status,), daemon=True)
            thread.start()
            try:
                yield
            finally:
                done.set()
                thread.join()
    finally:
        if old is None:
            os.environ.pop(PROGRESS_ENV, None)
        else:
            os.environ[PROGRESS_ENV] = old
        Path(path).unlink(missing_ok=True)


class HtmlExporter:
    """nbconvert's HTML exporter for the reviewer's copy, imported and warmed up (its templates
    compiled) in a thread while the kernel runs the notebook (:meth:`warm`), not after it."""

    def __init__(self):
        self._exporter = None
        self._thread: threading.Thread | None = None

    def warm(self) -> None:
        """Start preparing the exporter in a background thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._prepare, name="cskit-html", daemon=True)
            self._thread.start()

    def _prepare(self) -> None:
        import nbformat

        try:
            exporter = html_exporter()
            warm_up = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# cskit")])
            exporter.from_notebook_node(warm_up, resources={"metadata": {"name": "cskit"}})
        except Exception:  # noqa: BLE001 - the render makes a fresh one, and reports what is wrong
            return
        self._exporter = exporter

    def get(self):
        """The exporter (waits for the warm-up; a fresh one if it never ran or failed)."""
        if self._thread is not None:
            self._thread.join()
        return self._exporter or html_exporter()


def html_exporter():
    """nbconvert's HTML exporter as the reviewer's copy uses it: code cells and prompts hidden, images
    embedded."""
    from nbconvert import HTMLExporter

    return HTMLExporter(
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        embed_images=True,
    )


def render_html(notebook: Path, target: Path, language: str, name: str | None = None,
                exporter: HtmlExporter | None = None) -> Path:
    """Reviewer's copy: code cells and prompts hidden, images embedded, ``<html lang>`` = ja / en."""
    import nbformat

    html = exporter.get() if exporter is not None else html_exporter()
    html.language_code = language
    title = {"ja": "カスタマーサクセス診断", "en": "Customer-success diagnosis"}[language]
    resources = {"metadata": {"name": f"{title}: {name or target.parent.name}"}}  # the page's <title>
    body, _ = html.from_notebook_node(nbformat.read(str(notebook), as_version=4), resources=resources)
    target.write_text(body, encoding="utf-8")
    return target


def failure_message(exc: BaseException, notebook: Path) -> tuple[int, str]:
    """(exit code, one message) for an exception raised while executing the notebook."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        if exc.ename == "CskitError":
            return CskitError.exit_code, str(exc.evalue)
        return 1, (
            f"The diagnosis notebook failed in cell [{exc.exec_count}] ({exc.ename}: {exc.evalue}). "
            f"The executed notebook, with the error in place, is {notebook}."
        )
    if isinstance(exc, CskitError):
        return exc.exit_code, str(exc)
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

    def refused(e: BaseException) -> RunResult:  # bad params or data: nothing was written
        if isinstance(e, CskitError):
            return RunResult(str(params_path), client, e.exit_code, str(e), time.perf_counter() - t0)
        return RunResult(str(params_path), client, 1, f"{type(e).__name__}: {e}", time.perf_counter() - t0)

    try:
        params, folder = prepare(params_path, out_dir)
        client = params.client
    except Exception as e:  # noqa: BLE001 - the consultant gets one line, not a traceback
        return refused(e)
    try:
        execute(params, folder, html=html, progress_bar=progress_bar, params_file=params_path)
    except DataCheckFailed as e:
        return refused(e.__cause__)
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, KeyboardInterrupt):
            raise
        code, message = failure_message(e, folder / "diagnosis.ipynb")
        return RunResult(str(params_path), client, code, message, time.perf_counter() - t0, str(folder))
    return RunResult(str(params_path), client, 0, "ok", time.perf_counter() - t0, str(folder))


def _version(value: bool) -> None:
    if value:
        from cskit import __version__

        console.print(f"cskit {__version__}", markup=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Customer-success diagnosis for B2B SaaS clients."""


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
    console.print(excluded_line(Path(res.folder)), markup=False)


def excluded_line(folder: Path) -> str:
    """The run's closing line on the rows it could not use (results/quality.json)."""
    import json

    path = folder / "results" / "quality.json"
    if not path.is_file():
        return ""
    q = json.loads(path.read_text(encoding="utf-8"))
    tables = q.get("tables", {})
    read = sum(t["read"] for t in tables.values())
    excluded = {name: sum(t.get("excluded", {}).values()) for name, t in tables.items()}
    n = sum(excluded.values())
    warnings = sum(1 for w in q.get("warnings", []) if isinstance(w, dict) and w.get("severity") == "warning")
    if not n:
        return f"All {read:,} rows read were used" + (f"; {warnings} data warning(s) in {path}." if warnings else ".")
    where = ", ".join(f"{name} {k:,}" for name, k in sorted(excluded.items()) if k)
    return f"{n:,} of {read:,} rows were excluded ({where}): reasons and examples in {path}."


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
    # clients side by side already fill the cores: each kernel then analyses in one process (cskit.parallel)
    pool_options = {"initializer": _one_process_kernels} if jobs > 1 else {}
    with Progress(*columns, console=err) as progress, ProcessPoolExecutor(max_workers=jobs, **pool_options) as pool:
        task = progress.add_task("clients", total=len(params))
        futures = [pool.submit(run_client, str(p), str(out), html, False) for p in params]
        for fut in as_completed(futures):
            results.append(fut.result())
            progress.advance(task)
    results.sort(key=lambda r: r.params_path)
    table = Table(title="cskit batch")
    for col in ("params", "client", "status", "seconds"):
        table.add_column(col)
    for r in results:
        table.add_row(r.params_path, r.client, status_word(r.code), f"{r.seconds:.1f}")
    console.print(table)
    for r in results:
        if r.code:  # every failure's whole message, and where it is kept
            err.print(f"\n[bold red]{r.client}[/] ({r.params_path}): {status_word(r.code)}", markup=True)
            err.print(r.message, markup=False)
    summary = write_batch_summary(results, out)
    for r in results:
        write_error_file(r, out)
    console.print(f"Summary: {summary}", markup=False)
    failed = [r for r in results if r.code]
    if failed:
        raise typer.Exit(max(r.code for r in failed))


def _one_process_kernels() -> None:
    """A batch worker's kernels run every stage in one process (``$CSKIT_PARALLEL=0``)."""
    from cskit.parallel import PARALLEL_ENV

    os.environ[PARALLEL_ENV] = "0"


def status_word(code: int) -> str:
    return "ok" if code == 0 else ("bad input" if code == 2 else "failed")


SUMMARY_COLUMNS = ["client", "params", "status", "seconds", "message", "mrr", "nrr", "customer_churn_rate",
                   "churn_triggers", "health_auc", "red_accounts", "folder"]


def headline(folder: str | Path) -> dict:
    """Headline figures of one client's result files for the batch summary (empty when absent)."""
    from cskit.narrative import read_results

    out = {k: "" for k in ("mrr", "nrr", "customer_churn_rate", "churn_triggers", "health_auc", "red_accounts")}
    results = Path(folder) / "results"
    if not folder or not results.is_dir():
        return out
    R = read_results(results)
    s = R["kpi_summary"]
    for k in ("mrr", "nrr", "customer_churn_rate"):
        v = (s.get(k) or {}).get("value")
        out[k] = "" if v is None else v
    d = R["drivers"]
    if len(d) and "trigger" in d:
        out["churn_triggers"] = int(((d["outcome"] == "churn") & d["trigger"].fillna("").astype(str).ne("")).sum())
    v = R["health_validation"].get("validation", {})
    if v.get("status") == "fitted":
        out["health_auc"] = v["score"]["auc"]
    if len(R["health_scores"]) and "tier" in R["health_scores"]:
        out["red_accounts"] = int((R["health_scores"]["tier"] == "red").sum())
    return out


def write_batch_summary(results: list[RunResult], out: Path) -> Path:
    """``<out>/batch-summary.csv``: one row per client (status, seconds, whole message, headline figures)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "batch-summary.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in results:
            row = {"client": r.client, "params": r.params_path, "status": status_word(r.code),
                   "seconds": f"{r.seconds:.1f}", "message": r.message, "folder": r.folder}
            row |= headline(r.folder) if r.code == 0 else {}
            w.writerow(row)
    return path


def write_error_file(r: RunResult, out: Path) -> None:
    """``<out>/<client>/error.txt`` holds a failed run's whole message; a successful run removes it."""
    try:
        folder = Path(r.folder) if r.folder else client_folder(Path(out), r.client)
    except CskitError:
        return
    path = folder / "error.txt"
    if r.code == 0:
        path.unlink(missing_ok=True)
        return
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(f"cskit {status_word(r.code)} ({r.params_path}), exit code {r.code}:\n{r.message}\n",
                    encoding="utf-8")


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
    out: Path = typer.Option(..., "--out", help="Folder to write accounts.csv, revenue.csv, kpis.csv, ... into."),
    accounts: Optional[int] = typer.Option(None, "--accounts", min=1, help="Organic accounts [default: 2000]."),
    months: Optional[int] = typer.Option(None, "--months", min=2, help="Months of history [default: 24]."),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="Random seed [default: 0]."),
    start: Optional[str] = typer.Option(None, "--start", help="First month, YYYY-MM [default: 2024-07]."),
    events: bool = typer.Option(False, "--events", help="Also write a raw events log (events.parquet) holding "
                                "the usage KPIs (aggregate it with the events_kpis of params/demo-events.yaml)."),
) -> None:
    """Write a synthetic client (with planted truth) for trying the kit (``cskit.simulate.write_simulated``;
    an option not given takes the simulator's default, as ``python -m cskit.simulate`` does)."""
    from cskit.simulate import simulated_summary, write_simulated

    given = {"n_accounts": accounts, "n_months": months, "seed": seed, "start": start}
    sim = write_simulated(out, events=events, **{k: v for k, v in given.items() if v is not None})
    console.print(simulated_summary(sim, out))


def _quiet_thread_error(args: threading.ExceptHookArgs) -> None:
    """A background thread of the kernel client (e.g. its heartbeat, when a kernel is shut down under
    load) must not print a traceback on a consultant's screen: one line is enough."""
    err.print(f"(note: a kernel connection thread stopped: {args.exc_type.__name__})", markup=False)


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point (``cskit``). Pins BLAS to one thread unless the caller set it.

    Called as the program itself (no ``argv``: the ``cskit`` command), the process then ends at once with
    the command's exit code (:func:`leave`), skipping the interpreter's tear-down of every module the run
    imported; called with ``argv`` (from Python) it raises ``SystemExit`` as a click command does."""
    for var in SINGLE_THREAD:
        os.environ.setdefault(var, "1")
    threading.excepthook = _quiet_thread_error
    try:
        try:
            app(args=argv, standalone_mode=True)
        except CskitError as e:
            err.print(str(e), markup=False)
            sys.exit(e.exit_code)
    except SystemExit as e:
        if argv is None and (e.code is None or isinstance(e.code, int)):
            leave(e.code or 0)
        raise


def leave(code: int) -> None:
    """End this process now with ``code``: output flushed, no clean-up left to do (the kernel is ended,
    every file closed), so the interpreter's tear-down of the modules the run imported (~0.1-0.3 s) is
    skipped (``os._exit``); the exit functions still run (``atexit``: e.g. the events' DuckDB spill
    folders a ``weakref.finalize`` removes)."""
    import atexit
    import logging

    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed pipe: nothing more to say on it
            pass
    os._exit(code)
