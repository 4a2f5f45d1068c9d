"""`deploykit bench`: JSON/CSV/plot outputs, the output check that keeps wrong answers out of the results,
skipped backends with reasons, usage errors. Tiny shapes and a few iterations; no timing assertions."""

from __future__ import annotations

import csv
import importlib.util
import shutil
import subprocess
import sys

import numpy as np
import pytest

# 8x8 inputs keep every export and run in a fraction of a second.
FAST = ("--size", "8x8", "--warmup", "1", "--iters", "3")


@pytest.fixture
def no_tensorrt(monkeypatch):
    """Make TensorRT look absent even on a machine that has it, so the skip path is what is tested."""
    from deploykit.trt import capabilities

    monkeypatch.setattr(capabilities, "import_tensorrt", lambda: (None, "No module named 'tensorrt'"))


def _rows(data, backend):
    return [r for r in data["rows"] if r["backend"] == backend]


def test_json_fields_checked_outputs_and_tensorrt_skipped(cli, tmp_path, no_tensorrt):
    csv_path = tmp_path / "se.csv"   # its directory must exist: bench creates none (issue 17)
    result = cli("bench", "--block", "se", "--backends", "torch,ort,trt", "--batch", "1,2", *FAST,
                 "--threads", "1", "--json", "--csv", str(csv_path))
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert data["passed"] is True
    assert data["source"]["kind"] == "block" and data["source"]["input"] == [64, 8, 8]
    assert data["settings"]["threads"] == 1 and data["environment"]["threads"] == 1
    for key in ("cpu", "cores", "versions", "date_utc", "load_average_start"):
        assert key in data["environment"]
    assert "verdict" in data["load"]

    timed = [r for r in data["rows"] if r["backend"] != "tensorrt"]
    assert {r["backend"] for r in timed} == {"torch-eager-reference", "torch-eager-safe", "onnxruntime-cpu"}
    assert sorted(r["batch"] for r in timed) == [1, 1, 1, 2, 2, 2]
    for r in timed:
        assert r["status"] == "ok", r
        assert r["outputs_checked"] is True and "PyTorch" in r["checked_against"]
        assert r["max_abs_err"] <= 1e-4
        lat = r["latency_ms"]
        assert r["samples"] == 3
        assert 0 < lat["min_ms"] <= lat["median_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
        # Throughput is items per second at the median latency.
        assert r["throughput_per_s"] == pytest.approx(r["batch"] / (lat["median_ms"] / 1e3))
        assert r["peak_mem_mib"] is not None and r["mem_kind"] in ("rss_delta", "unavailable")
        assert r["timer"] == "perf_counter"

    trt = _rows(data, "tensorrt")
    assert [r["batch"] for r in trt] == [1, 2]
    for r in trt:
        assert r["status"] == "skipped" and r["latency_ms"] is None
        assert "TensorRT is not installed" in r["reason"] and "pip install" in r["reason"]

    # The CSV holds the same rows and numbers.
    with csv_path.open() as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == len(data["rows"])
    by_key = {(r["backend"], int(r["batch"])): r for r in table}
    for r in timed:
        assert float(by_key[(r["backend"], r["batch"])]["median_ms"]) == pytest.approx(
            r["latency_ms"]["median_ms"], rel=1e-5)
    assert by_key[("tensorrt", 1)]["status"] == "skipped" and by_key[("tensorrt", 1)]["median_ms"] == ""


def test_wrong_backend_output_is_failed_not_a_result(cli, monkeypatch, tmp_path):
    from deploykit.bench import backends

    real = backends.OnnxRuntime.outputs

    def off_by_a_little(self):
        return [o + 1e-2 * np.abs(o).max() for o in real(self)]  # fast, plausible, and wrong

    monkeypatch.setattr(backends.OnnxRuntime, "outputs", off_by_a_little)
    csv_path = tmp_path / "r.csv"
    result = cli("bench", "--block", "se", "--backends", "torch,ort", "--batch", "1", *FAST, "--json",
                 "--csv", str(csv_path))
    assert result.exit_code == 1
    data = result.json()
    assert data["passed"] is False
    (ort,) = _rows(data, "onnxruntime-cpu")
    assert ort["status"] == "failed"
    assert "outputs differ from PyTorch" in ort["reason"] and "not timed" in ort["reason"]
    assert ort["latency_ms"] is None and ort["throughput_per_s"] is None and ort["samples"] == 0
    # Its error is the one put in: 1% of the output's largest magnitude.
    assert ort["max_abs_err"] > 1e-3
    for backend in ("torch-eager-reference", "torch-eager-safe"):
        (row,) = _rows(data, backend)
        assert row["status"] == "ok" and row["latency_ms"] is not None
    with csv_path.open() as fh:
        failed = [r for r in csv.DictReader(fh) if r["backend"] == "onnxruntime-cpu"]
    assert failed[0]["status"] == "failed" and failed[0]["median_ms"] == "" and failed[0]["throughput_per_s"] == ""


def test_wrong_backend_table_output_names_it(cli, monkeypatch):
    from deploykit.bench import backends

    real = backends.TorchEager.outputs

    def wrong_twin(self):
        outs = real(self)
        return [-o for o in outs] if self.variant == "safe" else outs

    monkeypatch.setattr(backends.TorchEager, "outputs", wrong_twin)
    result = cli("bench", "--block", "se", "--backends", "torch", "--batch", "1", *FAST)
    assert result.exit_code == 1
    assert "failed" in result.stdout
    assert "eager (twin) failed" in result.stderr


def test_plot_written(cli, tmp_path, no_tensorrt):
    pytest.importorskip("matplotlib")
    png = tmp_path / "se.png"
    result = cli("bench", "--block", "se", "--backends", "torch,ort,trt", "--batch", "1,2", *FAST, "--plot", str(png))
    assert result.exit_code == 0, result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {png}" in result.stdout.replace("\n", "")
    assert "skipped" in result.stdout and "outputs checked against PyTorch" in result.stdout.replace("\n", " ")


def test_missing_matplotlib_exits_3_with_install_hint_before_benchmarking(cli, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    from deploykit.bench import run

    def must_not_run(*args, **kwargs):
        raise AssertionError("the benchmark ran although --plot cannot be written")

    monkeypatch.setattr(run, "run_bench", must_not_run)
    result = cli("bench", "--block", "se", "--backends", "torch", "--plot", str(tmp_path / "x.png"))
    assert result.exit_code == 3
    assert "pip install 'deploykit[bench]'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args, message", [
    ((), "exactly one of"),
    (("--block", "se", "--model", "x"), "exactly one of"),
    (("--block", "se", "--backends", "tourch"), "did you mean 'torch'"),
    (("--block", "se", "--batch", "0,8"), "positive integers"),
    (("--block", "se", "--batch", "a"), "positive integers"),
    (("--block", "sma",), "did you mean 'sam'"),
])
def test_usage_errors_exit_2(cli, args, message):
    result = cli("bench", *args)
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_model_without_networks_is_a_clear_error(cli, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "deploykit.networks" else real(name, *a))
    result = cli("bench", "--model", "resnet18_cbam", "--backends", "torch")
    assert result.exit_code == 2
    assert "no networks" in result.stderr and "--block" in result.stderr


def test_model_goes_through_the_network_export_config(cli):
    pytest.importorskip("deploykit.networks")
    from deploykit import networks

    name = networks.names()[0]
    result = cli("bench", "--model", name, "--backends", "torch", "--batch", "1", "--size", "32x32",
                 "--warmup", "0", "--iters", "1", "--json")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert data["source"]["kind"] == "network" and data["source"]["input"] == [3, 32, 32]
    assert [r["status"] for r in data["rows"]] == ["ok", "ok"]
    assert all(r["outputs_checked"] for r in data["rows"])

    unknown = cli("bench", "--model", "resnet_nope", "--backends", "torch")
    assert unknown.exit_code == 2 and "valid networks" in unknown.stderr


def test_onnx_file_with_manifest_is_checked_against_rebuilt_pytorch(cli, tmp_path, small_flags):
    exported = cli("export", "--block", "se", *small_flags, "--out", str(tmp_path / "models"), "--json")
    assert exported.exit_code == 0, exported.stderr
    onnx_path = tmp_path / "models" / "se" / "1" / "model.onnx"
    result = cli("bench", str(onnx_path), "--backends", "torch,ort", "--batch", "1,4", "--warmup", "0",
                 "--iters", "2", "--json")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert data["source"]["kind"] == "onnx" and data["source"]["input"] == [64, 14, 14]
    assert all(r["status"] == "ok" and r["outputs_checked"] for r in data["rows"])
    # warmup 0: memory is still measured over the first call.
    assert all(r["peak_mem_mib"] is not None for r in data["rows"])

    # The same graph without its manifest: nothing to check it against, and the rows say so.
    bare = tmp_path / "bare.onnx"
    shutil.copy(onnx_path, bare)
    result = cli("bench", str(bare), "--backends", "torch,ort", "--batch", "2", "--warmup", "0", "--iters", "2",
                 "--json")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    (ort,) = _rows(data, "onnxruntime-cpu")
    assert ort["status"] == "unverified" and not ort["outputs_checked"] and ort["latency_ms"] is not None
    for backend in ("torch-eager-reference", "torch-eager-safe"):
        (row,) = _rows(data, backend)
        assert row["status"] == "skipped" and "manifest" in row["reason"]


def test_onnx_file_that_is_not_onnx_exits_2(cli, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not a model")
    result = cli("bench", str(bad), "--backends", "ort")
    assert result.exit_code == 2 and "Traceback" not in result.stderr


def test_cuda_device_without_gpu_exits_3(cli):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result = cli("bench", "--block", "se", "--device", "cuda", "--backends", "torch")
    assert result.exit_code == 3 and "no CUDA GPU" in result.stderr


def test_bench_help_and_import_do_not_import_torch():
    code = (
        "import sys\n"
        "import deploykit.commands.bench, deploykit.bench\n"
        "from deploykit.cli import main\n"
        "try:\n"
        "    main(['bench', '--help'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        "heavy = [m for m in ('torch', 'onnx', 'onnxruntime', 'matplotlib') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "--backends" in proc.stdout and "--plot" in proc.stdout


def _conv_model(path, *, batch, hw, elem=None):
    """A 1x1 convolution over 2 channels with the given (None: symbolic) batch and H/W, written to `path`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    elem = elem or TensorProto.FLOAT
    dims = [batch if batch else "n", 2, *(hw if hw else ("h", "w"))]
    w = numpy_helper.from_array(np.ones((2, 2, 1, 1), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
                               helper.make_node("Conv", ["xf", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", elem, dims)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), str(path))
    return str(path)


def _must_not_run(monkeypatch):
    from deploykit.bench import run

    def must_not_run(*args, **kwargs):
        raise AssertionError("the benchmark ran although its input was unusable")

    monkeypatch.setattr(run, "run_bench", must_not_run)


@pytest.mark.parametrize("case,args,words", [
    ("fixed batch", ("--batch", "1,4"), ["fixes the batch of input 'x' at 2", "--batch 2"]),
    ("fixed size", ("--batch", "2", "--size", "16x16"), ["fixes the size of input 'x' at 8x8", "drop --size"]),
])
def test_onnx_dims_the_graph_fixes_are_checked_before_running(cli, tmp_path, monkeypatch, case, args, words):
    model = _conv_model(tmp_path / "fixed.onnx", batch=2, hw=(8, 8))
    _must_not_run(monkeypatch)
    result = cli("bench", model, "--backends", "ort", *args, "--iters", "1", "--warmup", "0")
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert all(w in result.stderr for w in words), result.stderr


def test_fp16_input_graph_is_fed_fp16_and_an_int_input_is_refused(cli, tmp_path, monkeypatch):
    from onnx import TensorProto

    half = _conv_model(tmp_path / "half.onnx", batch=None, hw=None, elem=TensorProto.FLOAT16)
    result = cli("bench", half, "--backends", "ort", "--batch", "1", *FAST, "--json")
    assert result.exit_code == 0, result.stderr
    (row,) = _rows(result.json(), "onnxruntime-cpu")
    assert row["status"] == "unverified" and row["latency_ms"] is not None
    ints = _conv_model(tmp_path / "int.onnx", batch=None, hw=None, elem=TensorProto.INT64)
    result = cli("bench", ints, "--backends", "ort", "--batch", "1", *FAST)
    # An integer input is fed from the sidecar's input specs (its value range); without a sidecar there are none.
    assert result.exit_code == 2 and "input_specs of its deploykit.json sidecar" in result.stderr


def test_unwritable_results_paths_and_oversized_inputs_fail_before_running(cli, tmp_path, monkeypatch):
    _must_not_run(monkeypatch)
    (tmp_path / "afile").write_text("x")
    result = cli("bench", "--block", "se", "--backends", "ort", "--csv", str(tmp_path / "afile" / "x.csv"))
    assert result.exit_code == 2 and "not a directory this user can write in" in result.stderr
    result = cli("bench", "--block", "se", "--backends", "ort", "--plot", str(tmp_path))
    assert result.exit_code == 2 and "is a directory" in result.stderr
    result = cli("bench", "--block", "se", "--backends", "ort", "--batch", "1000000", "--size", "64x64", "--json")
    assert result.exit_code == 2 and "GiB for the input alone" in result.json()["error"]


def test_nothing_measured_is_not_a_success(cli, no_tensorrt):
    result = cli("bench", "--block", "se", "--backends", "trt", "--batch", "1", *FAST, "--json")
    assert result.exit_code == 3
    assert "nothing was measured" in result.json()["error"] and "TensorRT" in result.json()["error"]


def test_threads_are_bounded_by_the_cores(cli):
    result = cli("bench", "--block", "se", "--threads", "100000")
    assert result.exit_code == 2 and "--threads" in result.stderr
