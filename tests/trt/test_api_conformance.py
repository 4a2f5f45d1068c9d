"""API conformance: the build and run paths against the real TensorRT 10.16 and 11.4 Python bindings.

Each version runs conformance_cases.py in its own subprocess (two versions of the bindings cannot share one
interpreter), with the wheel on PYTHONPATH and gcc-compiled stub libraries on LD_LIBRARY_PATH
(conformance_env.py). Skips, with the reason, where gcc, the platform or PyPI is unavailable; with
DEPLOYKIT_REQUIRE_TRT_CONFORMANCE=1 (CI) that is a failure instead.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.trt import conformance_env

CASES = "tests/trt/conformance_cases.py"


@pytest.fixture(scope="session")
def bindings():
    return conformance_env.prepare_all()


def _start(env: conformance_env.BindingsEnv, *extra: str, misuse: str = "") -> subprocess.Popen:
    environ = env.environ()
    environ.pop("DEPLOYKIT_TRT_MISUSE", None)
    if misuse:
        environ["DEPLOYKIT_TRT_MISUSE"] = misuse
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", CASES, "-q", "-p", "no:cacheprovider", "-o", "addopts=-rfE", *extra],
        cwd=conformance_env.REPO_ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


@pytest.fixture(scope="session")
def runs(bindings):
    """Every (version, mode) run, started at once so the subprocesses overlap; -> {(key, mode): (rc, output)}."""
    started = {}
    for key, env in bindings.items():
        if isinstance(env, conformance_env.BindingsEnv):
            started[(key, "api")] = _start(env)
            started[(key, "misuse")] = _start(env, "-k", "fp16_on_an_fp32_graph", misuse="fp16-flag")
    results = {}
    for name, process in started.items():
        try:
            output, _ = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        results[name] = (process.returncode, output)
    return results


def _result(bindings, runs, key, mode):
    env = bindings[key]
    if isinstance(env, conformance_env.Unavailable):
        reason = f"TensorRT {conformance_env.BINDINGS[key][1]} bindings unavailable: {env}"
        if os.environ.get("DEPLOYKIT_REQUIRE_TRT_CONFORMANCE") == "1":  # CI: a skip would hide the check
            pytest.fail(reason)
        pytest.skip(reason)
    return env, *runs[(key, mode)]


def _summary(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
    return lines[-1].strip("= ") if lines else output[-2000:]


@pytest.mark.parametrize("key", list(conformance_env.BINDINGS))
def test_build_and_run_paths_conform_to_the_real_api(bindings, runs, key):
    env, returncode, output = _result(bindings, runs, key, "api")
    assert returncode == 0, f"TensorRT {env.version} API conformance failed:\n{output[-6000:]}"
    # Every case must have run against this version: a skip would mean the bindings did not import.
    cases = len(re.findall(r"^def test_", (conformance_env.REPO_ROOT / CASES).read_text(), re.MULTILINE))
    assert _summary(output).startswith(f"{cases} passed") and "skipped" not in _summary(output), _summary(output)


@pytest.mark.parametrize("key", list(conformance_env.BINDINGS))
def test_assuming_the_fp16_builder_flag_fails_conformance_on_11(bindings, runs, key):
    """The deliberate misuse: code that takes BuilderFlag.FP16 for granted (as Polygraphy 0.49 does)."""
    env, returncode, output = _result(bindings, runs, key, "misuse")
    if int(env.version.split(".")[0]) >= 11:
        assert returncode == 1, f"the misuse was not caught on TensorRT {env.version}:\n{output[-4000:]}"
        assert "AttributeError" in output and "FP16" in output, output[-4000:]
        assert _summary(output).startswith("1 failed"), output[-4000:]
    else:  # on 10.x the flag exists: the same code conforms
        assert returncode == 0, f"TensorRT {env.version}:\n{output[-4000:]}"
        assert _summary(output).startswith("1 passed"), output[-4000:]
