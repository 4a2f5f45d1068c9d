"""`deploykit tune`: the choice rule on known timings, the Triton entry per engine, and a real (tiny) run that
verifies every candidate, installs the pick where `deploykit serve` loads it, and never picks a failed one."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deploykit.tune.candidates import Candidate
from deploykit.tune.install import triton_config
from deploykit.tune.measure import choose, score, speedup

pytest.importorskip("openvino", reason="needs openvino: pip install 'deploykit[openvino]'")


def _cand(name, times, status="ok", installable=True, engine="onnxruntime", precision="fp32"):
    c = Candidate(name, engine, precision, None, installable=installable)
    c.status = status
    c.times_ms = {b: list(t) for b, t in times.items()}
    return c


def test_choice_is_the_fastest_passing_installable_candidate():
    base = _cand("ort-fp32", {1: [2.0, 2.0, 2.2], 8: [16.0, 16.0]})
    fast_but_failed = _cand("ort-int8", {1: [0.1], 8: [0.1]}, status="failed")
    baseline = _cand("openvino-default", {1: [0.2], 8: [0.2]}, installable=False)
    bf16 = _cand("openvino-bf16", {1: [1.0, 1.0, 5.0], 8: [4.0, 4.0, 4.1]}, engine="openvino", precision="bf16")
    f32 = _cand("openvino-f32", {1: [1.5], 8: [8.0]}, engine="openvino")
    choice = choose([base, fast_but_failed, baseline, bf16, f32])
    assert choice.pick is bf16 and choice.runner_up is f32
    assert score(bf16) == pytest.approx(np.sqrt(1.0 * 4.0))          # geomean of the medians
    assert speedup(bf16, base) == pytest.approx(np.sqrt(2.0 / 1.0 * 16.0 / 4.0))
    assert "openvino-f32" in choice.why and "% slower" in choice.why
    assert choose([fast_but_failed]).pick is None


def test_a_geomean_win_that_loses_to_openvino_default_at_one_batch_is_not_picked():
    # The se_resnet50 case: ort-int8 has the best geomean, but at batch 1 it is slower than what
    # compile_model(onnx) gives for free; openvino-int8 beats the baseline at both batches.
    baseline = _cand("openvino-default", {1: [20.5], 8: [525.0]}, installable=False, engine="openvino")
    ort_int8 = _cand("ort-int8", {1: [22.2], 8: [355.0]}, precision="int8")
    ov_int8 = _cand("openvino-int8", {1: [16.9], 8: [473.0]}, engine="openvino", precision="int8")
    assert score(ort_int8) < score(ov_int8)
    choice = choose([baseline, ort_int8, ov_int8])
    assert choice.pick is ov_int8 and choice.runner_up is ort_int8
    assert "faster by geomean" in choice.why and "openvino-default" in choice.why
    # with no baseline timed, the geomean alone decides
    assert choose([ort_int8, ov_int8]).pick is ort_int8
    # a batch where the pick loses to ONNX Runtime fp32 (deploykit's engine without tune) is named
    ort_fp32 = _cand("ort-fp32", {1: [42.0], 8: [300.0]})
    with_default = choose([baseline, ort_int8, ov_int8, ort_fp32])
    assert with_default.pick is ov_int8 and "slower than ort-fp32 at batch 8 (473.000 vs 300.000 ms)" in with_default.why
    assert "batch 1" not in with_default.why
    # when nothing beats the baseline everywhere, the geomean decides and the reason says so
    slow = _cand("openvino-default", {1: [1.0], 8: [1.0]}, installable=False, engine="openvino")
    fallback = choose([slow, ort_int8, ov_int8])
    assert fallback.pick is ort_int8 and "geomean decided" in fallback.why


def test_triton_entry_per_engine():
    src = 'name: "se"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
    ov = triton_config(src, "se_cpu", "openvino", "bf16")
    assert 'name: "se_cpu"' in ov and 'backend: "openvino"' in ov and 'default_model_filename: "model.onnx"' in ov
    assert "platform" not in ov and '"HINT_BF16"' in ov
    ort = triton_config(ov, "se_cpu", "onnxruntime", "int8")
    assert 'platform: "onnxruntime_onnx"' in ort and "openvino" not in ort and "HINT_BF16" not in ort
    assert "HINT_BF16" not in triton_config(src, "x", "openvino", "int8")


FAST = ("--size", "8x8", "--batch", "1,2", "--rounds", "1", "--iters", "2", "--threads", "1")


def test_tune_verifies_times_and_installs_a_servable_pick(cli, tmp_path):
    out = tmp_path / "models"
    result = cli("tune", "se", *FAST, "--out", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    rec = result.json()
    rows = {r["candidate"]: r for r in rec["candidates"]}
    assert set(rows) == {"ort-fp32", "openvino-f32", "openvino-bf16", "ort-int8", "openvino-int8", "openvino-default"}
    for r in rows.values():
        assert r["status"] == "ok", r
        assert set(r["median_ms"]) == {"1", "2"} and r["max_rel_l2"] is not None
    assert rows["ort-fp32"]["max_rel_l2"] < 1e-4
    assert rows["ort-int8"]["max_rel_l2"] > rows["openvino-bf16"]["max_rel_l2"]
    # the pick: the fastest installable candidate by geomean among those never slower than the baseline
    base = rows["openvino-default"]["median_ms"]
    installable = [r for r in rows.values() if r["installable"]]
    winners = [r for r in installable if all(r["median_ms"][b] <= base[b] for b in base)]
    fastest = min(winners or installable, key=lambda r: r["geomean_ms"])
    assert rec["pick"] == fastest["candidate"] and rec["runner_up"] not in (None, rec["pick"])
    assert any("RANDOM" in n for n in rec["notes"])

    entry = out / "se_cpu"
    manifest = json.loads((entry / "1" / "deploykit.json").read_text())
    assert manifest["tune"]["pick"] == rec["pick"] and manifest["engine"] == rows[rec["pick"]]["engine"]
    config = (entry / "config.pbtxt").read_text()
    assert ('backend: "openvino"' in config) == (manifest["engine"] == "openvino")
    assert "| candidate |" in (entry / "1" / "tune_report.md").read_text()

    pytest.importorskip("tritonclient", reason="needs the serve extra")
    from deploykit.serve.models import Repository
    from deploykit.serve.settings import ServeSettings

    repo = Repository.load(out, ServeSettings())
    try:
        x = np.random.default_rng(0).standard_normal((2, 64, 8, 8)).astype(np.float32)
        assert repo.get("se_cpu").runner.infer({"input": x})["output"].shape == (2, 64, 8, 8)
    finally:
        for model in repo.models.values():
            for mv in model.versions.values():
                mv.runner.deactivate()

    again = cli("tune", "se", *FAST, "--out", str(out), "--json")   # a second run adds a version
    assert again.exit_code == 0 and (entry / "1").is_dir() and (entry / "2").is_dir()


def test_a_candidate_failing_its_gate_is_never_picked(cli, tmp_path, monkeypatch):
    from deploykit.precisions.gate import GateLimits
    from deploykit.tune import candidates

    # no f32 engine is bit-exact with PyTorch: both f32 candidates fail this gate
    monkeypatch.setattr(candidates, "F32_LIMITS", GateLimits(max_rel_l2=0.0, min_cosine=1.0))
    result = cli("tune", "se", *FAST, "--out", str(tmp_path / "m"), "--json", "--no-install")
    assert result.exit_code == 0, result.stderr
    rec = result.json()
    rows = {r["candidate"]: r for r in rec["candidates"]}
    for name in ("ort-fp32", "openvino-f32"):
        assert rows[name]["status"] == "failed" and "relative L2" in rows[name]["reason"]
    assert rec["pick"] in ("openvino-bf16", "ort-int8", "openvino-int8")
    assert not (tmp_path / "m").exists()


def test_without_openvino_only_onnx_runtime_candidates_run(cli, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)
    result = cli("tune", "se", *FAST, "--out", str(tmp_path / "m"), "--json", "--no-install")
    assert result.exit_code == 0, result.stderr
    rows = {r["candidate"]: r for r in result.json()["candidates"]}
    for name, row in rows.items():
        if name.startswith("openvino"):
            assert row["status"] == "failed" and "pip install 'deploykit[openvino]'" in row["reason"]
        else:
            assert row["status"] == "ok"
    assert result.json()["pick"] in ("ort-fp32", "ort-int8")


def test_unknown_model_is_exit_2(cli, tmp_path):
    result = cli("tune", "resnet50_cbm", "--out", str(tmp_path / "m"))
    assert result.exit_code == 2 and "resnet50_cbam" in result.stderr and "Traceback" not in result.stderr
