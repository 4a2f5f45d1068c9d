"""The base install (no `export` extra) serves, validates, benchmarks ONNX Runtime and builds engines: every
runtime command runs here with torch and the other export-only packages made uninstalled, and the commands that
need them exit 3 with the install hint.

"Uninstalled" is simulated in a subprocess whose sitecustomize makes Python's path finder report the export
packages as absent, exactly what a venv without them reports (`import torch` raises ModuleNotFoundError and
importlib.util.find_spec("torch") is None).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
EXPORT_ONLY = ("torch", "torchvision", "onnxscript", "onnxsim", "onnxconverter_common")
RUNTIME_COMMANDS = ("list_blocks", "validate", "build", "bench", "serve", "export")

HIDE = f"""
import importlib.machinery as _machinery

_find_spec = _machinery.PathFinder.find_spec
_HIDDEN = {set(EXPORT_ONLY)!r}


def _hiding_find_spec(name, path=None, target=None):
    if name.partition(".")[0] in _HIDDEN:
        return None
    return _find_spec(name, path, target)


_machinery.PathFinder.find_spec = staticmethod(_hiding_find_spec)
"""


@pytest.fixture(scope="module")
def no_torch_env(tmp_path_factory):
    site = tmp_path_factory.mktemp("no_torch_site")
    (site / "sitecustomize.py").write_text(HIDE)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["NO_COLOR"] = "1"
    return env


def run_py(env, code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO_ROOT)


def deploykit(env, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deploykit", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO_ROOT)


def test_the_simulation_hides_torch(no_torch_env):
    proc = run_py(no_torch_env, "import importlib.util as u\nassert u.find_spec('torch') is None\nimport torch")
    assert proc.returncode != 0 and "ModuleNotFoundError: No module named 'torch'" in proc.stderr


def test_every_command_module_imports_without_the_export_packages(no_torch_env):
    code = ("import importlib, sys\n"
            f"for name in {RUNTIME_COMMANDS!r}:\n"
            "    importlib.import_module('deploykit.commands.' + name)\n"
            "for name in ('deploykit.cli', 'deploykit.serve.server', 'deploykit.serve.app', 'deploykit.serve.models',\n"
            "             'deploykit.validate.core', 'deploykit.bench.run', 'deploykit.bench.backends',\n"
            "             'deploykit.trt.builder', 'deploykit.healthcheck'):\n"
            "    importlib.import_module(name)\n"
            f"loaded = sorted(m for m in sys.modules if m.partition('.')[0] in {EXPORT_ONLY!r})\n"
            "print(loaded)\n")
    proc = run_py(no_torch_env, code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("args", [["--help"], ["list"], ["serve", "--help"], ["validate", "--help"],
                                  ["bench", "--help"], ["build", "--help"]])
def test_help_and_list_run_without_torch(no_torch_env, args):
    proc = deploykit(no_torch_env, *args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An SE block exported with torch present (the export extra), as a user's build machine would."""
    from tests.serve.helpers import export_model

    out = tmp_path_factory.mktemp("exported")
    export_model(out, "se", batch="1:2:4", size="14x14")
    return out / "se" / "1" / "model.onnx"


def test_validate_runs_on_onnx_runtime_and_skips_only_the_pytorch_parity(no_torch_env, exported, tmp_path):
    proc = deploykit(no_torch_env, "validate", str(exported), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    by_name = {c["name"]: c for c in report["checks"]}
    parity = by_name["parity"]
    assert parity["severity"] == "warning" and not parity["passed"]
    assert "torch is not installed" in parity["detail"] and "deploykit[export]" in parity["fix"]
    ran = [c for c in report["checks"] if c["category"] == "numerics" and c["name"] != "parity"]
    assert ran and all(c["passed"] for c in ran if c["severity"] == "error")

    # The graph alone (no manifest): nothing refers to PyTorch, so nothing is skipped for its absence.
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(exported.read_bytes())
    proc = deploykit(no_torch_env, "validate", str(bare), "--json")
    assert proc.returncode == 0, proc.stderr
    assert "torch is not installed" not in proc.stdout


def test_bench_times_onnx_runtime_without_torch(no_torch_env, exported):
    proc = deploykit(no_torch_env, "bench", str(exported), "--backends", "ort", "--batch", "2", "--iters", "3",
                     "--warmup", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["rows"]
    assert [(r["backend"], r["status"]) for r in rows] == [("onnxruntime-cpu", "unverified")]
    assert "torch is not installed" in rows[0]["reason"]
    assert rows[0]["samples"] == 3 and rows[0]["latency_ms"]["median_ms"] > 0


def test_serve_answers_without_torch(no_torch_env, exported, tmp_path):
    """The served outputs equal ONNX Runtime run in this (torch-free) process on the same graph."""
    import shutil

    import numpy as np
    import onnxruntime as ort

    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    repo = tmp_path / "models"
    shutil.copytree(exported.parents[1], repo / "se")
    code = (
        "import json, sys, numpy as np, urllib.request\n"
        "from deploykit.serve.settings import ServeSettings\n"
        "from deploykit.serve import server\n"
        "import threading\n"
        "x = np.random.default_rng(3).standard_normal((2, 64, 14, 14)).astype(np.float32)\n"
        "urls = []\n"
        "def ask():\n"
        "    import time\n"
        "    while not urls: time.sleep(0.05)\n"
        "    body = json.dumps({'inputs': [{'name': 'input', 'shape': list(x.shape), 'datatype': 'FP32',\n"
        "                                   'data': x.ravel().tolist()}]}).encode()\n"
        "    req = urllib.request.Request(urls[0] + '/v2/models/se/infer', body, {'Content-Type': 'application/json'})\n"
        "    out = json.load(urllib.request.urlopen(req, timeout=60))['outputs'][0]\n"
        "    np.save(sys.argv[2], np.asarray(out['data'], np.float32).reshape(out['shape']))\n"
        "    import os, signal; os.kill(os.getpid(), signal.SIGTERM)\n"
        "threading.Thread(target=ask, daemon=True).start()\n"
        "def out(line):\n"
        "    print(line, flush=True)\n"
        "    if server.READY_LINE in line: urls.append(line.split()[4])\n"
        "code = server.serve(sys.argv[1], ServeSettings(host='127.0.0.1', port=0), out=out)\n"
        "loaded = sorted(m for m in sys.modules if m.partition('.')[0] == 'torch')\n"
        "print('torch modules:', loaded)\n"
        "sys.exit(code)\n")
    proc = run_py(no_torch_env, code, str(repo), str(tmp_path / "y.npy"), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "torch modules: []" in proc.stdout
    x = np.random.default_rng(3).standard_normal((2, 64, 14, 14)).astype(np.float32)
    expected = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("args", [["export", "--block", "se", "--out", "{tmp}"],
                                  ["validate", "{onnx}", "--block", "se"],
                                  ["bench", "--block", "se", "--batch", "1"],
                                  ["tune", "se", "--batch", "1", "--out", "{tmp}"]])
def test_commands_that_need_pytorch_exit_3_with_the_install_hint(no_torch_env, exported, tmp_path, args):
    argv = [a.format(tmp=tmp_path / "out", onnx=exported) for a in args]
    proc = deploykit(no_torch_env, *argv)
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("error: torch is not installed") and "pip install 'deploykit[export]'" in lines[0]
    assert not (tmp_path / "out").exists()


def test_build_gets_as_far_as_tensorrt_without_torch(no_torch_env, exported, tmp_path):
    """Building an engine needs TensorRT (and a GPU), not PyTorch: without TensorRT here, the one-line refusal
    names TensorRT, never torch."""
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here; the refusal this test reads does not happen")
    proc = deploykit(no_torch_env, "build", str(exported), "--out", str(tmp_path / "engines"))
    assert proc.returncode == 3, proc.stderr
    line = proc.stderr.strip()
    assert line.startswith("error: TensorRT is not installed") and "\n" not in line and "torch" not in line
