"""cskit: customer-success diagnosis for B2B SaaS (DESIGN.md).

``cskit.analyse(params)`` runs every stage and returns a :class:`Diagnosis`; ``dx.write(out_dir)``
writes the result files. ``cskit.plots`` draws the charts and ``cskit.narrative`` writes the
report's text from the results.
"""
from cskit.errors import CskitError
from cskit.params import Params, load_params, validate_params
from cskit.pipeline import Diagnosis, analyse, load

__all__ = ["CskitError", "Diagnosis", "Params", "analyse", "load", "load_params", "validate_params"]
__version__ = "0.1.0"
