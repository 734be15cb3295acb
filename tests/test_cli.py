"""The prune-explorer command line: run as a subprocess (the way users run it), small models."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
import torchvision

import prune_explorer as tp
from prune_explorer import cli

SMALL = ["--input-shape", "1,3,32,32"]
ENV = dict(os.environ, PYTHONWARNINGS="ignore", TQDM_DISABLE="1")


def run(*args, ok=True, cwd=None):
    proc = subprocess.run([sys.executable, "-m", "prune_explorer.cli", *args], capture_output=True,
                          text=True, cwd=cwd, env=ENV, timeout=600)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def assert_one_line_error(proc, *needles):
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in err, err
    last = err.splitlines()[-1]
    assert last.startswith("prune-explorer"), err
    assert "error:" in last
    for n in needles:
        assert n in last, (n, last)
    return last


# ---- help ---------------------------------------------------------------------------------------
def test_help_is_complete():
    top = run("--help").stdout
    for word in ("plan", "prune", "report", "torchvision:resnet50 --layer layer1.0.conv1",
                 "--out pruned/", "--html report.html"):
        assert word in top
    plan = run("plan", "--help").stdout
    for opt in ("--layer", "--idxs", "--side", "--policy", "--json", "--input-shape", "--seed",
                "--quiet", "--traceback", "torchvision:NAME", "timm:NAME", "hf:NAME",
                "path/file.py:factory"):
        assert opt in plan, opt
    prune = run("prune", "--help").stdout
    for opt in ("--amount", "--strategy", "--round-to", "--global", "--ignore", "--head-pruning",
                "--keep-hidden", "--out", "l1", "bn_scale"):
        assert opt in prune, opt
    report = run("report", "--help").stdout
    for opt in ("--html", "--title", "--amount", "--layer", "--idxs"):
        assert opt in report, opt


def test_console_script_is_installed():
    exe = shutil.which("prune-explorer", path=os.path.dirname(sys.executable))
    if exe is None:
        pytest.skip("the console script is not installed in this environment")
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0 and "prune_explorer" in proc.stdout


# ---- plan -------------------------------------------------------------------------------------
def test_plan_prints_the_classic_plan():
    proc = run("plan", "torchvision:resnet18", "--layer", "conv1", "--idxs", "2,6,9", *SMALL)
    out = proc.stdout
    assert "[ <DEP: prune_conv => prune_conv on conv1 (Conv2d(3, 64" in out
    assert "prune_batchnorm on bn1" in out and "Index=[2, 6, 9]" in out
    assert "11211 parameters will be pruned" in out
    assert "MACs will be removed" in out


def test_plan_as_json_and_input_side():
    proc = run("plan", "torchvision:resnet18", "--layer", "layer1.0.conv2", "--side", "in",
               "--idxs", "0-3", "--json", "-q", *SMALL)
    plan = json.loads(proc.stdout)
    assert plan["root"] == "layer1.0.conv2" and plan["side"] == "in"
    assert plan["idxs"] == [0, 1, 2, 3] and plan["params_removed"] > 0
    assert {s["target"] for s in plan["steps"]} >= {"layer1.0.conv2", "layer1.0.conv1",
                                                    "layer1.0.bn1"}


# ---- prune ------------------------------------------------------------------------------------
def test_prune_saves_a_model_that_loads(tmp_path):
    out = tmp_path / "pruned"
    proc = run("prune", "torchvision:resnet18", "--amount", "0.5", "--strategy", "l2",
               "--round-to", "4", "--out", str(out), *SMALL)
    assert "params 11,689,512 ->" in proc.stdout and "groups pruned" in proc.stdout
    assert f"saved to {out}" in proc.stdout
    model = tp.load(out, torchvision.models.resnet18).eval()
    params_after = int(proc.stdout.split("->")[1].split("(")[0].replace(",", ""))
    assert tp.utils.count_params(model) == params_after
    assert model.fc.out_features == 1000  # the classifier is ignored by default
    assert model.conv1.out_channels % 4 == 0 and model.conv1.out_channels < 64
    entry = tp.history_of(model)[0]
    assert entry["kind"] == "prune_model" and entry["settings"]["strategy"] == "l2"
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 1000)


FACTORY = textwrap.dedent("""
    import torch
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 16, 3, padding=1)
            self.bn = nn.BatchNorm2d(16)
            self.b = nn.Conv2d(16, 16, 3, padding=1)
            self.fc = nn.Linear(16, 4)

        def forward(self, x):
            h = torch.relu(self.bn(self.a(x)))
            return self.fc((h + self.b(h)).mean((2, 3)))

    def build():
        return Tiny()
""")


@pytest.fixture
def factory_file(tmp_path):
    path = tmp_path / "mymodels.py"
    path.write_text(FACTORY)
    return path


def _import_factory(path):
    spec = importlib.util.spec_from_file_location("mymodels_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build


def test_prune_a_model_from_a_python_file(tmp_path, factory_file):
    out = tmp_path / "tiny.safetensors"
    run("prune", f"{factory_file}:build", "--amount", "0.25", "--input-shape", "2,3,8,8",
        "--global", "--out", str(out), "-q")
    assert out.is_file()
    model = tp.load(out, _import_factory(factory_file)).eval()
    assert model.a.out_channels == model.b.out_channels == model.bn.num_features < 16
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 4)


def test_prune_hugging_face_text_model_offline(tmp_path):
    out = tmp_path / "bert"
    proc = run("prune", "hf:bert", "--amount", "0.5", "--input-shape", "1,8", "--keep-hidden",
               "--out", str(out), "-q")
    assert "groups pruned" in proc.stdout
    factory, source = cli.resolve_factory("hf:bert")
    assert source == "hf"
    model = tp.load(out, factory).eval()
    assert model.config.hidden_size == 64  # small, random, offline
    attn = model.encoder.layer[0].attention.self
    # whole heads of 16 went; the hidden size was kept (--keep-hidden)
    assert attn.query.out_features < 64 and attn.query.out_features % 16 == 0
    assert model.embeddings.word_embeddings.embedding_dim == 64
    ids = torch.randint(0, 1000, (1, 8))
    assert model(input_ids=ids).last_hidden_state.shape == (1, 8, 64)


# ---- report -----------------------------------------------------------------------------------
def test_report_writes_html(tmp_path):
    if importlib.util.find_spec("prune_explorer.viz.report") is None:
        pytest.skip("prune_explorer.viz.report is not available yet")
    html = tmp_path / "report.html"
    proc = run("report", "torchvision:resnet18", "--amount", "0.5", "--html", str(html),
               "--title", "resnet18 audit", *SMALL)
    assert html.is_file() and "report written to" in proc.stdout
    text = html.read_text()
    assert text.lstrip().lower().startswith("<!doctype html") and "resnet18 audit" in text
    single = tmp_path / "one.html"
    run("report", "torchvision:resnet18", "--layer", "conv1", "--idxs", "2,6,9", "--html",
        str(single), "-q", *SMALL)
    assert "conv1" in single.read_text()


def test_report_without_the_viz_module_is_one_clear_line(monkeypatch, capsys):
    import builtins
    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "prune_explorer.viz.report" or (name.endswith("viz.report")):
            raise ImportError("No module named 'prune_explorer.viz.report'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    code = cli.main(["report", "torchvision:resnet18", "--html", "x.html", "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert "HTML report is not available" in err


# ---- errors: one line, non-zero, nothing else ----------------------------------------------------
def test_errors_are_one_line_in_a_subprocess():
    proc = run("plan", "torchvision:resnet18", "--layer", "conv9", "--idxs", "1", *SMALL, ok=False)
    assert_one_line_error(proc, "'conv9' is not a module of this model")
    proc = run("plan", "torchvision:resnet18", "--layer", "conv1", "--idxs", "1",
               "--input-shape", "1,4,32,32", ok=False)
    assert_one_line_error(proc, "conv1", "expects a float tensor of shape [N, 3, H, W]")
    proc = run("prune", "torchvision:resnet18", "--amount", "1.5", ok=False)
    assert proc.returncode == 2
    assert_one_line_error(proc, "--amount", "fraction in (0, 1)")


@pytest.mark.parametrize("argv,needles", [
    (["plan", "torchvision:resnet18", "--layer", "conv1", "--idxs", "99"],
     ["index 99 is out of range for conv1"]),
    (["plan", "torchvision:resnet18", "--layer", "conv1", "--idxs", "1,1"], ["more than once"]),
    (["plan", "torchvision:resnet18", "--layer", "conv1", "--idxs", "a,b"],
     ["--idxs must be integers"]),
    (["plan", "torchvision:resnet18", "--layer", "conv1", "--idxs", "0-63"],
     ["every channel of conv1"]),
    (["plan", "torchvision:not_a_model", "--layer", "conv1", "--idxs", "1"],
     ["torchvision has no model 'not_a_model'"]),
    (["plan", "resnet18", "--layer", "conv1", "--idxs", "1"], ["must look like torchvision:NAME"]),
    (["plan", "keras:resnet18", "--layer", "conv1", "--idxs", "1"],
     ["unknown model source 'keras'"]),
    (["plan", "missing/file.py:build", "--layer", "a", "--idxs", "1"], ["does not exist"]),
    (["plan", "hf:not_a_model_type", "--layer", "a", "--idxs", "1"], ["no hub access"]),
    (["plan", "torchvision:resnet18", "--layer", "conv1", "--idxs", "1", "--input-shape", "1,x"],
     ["--input-shape must be integers"]),
    (["prune", "torchvision:resnet18", "--ignore", "fc9"], ["--ignore fc9: no such layer"]),
])
def test_error_messages(argv, needles, capsys):
    if not any(a.startswith("--input-shape") for a in argv):
        argv = argv + SMALL
    code = cli.main(argv + ["-q"])
    out = capsys.readouterr()
    assert code == 1
    err = out.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("prune-explorer: error: "), err
    for n in needles:
        assert n in err, (n, err)


def test_traceback_flag_shows_the_exception(capsys):
    with pytest.raises(tp.UnknownModuleError):
        cli.main(["plan", "torchvision:resnet18", "--layer", "conv9", "--idxs", "1", "--traceback",
                  "-q", *SMALL])


def test_a_file_without_the_factory(factory_file, capsys):
    code = cli.main(["plan", f"{factory_file}:nope", "--layer", "a", "--idxs", "1", "-q"])
    err = capsys.readouterr().err
    assert code == 1 and "has no callable 'nope'" in err and "build" in err


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


def test_default_inputs_and_ignored_layers():
    resnet = torchvision.models.resnet18()
    assert cli.default_inputs(resnet, "torchvision", None, "torchvision:resnet18").shape == (
        1, 3, 224, 224)
    assert cli.default_inputs(resnet, "torchvision", (2, 3, 64, 64), "x").shape == (2, 3, 64, 64)
    assert cli.default_ignored(resnet) == [resnet.fc]
    vgg = torchvision.models.vgg11()
    assert cli.default_ignored(vgg) == [vgg.classifier[6]]


def test_explore_stops_cleanly_on_a_kill_right_after_the_url(monkeypatch, capsys):
    """A kill that lands the instant the URL is printed (a script that starts the explorer,
    reads the URL, then stops it) exits 0 and stops the server. The handler used to be
    installed only after the print, so such a kill met the default handler and the CLI died
    with -15, leaving Voilà to its own cleanup."""
    import signal
    from prune_explorer.widget import app

    events = []

    class FakeServer:
        url = "http://127.0.0.1:1/?token=x"

        def __init__(self, *a, **k):
            self.proc = type("P", (), {"poll": staticmethod(lambda: None)})()

        def __enter__(self):
            events.append("start")
            return self

        def __exit__(self, *exc):
            events.append("stop")

        def wait_ready(self):
            pass

    class KillOnUrl:
        """stdout that sends SIGTERM to this process as soon as the URL is written"""
        def write(self, text):
            if "http://" in text:
                os.kill(os.getpid(), signal.SIGTERM)
            return len(text)

        def flush(self):
            pass

    def unhandled(signum, frame):  # stands in for the default handler, which would kill pytest
        raise AssertionError("the kill reached the default SIGTERM handler")

    original = signal.signal(signal.SIGTERM, unhandled)
    try:
        monkeypatch.setattr(app, "require_voila", lambda: None)
        monkeypatch.setattr(app, "Server", FakeServer)
        monkeypatch.setattr(sys, "stdout", KillOnUrl())
        code = cli.main(["explore", "torchvision:resnet18", "--no-browser"])
        assert signal.getsignal(signal.SIGTERM) is unhandled  # the handler is put back
    finally:
        signal.signal(signal.SIGTERM, original)
    assert code == 0 and events == ["start", "stop"]
    assert "stopping" in capsys.readouterr().err
