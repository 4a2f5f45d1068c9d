"""OpenVINO wherever a backend is chosen: `validate --backend openvino`, `bench --backends openvino[-bf16]`,
and serving a Triton OpenVINO-backend entry (`backend: "openvino"`, the ONNX file by name, HINT_BF16)."""

from __future__ import annotations


import numpy as np
import pytest

pytest.importorskip("openvino", reason="needs openvino: pip install 'deploykit[openvino]'")

from tests.backends.conftest import tiny_conv_model, torch_reference  # noqa: E402

CONFIG = """name: "tiny"
backend: "openvino"
default_model_filename: "model.onnx"
max_batch_size: 4
input [ { name: "input" data_type: TYPE_FP32 dims: [ 3, 8, 8 ] } ]
output [ { name: "output" data_type: TYPE_FP32 dims: [ 4, 1, 1 ] } ]
"""


def test_validate_backend_openvino_compares_with_onnxruntime(cli, tiny_onnx):
    path, _, _ = tiny_onnx
    result = cli("validate", str(path), "--backend", "openvino", "--no-fp16", "--trt", "none", "--json")
    assert result.exit_code == 0, result.stderr
    checks = {c["name"]: c for c in result.json()["checks"]}
    assert checks["openvino_run"]["passed"]
    parity = [c for name, c in checks.items() if name.startswith("openvino_parity[")]
    assert parity and all(c["passed"] for c in parity)
    assert all("vs ONNX Runtime" in c["detail"] for c in parity)


def test_validate_backend_openvino_without_openvino_exits_3(cli, tiny_onnx, no_openvino):
    result = cli("validate", str(tiny_onnx[0]), "--backend", "openvino")
    assert result.exit_code == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "pip install 'deploykit[openvino]'" in lines[0]
    assert "Traceback" not in result.stderr


def test_bench_openvino_rows_checked_against_pytorch(cli, tmp_path):
    result = cli("bench", "--block", "se", "--backends", "ort,openvino,openvino-bf16", "--batch", "1,2",
                 "--size", "8x8", "--warmup", "1", "--iters", "3", "--threads", "1", "--json")
    assert result.exit_code == 0, result.stderr
    rows = {(r["backend"], r["batch"]): r for r in result.json()["rows"]}
    for name in ("openvino-cpu", "openvino-bf16"):
        for batch in (1, 2):
            row = rows[(name, batch)]
            assert row["status"] == "ok" and row["outputs_checked"], row
    # f32 matches PyTorch like ONNX Runtime does; bf16 is further off but inside its gate
    assert rows[("openvino-cpu", 2)]["max_abs_err"] < 1e-4
    assert rows[("openvino-bf16", 2)]["max_abs_err"] > rows[("openvino-cpu", 2)]["max_abs_err"]


def test_bench_int8_rows_judged_by_the_int8_gate(cli):
    result = cli("bench", "--block", "se", "--backends", "ort,ort-int8,openvino-int8", "--batch", "2",
                 "--size", "8x8", "--warmup", "1", "--iters", "3", "--threads", "1", "--json")
    assert result.exit_code == 0, result.stderr
    rows = {r["backend"]: r for r in result.json()["rows"]}
    for name in ("onnxruntime-int8", "openvino-int8"):
        assert rows[name]["status"] == "ok" and rows[name]["outputs_checked"], rows[name]
        # quantized: far outside the fp32 tolerance, yet passed, because its gate is relative L2 and cosine
        assert rows[name]["max_abs_err"] > 1e-3


def test_bench_openvino_missing_is_a_skipped_row(cli, no_openvino):
    result = cli("bench", "--block", "se", "--backends", "ort,openvino", "--batch", "1", "--size", "8x8",
                 "--warmup", "1", "--iters", "2", "--json")
    assert result.exit_code == 0, result.stderr
    row = next(r for r in result.json()["rows"] if r["backend"] == "openvino-cpu")
    assert row["status"] == "skipped" and "pip install 'deploykit[openvino]'" in row["reason"]


@pytest.mark.parametrize("bf16", [False, True])
def test_serve_loads_a_triton_openvino_entry(tmp_path, bf16):
    pytest.importorskip("tritonclient", reason="needs the serve extra")
    from deploykit.serve.models import OPENVINO, Repository
    from deploykit.serve.settings import ServeSettings

    entry = tmp_path / "repo" / "tiny"
    (entry / "1").mkdir(parents=True)
    w, b = tiny_conv_model(entry / "1" / "model.onnx")
    config = CONFIG + ('parameters: { key: "HINT_BF16" value: { string_value: "YES" } }\n' if bf16 else "")
    (entry / "config.pbtxt").write_text(config)
    repo = Repository.load(tmp_path / "repo", ServeSettings())
    try:
        version = repo.get("tiny")
        assert version.model.platform == OPENVINO
        runner = version.runner
        assert runner.precision == ("bf16" if bf16 else "f32")
        x = np.random.default_rng(0).standard_normal((3, 3, 8, 8), dtype=np.float32)
        out = runner.infer({"input": x})["output"]
        ref = torch_reference(x, w, b)
        rel = np.linalg.norm(out - ref) / np.linalg.norm(ref)
        assert rel < (2e-2 if bf16 else 1e-6)
    finally:
        for model in repo.models.values():
            for mv in model.versions.values():
                mv.runner.deactivate()


def test_serve_openvino_entry_with_wrong_config_fails_at_load(tmp_path):
    pytest.importorskip("tritonclient", reason="needs the serve extra")
    from deploykit.errors import UserInputError
    from deploykit.serve.models import Repository
    from deploykit.serve.settings import ServeSettings

    entry = tmp_path / "repo" / "tiny"
    (entry / "1").mkdir(parents=True)
    tiny_conv_model(entry / "1" / "model.onnx")
    (entry / "config.pbtxt").write_text(CONFIG.replace('name: "output"', 'name: "logits"'))
    with pytest.raises(UserInputError, match="logits"):
        Repository.load(tmp_path / "repo", ServeSettings())


def test_serve_skips_openvino_entries_without_openvino_and_serves_the_rest(tmp_path, no_openvino):
    pytest.importorskip("tritonclient", reason="needs the serve extra")
    from deploykit.serve.models import Repository
    from deploykit.serve.settings import ServeSettings

    for name, config in (("tiny", CONFIG), ("tiny_ort", CONFIG.replace('name: "tiny"', 'name: "tiny_ort"').replace(
            'backend: "openvino"', 'platform: "onnxruntime_onnx"'))):
        (tmp_path / "repo" / name / "1").mkdir(parents=True)
        tiny_conv_model(tmp_path / "repo" / name / "1" / "model.onnx")
        (tmp_path / "repo" / name / "config.pbtxt").write_text(config)
    repo = Repository.load(tmp_path / "repo", ServeSettings())
    try:
        assert set(repo.models) == {"tiny_ort"}
        assert [u.name for u in repo.unavailable] == ["tiny"]
        assert "pip install 'deploykit[openvino]'" in repo.unavailable[0].reason
    finally:
        for model in repo.models.values():
            for mv in model.versions.values():
                mv.runner.deactivate()
