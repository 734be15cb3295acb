"""The desktop explorer: ``prune-explorer explore MODEL`` shows the same widget as JupyterLab,
as a page of its own, with no notebook for the user to run.

Voilà (an existing, maintained server for Jupyter widgets) serves a notebook generated here:
one cell that builds the model from the MODEL spec *in the served kernel* (through the
command line's own ``build_model``, so a spec means the same everywhere) and shows the
``Explorer``. Voilà strips the code and runs the cell when the page opens; it lets the page
talk to widgets only (comm messages), never run code. This module only writes that notebook,
starts and stops the server, and opens a window.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import webbrowser

# the kernel's cell; the arguments are Python literals (repr)
CELL = """import os
os.chdir({cwd})
from prune_explorer.widget.app import show
show({spec}, input_shape={shape}, seed={seed})"""

CHROMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable",
           "microsoft-edge", "brave-browser")


class AppError(Exception):
    """A user-facing problem starting the desktop explorer (one line)."""


# ---- in the kernel ---------------------------------------------------------------------------
def explorer_for(spec: str, input_shape: str | None = None, seed: int = 0, **kwargs):
    """An ``Explorer`` on the model a MODEL spec names (``torchvision:resnet18``,
    ``hf:llama``, ``path/file.py:factory``), its classifier left out of whole-model previews
    as ``prune-explorer prune`` does."""
    from ..cli import build_model, default_ignored
    from .explorer import Explorer
    loaded = build_model(spec, input_shape, seed)
    kwargs.setdefault("ignored_layers", default_ignored(loaded.model, loaded.source))
    kwargs.setdefault("title", spec)
    return Explorer(loaded.model, loaded.inputs, **kwargs)


class ErrorLine:
    """What the page shows when the model cannot be built: one line, no traceback."""

    def __init__(self, message: str):
        self.message = message

    def _repr_html_(self) -> str:
        import html
        return (f"<div style='font:14px Helvetica,Arial,sans-serif;color:#b91c1c;padding:16px'>"
                f"prune-explorer: error: {html.escape(self.message)}</div>")

    def __repr__(self) -> str:
        return f"prune-explorer: error: {self.message}"


def show(spec: str, input_shape: str | None = None, seed: int = 0):
    """Display the explorer (or the one-line error) as the served page's content. Returns
    None, so the cell shows it once."""
    from IPython.display import display
    from ..cli import _one_line
    try:
        ex = explorer_for(spec, input_shape, seed)
    except Exception as exc:  # noqa: BLE001 - the page shows one line, like the CLI
        display(ErrorLine(_one_line(exc)))
        return None
    display(ex)
    return None


# ---- the served notebook ---------------------------------------------------------------------
def notebook(spec: str, input_shape: str | None = None, seed: int = 0,
             cwd: str | os.PathLike | None = None, code: str | None = None) -> dict:
    """The notebook Voilà serves (nbformat 4, as a dict). A file spec's path is made absolute:
    the kernel starts in the notebook's temporary folder, then moves to ``cwd`` (where
    Export writes, and where the user started the command). ``code``: a cell of your own
    instead (it must display an Explorer)."""
    cwd = str(pathlib.Path(cwd or os.getcwd()).resolve())
    path, sep, attr = spec.rpartition(":")
    if sep and path.endswith(".py"):
        spec = f"{pathlib.Path(cwd, path).resolve()}:{attr}"
    source = CELL.format(cwd=repr(cwd), spec=repr(spec), shape=repr(input_shape),
                         seed=int(seed))
    if code is not None:
        source = f"import os\nos.chdir({cwd!r})\n{code}"
    return {"nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                        "language": "python"},
                         "language_info": {"name": "python"}},
            "cells": [{"cell_type": "code", "id": "explorer", "metadata": {},
                       "execution_count": None, "outputs": [], "source": source}]}


def page_name(spec: str) -> str:
    """The notebook's file name, which Voilà uses as the page (and window) title."""
    base = spec.rpartition(":")[2] or spec
    return "prune_explorer " + (re.sub(r"[^\w.-]+", "_", base).strip("_") or "model")


# ---- the server ------------------------------------------------------------------------------
def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def voila_command(nb_path: pathlib.Path, port: int, token: str, host: str = "127.0.0.1"
                  ) -> list[str]:
    return [sys.executable, "-m", "voila", str(nb_path), "--no-browser", f"--port={port}",
            f"--Voila.ip={host}", "--Voila.port_retries=0", "--strip_sources=True",
            "--show_tracebacks=True", "--theme=light", f"--token={token}"]


def require_voila() -> None:
    import importlib.util
    if importlib.util.find_spec("voila") is None:
        raise AppError("the desktop explorer needs Voilà: pip install 'prune_explorer[explorer]' "
                       "(or pip install voila)")


class Server:
    """Voilà on ``host:port`` serving the generated notebook; a context manager that stops it
    (its kernels too) on exit and removes the temporary folder."""

    def __init__(self, spec: str, input_shape: str | None = None, seed: int = 0,
                 port: int = 0, host: str = "127.0.0.1", code: str | None = None):
        require_voila()
        self.spec, self.input_shape, self.seed, self.code = spec, input_shape, seed, code
        self.host = host
        self.port = port or free_port(host)
        self.token = secrets.token_urlsafe(16)
        self.proc: subprocess.Popen | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="pe-app-")
        self.log_path = pathlib.Path(self._tmp.name) / "voila.log"
        self._log = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/?token={self.token}"

    def __enter__(self) -> "Server":
        tmp = pathlib.Path(self._tmp.name)
        nb_path = tmp / (page_name(self.spec) + ".ipynb")
        nb_path.write_text(json.dumps(notebook(self.spec, self.input_shape, self.seed,
                                               code=self.code), indent=1))
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        src = pathlib.Path(__file__).resolve().parents[2]
        if (src / "pyproject.toml").exists():  # a source checkout: the kernel imports this copy
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src), env.get("PYTHONPATH"))
                                                if p)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(voila_command(nb_path, self.port, self.token, self.host),
                                     stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     cwd=str(tmp), start_new_session=True)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the server accepts connections (the page itself builds the model)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AppError("Voilà exited at start: " + self.log_tail(1))
            with contextlib.suppress(OSError), socket.create_connection(
                    (self.host, self.port), timeout=1):
                return
            time.sleep(0.1)
        raise AppError(f"Voilà did not start within {timeout:.0f} s: " + self.log_tail(1))

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: Voilà shuts its kernels down and exits; anything left is killed."""
        p = self.proc
        if p is not None and p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        if p is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)  # its session: kernels it left behind
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._log is not None:
            self._log.close()
        self._tmp.cleanup()


# ---- the window ------------------------------------------------------------------------------
def has_screen() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def open_window(url: str) -> str | None:
    """A window of its own (a Chromium-family browser's ``--app``), else the default browser.
    Returns how it was opened, or None without a screen."""
    if not has_screen():
        return None
    for name in CHROMES:
        exe = shutil.which(name)
        if exe:
            subprocess.Popen([exe, f"--app={url}", "--new-window"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
            return name
    return "webbrowser" if webbrowser.open(url, new=1) else None
