"""`deploykit export --model NAME [--weights FILE]`."""

from __future__ import annotations

import json

import pytest
import torch

from deploykit import networks
from deploykit.blocks.init import randomize_for_verification
from deploykit.repository import MANIFEST_NAME


@pytest.mark.slow
def test_export_model_with_authors_checkpoint(cli, tmp_path):
    source = randomize_for_verification(networks.create("resnet18_cbam"), seed=3)
    ckpt = tmp_path / "RESNET18_CBAM.pth"
    torch.save({"epoch": 90, "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, ckpt)
    out = tmp_path / "models"
    result = cli("export", "--model", "resnet18_cbam", "--weights", str(ckpt), "--size", "32x32",
                 "--batch", "1:2:3", "--precision", "fp32", "--out", str(out), "--json")
    assert result.exit_code == 0, result.stderr + result.stdout
    status = result.json()
    assert status["passed"] and status["model"] == "resnet18_cbam"
    manifest = json.loads((out / "resnet18_cbam" / "1" / MANIFEST_NAME).read_text())
    assert manifest["source"]["network"] == "resnet18_cbam"
    assert manifest["source"]["weights_report"]["path"] == str(ckpt)
    assert manifest["source"]["weights_report"]["stripped_prefix"] == "module."
    assert manifest["onnx"]["shape_computation_nodes"] == 0
    assert manifest["profile"]["input"]["max"] == [3, 3, 32, 32]


def test_checkpoint_of_another_network_is_refused_before_export(cli, tmp_path):
    ckpt = tmp_path / "wrong.pth"
    torch.save({"state_dict": {"module.conv1.weight": torch.zeros(64, 3, 7, 7), "module.head.weight": torch.zeros(2)}},
               ckpt)
    result = cli("export", "--model", "resnet18_cbam", "--weights", str(ckpt), "--out", str(tmp_path / "m"))
    assert result.exit_code == 2
    assert "missing [" in result.stderr and "unexpected [head.weight]" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "m" / "resnet18_cbam" / "1").exists()


def test_unknown_model_suggests_a_name(cli, tmp_path):
    result = cli("export", "--model", "resnet50_cbm", "--out", str(tmp_path))
    assert result.exit_code == 2
    assert "unknown network 'resnet50_cbm'; did you mean 'resnet50_cbam'?" in result.stderr


def test_block_and_model_exclude_each_other(cli, tmp_path):
    result = cli("export", "--block", "se", "--model", "se_resnet50", "--out", str(tmp_path))
    assert result.exit_code == 2 and "exclude each other" in result.stderr


def test_model_contradicting_the_config(cli, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("source: {network: smt_t}\ninput: {channels: 3, height: {opt: 64}, width: {opt: 64}}\n")
    result = cli("export", "--config", str(config), "--model", "smt_s", "--out", str(tmp_path / "m"))
    assert result.exit_code == 2 and "contradicts" in result.stderr


def test_wrong_channels_for_a_network(cli, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("source: {network: smt_t}\ninput: {channels: 4, height: {opt: 64}, width: {opt: 64}}\n")
    result = cli("export", "--config", str(config), "--out", str(tmp_path / "m"))
    assert result.exit_code == 2
    assert "input.channels is 4" in result.stderr and "set input.channels to 3" in result.stderr
