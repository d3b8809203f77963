"""Two cores for one diagnosis: a stage run in a forked child process while the parent runs others.

``cskit.analyse`` runs the triggers, the health score and its history in a child and, meanwhile, the
improvement potential in its own process: these read the same panel and never each other's results
(but the touch model's LTV, added to the health score after). The child is a ``fork`` of the
analysing process, so it sees the panel without a copy (the operating system shares its pages until one
side writes to them) and nothing is pickled on the way in; only the stages' results come back through a
pipe.

The results are the ones a single process gives, byte for byte: the child runs the same function on the
same data with the same one-thread BLAS (:func:`one_blas_thread`: the order of a BLAS sum depends on its
thread count). The stage's Python warnings are replayed in the parent; a ``CskitError`` (or any other
exception) raised in the child is raised again in the parent, as it would be in one process. A child
that dies without an answer is not an error of the data: the stage is then run again in the parent.
The objects alive at the fork are moved out of the garbage collector's reach (``gc.freeze``) while the
child runs: a collection writes into every object it examines, and each page it writes in either process
stops being shared (the child's first full collection alone copied ~50 MB at 30k accounts); the parent's
collector is given them back (``gc.unfreeze``) once the child has answered.
Two stages at once need more memory than one after the other, so the child asks Linux to end it
first when memory runs out (the parent then runs the stage itself), and ``analyse`` forks only when
the memory available is enough for the child's expected share (:func:`memory_allows`).

``CSKIT_PARALLEL=0`` (or ``analyse(..., parallel=False)``) runs every stage in one process; so does a
machine with one usable core, and any OS but Linux (no ``fork`` on Windows; on macOS forking a process
that has loaded system frameworks is unsafe).
"""
from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import sys
import traceback
import warnings
from contextlib import contextmanager
from typing import Any, Callable

PARALLEL_ENV = "CSKIT_PARALLEL"  # "0" / "false" / "no" / "off": every stage in one process
_OFF = {"0", "false", "no", "off"}


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def parallel_enabled(parallel: bool | None = None) -> bool:
    """Whether to run stages in a forked child: ``parallel`` when given, else ``$CSKIT_PARALLEL`` (default
    on); only on Linux (``fork``) with more than one usable core."""
    if parallel is None:
        parallel = os.environ.get(PARALLEL_ENV, "").strip().lower() not in _OFF
    return bool(parallel) and sys.platform.startswith("linux") and usable_cores() > 1


@contextmanager
def one_blas_thread():
    """BLAS / OpenMP limited to one thread inside the block (as ``cskit run`` sets for its kernel), so a
    run in JupyterLab, in one process or in two, sums in the same order and gives the same bytes. The
    libraries loaded when the block starts are limited (import the stages' modules first)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a declared dependency; without it the environment decides
        yield
        return
    with threadpool_limits(limits=1):
        yield


def _first_to_go() -> None:
    """Ask Linux to end this process first when memory runs out (``oom_score_adj`` 1000; raising it
    needs no privilege): the parent then runs the stage itself instead of being killed with its child."""
    try:
        with open("/proc/self/oom_score_adj", "w", encoding="ascii") as f:
            f.write("1000")
    except OSError:
        pass


def available_memory() -> int | None:
    """Bytes of memory the system can still give without swapping (Linux ``MemAvailable``; None
    elsewhere)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def memory_allows(need: int) -> bool:
    """Whether a child that needs ``need`` bytes of its own fits in the memory available now (True where
    the system does not say)."""
    free = available_memory()
    return free is None or free >= need


class _RemoteTraceback(Exception):
    """The child's traceback, chained to the exception it raised (as ``concurrent.futures`` does)."""

    def __init__(self, tb: str):
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


def _child(conn, fn: Callable, args: tuple, kwargs: dict) -> None:
    """The forked child: run ``fn``, send ``(ok, value, warnings)`` back, never raise."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # an interrupt is the parent's to handle (it ends the child)
    _first_to_go()
    with warnings.catch_warnings(record=True) as caught:
        try:
            answer = (True, fn(*args, **kwargs))
        except Exception as exc:  # every failure goes back to the parent, which raises it
            answer = (False, (exc, traceback.format_exc()))
    shown = [(str(w.message), w.category, w.filename, w.lineno) for w in caught]
    try:
        conn.send((*answer, shown))
    except Exception as exc:  # an unpicklable result or exception: say so, do not hang the parent
        conn.send((False, (RuntimeError(f"{type(exc).__name__}: {exc}"), traceback.format_exc()), shown))
    conn.close()


class Forked:
    """``fn(*args, **kwargs)`` running in a forked child; :meth:`result` waits for it and returns its
    value (or raises its exception); :meth:`cancel` ends it. Without ``parallel`` (see
    :func:`parallel_enabled`), ``fn`` runs here and now, as a plain call would (its exception is raised
    at once), and :meth:`result` returns its value."""

    def __init__(self, fn: Callable, *args: Any, parallel: bool = True, **kwargs: Any):
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.process = self._conn = None
        self.child_pid: int | None = None
        if not parallel:
            self._value = fn(*args, **kwargs)
        else:
            ctx = multiprocessing.get_context("fork")
            self._conn, send = ctx.Pipe(duplex=False)
            self.process = ctx.Process(target=_child, args=(send, fn, args, kwargs), daemon=True)
            gc.collect()  # the garbage of before the fork, collected once, not in both processes
            gc.freeze()  # unfrozen in the parent by cancel(); the child keeps its copy frozen
            try:
                self.process.start()
            except BaseException:
                gc.unfreeze()
                raise
            self.child_pid = self.process.pid
            send.close()

    def result(self) -> Any:
        """The function's value (from the child, or computed here when not parallel or the child died)."""
        if self.child_pid is None:
            return self._value
        try:
            ok, value, shown = self._conn.recv()
        except EOFError:  # the child died without an answer (e.g. killed for memory): run it here
            self.cancel()
            return self.fn(*self.args, **self.kwargs)
        self.cancel()
        for message, category, filename, lineno in shown:
            warnings.warn_explicit(message, category, filename, lineno)
        if ok:
            return value
        exc, tb = value
        raise exc from _RemoteTraceback(tb)

    def cancel(self) -> None:
        """End the child (if still running) and release the pipe; safe to call more than once."""
        if self.process is not None:
            if self.process.is_alive():
                self.process.terminate()
            self.process.join()
            self.process.close()
            self.process = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
            gc.unfreeze()
