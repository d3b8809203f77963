"""Whole-kit benchmark (DESIGN §8): ``python bench/run.py --accounts 10000 100000 300000``.

For each size, a synthetic client (``cskit.simulate``, N organic accounts × 24 months, seeded) is
written as CSVs, then, in the same run:

- the floor: DuckDB's bare read of accounts.csv, revenue.csv and kpis.csv into tables (best of 3, before
  and again after the analysis in its process: the lower is reported);
- the analysis, in a fresh Python process: every stage of ``cskit.analyse`` (load, panel, metrics +
  survival, drivers, potential, health, history) and ``Diagnosis.write``, with the pipeline's own stage
  clock, and that process's peak resident memory (``resource.getrusage``);
- the whole ``cskit run params.yaml`` as a consultant runs it (CLI check, notebook kernel, charts;
  ``--no-html`` above ``--html-max``), in a fresh process watched by psutil every 0.05 s: wall time,
  when the kernel reached each stage (``$CSKIT_PROGRESS``), the peak resident memory of every process
  of its tree (the CLI process, the kernel) and of their sum; ``getrusage(RUSAGE_CHILDREN)`` gives the
  exact (unsampled) peak of the largest of them;
- the analysis and the whole run are each run twice: timed without any memory sampler, then again with
  the samplers for the peak memory alone (reading a process's PSS slows it: ``MEMORY_KEYS``);
- up to ``--naive-max`` accounts, the naive equivalents (``bench/bench_load.py``,
  ``bench/bench_triggers.py``, ``bench/bench_potential.py``), whose tables are copied in.

Floor ratios = analysis (analyse + write) ÷ floor, and whole ``cskit run`` ÷ floor. Figures are ratios
and shares within one run (the machine is shared); seconds are for context only. BLAS is pinned to one
thread, as ``cskit run`` does. ``bench/results.md`` is regenerated; sections other helpers' benchmarks
wrote there (``## Events …``, ``## Warehouse …``) are kept.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# drivers_parent / history_parent: the shared pieces (the triggers' steps, the history) the analysing
# process took (cskit.pipeline.plan), not its child; health_parent: the score, made there only when the
# child died before posting it
STAGES = ["load", "panel", "metrics", "drivers", "potential", "drivers_parent", "history_parent", "health", "history",
          "health_parent", "write", "other"]
CHILD_STAGES = ("drivers", "health", "history")  # with two cores: the forked child's, beside the potential
RUN_STAGES = ["load", "panel", "metrics", "drivers", "potential", "health", "history", "report"]
THREADS = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
CLI = "import sys; from cskit.cli import main; sys.argv[0] = 'cskit'; main()"


def duckdb_read(folder: Path) -> None:
    """The physical floor: read the three required tables into DuckDB tables."""
    import duckdb

    con = duckdb.connect()
    for name in ("accounts", "revenue", "kpis"):
        con.execute(f"create table {name} as select * from read_csv('{folder / (name + '.csv')}')")
    con.close()


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def simulate(n_accounts: int, months: int, seed: int, folder: Path) -> dict:
    """Write the synthetic client (kept between runs: the simulator is seeded); return its table sizes."""
    sizes = folder / "sizes.json"
    if sizes.is_file():
        return json.loads(sizes.read_text(encoding="utf-8"))
    from cskit.simulate import simulate_client

    sim = simulate_client(n_accounts=n_accounts, n_months=months, seed=seed, mc_paths=0)
    sim.write(folder)
    out = {name: len(df) for name, df in sim.tables.items()}
    sizes.write_text(json.dumps(out), encoding="utf-8")
    return out


class TreeMemory:
    """Samples a process tree's memory every ``every`` seconds in a thread: the peak of the sum of its
    processes' proportional set sizes (PSS: a page shared by a forked child and its parent counts half
    in each, so the sum is the physical memory of the whole tree; the sum of RSS counts it twice)."""

    def __init__(self, pid: int, every: float = 0.1):
        import threading

        import psutil

        self.root, self.every, self.peak_pss, self.peak_rss = psutil.Process(pid), every, 0, 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def sample(self) -> None:
        import psutil

        pss = rss = 0
        try:
            tree = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        for p in tree:
            try:
                m = p.memory_full_info()
            except psutil.Error:
                continue
            pss, rss = pss + m.pss, rss + m.rss
        self.peak_pss, self.peak_rss = max(self.peak_pss, pss), max(self.peak_rss, rss)

    def _run(self) -> None:
        while not self.done.wait(self.every):
            self.sample()

    def stop(self) -> dict:
        self.done.set()
        self.thread.join()
        return {"pss_sum_mb": self.peak_pss / 2**20, "rss_sum_mb": self.peak_rss / 2**20}


def cpu_seconds(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def measure_one(data: Path, out: Path, bootstrap: int, seed: int, sample: bool = True) -> dict:
    """Run in a fresh process: floor, analysis stages, write, peak memory (this process, the triggers
    stage's forked child, and the physical sum of both: sampled only when ``sample``, see ``MEMORY_KEYS``)."""
    import cskit

    params = cskit.validate_params({"client": "bench", "data": str(data), "bootstrap": bootstrap, "seed": seed})
    floor = None if sample else best_of(lambda: duckdb_read(data))  # the timed run's is the one reported
    timings: dict = {}
    memory = TreeMemory(os.getpid()) if sample else None
    cpu0 = cpu_seconds(resource.RUSAGE_SELF)
    start = time.perf_counter()
    dx = cskit.analyse(params, timings=timings)
    write_start = time.perf_counter()
    dx.write(out / "bench")
    timings["write"] = time.perf_counter() - write_start
    total = time.perf_counter() - start
    parallel = "drivers_wait" in timings  # triggers, health and history ran in a forked child, beside potential
    timings["other"] = total - sum(v for k, v in timings.items() if not (parallel and k in CHILD_STAGES))
    mem = memory.stop() if memory else {}
    out = {"stages": timings, "total": total, "parallel": parallel,
           "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "child_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, **mem,
           "cpu_s": cpu_seconds(resource.RUSAGE_SELF) - cpu0, "child_cpu_s": cpu_seconds(resource.RUSAGE_CHILDREN),
           "load_avg": os.getloadavg(),
           "panel_rows": int(len(dx.panel)), "accounts": int(dx.panel["account_id"].nunique())}
    # the floor read again after the analysis (its CPU and memory not counted above): the lower of the two
    # best-of-3 is the one reported (a machine busier before the analysis than during it would otherwise
    # flatter the ratio)
    floors = None if sample else (floor, best_of(lambda: duckdb_read(data)))
    return {"floor": None if sample else min(floors), "floors": floors, **out}


def role_of(p, cli: int) -> str:
    """cli, kernel, "kernel child" (the kernel's fork running the triggers stage) or the process name."""
    if p.pid == cli:
        return "cli"
    if "ipykernel" not in " ".join(p.cmdline()):
        return p.name()
    parent = p.parent()
    return "kernel child" if parent is not None and "ipykernel" in " ".join(parent.cmdline()) else "kernel"


def whole_run(data: Path, folder: Path, bootstrap: int, seed: int, html: bool, sample: bool = True) -> dict:
    """Run in a fresh process: ``cskit run`` watched by psutil (see the module docstring); its processes'
    memory read only when ``sample`` (see ``MEMORY_KEYS``)."""
    import psutil
    import yaml

    from cskit.pipeline import PROGRESS_ENV

    folder.mkdir(parents=True, exist_ok=True)
    params = folder / "bench.yaml"
    params.write_text(yaml.safe_dump({"client": "bench", "data": str(data), "bootstrap": bootstrap, "seed": seed}),
                      encoding="utf-8")
    progress = folder / "progress.txt"
    progress.write_text("", encoding="utf-8")
    env = os.environ | THREADS | {PROGRESS_ENV: str(progress)}
    cmd = [sys.executable, "-c", CLI, "run", str(params), "--out", str(folder / "output"),
           "--html" if html else "--no-html"]
    peaks: dict[int, dict] = {}
    peak_sum, peak_pss, seen, reached = 0, 0, 0, {}
    start = time.perf_counter()
    proc = psutil.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None:
        total = pss = 0
        try:
            tree = [proc, *proc.children(recursive=True)] if sample else []
        except psutil.NoSuchProcess:
            tree = []
        for p in tree:
            try:
                mem = p.memory_full_info()
                if p.pid not in peaks:
                    peaks[p.pid] = {"role": role_of(p, proc.pid), "peak_mb": 0.0, "peak_pss_mb": 0.0}
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            total, pss = total + mem.rss, pss + mem.pss
            peaks[p.pid]["peak_mb"] = max(peaks[p.pid]["peak_mb"], mem.rss / 2**20)
            peaks[p.pid]["peak_pss_mb"] = max(peaks[p.pid]["peak_pss_mb"], mem.pss / 2**20)
        peak_sum, peak_pss = max(peak_sum, total), max(peak_pss, pss)
        lines = progress.read_text(encoding="utf-8").splitlines()
        for stage in lines[seen:]:
            reached.setdefault(stage, time.perf_counter() - start)
        seen = len(lines)
        time.sleep(0.05)
    wall = time.perf_counter() - start
    stdout, stderr = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"cskit run failed ({proc.returncode}): {stderr[-3000:]}")
    for stage in progress.read_text(encoding="utf-8").splitlines()[seen:]:
        reached.setdefault(stage, wall)
    exact = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"wall": wall, "reached": reached, "processes": list(peaks.values()), "peak_sum_mb": peak_sum / 2**20,
            "peak_pss_sum_mb": peak_pss / 2**20, "peak_max_exact_mb": exact, "html": html,
            "load_avg": os.getloadavg()}


def child(args: argparse.Namespace) -> None:
    if args.child == "analysis":
        res = measure_one(Path(args.data), Path(args.out), args.bootstrap, args.seed, args.sample)
    else:
        res = whole_run(Path(args.data), Path(args.out), args.bootstrap, args.seed, args.html, args.sample)
    Path(args.json).write_text(json.dumps(res, indent=2), encoding="utf-8")


def in_child(kind: str, data: Path, out: Path, args: argparse.Namespace, html: bool = False,
             sample: bool = True) -> dict:
    target = out.parent / f"{kind}{'-memory' if sample else ''}.json"
    cmd = [sys.executable, __file__, "--child", kind, "--data", str(data), "--out", str(out), "--json", str(target),
           "--bootstrap", str(args.bootstrap), "--seed", str(args.seed)] + (["--html"] if html else []) + (
           ["--sample"] if sample else [])
    subprocess.run(cmd, check=True, env=os.environ | THREADS | {"PYTHONPATH": str(ROOT)})
    return json.loads(target.read_text(encoding="utf-8"))


# Reading a process's proportional set size (/proc/PID/smaps_rollup, what psutil's memory_full_info reads)
# walks its page tables under the lock its page faults and mappings take: sampled every 0.05-0.1 s, a
# 100k-account analysis took ~1 s (5%) longer. So each size runs twice: timed without a memory sampler,
# then again with one, for the peak memory alone (its wall-clock reported beside, as "sampled").
MEMORY_KEYS = ("pss_sum_mb", "rss_sum_mb")


RUN_MEMORY_KEYS = ("processes", "peak_sum_mb", "peak_pss_sum_mb")  # the same of a `cskit run` (whole_run)


def with_memory(timed: dict, sampled: dict, keys: tuple[str, ...], clock: str) -> dict:
    """The timed run's figures with the sampled run's memory (``keys``, those it has) and that run's own
    wall-clock (its ``clock`` figure, as ``sampled_<clock>``)."""
    return timed | {k: sampled[k] for k in keys if k in sampled} | {f"sampled_{clock}": sampled[clock]}


def run_size(n: int, args: argparse.Namespace, workdir: Path) -> dict:
    folder = workdir / f"n{n}"
    data = folder / "data"
    sizes = simulate(n, args.months, args.seed, data)
    res = in_child("analysis", data, folder / "analysis", args, sample=False)
    res = with_memory(res, in_child("analysis", data, folder / "analysis", args), MEMORY_KEYS, "total")
    html = n <= args.html_max
    run = in_child("run", data, folder / "run", args, html=html, sample=False)
    res["run"] = with_memory(run, in_child("run", data, folder / "run", args, html=html), RUN_MEMORY_KEYS, "wall")
    res.update(n=n, rows=sizes)
    return res


def naive(args: argparse.Namespace, workdir: Path) -> list[str]:
    """The naive equivalents' tables, each script run once over the sizes up to --naive-max."""
    sizes = [str(n) for n in sorted(args.accounts) if n <= args.naive_max]
    if not sizes:
        return []
    out = []
    for script, extra in NAIVE:
        extra = [args.bootstrap if x == "BOOTSTRAP" else x for x in extra]
        extra = [str(x) for x in extra]
        target = workdir / f"naive-{script}.md"
        cmd = [sys.executable, str(HERE / script), "--accounts", *sizes, *extra, "--out", str(target)]
        print("  " + " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True, env=os.environ | THREADS | {"PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL)
        out += naive_section(script, extra, sizes, target)
    return out


NAIVE = [("bench_load.py", ["--repeat", "1"]), ("bench_triggers.py", []), ("bench_potential.py", ["--bootstrap",
                                                                                               "BOOTSTRAP"])]


def naive_section(script: str, extra: list, sizes: list[str], target: Path) -> list[str]:
    text = target.read_text(encoding="utf-8").strip().replace("\n## ", "\n### ")
    text = text[3:] if text.startswith("## ") else text
    text = "\n".join(line for line in text.splitlines() if not line.startswith("# "))
    command = " ".join(["python", f"bench/{script}", "--accounts", *sizes, *map(str, extra)])
    return [f"### `{command}`", "", text.strip(), ""]


def mb(x: float) -> str:
    return f"{x:,.0f}"


def markdown(results: list[dict], args: argparse.Namespace, naive_lines: list[str], command: str) -> str:
    lines = [
        "# cskit benchmark (`bench/run.py`)",
        "",
        f"Command: `{command}`. Machine: {platform.machine()}, {os.cpu_count()} cores (shared with other jobs, "
        f"so compare within a row), Python {platform.python_version()}; BLAS pinned to 1 thread. Generated by "
        "bench/run.py; the sections after this part are other benchmarks' and are kept.",
        "",
        "**floor** = DuckDB's bare read of accounts/revenue/kpis CSVs (best of 3 before the analysis and best of 3 "
        "after it, in its process; the lower of the two: same client, same run). "
        "**analysis** = `cskit.analyse` + `Diagnosis.write` in a fresh process. **cskit run** = the whole "
        f"command (`cskit run params.yaml {'--no-html' if max(args.accounts) > args.html_max else ''}`: CLI check, "
        f"notebook kernel, charts; HTML up to {args.html_max:,} accounts).",
        "",
        "| accounts | panel rows | input rows (acc / rev / kpis) | floor (s) | analysis (s) | **analysis ÷ floor** "
        "| cskit run (s) | **run ÷ floor** | HTML |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        rows, run = r["rows"], r.get("run") or {"wall": float("nan"), "html": False}
        lines.append(
            f"| {r['accounts']:,} | {r['panel_rows']:,} "
            f"| {rows['accounts']:,} / {rows['revenue']:,} / {rows['kpis']:,} "
            + (f"| {r['floor']:.2f} | {r['total']:.1f} | **{r['total'] / r['floor']:.0f}×** | {run['wall']:.1f} "
               f"| **{run['wall'] / r['floor']:.0f}×** | {'yes' if run['html'] else 'no'} |"
               if run["wall"] == run["wall"] else
               f"| {r['floor']:.2f} | {r['total']:.1f} | **{r['total'] / r['floor']:.0f}×** | — | — | — |")
        )
    lines += ["", "Peak memory (MB). *Analysis*: the analysing process (`getrusage(RUSAGE_SELF)`), the triggers "
              "stage's forked child (`RUSAGE_CHILDREN`; its resident set counts the pages it shares with its parent) "
              "and **both together**: the peak of the sum of their proportional set sizes (PSS, a shared page counted "
              "once), sampled every 0.1 s. *`cskit run`*: each process of its tree (CLI, notebook kernel, the "
              "kernel's forked child) sampled by psutil every 0.05 s, the peak of their PSS sum (**the whole run**) "
              "and of their RSS sum, and the exact peak of the largest (`getrusage(RUSAGE_CHILDREN)`). The samplers "
              "slow what they watch (reading a PSS walks the process's page tables), so the times above come from "
              "runs without them and the sampled figures from a second run of each (*sampled run*: its wall-clock, "
              "analysis / cskit run, in seconds).", "",
              "| accounts | analysis: process | its child | **both (PSS)** | run: CLI | kernel | kernel child "
              "| other | **whole run (PSS)** | RSS sum | largest (exact) | sampled run (s) |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        both = mb(r["pss_sum_mb"]) if "pss_sum_mb" in r else "—"
        child = mb(r["child_peak_mb"]) if r.get("child_peak_mb") else "—"
        head = f"| {r['accounts']:,} | {mb(r['peak_mb'])} | {child} | **{both}** "
        sampled = f"{r['sampled_total']:.1f}" if "sampled_total" in r else "—"
        if not r.get("run"):
            lines.append(head + f"| — | — | — | — | — | — | — | {sampled} / — |")
            continue
        procs, run = r["run"]["processes"], r["run"]
        roles = ("cli", "kernel", "kernel child")
        by = {role: mb(max((p["peak_mb"] for p in procs if p["role"] == role), default=0.0)) for role in roles}
        by["kernel child"] = by["kernel child"] if by["kernel child"] != "0" else "—"
        other = sum(p["peak_mb"] for p in procs if p["role"] not in roles)
        whole = mb(run["peak_pss_sum_mb"]) if "peak_pss_sum_mb" in run else "—"
        wall = f"{run['sampled_wall']:.1f}" if "sampled_wall" in run else "—"
        lines.append(head + f"| {by['cli']} | {by['kernel']} | {by['kernel child']} | {mb(other)} "
                     f"| **{whole}** | {mb(run['peak_sum_mb'])} | {mb(run['peak_max_exact_mb'])} "
                     f"| {sampled} / {wall} |")
    lines += ["", "Share of the analysis time per stage (%, of the analysis' wall-clock). With two cores the "
              "triggers (*drivers*), the health score and its history run in a forked child while the process "
              "runs the potential: their columns, in parentheses, are their own times in the child (they overlap "
              "the potential), *wait* is what the process then waited for the child, *child* their sum; the "
              "other columns add up to 100. *CPU process / child* = CPU "
              "seconds of each; *1 core ÷ 2* = their sum ÷ the longer of the two paths (the process's CPU, or "
              "the child's plus what the process did before the fork): the speed-up two free cores give over "
              "one process, read from CPU time because the wall-clock of a machine shared with other jobs "
              "(load average) says how busy it was, not how long the work is.",
              "", "| accounts | " + " | ".join(STAGES)
              + " | wait | child | 1 core ÷ 2 | CPU process / child (s) | load avg |",
              "|---:|" + "---:|" * (len(STAGES) + 5)]
    for r in results:
        st, parallel = r["stages"], r.get("parallel", False)
        shares = [(100 * st.get(s, 0.0) / r["total"], parallel and s in CHILD_STAGES) for s in STAGES]
        cpu = (f"{r['cpu_s']:.0f} / {r['child_cpu_s']:.0f}" if "cpu_s" in r else "—")
        load = f"{r['load_avg'][0]:.1f}" if "load_avg" in r else "—"
        child = sum(st.get(s, 0.0) for s in CHILD_STAGES)
        tail = (f"{100 * st.get('drivers_wait', 0.0) / r['total']:.0f} | {100 * child / r['total']:.0f} "
                f"| {two_cores(r)}" if parallel else "— | — | —")
        cells = (f"({x:.0f})" if beside else f"{x:.0f}" for x, beside in shares)
        lines.append(f"| {r['accounts']:,} | " + " | ".join(cells)
                     + f" | {tail} | {cpu} | {load} |")
    lines += ["", "Share of the whole `cskit run` per phase (%; from when the kernel reached each stage): "
              "*before* = CLI check + kernel start + imports; *report* = write, charts, notebook save (and HTML). "
              "With two cores *drivers*, *health* and *history* run in the kernel's child beside *potential* and "
              "show as ∥ (*potential* then lasts until the report).", "",
              "| accounts | before | " + " | ".join(RUN_STAGES) + " | load avg |",
              "|---:|---:|" + "---:|" * (len(RUN_STAGES) + 1)]
    for r in results:
        run = r.get("run")
        if not run:
            continue
        reached = run["reached"]
        overlap = r.get("parallel", False)  # the analysis forked: so did the kernel (the same machine and data)
        stages = [s for s in RUN_STAGES if not (overlap and s in CHILD_STAGES)]
        known = [(s, reached[s]) for s in stages if s in reached]
        known.sort(key=lambda x: x[1])
        cells = {}
        for (s, t), nxt in zip(known, [*(t for _, t in known[1:]), run["wall"]]):
            cells[s] = f"{100 * (nxt - t) / run['wall']:.0f}"
        if overlap:
            cells.update({s: "∥" for s in CHILD_STAGES})
        before = 100 * (known[0][1] if known else run["wall"]) / run["wall"]
        load = f"{run['load_avg'][0]:.1f}" if "load_avg" in run else "—"
        lines.append(f"| {r['accounts']:,} | {before:.0f} | "
                     + " | ".join(cells.get(s, "—") for s in RUN_STAGES) + f" | {load} |")
    if naive_lines:
        lines += ["", "## Speed-up over the naive equivalents (sizes up to "
                  f"{args.naive_max:,} accounts; `--naive-max`)", "", *naive_lines]
    return "\n".join(lines).rstrip("\n") + "\n"


def two_cores(r: dict) -> str:
    """(CPU of the process + CPU of the child) ÷ the longer path: the process's CPU, or the child's plus the
    process's share before the fork (load, panel: their wall-clock share of its CPU)."""
    if "cpu_s" not in r:
        return "—"
    st = r["stages"]
    before = r["cpu_s"] * sum(st.get(s, 0.0) for s in ("load", "panel")) / r["total"]
    return f"{(r['cpu_s'] + r['child_cpu_s']) / max(r['cpu_s'], before + r['child_cpu_s']):.2f}×"


def collect(sizes: list[int], args: argparse.Namespace, workdir: Path, path: Path, kept: str, command: str) -> None:
    """results.md from the measurements in ``workdir`` (whole sizes, or a size whose analysis finished and
    whose ``cskit run`` did not), saying what was not measured."""
    results, missing = [], []
    for n in sizes:
        folder = workdir / f"n{n}"
        if (folder / "result.json").is_file():
            results.append(json.loads((folder / "result.json").read_text(encoding="utf-8")))
        elif (folder / "analysis.json").is_file():
            res = json.loads((folder / "analysis.json").read_text(encoding="utf-8"))
            if (folder / "analysis-memory.json").is_file():
                sampled = json.loads((folder / "analysis-memory.json").read_text(encoding="utf-8"))
                res = with_memory(res, sampled, MEMORY_KEYS, "total")
            res.update(n=n, rows=json.loads((folder / "data" / "sizes.json").read_text(encoding="utf-8")), run=None)
            results.append(res)
            missing.append(f"{n:,} accounts: the whole `cskit run` (it was still running)")
        else:
            missing.append(f"{n:,} accounts: not measured (the run was stopped before it)")
    naive_lines = []
    for script, extra in NAIVE:
        target = workdir / f"naive-{script}.md"
        if target.is_file():
            extra = [str(args.bootstrap) if x == "BOOTSTRAP" else x for x in extra]
            naive_lines += naive_section(script, extra, [str(n) for n in sizes if n <= args.naive_max], target)
    note = ("\n*Not measured in this run: " + "; ".join(missing) + ".*\n") if missing else ""
    path.write_text(markdown(results, args, naive_lines, command) + note + ("\n" + kept + "\n" if kept else ""),
                    encoding="utf-8")
    print(f"wrote {path}")


MINE = ("## Speed-up over the naive equivalents",)


def kept_sections(path: Path) -> str:
    """The ``## `` sections of ``path`` that other benchmarks wrote (everything but run.py's own)."""
    if not path.is_file():
        return ""
    text = path.read_text(encoding="utf-8")
    parts = text.split("\n## ")[1:]
    keep = ["## " + p.rstrip("\n") for p in parts if not any(("## " + p).startswith(m) for m in MINE)]
    return "\n\n".join(keep)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, nargs="+", default=[10000, 100000, 300000])
    ap.add_argument("--months", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--html-max", type=int, default=10000, help="cskit run with the HTML up to this size")
    ap.add_argument("--naive-max", type=int, default=10000, help="run the naive equivalents up to this size")
    ap.add_argument("--workdir", default=str(HERE / "out"))
    ap.add_argument("--results", default=str(HERE / "results.md"))
    ap.add_argument("--collect", action="store_true",
                    help="only rewrite the results from what --workdir holds (a run stopped before its end)")
    ap.add_argument("--child", choices=["analysis", "run"], help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    ap.add_argument("--html", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--sample", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args)
        return
    command = "python bench/run.py " + " ".join(sys.argv[1:] if argv is None else argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    results, naive_lines, path = [], [], Path(args.results)
    kept = kept_sections(path)
    sizes = sorted(args.accounts)
    if args.collect:
        collect(sizes, args, workdir, path, kept, command)
        return
    for n in sizes:
        res = run_size(n, args, workdir)
        print(f"{n:>7,} accounts: analysis {res['total']:.1f} s ({res['total'] / res['floor']:.0f}x floor), "
              f"cskit run {res['run']['wall']:.1f} s ({res['run']['wall'] / res['floor']:.0f}x), "
              f"peak {res['peak_mb']:,.0f} MB / run sum {res['run']['peak_sum_mb']:,.0f} MB", flush=True)
        (workdir / f"n{n}" / "result.json").write_text(json.dumps(res, indent=2), encoding="utf-8")
        results.append(res)
        if n >= max(m for m in sizes if m <= args.naive_max) if min(sizes) <= args.naive_max else False:
            naive_lines = naive_lines or naive(args, workdir)
        # written after every size: a long run that is stopped still leaves what it measured
        pending = [m for m in sizes if m > n]
        note = f"\n*Still running when this file was written: {', '.join(f'{m:,}' for m in pending)} accounts.*\n"
        text = markdown(results, args, naive_lines, command) + (note if pending else "")
        path.write_text(text + ("\n" + kept + "\n" if kept else ""), encoding="utf-8")
        print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    main()
