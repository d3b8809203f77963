"""Time (and optionally profile) the triggers stage alone on a saved panel (issue 14).

``python bench/time_triggers.py build PARAMS.yaml PANEL.pkl``
    loads the client of PARAMS and builds its panel once, saving (params, panel, kpis) to PANEL.pkl;
``python bench/time_triggers.py time PANEL.pkl [--profile OUT.prof] [--save OUT.pkl]``
    runs ``find_triggers`` on it in this process (BLAS pinned to one thread, as ``cskit run``) and prints
    wall seconds, user and system CPU seconds and the process's peak RSS; ``--save`` pickles the result
    tables (to compare two revisions: run the same PANEL.pkl with each revision on PYTHONPATH).

CPU seconds are the figure to compare on a shared machine (wall time follows the other jobs' load).
"""
from __future__ import annotations

import os
import pickle
import resource
import sys
import time

for _k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_k] = "1"


def build(params_file: str, out: str) -> None:
    from cskit.loading import load_client
    from cskit.panel import build_panel, kpi_columns
    from cskit.pipeline import absolute_data, as_params

    p = absolute_data(as_params(params_file), None)
    data = load_client(p)
    panel = build_panel(data)
    with open(out, "wb") as f:
        pickle.dump((p, panel, kpi_columns(data)), f, protocol=5)
    print(f"{len(panel)} panel rows saved to {out}")


def run(panel_file: str, profile: str | None, save: str | None) -> None:
    from cskit.triggers import find_triggers

    with open(panel_file, "rb") as f:
        params, panel, kpis = pickle.load(f)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    if profile:
        import cProfile

        prof = cProfile.Profile()
        tr = prof.runcall(find_triggers, panel, params, kpis)
        prof.dump_stats(profile)
    else:
        tr = find_triggers(panel, params, kpis)
    r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
    print(f"find_triggers: {len(panel)} panel rows, wall {wall:.2f} s, user {r1.ru_utime - r0.ru_utime:.2f} s, "
          f"system {r1.ru_stime - r0.ru_stime:.2f} s, peak RSS {r1.ru_maxrss / 1024:.0f} MB, "
          f"load average {os.getloadavg()[0]:.1f}")
    if save:
        with open(save, "wb") as f:
            pickle.dump({"table": tr.table, "details": tr.details, "lead_lag": tr.lead_lag, "missing": tr.missing,
                         "structure": tr.structure, "outcomes": tr.outcomes,
                         "warnings": [str(w) for w in tr.warnings]}, f)


def main(argv: list[str]) -> None:
    def option(name: str) -> str | None:
        return argv[argv.index(name) + 1] if name in argv else None

    if argv[:1] == ["build"] and len(argv) >= 3:
        build(argv[1], argv[2])
    elif argv[:1] == ["time"] and len(argv) >= 2:
        run(argv[1], option("--profile"), option("--save"))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
