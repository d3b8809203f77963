"""Test-wide settings.

BLAS sums in a thread-count-dependent order (last digits of model fits change with it) and, on a
shared 2-core machine, multithreaded OpenBLAS is many times slower for the small matrices cskit
fits. ``cskit run`` pins one thread; the tests do the same, before numpy is imported.
"""
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
