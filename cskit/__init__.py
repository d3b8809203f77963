"""cskit: customer-success diagnosis for B2B SaaS clients.

Example::

    import cskit
    dx = cskit.analyse("params/demo.yaml")      # every stage: load, panel, metrics, triggers, potential, health
    dx                                           # one line; in JupyterLab a summary table
    dx.triggers.table.head()                     # results are DataFrames / dicts (DESIGN.md §6)
    dx.write("output/demo")                      # results/*.csv, *.json, potential.xlsx, run.json
    cskit.plots.mrr_bridge(dx.metrics.mrr_bridge)  # charts: a DataFrame in, an Axes out
    print(cskit.narrative.findings(cskit.narrative.read_results("output/demo/results"), {}, language="en"))

From the shell: ``cskit run params/demo.yaml`` (the report as HTML under output/demo/), ``cskit batch
params/*.yaml``, ``cskit --version``. ``cskit.plots`` draws the charts and ``cskit.narrative`` writes the
report's words (Japanese or English) from the result files.
"""
__version__ = "0.1.0"

from cskit.errors import CskitError  # noqa: E402
from cskit.params import Params, load_params, validate_params  # noqa: E402

__all__ = ["CskitError", "Diagnosis", "Params", "analyse", "load", "load_params", "narrative", "plots",
           "validate_params"]

# Imported when first used (PEP 562): ``cskit run``'s own process needs none of them, and plots /
# narrative / the stages would cost it ~200 MB and seconds (matplotlib, seaborn, scipy.stats).
_LAZY = {"analyse": "cskit.pipeline", "load": "cskit.pipeline", "Diagnosis": "cskit.pipeline"}


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    try:
        return importlib.import_module(f"cskit.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"cskit.{name}":
            raise
        raise AttributeError(f"module 'cskit' has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
