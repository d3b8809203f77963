"""The whole diagnosis in one call: ``analyse(params) -> Diagnosis``; ``Diagnosis.write(out_dir)``.

This is what a data scientist calls in JupyterLab and what ``notebooks/diagnosis.ipynb`` calls. The
stages run in the order of docs/architecture.md: load → panel → metrics / survival → drivers →
potential → health. Nothing here computes a figure; it only passes each stage what it needs.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from cskit.client import ClientData
from cskit.errors import CskitError
from cskit.parallel import Beside
from cskit.params import REPO_ROOT, Params, absolute_data, load_params, validate_params
from cskit.result import StageResult
from cskit.season import GLM_MODULE


@contextmanager
def memory_settings():
    """How the stages get memory, inside the block (also a decorator: ``analyse`` and ``Diagnosis.write``),
    each setting as it was after it. Results never depend on it (where pages come from changes no value).

    - numpy's large arrays (4 MB and more) without ``madvise(MADV_HUGEPAGE)``: with transparent huge
      pages on "madvise" (Debian's default) each fresh array numpy asks huge pages for makes the kernel
      compact memory at its first touch; at 100k accounts the stages make thousands of them (system time
      4.4 -> 2.8 s, ~0.35 s of wall-clock, measured in alternating pairs). Left alone when the user set
      ``NUMPY_MADVISE_HUGEPAGE`` (numpy's own switch) or numpy has no such setting.
    - Arrow's buffers from the C library's allocator (``pyarrow.system_memory_pool``), not its bundled
      mimalloc, unless ``ARROW_DEFAULT_MEMORY_POOL`` says otherwise: the loader gives Arrow's freed memory
      back before the panel (``release_free_memory``), after which mimalloc maps every later buffer afresh;
      the result CSVs' columns (``result.csv_parts``) then took 1.5 s to write at 100k where they take
      0.9 s from the C heap, the analysis' own time and peak memory unchanged (alternating pairs)."""
    import os

    import pyarrow as pa

    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:  # pragma: no cover - another numpy layout: its default
        _set_madvise_hugepage = None
    pages = _set_madvise_hugepage is not None and "NUMPY_MADVISE_HUGEPAGE" not in os.environ
    pool = None if "ARROW_DEFAULT_MEMORY_POOL" in os.environ else pa.default_memory_pool()
    before = _set_madvise_hugepage(False) if pages else None
    if pool is not None:
        pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        if pages:
            _set_madvise_hugepage(before)
        if pool is not None:
            pa.set_memory_pool(pool)


@contextmanager
def spared_by_the_collector():
    """The objects alive when the block starts (``analyse``: the modules, the client's tables, the panel)
    moved out of the garbage collector's reach inside it (``gc.freeze``), given back after it: a full
    collection there (the one before the fork, any the stages' allocations start) walks only what the
    block made, not those ~140k objects (0.09 s per collection at 100k accounts). Garbage among them waits
    for the end of the block. Left alone when objects are frozen already (the caller's own)."""
    import gc

    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@dataclass(repr=False)
class Diagnosis(StageResult):
    """Every stage's result for one client (attribute names match the stage modules).

    ``repr(dx)`` is one line (client, as_of, accounts, months); ``dx`` alone in a notebook cell shows a
    table of each stage's headline figures (:class:`cskit.result.StageResult`).

    ``data.kpis`` keeps its columns but no rows: once the panel is built its values are the panel's KPI
    columns (``dx.panel[dx.kpis]``, every account-month), and a second copy would hold a third of the
    run's memory (``cskit.load(params)`` gives the table as read).
    """

    params: Params
    data: ClientData
    panel: pd.DataFrame
    kpis: list[str]
    metrics: Any
    survival: Any
    triggers: Any
    potential: Any
    health: Any
    history: Any = None
    previous: dict | None = None  # changes.read_results of params.previous (read before anything is written)
    changes: dict | None = None  # filled by write() when params.previous is set

    def summary_items(self) -> dict:
        return {"client": self.params.client, "as_of": f"{pd.Timestamp(self.data.as_of):%Y-%m}",
                "accounts": int(self.panel["account_id"].nunique()), "account_months": int(len(self.panel)),
                "kpis": len(self.kpis)}

    def stages(self) -> dict:
        """The stage results by name (those that ran)."""
        names = ("metrics", "survival", "triggers", "potential", "health", "history")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def _repr_markdown_(self) -> str:
        return "\n".join([super()._repr_markdown_(), *(s._repr_markdown_() for s in self.stages().values())])

    @memory_settings()
    def write(self, out_dir: str | Path, *, params_file: str | Path | None = None) -> Path:
        """Write results/ (DESIGN §6) under ``out_dir``, with ``run.json`` (params, cskit version, input
        fingerprints; ``params_file`` names the YAML they came from); return the results folder. With
        ``params.previous``, also results/changes.json (the comparison with that earlier run)."""
        from cskit import __version__
        from cskit.changes import compare, read_results, write_changes
        from cskit.provenance import input_records, write_run

        report_stage("report")
        results = Path(out_dir) / "results"
        results.mkdir(parents=True, exist_ok=True)
        data = str(self.params.data)
        # run.json's input fingerprints taken by a thread while this one writes the results (file reads and
        # hashlib release the interpreter: ~0.15 s at 100k accounts); after them, as before, when the results
        # folder is inside the data folder (its files are then inputs too)
        inputs = Beside(partial(input_records, data), "cskit-fingerprints", start=not _in_data(results, data))
        try:
            self.data.quality.write(results / "quality.json")
            for stage in (self.metrics, self.survival, self.triggers, self.potential, self.health, self.history):
                if stage is not None:
                    stage.write(results)
            if self.previous is not None:
                self.changes = compare(self.previous, read_results(results) | {"client": self.params.client},
                                       self.data)
                write_changes(self.changes, results)
        finally:
            inputs.join()  # (no thread outlives a write that failed)
        write_run(results, self.params, __version__, params_file=params_file, inputs=inputs.result())
        return results


def _in_data(folder: Path, data: str) -> bool:
    """Whether ``folder`` is the ``data`` param's folder or inside it (never for a database URL)."""
    if "://" in data:
        return False
    inner, outer = Path(folder).resolve(), Path(data).resolve()
    return inner == outer or outer in inner.parents


def params_from(namespace: dict[str, Any]) -> Params:
    """The :class:`Params` of a notebook: every Params key found in ``namespace`` (the notebook's
    ``globals()``: the parameters cell's defaults, overridden by what papermill injects), validated."""
    return validate_params({k: namespace[k] for k in Params.model_fields if k in namespace})


def output_folder(output_dir: str | Path | None, client: str) -> Path:
    """``<output_dir>/<client>``. A relative ``output_dir`` is taken from the current directory,
    except in a kernel started inside the repository's ``notebooks/`` (JupyterLab, nbval), where it
    is taken from the repository root: results land in the git-ignored ``output/``, never in
    ``notebooks/``."""
    base = Path(output_dir or "output")
    if not base.is_absolute():
        cwd = Path.cwd().resolve()
        notebooks = (REPO_ROOT / "notebooks").resolve()
        root = REPO_ROOT if cwd == notebooks or notebooks in cwd.parents else cwd
        base = root / base
    return base / client


def as_params(params: Params | dict | str | Path) -> Params:
    """Accept a Params, a dict of params, or the path of a params YAML."""
    if isinstance(params, Params):
        return params
    if isinstance(params, dict):
        return validate_params(params)
    return load_params(params)


def load(params: Params | dict | str | Path, base: str | Path | None = None) -> ClientData:
    """Validate the params and load the client's data (``cskit.load``).

    Parameters
    ----------
    params, base
        As for :func:`analyse`.

    Returns
    -------
    ClientData
        The client's tables in canonical form, with ``quality`` (rows read, used and excluded per table).

    Raises
    ------
    CskitError
        Bad params or data: every problem at once, with table, column, row count, examples and fix.

    Examples
    --------
    >>> import cskit
    >>> data = cskit.load("params/demo.yaml")  # doctest: +SKIP
    >>> data.quality.is_consistent()  # doctest: +SKIP
    True
    """
    from cskit.loading import load_client

    return load_client(absolute_data(as_params(params), base))


@memory_settings()
def analyse(
    params: Params | dict | str | Path, base: str | Path | None = None, timings: dict | None = None, *,
    parallel: bool | None = None,
) -> Diagnosis:
    """Run every stage for one client and return the :class:`Diagnosis` (``cskit.analyse``).

    Parameters
    ----------
    params : Params, dict, str or Path
        The params, as a :class:`Params`, a dict of params or the path of a params YAML.
    base : str or Path, optional
        Folder a relative ``data`` path is resolved against (see :func:`absolute_data`).
    timings : dict, optional
        When given, each stage's wall-clock seconds are stored in it (for bench/run.py).
    parallel : bool, optional
        Run the health score in a forked child process while this one runs the metrics and the
        potential, the triggers' pieces and the history made by whichever process is free first
        (:func:`plan`, :mod:`cskit.parallel`; the same result files as one process). Default:
        ``$CSKIT_PARALLEL`` (on unless "0"); never on a one-core machine, without ``fork`` (Linux
        only) or when the memory available is short of the child's expected need (``CHILD_MEMORY``).

    Returns
    -------
    Diagnosis
        Every stage's result (``metrics``, ``survival``, ``triggers``, ``potential``, ``health``,
        ``history``); ``dx.write(out_dir)`` writes results/ (DESIGN §6).

    Raises
    ------
    CskitError
        Only when the whole analysis is impossible (see below).

    Examples
    --------
    >>> import cskit
    >>> dx = cskit.analyse("params/demo.yaml")  # doctest: +SKIP
    >>> dx  # doctest: +SKIP
    Diagnosis(client='demo', as_of='2026-06', accounts=1425, account_months=22962, kpis=28)
    >>> dx.write("output/demo")  # doctest: +SKIP

    Notes
    -----
    The survival-based LTV
    of the potential stage (mean and total over the accounts active at ``as_of``) fills
    ``metrics.summary["ltv_survival"]`` (of a new Metrics: no stage result is changed after it is
    returned) so the headline KPIs carry both LTV definitions. When
    ``timings`` is a dict, each stage's wall-clock seconds are stored in it (for bench/run.py).

    Thin data do not stop the run: a stage whose own data are too thin reports itself as not
    estimable (trigger outcomes and potential columns below their event floors, ``health.status ==
    "not_estimable"`` below the score's) and the other stages go on. Raises CskitError only when the
    whole analysis is impossible: bad params or data (the loader), no account-month left, or no churn
    at all (:func:`require_churn`).
    """
    from cskit.changes import read_results, results_folder
    from cskit.loading import load_client
    from cskit.panel import build_panel, kpi_columns, renewal_evidence
    from cskit.parallel import Claims, Forked, memory_allows, one_blas_thread, parallel_enabled

    clock = _Clock(timings)
    p = absolute_data(as_params(params), base)
    previous = read_results(results_folder(p.previous)) if p.previous else None
    imports = _import_stages()  # beside the loader: DuckDB's read leaves the interpreter free
    with one_blas_thread():
        try:
            with clock("load"):
                data = load_client(p)
                release_free_memory()  # the text tables the loader parsed
        finally:
            # before the panel's season test imports statsmodels itself: two threads importing one package's
            # modules at once can each wait for a module the other holds, and Python then hands one of them
            # a partly initialised module (an ImportError); and no thread may be running at the fork
            imports.join()
        with clock("panel"):
            panel = build_panel(data)
            kpis = kpi_columns(data)
            data.quality.renewals = renewal_evidence(panel, p.kpi_lag_months)
            # its values are the panel's KPI columns now (a copy: the empty slice alone is a view that
            # keeps the whole table's values alive)
            data = replace(data, kpis=data.kpis.iloc[:0].copy())
            release_free_memory()
    # again: the BLAS libraries the stages' imports loaded meanwhile too (none here); what is alive now spared
    with one_blas_thread(), spared_by_the_collector():
        if panel.empty:
            raise CskitError(
                "No account-month left to analyse: every account starts after as_of or was excluded. "
                "Check as_of in the params and results/quality.json for the excluded rows."
            )
        require_churn(panel, data)
        # the triggers, the health score and its history need nothing of the potential, nor it of them
        # but the touch model's LTV (added after): with two cores they run in a forked child meanwhile
        # (cskit.parallel; the same bytes as one process, where they run in turn and share the churn fit)
        two = parallel_enabled(parallel) and memory_allows(CHILD_MEMORY * int(panel.memory_usage(index=False).sum()))
        if two:  # freed heap pages, still resident, would be shared at the fork and, rewritten by this process
            release_free_memory()  # later, kept in the child as its own copies (~150 MB at 30k accounts)
            pieces, _, shared = plan()
            claims = Claims(len(shared), only=TAKER)
            job = Forked(_beside_potential, panel, data, p, kpis, claims, parallel=True, posts=True)
            try:
                # the child's results' modules too, imported while it runs (unpickling would import them
                # after it, on the longer path)
                from cskit.health import add_touch
                from cskit.history import HealthHistory  # noqa: F401
                from cskit.metrics import compute_metrics
                from cskit.potential import improvement_potential
                from cskit.survival import compute_survival
                from cskit.triggers import Triggers  # noqa: F401

                with clock("metrics"):  # nothing in the child reads them
                    metrics = compute_metrics(panel, data, p)
                    survival = compute_survival(panel, data, p)
                from cskit.fits import Fits

                fits = Fits(panel, p.kpi_lag_months, seed=p.seed)  # its transforms serve the triggers' pieces
                with clock("potential"):
                    potential = improvement_potential(panel, data, p, kpis, fits=fits)
                fits.release()  # the designs and fits: only the transforms are kept
                here = _Pieces(panel, data, p, kpis, job, fits=fits)
                # the shared pieces the child has not taken yet (the history once the child's score is here)
                while (i := claims.take(skip=here.waiting(shared), other_alive=job.process.is_alive)) is not None:
                    here.run(shared[i])
                done = {piece: here.get(piece) for piece in pieces}  # the child's, waited for (or made here)
                job.result()  # its other warnings, if any
            finally:
                job.cancel()
            here.release()
            triggers, health, history = _assemble(done, p, kpis)
            health = add_touch(health, potential.accounts)
            if timings is not None:
                timings["drivers_wait"] = here.waited  # beyond the parent's own stages
                for piece, (_, _, seconds, side) in done.items():
                    stage = piece[0] if side == "child" else f"{piece[0]}_parent"
                    timings[stage] = timings.get(stage, 0.0) + seconds
        else:
            from cskit.fits import Fits
            from cskit.health import design_health_score
            from cskit.history import track_health
            from cskit.metrics import compute_metrics
            from cskit.potential import improvement_potential
            from cskit.survival import compute_survival
            from cskit.triggers import find_triggers

            with clock("metrics"):
                metrics = compute_metrics(panel, data, p)
                survival = compute_survival(panel, data, p)
            fits = Fits(panel, p.kpi_lag_months, seed=p.seed)  # designs and fits the stages share
            with clock("drivers"):
                triggers = find_triggers(panel, p, kpis, fits=fits)
            with clock("potential"):
                potential = improvement_potential(panel, data, p, kpis, fits=fits)
            with clock("health"):
                health = design_health_score(panel, data, p, kpis, ltv=potential.accounts, fits=fits)
            fits.release()
            with clock("history"):
                history = track_health(panel, data, p, health)
        ltv = ltv_headline(potential.accounts, metrics.summary.get("ltv_survival"))
        metrics = replace(metrics, summary=metrics.summary | {"ltv_survival": ltv})  # a new result
        # credible only where the triggers, run beside it, flag the same effect (issue 11 item 7)
        from cskit.potential import confirm_by_triggers

        potential = replace(potential, table=confirm_by_triggers(potential.table, getattr(triggers, "details", None)))
    return Diagnosis(p, data, panel, kpis, metrics, survival, triggers, potential, health, history, previous)


# The stages' modules and their libraries (statsmodels, scipy.stats, lifelines: ~2 s of imports in a fresh
# process), and the write's Excel library (xlsxwriter: 0.07 s, else imported by the write, after the analysis),
# imported by a thread while the loader reads (:func:`_import_stages`).
STAGE_MODULES = (
    GLM_MODULE, "cskit.fits", "cskit.triggers", "cskit.health", "cskit.history", "cskit.metrics",
    "cskit.survival", "cskit.potential", "xlsxwriter",
)


IMPORT_THREAD = "cskit-imports"  # the name of that thread (cskit.kernel's idle imports wait while it runs)


def _import_stages(modules: tuple[str, ...] = STAGE_MODULES):
    """Start a thread importing ``modules`` (returned; ``join`` it before forking). Imports hold the
    interpreter, but DuckDB's read of the CSVs releases it, so most of their time is hidden there. A
    module that fails to import is left to the stage's own import, which then says why."""
    import importlib
    import threading

    def run() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - reported by the stage's own import
                return

    thread = threading.Thread(target=run, name=IMPORT_THREAD, daemon=True)
    thread.start()
    return thread


# Memory of its own the triggers stage's child needs, per byte of panel: 6 measured at 100k accounts
# (bench/results.md, before issue 14's memory work in the triggers); no fork when not available.
CHILD_MEMORY = 6


def release_free_memory() -> None:
    """Give the memory freed so far back to the operating system: Arrow's pool (the loader's text
    tables) and the C heap (``malloc_trim`` on glibc). Freed memory the allocators keep would otherwise
    stay resident beside every later large array (numpy maps those afresh), and a forked child would
    start with it. Results do not depend on it; nothing happens where the calls do not exist."""
    import ctypes

    try:
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    except (ImportError, AttributeError):  # pragma: no cover - pyarrow is a dependency
        pass
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows)
        pass


# The stages beside the potential, in pieces, in one process's order: the triggers' steps of each outcome
# group ("drivers", group, step: cskit.triggers.SAME_ROWS x STEPS: the models, the descriptive pass over
# the rows, the lead-lag scores), the health score, its history (:func:`plan`). With two cores the forked
# child makes the score (its own piece) while the parent makes the metrics and the potential; then each
# SHARED piece, largest first (the two groups' models, the history, then the groups' lead-lag scores and
# descriptive passes: 0.3-2 s each at 100k accounts), is taken by whichever process is free first
# (parallel.Claims: flags in shared memory), so the lanes end within the last small piece of each other
# whichever lane the other stages' work makes the longer. The history needs the score: the parent skips
# it until the child has posted the score (:meth:`_Pieces.waiting`). The parent's triggers' pieces use the
# KPIs' transforms its potential fitted (one cskit.fits.Fits); the child's, its score's. The child gives
# back the memory each of its own pieces freed before the next (release_free_memory). The results are the
# one process's whatever side makes a piece: each piece is the same call on the same panel, the
# triggers' parts are combined after (cskit.triggers.combine_triggers: counts, correlations and lead-lag
# scores joined to each outcome's model, q-values and notices over every outcome), and each piece's
# Python warnings are shown in the order of the pieces (:func:`_assemble`).
HEALTH, HISTORY = ("health", None), ("history", None)
TAKER: str | None = None  # "parent" / "child": only that process takes the SHARED pieces (tests)


class _Pieces:
    """The pieces one process makes, each with its Python warnings (shown in one process's order by
    :func:`_assemble`), its seconds and the side that made it; the other process's, asked for with
    :meth:`get`, come from ``job`` (posted by the child as it makes them) or, when the child died
    without them, are made here. One :class:`cskit.fits.Fits` serves this process's pieces (``fits``, or
    one made for the first: the KPIs' transforms and the model rows' samples they share)."""

    def __init__(self, panel: pd.DataFrame, data: ClientData, p: Params, kpis: list[str], job=None, post=None,
                 *, fits=None):
        self.panel, self.data, self.p, self.kpis, self.job, self.post = panel, data, p, kpis, job, post
        self.made: dict = {}
        self.fits = fits
        self.waited = 0.0
        self.side = "parent" if post is None else "child"

    def run(self, piece: tuple):
        """Make ``piece`` here (the health score first, for the history)."""
        import warnings

        from cskit.fits import Fits

        stage = piece[0]
        health = self.get(HEALTH)[0] if stage == "history" else None
        if self.fits is None and stage != "history":
            self.fits = Fits(self.panel, self.p.kpi_lag_months, seed=self.p.seed)
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            if stage == "drivers":
                from cskit.triggers import trigger_part

                _, group, step = piece
                value = trigger_part(self.panel, self.p, self.kpis, groups=(group,), steps=(step,), fits=self.fits)
            elif stage == "health":
                from cskit.health import LTV_LATER, design_health_score

                value = design_health_score(self.panel, self.data, self.p, self.kpis, ltv=LTV_LATER, fits=self.fits)
            else:
                from cskit.history import track_health

                value = track_health(self.panel, self.data, self.p, health)
        shown = [(str(w.message), w.category, w.filename, w.lineno) for w in caught]
        self.made[piece] = (value, shown, time.perf_counter() - start, self.side)
        if self.post is not None:
            self.post(piece, self.made[piece])
        return self.made[piece]

    def get(self, piece: tuple):
        """``piece``: made here, posted by the child (waited for), or made here now (the child died)."""
        if piece in self.made:
            return self.made[piece]
        if self.job is not None:
            start = time.perf_counter()
            ok, value = self.job.posted(piece)
            self.waited += time.perf_counter() - start
            if ok:
                self.made[piece] = value
                return value
        return self.run(piece)

    def waiting(self, pieces: tuple) -> set[int]:
        """The indices of ``pieces`` this process cannot make yet without waiting: the history while
        the child's score has not arrived (nor been made here)."""
        ready = HEALTH in self.made or self.job is None or self.job.arrived(HEALTH)
        return set() if ready else {i for i, piece in enumerate(pieces) if piece == HISTORY}

    def release(self) -> None:
        if self.fits is not None:
            self.fits.release()
            self.fits = None


def plan() -> tuple[tuple, tuple, tuple]:
    """The pieces (one process's order), the child's own (made first, in that order) and the SHARED
    ones (the order they are taken in: largest first)."""
    from cskit.triggers import SAME_ROWS, STEPS

    drivers = {(g[0], step): ("drivers", g, step) for g in SAME_ROWS for step in STEPS}
    # CPU seconds at 100k accounts (bench client): 1.9, 1.25, 1.3, 0.7, 0.65, 0.4, 0.3
    shared = (drivers["expansion", "model"], drivers["churn", "model"], HISTORY, drivers["expansion", "lead_lag"],
              drivers["churn", "lead_lag"], drivers["expansion", "columns"], drivers["churn", "columns"])
    return (*drivers.values(), HEALTH, HISTORY), (HEALTH,), shared


def _beside_potential(panel: pd.DataFrame, data: ClientData, p: Params, kpis: list[str], claims, *, post) -> None:
    """The forked child, beside the potential: its own pieces (:func:`plan`: the health score, its touch
    model left for ``health.add_touch`` once the potential's LTV is known), then the SHARED ones the
    parent has not taken yet; each posted as it is made."""
    _, own, shared = plan()
    here = _Pieces(panel, data, p, kpis, post=post)
    for piece in own:
        here.run(piece)
        release_free_memory()  # what the piece freed, given back before the next one (beside the potential)
    while (i := claims.take()) is not None:
        here.run(shared[i])
    here.release()


def _assemble(done: dict, p: Params, kpis: list[str]):
    """The triggers (their pieces' parts combined), the health score and its history of the pieces
    (``done``: each piece's value, warnings, seconds and side, in one process's order: :func:`plan`'s),
    with each piece's Python warnings shown in that order."""
    import warnings

    from cskit.triggers import combine_triggers

    for _, shown, *_ in done.values():
        for message, category, filename, lineno in shown:
            warnings.warn_explicit(message, category, filename, lineno)
    parts = [value for (stage, *_), (value, *_) in done.items() if stage == "drivers"]
    return combine_triggers(parts, p, kpis), done[HEALTH][0], done[HISTORY][0]


def require_churn(panel: pd.DataFrame, data: ClientData) -> None:
    """Stop (CskitError) when no account churns up to as_of: every churn model (retention triggers,
    improvement potential, health score) needs churn, so the diagnosis would say nothing about it
    (DESIGN §2: "no churn at all for churn models" stops the run). A few churns are not stopped here:
    each stage then reports itself as not estimable."""
    if int(panel["churn"].sum()) > 0:
        return
    accounts = panel["account_id"].nunique()
    dated = int(data.accounts["churn_date"].notna().sum()) if "churn_date" in data.accounts else 0
    as_of = pd.Timestamp(data.as_of)
    # accounts whose revenue stops before as_of: former customers, when the client records no churn dates
    paid = data.revenue[data.revenue["mrr"] > 0]
    last = paid.groupby("account_id")["month"].max()
    stopped = last[last < as_of].sort_index()
    hint = (f" {len(stopped)} of them pay no MRR at as_of (e.g. '{stopped.index[0]}', last paid "
            f"{stopped.iloc[0]:%Y-%m}): if they left, their churn_date is the day their contract ended."
            if len(stopped) else "")
    raise CskitError(
        f"No churn at all: table 'accounts', column 'churn_date' gives no churn up to as_of={as_of:%Y-%m} "
        f"among the {accounts} accounts analysed ({dated} have a churn_date), so nothing can be learnt about "
        f"what drives churn (retention triggers, improvement potential, health score).{hint} Fix: fill "
        "accounts.churn_date with the day each former customer's contract ended (YYYY-MM-DD); if the client's "
        "file names that column differently, map it in the params (columns: {accounts: {<their column>: "
        "churn_date}}); if the churn dates lie after as_of, set a later as_of."
    )


PROGRESS_ENV = "CSKIT_PROGRESS"  # a file `cskit run` reads to show which stage the kernel is in


def report_stage(stage: str) -> None:
    """Append ``stage`` to the progress file named by $CSKIT_PROGRESS (set by ``cskit run`` on a
    terminal); nothing otherwise."""
    import os

    path = os.environ.get(PROGRESS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(stage + "\n")


class _Clock:
    """``with clock("stage"):`` adds the block's wall-clock seconds to ``timings["stage"]`` (if a dict)."""

    def __init__(self, timings: dict | None):
        self.timings = timings

    @contextmanager
    def __call__(self, stage: str):
        report_stage(stage)
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.timings is not None:
                self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start


def ltv_headline(accounts: pd.DataFrame, entry: dict | None = None) -> dict:
    """The ``ltv_survival`` entry of kpi_summary: mean (``value``) and ``total`` survival-based LTV.

    Over the accounts of ``potential.accounts`` (those active at as_of); keeps the definition key and
    period of the placeholder ``entry`` that compute_metrics leaves, and drops its note.
    """
    ltv = pd.to_numeric(accounts["ltv"], errors="coerce").dropna()
    out = {k: v for k, v in (entry or {"definition": "ltv_survival"}).items() if k != "note"}
    if ltv.empty:
        return out | {"value": None, "total": None, "accounts": 0, "note": "no account active at as_of",
                      "note_code": "metric_no_active"}
    return out | {"value": round(float(ltv.mean()), 6), "total": round(float(ltv.sum()), 6), "accounts": int(len(ltv))}
