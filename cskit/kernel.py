"""The notebook kernel of ``cskit run``: started early, already holding its imports, ended at once.

papermill starts its kernel only when it executes the notebook, after the CLI has checked the data,
and the notebook's first cells then import matplotlib, seaborn, scipy and the stages (~2 s of a run
that does nothing else meanwhile). Here the CLI starts the kernel first (:func:`start`), and the kernel
imports what the notebook's first cells and the analysis' loader use while it boots
(``IPKernelApp.exec_lines``: :data:`PRELOAD`), in parallel with the CLI's own data check and papermill
import; it is ready about when the CLI is. The stages' libraries (statsmodels, scipy.stats, lifelines:
~1 s more) are not in it: ``cskit.analyse`` imports them in a thread while DuckDB reads the data
(:func:`cskit.pipeline._import_stages`), where they cost the run less than before the first cell. The
modules the write and the charts need (:data:`WHEN_IDLE`), which no stage needs, are imported by a thread
only while the kernel is idle (:func:`import_when_idle`: waiting for a cell, or for the analysis' forked
child), and the notebook imports cskit.plots after the analysis: they are not on the way to it.

:func:`execute` runs the notebook on that kernel with papermill's nbclient engine, two things changed:

- the kernel is killed as soon as the notebook is executed (a graceful shutdown waits ~0.5–1 s for
  the kernel to tear its memory down, and the kernel has nothing left to do: every result file is
  written by then). The kill is sent at once and the kernel's end is awaited only in :func:`stop`,
  exactly (``waitpid``, not jupyter_client's 0.1 s polls): the operating system frees the kernel's
  memory (~0.2 s at 100k accounts) while the executed notebook is saved;
- the executed notebook is written when execution starts and when it ends (also on failure, with the
  error in place) and at papermill's 30-second autosave, not before and after every cell (~40 writes
  of a growing notebook, each while the kernel waits for its next cell).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

# What the notebook's import cell and cskit.analyse's loader and panel import (pandas, pyarrow, DuckDB);
# the stages' modules (cskit.pipeline.STAGE_MODULES) are imported by analyse itself, beside DuckDB's read.
# A module missing here is imported when first used, as before.
PRELOAD = (
    "IPython.display", "cskit.narrative", "cskit.pipeline", "cskit.loading", "cskit.panel", "cskit.parallel",
    "cskit.provenance", "threadpoolctl",
)
# The write's Excel modules and the charts' (matplotlib, seaborn: ~0.35 CPU-s of imports beyond what the
# stages import; the notebook imports cskit.plots after the analysis): imported by a thread of the kernel
# whenever the kernel is idle (while it waits for its next cell, or while the analysis waits for its forked
# child), not on the way to the analysis. In this order, one module (< 0.15 s) at a time; one already
# imported is skipped.
WHEN_IDLE = ("xlsxwriter", "cskit.excel", "cskit.changes",
             "matplotlib", "matplotlib.text", "matplotlib.backend_bases", "matplotlib.axes", "matplotlib.figure",
             "matplotlib.pyplot", "seaborn", "matplotlib_fontja", "cskit.plots")
# idle: the main thread is asleep (Linux: its state in /proc) and the process used less than IDLE_SHARE of a
# core over the last IDLE_POLL seconds (not while other threads of it, e.g. DuckDB's, work)
IDLE_SHARE = 0.25
IDLE_POLL = 0.05
KERNEL_NAME = "python3"
# Set for the kernel: "fork" = each figure the notebook shows is rendered in a forked child while the
# notebook goes on (cskit.plots.show; only with two usable cores, cskit.parallel.parallel_enabled).
CHARTS_ENV = "CSKIT_CHARTS"
# The kernel logs at ERROR level only: its "running over TCP without encryption" warning (a local kernel
# on this machine) is noise on a consultant's screen. No history file (as nbclient starts its kernels).
KERNEL_ARGUMENTS = ("--IPKernelApp.log_level=ERROR", "--HistoryManager.hist_file=:memory:")


def preload(modules: tuple[str, ...] = PRELOAD, when_idle: tuple[str, ...] = WHEN_IDLE) -> None:
    """Import ``modules`` (the kernel's start-up code, :func:`preload_line`) and start importing
    ``when_idle`` whenever the process is idle (:func:`import_when_idle`); a module that fails to import
    is left to the notebook's own import, which then says why."""
    import os

    for name in modules:
        _import(name)
    if when_idle and hasattr(os, "register_at_fork"):  # POSIX only (the idle test reads /proc and resource)
        import_when_idle(when_idle)  # (elsewhere the notebook imports them itself, when it needs them)


def _import(name: str) -> None:
    import importlib

    try:
        importlib.import_module(name)
    except Exception:  # noqa: BLE001
        pass


_importing = None  # held while the idle thread imports: a fork waits for it (os.register_at_fork)


def import_when_idle(modules: tuple[str, ...], *, share: float = IDLE_SHARE, poll: float = IDLE_POLL):
    """Import ``modules`` in a daemon thread, each when the main thread is asleep and this process has
    used less than ``share`` of a core over the last ``poll`` seconds (the kernel waits: for a cell, for a
    forked child), so the imports take no time from the work. A fork (the analysis' child, a chart's
    child) waits for the module being imported: no child starts with a module half imported. Returns the
    thread."""
    import os
    import threading

    global _importing
    if _importing is None:
        _importing = threading.RLock()  # (re-entrant: a fork by the importing thread itself goes on)
        os.register_at_fork(before=_importing.acquire, after_in_parent=_importing.release,
                            after_in_child=_importing.release)
    main = threading.main_thread().native_id
    thread = threading.Thread(target=_idle_imports, args=(list(modules), share, poll, main),
                              name="cskit-preload", daemon=True)
    thread.start()
    return thread


def _asleep(tid: int) -> bool:
    """Whether thread ``tid`` of this process is asleep (state S in /proc; True where the OS does not say,
    the CPU share then decides alone)."""
    try:
        with open(f"/proc/self/task/{tid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rindex(b")") + 2: stat.rindex(b")") + 3] == b"S"
    except (OSError, ValueError):
        return True


def _stages_importing() -> bool:
    """Whether analyse's thread importing the stages' modules runs: the idle imports wait for it (two
    threads importing one package's modules at once, e.g. seaborn's and scipy.stats' scipy, can be handed
    a partly initialised module)."""
    import threading

    from cskit.pipeline import IMPORT_THREAD  # preloaded in the kernel

    return any(t.name == IMPORT_THREAD for t in threading.enumerate())


def _idle_imports(pending: list[str], share: float, poll: float, main: int) -> None:
    import resource
    import sys
    import time

    def clock() -> tuple[float, float]:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return time.monotonic(), r.ru_utime + r.ru_stime

    last = clock()
    while pending:
        time.sleep(poll)
        now = clock()
        busy = (now[1] - last[1]) / max(now[0] - last[0], 1e-9)
        last = now
        if busy >= share or not _asleep(main) or _stages_importing():
            continue
        name = pending.pop(0)
        if name not in sys.modules:
            with _importing:
                _import(name)
            last = clock()  # the import's own time is not the process being busy


def preload_line(modules: tuple[str, ...] = PRELOAD, when_idle: tuple[str, ...] = WHEN_IDLE) -> str:
    """The kernel's start-up line: :func:`preload` of ``modules`` (and ``when_idle``), binding no name in
    the notebook's namespace."""
    if modules == PRELOAD and when_idle == WHEN_IDLE:
        return "__import__('cskit.kernel').kernel.preload()"
    return f"__import__('cskit.kernel').kernel.preload({tuple(modules)!r}, {tuple(when_idle)!r})"


SOCKET_PATH_MAX = 100  # bytes of a Unix socket's path (sun_path: 108 on Linux, 104 on macOS, with its NUL)


def start(preload: tuple[str, ...] = PRELOAD, *, when_idle: tuple[str, ...] = WHEN_IDLE, charts: str = "fork"):
    """Launch the notebook kernel (it boots and imports ``preload`` in its own process, then ``when_idle``
    while idle; this returns at once). The kernel inherits this process's environment as it is now, with
    ``$CSKIT_CHARTS`` = ``charts`` (:data:`CHARTS_ENV`). Returns its kernel manager.

    Where the platform has them (POSIX), the kernel talks to this process over Unix sockets in a folder
    of its own (``transport="ipc"``), not over TCP ports: jupyter_client picks a TCP port by binding and
    releasing it, and another process (a second run beside this one) can take it before the kernel
    binds it, which printed ipykernel's ``ZMQError: Address already in use`` traceback to the
    consultant's terminal. Socket files in a private folder cannot be taken; :func:`stop` removes it. (TCP
    when the folder's path is too long for a socket's, :data:`SOCKET_PATH_MAX`.)"""
    import os
    import tempfile

    from jupyter_client import AsyncKernelManager
    from jupyter_core.utils import run_sync

    sockets = tempfile.mkdtemp(prefix="cskit-kernel-") if os.name == "posix" else None
    if sockets is not None and len(os.fsencode(os.path.join(sockets, "k-65535"))) > SOCKET_PATH_MAX:
        os.rmdir(sockets)  # a long $TMPDIR: a Unix socket's path would not fit; TCP ports then
        sockets = None
    if sockets is not None:
        km = AsyncKernelManager(kernel_name=KERNEL_NAME, transport="ipc", ip=os.path.join(sockets, "k"))
        km.cskit_sockets = sockets
    else:
        km = AsyncKernelManager(kernel_name=KERNEL_NAME)
    arguments = [*KERNEL_ARGUMENTS, f"--IPKernelApp.exec_lines={preload_line(preload, when_idle)}"] \
        if preload or when_idle else list(KERNEL_ARGUMENTS)
    try:
        run_sync(km.start_kernel)(extra_arguments=arguments, env=os.environ | {CHARTS_ENV: charts})
    except BaseException:  # (an interrupt too) a kernel launched before the failure is not left running
        stop(km)
        raise
    return km


def stop(km) -> None:
    """End the kernel now, if it is still running (e.g. the data check failed before execution), and wait
    for its process to be gone."""
    from jupyter_core.utils import run_sync

    if km is not None and km.has_kernel:
        kill(km)
        process = getattr(km.provisioner, "process", None)
        if process is not None:
            try:
                process.wait(timeout=10)  # exact; shutdown_kernel then finds it gone and does not poll
            except Exception:  # noqa: BLE001 - shutdown_kernel below kills and waits its own way
                pass
        run_sync(km.shutdown_kernel)(now=True)
    if getattr(km, "cskit_sockets", None):  # the kernel's socket folder (start)
        import shutil

        shutil.rmtree(km.cskit_sockets, ignore_errors=True)


def kill(km) -> None:
    """Send the kernel's process group (the kernel and any child it forked) SIGKILL, without waiting for
    it to end (:func:`stop` waits); nothing when it has ended already."""
    import os
    import signal

    provisioner = getattr(km, "provisioner", None)
    process = getattr(provisioner, "process", None)
    if process is None or process.poll() is not None:
        return
    pgid = getattr(provisioner, "pgid", None)
    try:
        if pgid and hasattr(os, "killpg"):
            os.killpg(pgid, getattr(signal, "SIGKILL", signal.SIGTERM))
        else:
            process.kill()
    except OSError:
        pass


def execute(km, notebook: str | Path, target: str | Path, parameters: dict, *,
            on_first_cell: Callable[[], None] | None = None, **kwargs: Any):
    """papermill's ``execute_notebook`` of ``notebook`` into ``target`` on the started kernel ``km``
    (killed once the notebook is executed, or on failure; :func:`stop` waits for it to end); returns
    the executed notebook. ``on_first_cell`` is called once, when the kernel is ready and the first cell
    starts; ``kwargs`` go to papermill."""
    import papermill as pm

    _register()
    return pm.execute_notebook(str(notebook), str(target), parameters=parameters, kernel_name=KERNEL_NAME,
                               engine_name=ENGINE, km=km, on_first_cell=on_first_cell, **kwargs)


ENGINE = "cskit"


def _register() -> None:
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, NotebookExecutionManager, papermill_engines
    from papermill.log import logger
    from papermill.utils import merge_kwargs, remove_args

    class FewWrites(NotebookExecutionManager):
        """papermill's execution manager without its writes of the notebook before and after each cell."""

        _hold = False
        on_first_cell: Callable[[], None] | None = None

        def save(self, **kwargs):
            if not self._hold:
                super().save(**kwargs)

        def cell_start(self, cell, cell_index=None, **kwargs):
            if self.on_first_cell is not None:
                call, self.on_first_cell = self.on_first_cell, None
                call()
            self._hold = True
            try:
                super().cell_start(cell, cell_index, **kwargs)
            finally:
                self._hold = False

        def cell_complete(self, cell, cell_index=None, **kwargs):
            self._hold = True
            try:
                super().cell_complete(cell, cell_index, **kwargs)
            finally:
                self._hold = False

    class StartedKernelEngine(NBClientEngine):
        """nbclient on a kernel started beforehand (``km``), killed once the notebook is executed (or
        has failed), before the executed notebook is saved; :func:`stop` waits for it to end."""

        @classmethod
        def execute_notebook(cls, nb, kernel_name, output_path=None, progress_bar=True, log_output=False,
                             autosave_cell_every=30, on_first_cell=None, km=None, **kwargs):
            nb_man = FewWrites(nb, output_path=output_path, progress_bar=progress_bar, log_output=log_output,
                               autosave_cell_every=autosave_cell_every)
            nb_man.on_first_cell = on_first_cell
            nb_man.notebook_start()
            try:
                cls.execute_managed_notebook(nb_man, kernel_name, log_output=log_output, km=km, **kwargs)
            finally:
                if km is not None:
                    kill(km)
                nb_man.cleanup_pbar()
                nb_man.notebook_complete()
            return nb_man.nb

        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None,
                                     stderr_file=None, start_timeout=60, execution_timeout=None, **kwargs):
            kwargs = remove_args(["input_path", "timeout", "startup_timeout"], **kwargs)
            options = merge_kwargs(kwargs, timeout=execution_timeout, startup_timeout=start_timeout,
                                   kernel_name=kernel_name, log=logger, log_output=log_output,
                                   stdout_file=stdout_file, stderr_file=stderr_file, shutdown_kernel="immediate")
            # the client neither shuts the kernel down (killed by execute_notebook; stop() waits for it)
            # nor leaves its channels open
            client = PapermillNotebookClient(nb_man, **options)
            try:
                return client.execute(cleanup_kc=False)
            finally:
                if getattr(client, "kc", None) is not None:
                    client.kc.stop_channels()

    papermill_engines.register(ENGINE, StartedKernelEngine)
