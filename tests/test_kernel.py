"""cskit run's notebook kernel (cskit/kernel.py) and its charts (cskit.plots.show): started with the
notebook's imports already done and nothing bound in the notebook's namespace, ended without a process or
connection file left; a figure rendered in a forked child gives the PNG the kernel draws itself, byte for
byte; the warmed-up HTML exporter writes the page a fresh one writes."""
from __future__ import annotations

import base64
import os
from pathlib import Path

import nbformat
import pytest

from cskit import kernel

FIGURE = """
import pandas as pd
from cskit import plots
plots.set_style()
for rate in (0.3, 0.25, 0.2, 0.15, 0.1):  # more figures than children: some wait for the next one
    ax = plots.tier_bars(pd.DataFrame({"tier": ["red", "yellow", "green"], "churn_rate": [rate, 0.1, 0.02]}))
    ax.set_title("解約率")
    plots.show()
plots.wait()
"""


def _client(km):
    from jupyter_core.utils import run_sync

    kc = km.client()
    kc.start_channels()
    run_sync(kc.wait_for_ready)(timeout=120)
    return kc, run_sync


def _run(km, code: str) -> list[dict]:
    """Every iopub message of one cell (display data, its updates, streams)."""
    kc, run_sync = _client(km)
    got: list[dict] = []
    try:
        run_sync(kc.execute_interactive)(code, output_hook=got.append, timeout=300)
    finally:
        kc.stop_channels()
    return got


def _pictures(messages: list[dict]) -> list[bytes]:
    """The PNGs each display finally shows (a display update replaces what its display id showed)."""
    shown: dict[str, dict] = {}
    order: list[str] = []
    for i, m in enumerate(messages):
        kind, content = m["msg_type"], m["content"]
        if kind not in ("display_data", "update_display_data"):
            continue
        key = content.get("transient", {}).get("display_id") or f"plain-{i}"
        if kind == "display_data":
            order.append(key)
        shown[key] = content["data"]
    return [base64.b64decode(shown[k]["image/png"]) for k in order if "image/png" in shown[k]]


def test_kernel_starts_with_the_imports_done_and_leaves_nothing_behind():
    km = kernel.start()
    try:
        messages = _run(km, "import sys\n"
                            "print(sorted(k for k in globals() if not k.startswith('_') and k not in "
                            "('In', 'Out', 'exit', 'quit', 'get_ipython', 'open', 'sys')), "
                            "all(m in sys.modules for m in %r))" % (kernel.PRELOAD,))
        out = "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")
        assert out.strip() == "[] True"  # every module imported, no name left in the namespace
        pid, connection = km.provisioner.process.pid, Path(km.connection_file)
        assert connection.is_file()
    finally:
        kernel.stop(km)
    assert not km.has_kernel and not connection.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.skipif(os.name != "posix", reason="Unix sockets: POSIX only (elsewhere the kernel uses TCP ports)")
def test_kernel_talks_over_sockets_of_its_own_folder_not_tcp_ports(tmp_path):
    """A TCP port picked by jupyter_client (bound, released, then bound by the kernel) can be taken by
    another process meanwhile (ZMQError: Address already in use). Here a second kernel is started while
    the first runs: each has its own socket folder, both answer, and stop removes the folder."""
    first, second = kernel.start(preload=()), kernel.start(preload=())
    try:
        folders = [Path(km.cskit_sockets) for km in (first, second)]
        assert folders[0] != folders[1]
        for km, folder in zip((first, second), folders):
            assert km.transport == "ipc" and Path(km.ip).parent == folder
            out = "".join(m["content"]["text"] for m in _run(km, "print(6 * 7)") if m["msg_type"] == "stream")
            assert out.strip() == "42"
            assert sorted(p.name for p in folder.iterdir()) == sorted(f"k-{port}" for port in km.ports)
    finally:
        kernel.stop(first)
        kernel.stop(second)
    assert not any(folder.exists() for folder in folders)


def test_kernel_under_a_temporary_folder_too_long_for_a_socket_uses_tcp(tmp_path, monkeypatch):
    import tempfile

    long = tmp_path / ("t" * (kernel.SOCKET_PATH_MAX - len(str(tmp_path))))
    long.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(long))
    km = kernel.start(preload=())
    try:
        assert km.transport == "tcp" and not hasattr(km, "cskit_sockets")
        out = "".join(m["content"]["text"] for m in _run(km, "print(6 * 7)") if m["msg_type"] == "stream")
        assert out.strip() == "42"
    finally:
        kernel.stop(km)
    assert list(long.iterdir()) == []  # the socket folder made and removed


def test_a_figure_rendered_in_a_child_is_the_kernels_own_png():
    """plots.show() in cskit run's kernel ($CSKIT_CHARTS=fork) and plt.show() semantics elsewhere give
    the same PNG bytes, in the same order."""
    from cskit.parallel import parallel_enabled

    pictures = {}
    for mode in ("fork", "here"):
        km = kernel.start(preload=("cskit.plots",), charts=mode)
        try:
            messages = _run(km, FIGURE)
        finally:
            kernel.stop(km)
        updates = sum(m["msg_type"] == "update_display_data" for m in messages)
        # the children's pictures arrive as display updates (with two cores; else drawn in the kernel)
        assert updates == (5 if mode == "fork" and parallel_enabled() else 0)
        pictures[mode] = _pictures(messages)
    assert len(pictures["here"]) == 5 and len(set(pictures["here"])) == 5
    assert all(p.startswith(b"\x89PNG") for p in pictures["here"])
    assert pictures["fork"] == pictures["here"]


def test_warmed_html_exporter_writes_the_same_page(tmp_path):
    from cskit.cli import HtmlExporter, render_html

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# 見出し\n\n本文 **太字**"),
        nbformat.v4.new_code_cell("x = 1", outputs=[nbformat.v4.new_output(
            "display_data", data={"text/markdown": "| a | b |\n|---|---|\n| 1 | 2 |", "text/plain": "t"})]),
    ])
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, path)
    warm = HtmlExporter()
    warm.warm()
    fresh = render_html(path, tmp_path / "fresh.html", "ja", name="c").read_text(encoding="utf-8")
    warmed = render_html(path, tmp_path / "warm.html", "ja", name="c", exporter=warm).read_text(encoding="utf-8")
    assert warmed == fresh and '<html lang="ja"' in fresh and "見出し" in fresh


def test_the_charts_modules_are_imported_while_the_kernel_is_idle():
    """The kernel boots with PRELOAD only; WHEN_IDLE arrives while it waits for cells (here: sleeps)."""
    km = kernel.start()
    try:
        messages = _run(km, "import sys, time\n"
                            "for _ in range(600):\n"
                            "    if all(m in sys.modules for m in %r):\n"
                            "        break\n"
                            "    time.sleep(0.1)\n"
                            "print(all(m in sys.modules for m in %r))" % (kernel.WHEN_IDLE, kernel.WHEN_IDLE))
        out = "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")
        assert out.strip() == "True"
    finally:
        kernel.stop(km)


def test_idle_imports_wait_while_the_process_is_busy(tmp_path, monkeypatch):
    """A module of import_when_idle is not imported while this process keeps a core busy, and is once
    it waits; a fork meanwhile finds no import half done (os.register_at_fork)."""
    import sys
    import time

    name = f"cskit_idle_probe_{os.getpid()}"
    (tmp_path / f"{name}.py").write_text("VALUE = 42\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    thread = kernel.import_when_idle((name,), share=0.25, poll=0.02)
    end = time.process_time() + 0.6
    while time.process_time() < end:  # busy: one core fully used
        pass
    assert name not in sys.modules
    thread.join(timeout=30)
    assert not thread.is_alive() and sys.modules[name].VALUE == 42
    pid = os.fork()
    if pid == 0:
        os._exit(0 if sys.modules[name].VALUE == 42 else 1)
    assert os.waitpid(pid, 0)[1] == 0
    sys.modules.pop(name)
