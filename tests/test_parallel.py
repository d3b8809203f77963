"""cskit.parallel: a stage in a forked child gives what a plain call gives (value, error, warnings)."""
from __future__ import annotations

import os
import signal
import threading
import time
import warnings

import numpy as np
import pytest

from cskit.errors import CskitError
from cskit.parallel import (
    PARALLEL_ENV,
    Beside,
    Claims,
    Forked,
    available_memory,
    memory_allows,
    parallel_enabled,
    usable_cores,
)

TWO_CORES = parallel_enabled(True)
needs_fork = pytest.mark.skipif(not TWO_CORES, reason="one usable core or not Linux: cskit runs in one process")


def where_and_sum(x: np.ndarray) -> tuple[int, float]:
    return os.getpid(), float(np.sum(x * x))


def fails(message: str) -> None:
    raise CskitError(message)


def warns() -> int:
    warnings.warn("planted warning", RuntimeWarning, stacklevel=1)
    return 7


def dies_in_child(parent: int) -> int:
    if os.getpid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer would
    return os.getpid()


@needs_fork
def test_the_function_runs_in_a_child_and_its_value_comes_back():
    x = np.arange(1_000_000, dtype=float)  # seen by the child through fork, never pickled
    job = Forked(where_and_sum, x)
    pid, total = job.result()
    assert job.child_pid == pid != os.getpid()
    assert total == float(np.sum(x * x))  # the same bytes as here (same BLAS-free numpy sum)


def test_without_parallel_the_call_runs_here_and_now():
    job = Forked(where_and_sum, np.ones(3), parallel=False)
    assert job.child_pid is None
    assert job.result() == (os.getpid(), 3.0)
    with pytest.raises(CskitError, match="at once"):
        Forked(fails, "raised at once", parallel=False)


@needs_fork
def test_a_cskit_error_in_the_child_is_the_same_cskit_error_in_the_parent():
    message = "Table 'kpis', column 'logins': 3 rows are text. Fix: map the column."
    job = Forked(fails, message)
    with pytest.raises(CskitError) as caught:
        job.result()
    assert str(caught.value) == message and caught.value.exit_code == 2
    assert "fails" in str(caught.value.__cause__)  # the child's traceback, for a developer


@needs_fork
def test_the_childs_warnings_are_shown_in_the_parent():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert Forked(warns).result() == 7
    assert [(str(w.message), w.category) for w in caught] == [("planted warning", RuntimeWarning)]


@needs_fork
def test_a_child_killed_without_an_answer_is_rerun_in_the_parent():
    job = Forked(dies_in_child, os.getpid())
    assert job.result() == os.getpid()


@needs_fork
def test_cancel_ends_a_running_child():
    job = Forked(time.sleep, 30)
    process = job.process
    start = time.perf_counter()
    job.cancel()
    assert process is not None and job.process is None and time.perf_counter() - start < 25


def test_the_switch(monkeypatch):
    monkeypatch.setenv(PARALLEL_ENV, "0")
    assert not parallel_enabled()
    assert parallel_enabled(False) is False
    monkeypatch.setenv(PARALLEL_ENV, "1")
    assert parallel_enabled() == (usable_cores() > 1 and TWO_CORES)
    monkeypatch.delenv(PARALLEL_ENV)
    assert parallel_enabled() == TWO_CORES


def oom_score() -> str:
    with open("/proc/self/oom_score_adj", encoding="ascii") as f:
        return f.read().strip()


@needs_fork
def test_the_child_is_the_first_to_go_when_memory_runs_out():
    assert Forked(oom_score).result() == "1000"
    assert oom_score() != "1000"  # the parent keeps its own


@needs_fork
def test_no_fork_beyond_the_memory_available():
    free = available_memory()
    assert free is not None and free > 0
    assert memory_allows(0) and not memory_allows(free * 1000)


def test_batch_workers_analyse_in_one_process(monkeypatch):
    """cskit batch --jobs 2 runs two clients at once: each kernel then uses one core, not a forked child."""
    from cskit.cli import _one_process_kernels

    monkeypatch.delenv(PARALLEL_ENV, raising=False)
    _one_process_kernels()
    assert os.environ[PARALLEL_ENV] == "0" and not parallel_enabled()


def freeze_count() -> int:
    import gc

    return gc.get_freeze_count()


@needs_fork
def test_the_objects_of_before_the_fork_are_frozen_in_the_child_only_while_it_runs():
    import gc

    kept = [object() for _ in range(1000)]  # alive at the fork: frozen in the child, never collected there
    before = gc.get_freeze_count()
    job = Forked(freeze_count)
    assert job.result() >= before + len(kept)
    assert gc.get_freeze_count() == before  # the parent's collector has them back


@pytest.mark.skipif(not parallel_enabled(True), reason="needs fork and two usable cores")
def test_claims_go_on_when_the_child_was_killed_holding_their_lock():
    """A child SIGKILLed (the OOM killer) while it holds the claims' lock never releases it: the parent
    takes the pieces without it once the child is gone, each once, in turn, instead of waiting forever."""
    import multiprocessing

    claims = Claims(2)

    def hold_and_die():
        claims._taken.get_lock().acquire()
        os.kill(os.getpid(), signal.SIGKILL)

    child = multiprocessing.get_context("fork").Process(target=hold_and_die)
    child.start()
    child.join()
    assert child.exitcode == -signal.SIGKILL
    taken = [claims.take(other_alive=child.is_alive) for _ in range(3)]
    assert taken == [0, 1, None]


def test_claims_skip_what_the_caller_cannot_make_yet_and_give_it_later():
    claims = Claims(4)
    assert claims.take(skip={0}) == 1  # the first piece not taken and not skipped
    assert claims.take(skip={0, 2, 3}) is None  # only skipped ones are left
    assert [claims.take(skip={3}), claims.take(), claims.take(), claims.take()] == [0, 2, 3, None]


@pytest.mark.skipif(not parallel_enabled(True), reason="needs fork and two usable cores")
def test_two_processes_take_every_piece_once_between_them():
    """Parent and child taking at once (each piece's index recorded by its taker): every piece is taken
    by exactly one of them, each side's in increasing order."""
    n = 400
    claims = Claims(n)
    mine = []

    def child_takes():
        got = []
        while (i := claims.take()) is not None:
            got.append(i)
        return got

    job = Forked(child_takes)
    while (i := claims.take(other_alive=job.process.is_alive)) is not None:
        mine.append(i)
    theirs = job.result()
    assert sorted(mine + theirs) == list(range(n))
    assert mine == sorted(mine) and theirs == sorted(theirs)


@needs_fork
def test_arrived_says_what_the_child_has_posted_so_far_without_waiting():
    """The child posts "a", then waits for the parent's signal before posting "b": the parent sees "a"
    arrive, "b" not (arrived never waits for it), then both values and the answer."""
    import multiprocessing

    go = multiprocessing.get_context("fork").Event()

    def posts_twice(*, post):
        post("a", 1)
        go.wait(30)
        post("b", 2)
        return 3

    job = Forked(posts_twice, posts=True)
    start = time.monotonic()
    while not job.arrived("a") and time.monotonic() - start < 30:
        time.sleep(0.01)
    assert job.arrived("a") and not job.arrived("b")
    go.set()
    assert job.posted("a") == (True, 1) and job.posted("b") == (True, 2) and job.result() == 3
    assert not job.arrived("c")  # the child has ended: never posted


def test_work_beside_gives_its_value_or_raises_its_error_in_the_caller():
    where = []

    def work(x):
        where.append(threading.current_thread().name)
        if x < 0:
            raise ValueError(f"negative {x}")
        return 2 * x

    assert Beside(lambda: work(21), "helper").result() == 42
    assert where == ["helper"]
    failed = Beside(lambda: work(-1), "helper")
    failed.join()  # (only waits: the error is raised by result)
    with pytest.raises(ValueError, match="negative -1"):
        failed.result()
    later = Beside(lambda: work(5), "helper", start=False)
    assert later.thread is None and where == ["helper", "helper"]  # (nothing done yet)
    assert later.result() == 10 and where[-1] == threading.current_thread().name


@pytest.mark.parametrize("start", [True, False], ids=["thread", "one core: done by result"])
def test_work_beside_is_let_go_once_done_so_a_caller_it_holds_is_freed_without_a_collection(start):
    """The loader's checks beside (a closure over their caller, which holds the Beside: a cycle) kept the
    typed tables alive (0.4 GB at 100k accounts) until the collection before the fork; with one core
    (no thread) too, where result does the work."""
    import gc
    import weakref

    class Caller:
        pass

    def let_go() -> weakref.ref:
        caller = Caller()
        caller.beside = Beside(lambda: caller is not None, "helper", start=start)
        assert caller.beside.result() is True and caller.beside.result() is True  # (done once)
        return weakref.ref(caller)

    gc.disable()
    try:
        assert let_go()() is None
    finally:
        gc.enable()
