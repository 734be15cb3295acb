"""The README is code: every ```python block runs as written, in order, in one fresh
interpreter, and every `prune-explorer ...` line of a ```bash block runs where it stands.
Shown outputs must match what the code prints."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(text: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def readme_script(text: str) -> str:
    """The python blocks, with the CLI lines of bash blocks run in place (`bash run.sh ...`
    lines are the set-up itself and are checked on a fresh clone, not here)."""
    parts = ["import shlex as _shlex, subprocess as _sp", SERVE]
    for lang, body in blocks(text):
        if lang == "python":
            parts.append(body)
        elif lang == "bash":
            for line in body.splitlines():
                cmd = line.split("  #")[0].strip()
                if cmd.startswith("prune-explorer explore "):  # a server: up, then Ctrl-C
                    parts.append(f"_serve({cmd!r})")
                elif cmd.startswith("prune-explorer "):
                    parts.append(f"_sp.run(_shlex.split({cmd!r}), check=True)")
    return "\n".join(parts)


SERVE = """def _serve(cmd):
    import signal
    p = _sp.Popen(_shlex.split(cmd) + ["--no-browser"], stdout=_sp.PIPE, text=True,
                  start_new_session=True)
    for line in p.stdout:  # it prints the URL once the server is up
        if "Ctrl-C stops it" in line:
            p.send_signal(signal.SIGINT)
            break
    assert p.wait(timeout=120) == 0, cmd
"""


def test_every_block_is_collected():
    text = README.read_text()
    langs = [lang for lang, _ in blocks(text)]
    assert langs.count("python") >= 8
    script = readme_script(text)
    assert "tp.prune_model(" in script and "prune-explorer" in script


def test_quick_start_output_is_what_the_readme_shows(tmp_path):
    text = README.read_text()
    found = blocks(text)
    i = next(k for k, (lang, body) in enumerate(found)
             if lang == "python" and "get_pruning_plan(model.conv1" in body)
    shown_lang, shown = found[i + 1]
    assert shown_lang == ""
    out = subprocess.run([sys.executable, "-c", found[i][1]], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    printed = out.stdout.splitlines()
    shown_lines = [l for l in shown.splitlines() if l != "..."]
    at = 0
    for line in shown_lines:  # each line shown is printed, in the same order
        assert line in printed[at:], f"README shows a line the code does not print:\n{line}"
        at = printed.index(line, at) + 1
    steps = [l for l in printed if l.startswith("[ <DEP:")]
    assert f"({len(steps)} steps" in text.replace("\n", " ")


@pytest.mark.slow
def test_readme_runs_as_written(tmp_path):
    script = readme_script(README.read_text())
    env = dict(os.environ)
    env["PATH"] = str(pathlib.Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["MPLBACKEND"] = "Agg"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=1500)
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
