"""Drive JupyterLab headless in Debian's Chromium through Playwright (tests and benchmarks).

    with JupyterLab(notebook_dir) as lab, browser() as b:
        page = lab.open(b, "explore.ipynb")
        lab.run_all(page)

JupyterLab runs on a free localhost port with a token, isolated settings/workspaces/runtime
directories (so nothing of the user's leaks in and nothing is written back), and is shut down
(its whole process group) on exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def chromium_path() -> str | None:
    for p in (os.environ.get("PE_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium",
              shutil.which("chromium-browser")):
        if p and os.path.exists(p):
            return p
    return None


def require_browser(what: str, module: str | None = None, extra: str | None = None) -> None:
    """Skip the calling test module unless Chromium, Playwright and ``module`` are there."""
    import importlib.util

    import pytest
    if chromium_path() is None:
        pytest.skip(f"chromium is not installed (apt-get install chromium): {what} needs "
                    f"Debian's Chromium", allow_module_level=True)
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if module is not None and importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install 'prune_explorer[{extra}]')",
                    allow_module_level=True)


def _terminal_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_sh_overrides() -> dict:
    """The JupyterLab ``overrides.json`` that ``bash run.sh explore`` writes."""
    text = (pathlib.Path(__file__).resolve().parents[1] / "run.sh").read_text()
    return json.loads(text.split("<<'JSON'\n", 1)[1].split("\nJSON", 1)[0])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterLab:
    def __init__(self, root_dir, token: str = "pe-test-token", port: int | None = None,
                 startup_timeout: float = 120.0):
        self.root_dir = pathlib.Path(root_dir)
        self.token = token
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="pe-jlab-")
        self.log_path = pathlib.Path(self._tmp.name) / "jupyter.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "JupyterLab":
        tmp = pathlib.Path(self._tmp.name)
        settings = tmp / "settings"
        settings.mkdir()
        # JupyterLab's settings as bash run.sh writes them (kernels start without a dialog, no
        # news / update toast): the test checks that what users get is enough
        app_settings = tmp / "app_settings"
        app_settings.mkdir()
        (app_settings / "overrides.json").write_text(json.dumps(run_sh_overrides()))
        env = dict(os.environ)
        env.update(JUPYTER_CONFIG_DIR=str(tmp / "config"), JUPYTER_RUNTIME_DIR=str(tmp / "rt"),
                   PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
                   PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
               "--ip=127.0.0.1", f"--port={self.port}", f"--ServerApp.token={self.token}",
               f"--ServerApp.root_dir={self.root_dir}", "--ServerApp.port_retries=0",
               f"--LabApp.user_settings_dir={settings}",
               f"--LabApp.app_settings_dir={app_settings}",
               f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
               "--LabApp.expose_app_in_browser=True"]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     cwd=str(self.root_dir), start_new_session=True)
        deadline = time.time() + self.startup_timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("jupyter lab exited:\n" + self.log())
            try:
                with urllib.request.urlopen(f"{self.base}/api/status?token={self.token}",
                                            timeout=2) as r:
                    if r.status == 200:
                        return self
            except Exception:
                time.sleep(0.5)
        self.__exit__(None, None, None)
        raise RuntimeError("jupyter lab did not start in time:\n" + self.log())

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:  # ask the server to shut down its kernels, then stop the process group
                req = urllib.request.Request(f"{self.base}/api/shutdown?token={self.token}",
                                             method="POST")
                urllib.request.urlopen(req, timeout=5).close()
                self.proc.wait(timeout=15)
            except Exception:
                pass
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if getattr(self, "_log", None):
            self._log.close()
        self._tmp.cleanup()

    # ---- browser side -------------------------------------------------------------------------
    def open(self, browser, notebook: str, width: int = 1600, height: int = 1300):
        page = browser.new_page(viewport={"width": width, "height": height})
        page.set_default_timeout(120_000)
        page.goto(f"{self.base}/lab/tree/{notebook}?token={self.token}&reset",
                  wait_until="domcontentloaded")
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=180_000)
        page.wait_for_function("() => window.jupyterapp && window.jupyterapp.commands",
                               timeout=120_000)
        # older set-ups may still ask which kernel to start: take the preferred one
        with contextlib.suppress(Exception):
            page.locator(".jp-Dialog button.jp-mod-accept").click(timeout=5_000)
        # wait for the kernel to be ready
        page.wait_for_function(
            """() => { const s = document.querySelector('.jp-Notebook-ExecutionIndicator');
                       return s && s.getAttribute('data-status') === 'idle'; }""",
            timeout=180_000)
        return page

    def run_all(self, page) -> None:
        # not awaited: the command's promise lasts as long as the cells run
        page.evaluate("""() => {
            const c = window.jupyterapp.commands;
            c.execute('notebook:clear-all-cell-outputs').then(
                () => c.execute('notebook:run-all-cells'));
            return true;
        }""")


@contextlib.contextmanager
def browser():
    from playwright.sync_api import sync_playwright
    path = chromium_path()
    if path is None:
        raise RuntimeError("chromium not found")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def pe_classes(page, scope: str = "") -> dict[str, str]:
    """data-node -> role for every node carrying a pe-* role class."""
    return page.evaluate("""(scope) => {
        const out = {};
        const root = scope ? document.querySelector(scope) : document;
        for (const g of root.querySelectorAll('g[data-node]')) {
            for (const r of ['root', 'out', 'in', 'pass'])
                if (g.classList.contains('pe-' + r)) out[g.getAttribute('data-node')] = r;
        }
        return out; }""", scope)


# ---- a page served by a command (the desktop explorer, marimo) ---------------------------------
class Served:
    """``cmd`` run in its own session (so a test can send it Ctrl-C, and nothing it starts
    outlives the test); ``url`` is read from its output (``url_pattern``, one group) or built
    from ``url``. Stopped (SIGINT, then SIGKILL of its whole session) on exit."""

    def __init__(self, cmd: list[str], url_pattern: str | None = None, url: str | None = None,
                 cwd=None, startup_timeout: float = 120.0, env: dict | None = None):
        import re
        self.cmd, self.cwd = cmd, cwd
        self.url_re = re.compile(url_pattern) if url_pattern else None
        self.url = url
        self.startup_timeout = startup_timeout
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.output: list[str] = []

    def __enter__(self) -> "Served":
        import threading
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(self.env or {}))
        # as from a terminal: Ctrl-C (SIGINT) at its default, even when the test run itself was
        # started in the background (``cmd &`` ignores SIGINT, and children inherit that)
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, cwd=self.cwd, env=env, start_new_session=True,
                                     preexec_fn=_terminal_signals)
        found = threading.Event()

        def read():
            for line in self.proc.stdout:
                self.output.append(line)
                if self.url_re is not None and not found.is_set():
                    m = self.url_re.search(line)
                    if m:
                        self.url = m.group(1)
                        found.set()
            found.set()
        threading.Thread(target=read, daemon=True).start()
        if self.url_re is not None:
            found.wait(self.startup_timeout)
            if self.url is None:
                self.__exit__(None, None, None)
                raise RuntimeError(f"{self.cmd[:4]} printed no URL:\n" + self.log())
        else:  # wait for the port
            import urllib.parse
            u = urllib.parse.urlparse(self.url)
            deadline = time.time() + self.startup_timeout
            while time.time() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.cmd[:4]} exited:\n" + self.log())
                with contextlib.suppress(OSError), socket.create_connection(
                        (u.hostname, u.port), timeout=1):
                    break
                time.sleep(0.2)
        return self

    def log(self) -> str:
        return "".join(self.output)[-4000:]

    def interrupt(self, timeout: float = 30.0) -> int:
        """Ctrl-C, as a user stops it: the exit status."""
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(timeout=timeout)

    def __exit__(self, *exc) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


ROLE_JS = "['pe-root', 'pe-out', 'pe-in', 'pe-pass']"


def drawn_roles(page) -> dict[str, list[str]]:
    """data-node -> its pe-* role classes, for every drawn node (through shadow roots too)."""
    return page.locator("g[data-node]").evaluate_all(f"""(els) => {{
        const out = {{}};
        for (const g of els) {{
            const r = {ROLE_JS}.filter(c => g.classList.contains(c)).map(c => c.slice(3));
            if (r.length) out[g.getAttribute('data-node')] = r;
        }}
        return out; }}""")


def wait_for_plan_dom(page, plan, timeout: float = 60.0) -> None:
    """Until the page shows ``plan`` as the DOM contract says: the touched nodes carry exactly
    their one role class and nothing else does, and ``table.pe-plan`` has one body row per
    step, in plan order."""
    expect = {k: [h["role"]] for k, h in plan.highlighted.items()}
    targets = [s.nodes[0] if s.nodes else s.target for s in plan.steps]
    deadline = time.time() + timeout
    got, rows = None, None
    while time.time() < deadline:
        got = drawn_roles(page)
        rows = page.locator("table.pe-plan tbody tr").evaluate_all(
            "(trs) => trs.map(tr => tr.getAttribute('data-target'))")
        if got == expect and rows == targets:
            return
        time.sleep(0.25)
    raise AssertionError(f"the page does not show the engine's plan:\n roles {got}\n expected "
                         f"{expect}\n rows {rows}\n expected {targets}")


def in_view(page, node: str) -> bool:
    """Whether the drawn node lies inside the canvas viewport (what the user sees)."""
    return page.locator(f'g[data-node="{node}"]').first.evaluate("""(g) => {
        const v = g.closest('.pe-viewport').getBoundingClientRect();
        const r = g.getBoundingClientRect();
        return r.left >= v.left - 1 && r.right <= v.right + 1 && r.top >= v.top - 1 &&
               r.bottom <= v.bottom + 1; }""")
