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

Work can be balanced between the two processes (:class:`Claims`): pieces either may make, each taken
once, by whichever process is free first; with ``posts`` the child sends each piece's value as soon as it
is made (``post``; :meth:`Forked.posted` in the parent), so the parent can build on it (``cskit.analyse``:
the history of the child's health score) and, when the child dies, knows which pieces it must make itself.

``CSKIT_PARALLEL=0`` (or ``analyse(..., parallel=False)``) runs every stage in one process; so does a
machine with one usable core, and any OS but Linux (no ``fork`` on Windows; on macOS forking a process
that has loaded system frameworks is unsafe).

Within one process, work whose libraries release the interpreter is done by a thread beside the caller
(:class:`Beside`: the loader's and the panel builder's).
"""
from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Collection
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


class Beside:
    """``work()`` done by a thread (named ``name``) started here while the caller goes on: numpy's,
    Arrow's and DuckDB's work on large arrays releases the interpreter. :meth:`result` waits for it and
    gives what the work returned, or raises what it raised, in the caller's thread; :meth:`join` only
    waits (no thread outlives a caller that fails meanwhile). ``start`` False: no thread, the work is done
    by :meth:`result` (``thread`` None)."""

    def __init__(self, work: Callable[[], Any], name: str, start: bool = True):
        self.work, self.out, self.error, self.thread = work, None, None, None
        if start:
            self.thread = threading.Thread(target=self._run, name=name, daemon=True)
            self.thread.start()

    def _run(self) -> None:
        try:
            self.out = self.work()
        except BaseException as e:  # noqa: BLE001 - raised again by result, in the caller's thread
            self.error = e
        finally:
            # done: what the work holds is let go (a work that holds its caller, as a closure over
            # it does, would keep both, and all they hold, alive until a collection finds the cycle)
            self.work = None

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()

    def result(self) -> Any:
        if self.thread is None:
            if self.work is not None:  # done here, once, and let go as a thread does
                self._run()
        else:
            self.thread.join()
        if self.error is not None:
            raise self.error
        return self.out


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


def _child(conn, fn: Callable, args: tuple, kwargs: dict, posts: bool = False) -> None:
    """The forked child: run ``fn``, send ``(ok, value, warnings)`` back, never raise. With ``posts``,
    ``fn`` is also given ``post(name, value)``, which sends ``value`` at once (:meth:`Forked.posted`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # an interrupt is the parent's to handle (it ends the child)
    _first_to_go()
    if posts:
        kwargs = kwargs | {"post": lambda name, value: conn.send((POST, name, value))}
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


POST = "cskit-post"  # the first item of a message the child posts before its answer


class Claims:
    """Pieces of work either of two processes may take, each by one of them only: :meth:`take` gives
    the index of the first piece not taken yet (in index order: list them largest first), or None once
    every piece is taken. A shared flag per piece (``multiprocessing.Array``, in memory both processes
    map) under its lock, made before the fork, so each process takes the next piece when it is free:
    whichever is free first. ``only`` ("parent" or "child": the process that made it, or another) lets
    one side alone take (tests)."""

    def __init__(self, n: int, *, only: str | None = None):
        self.n, self.only, self.parent = n, only, os.getpid()
        self._taken = multiprocessing.get_context("fork").Array("b", n)

    def take(self, *, skip: Collection[int] = (), other_alive: Callable[[], bool] | None = None) -> int | None:
        """The first piece not taken and not in ``skip`` (those the caller cannot make yet: another
        process may meanwhile), or None when there is none. ``other_alive`` (the parent's: its child still
        runs): a child killed while it held the lock (the OOM killer's SIGKILL) never releases it, so the
        parent waits for it a second at a time only while the child lives, then takes without it (nobody
        else takes any more; a piece the dead child took and never posted is made by the caller anyway)."""
        side = "parent" if os.getpid() == self.parent else "child"
        if self.only not in (None, side):
            return None
        lock = self._taken.get_lock()
        while not (held := lock.acquire(timeout=1.0)):
            if other_alive is not None and not other_alive():
                break
        try:
            taken = self._taken.get_obj()  # the raw array: the wrapper's items take the lock themselves
            for i in range(self.n):
                if not taken[i] and i not in skip:
                    taken[i] = 1
                    return i
            return None
        finally:
            if held:
                lock.release()


class Forked:
    """``fn(*args, **kwargs)`` running in a forked child; :meth:`result` waits for it and returns its
    value (or raises its exception); :meth:`cancel` ends it. Without ``parallel`` (see
    :func:`parallel_enabled`), ``fn`` runs here and now, as a plain call would (its exception is raised
    at once), and :meth:`result` returns its value.

    With ``posts``, ``fn`` is called with ``post=`` too: ``post(name, value)`` in the child sends
    ``value`` at once, and :meth:`posted` gives it to the parent while the child goes on. A thread of the
    parent reads the pipe as the messages come (the child never waits for the parent to be free);
    the values are unpickled by the caller of :meth:`posted` (an unpickling may import modules: never
    in two threads at once). A child that dies is then not run again: :meth:`posted` says which values
    it never sent (the caller makes those itself) and :meth:`result` returns None."""

    def __init__(self, fn: Callable, *args: Any, parallel: bool = True, posts: bool = False, **kwargs: Any):
        self.fn, self.args, self.kwargs, self.posts = fn, args, kwargs, posts
        self.process = self._conn = self._reader = None
        self.child_pid: int | None = None
        self._raw: list[bytes | None] = []  # the messages read, in order; None: the pipe ended
        self._arrived = threading.Condition()
        self._posted: dict = {}
        self._final: tuple | None = None
        if not parallel:
            self._value = fn(*args, **kwargs)
        else:
            ctx = multiprocessing.get_context("fork")
            self._conn, send = ctx.Pipe(duplex=False)
            self.process = ctx.Process(target=_child, args=(send, fn, args, kwargs, posts), daemon=True)
            gc.collect()  # the garbage of before the fork, collected once, not in both processes
            gc.freeze()  # unfrozen in the parent by cancel(); the child keeps its copy frozen
            try:
                self.process.start()
            except BaseException:
                gc.unfreeze()
                raise
            self.child_pid = self.process.pid
            send.close()
            self._reader = threading.Thread(target=self._read, name="cskit-child-pipe", daemon=True)
            self._reader.start()

    def _read(self) -> None:
        """The reader thread: every message of the pipe as bytes, in order, then None at its end."""
        while True:
            try:
                message = self._conn.recv_bytes()
            except (EOFError, OSError):
                message = None
            with self._arrived:
                self._raw.append(message)
                self._arrived.notify_all()
            if message is None:
                return

    def _next(self) -> bool:
        """Wait for the next message and take it in (a post, or the final answer); False at the pipe's end."""
        with self._arrived:
            self._arrived.wait_for(lambda: self._raw)
            message = self._raw.pop(0)
            if message is None:
                self._raw.append(None)  # the end stays the end
                return False
        item = pickle.loads(message)
        if len(item) == 3 and item[0] == POST:
            self._posted[item[1]] = item[2]
        else:
            self._final = item
        return True

    def arrived(self, name: Any) -> bool:
        """Whether the child has posted ``name`` by now (the messages already read taken in; never waits)."""
        while name not in self._posted and self._final is None:
            with self._arrived:
                if not self._raw or self._raw[0] is None:
                    break
            self._next()
        return name in self._posted

    def posted(self, name: Any) -> tuple[bool, Any]:
        """``(True, value)`` once the child has posted ``name`` (waiting for it while the child runs);
        ``(False, None)`` when the child ended without posting it (died, or never made it); the child's
        exception, raised, when it failed."""
        while name not in self._posted and self._final is None and self._next():
            pass
        if name in self._posted:
            return True, self._posted.pop(name)
        if self._final is not None and not self._final[0]:
            self.result()  # raises the child's exception
        return False, None

    def result(self) -> Any:
        """The function's value (from the child, or computed here when not parallel or the child died;
        None then with ``posts``)."""
        if self.child_pid is None:
            return self._value
        while self._final is None and self._next():
            pass
        if self._final is None:  # the child died without an answer (e.g. killed for memory): run it here
            self.cancel()
            return None if self.posts else self.fn(*self.args, **self.kwargs)
        ok, value, shown = self._final
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
        if self._reader is not None:  # the pipe's end comes with the child's
            self._reader.join()
            self._reader = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
            gc.unfreeze()
