"""Export flags on top of a config, and the config schema's own checks: each mistake is a config error
(exit 2, one line naming the file and the field), never a silent change or a failure later in the export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploykit.commands.export import build_config
from deploykit.errors import UserInputError

REPO = Path(__file__).resolve().parents[2]

GOOD = """
source: {block: se, args: {channels: 32}}
input: {channels: 32, batch: {min: 1, opt: 2, max: 4}, height: {opt: 10}, width: {opt: 12}}
precisions: [fp32]
"""

RANGED = """
source: {block: se, args: {channels: 16}}
input:
  channels: 16
  batch: {min: 1, opt: 2, max: 4}
  height: {opt: 56, min: 40, max: 64}
  width: {opt: 56, min: 40, max: 64}
precisions: [fp32]
"""


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def one_line(result) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    return lines[0]


def flags(config_path, size=None, dynamic_hw=False):
    return build_config(None, str(config_path), None, None, None, size, dynamic_hw, (), None, False)


def dims(config):
    return [(d.opt, d.min, d.max) for d in (config.input.height, config.input.width)]


# --- --block / --model against a config ---------------------------------------------------------------

@pytest.mark.parametrize("config,flag,value,kind", [
    ("resnet18_cbam", "--block", "se", "network 'resnet18_cbam'"),
    ("se", "--model", "resnet18_cbam", "block 'se'"),
    ("se", "--block", "cbam", "block 'se'"),
])
def test_a_source_flag_that_contradicts_the_config_is_an_error(cli, tmp_path, config, flag, value, kind):
    path = REPO / "export_configs" / f"{config}.yaml"
    result = cli("export", "--config", str(path), flag, value, "--out", str(tmp_path), "--size", "32x32",
                 "--batch", "1:1:2", "--precision", "fp32")
    assert result.exit_code == 2, result.stderr
    line = one_line(result)
    assert f"{flag} {value} contradicts" in line and str(path) in line and kind in line
    assert not list(tmp_path.rglob("model.onnx"))


def test_a_source_flag_that_agrees_with_the_config_is_fine():
    kwargs = dict(variant=None, opset=None, batch=None, size=None, dynamic_hw=False, precisions=(), weights=None,
                  no_simplify=False)
    config = build_config("se", str(REPO / "export_configs" / "se.yaml"), **kwargs)
    assert config.source.block == "se"
    config = build_config(None, str(REPO / "export_configs" / "resnet18_cbam.yaml"), model="resnet18_cbam", **kwargs)
    assert config.source.network == "resnet18_cbam"


# --- --size and --dynamic-hw against a config's H/W range --------------------------------------------------

def test_dynamic_hw_keeps_the_configs_range(tmp_path):
    assert dims(flags(write(tmp_path, RANGED), dynamic_hw=True)) == [(56, 40, 64)] * 2


def test_dynamic_hw_without_a_range_is_opt_half_to_double(tmp_path):
    assert dims(flags(write(tmp_path, GOOD), dynamic_hw=True)) == [(10, 5, 20), (12, 6, 24)]


@pytest.mark.parametrize("dynamic_hw", [False, True])
def test_size_inside_the_range_moves_opt_and_keeps_the_range(tmp_path, dynamic_hw):
    assert dims(flags(write(tmp_path, RANGED), "48x60", dynamic_hw)) == [(48, 40, 64), (60, 40, 64)]


def test_size_on_a_static_config_stays_static(tmp_path):
    assert dims(flags(write(tmp_path, GOOD), "14x16")) == [(14, None, None), (16, None, None)]


@pytest.mark.parametrize("size,key,value", [("32x48", "height", 32), ("48x80", "width", 80)])
def test_size_outside_the_range_is_a_one_line_error(cli, tmp_path, size, key, value):
    path = write(tmp_path, RANGED)
    result = cli("export", "--config", str(path), "--size", size, "--out", str(tmp_path / "m"))
    assert result.exit_code == 2, result.stderr
    line = one_line(result)
    assert f"--size {size}" in line and f"{key} {value} is outside the range 40..64" in line
    assert str(path) in line and f"edit input.{key}" in line and "drop them" in line
    assert not (tmp_path / "m" / "se").exists()


def test_help_states_the_range_rule(cli):
    text = " ".join(cli("export", "--help").stdout.split())
    assert "the range is kept and the size must lie inside it" in text
    assert "the config's own min/max range where it sets one, else opt/2 .. opt*2" in text


def test_size_and_dynamic_hw_reach_the_artifact_with_the_configs_range(cli, tmp_path):
    path = write(tmp_path, RANGED.replace("{opt: 56, min: 40, max: 64}", "{opt: 12, min: 10, max: 16}"))
    result = cli("export", "--config", str(path), "--size", "14x14", "--dynamic-hw", "--out", str(tmp_path / "m"),
                 "--json")
    assert result.exit_code == 0, result.stderr + result.stdout
    manifest = json.loads(Path(result.json()["manifest"]).read_text())
    assert manifest["config"]["input"]["height"] == {"opt": 14, "min": 10, "max": 16}
    assert manifest["config"]["input"]["width"] == {"opt": 14, "min": 10, "max": 16}
    shapes = {tuple(s["shape"][2:]) for s in result.json()["parity"]["fp32"]["shapes"]}
    assert (10, 10) in shapes and (16, 16) in shapes


# --- the schema: integers, seed, tensor names -------------------------------------------------------------

@pytest.mark.parametrize("change,field,words", [
    (("precisions: [fp32]", "precisions: [fp32]\nseed: -1"), "seed", "greater than or equal to 0, got -1"),
    (("precisions: [fp32]", "precisions: [fp32]\nseed: 99999999999999999999"), "seed",
     "less than or equal to 4294967295"),
    (("precisions: [fp32]", "precisions: [fp32]\nseed: true"), "seed", "valid integer, got true"),
    (("precisions: [fp32]", "precisions: [fp32]\nopset: true"), "opset", "valid integer, got true"),
    (("precisions: [fp32]", "precisions: [fp32]\nopset: '17'"), "opset", "valid integer, got '17'"),
    (("input: {channels: 32", "input: {name: '', channels: 32"), "input.name", "at least 1 character"),
    (("precisions: [fp32]", "precisions: [fp32]\noutput_name: input"), "output_name",
     "'input' is also input.name; give the output another name"),
    (("input: {channels: 32", "input: {channels: true"), "input.channels", "valid integer, got true"),
    (("max: 4}", "max: true}"), "input.batch.max", "valid integer, got true"),
    (("height: {opt: 10}", "height: {opt: true}"), "input.height.opt", "valid integer, got true"),
    (("precisions: [fp32]", "precisions: [fp32]\ntolerances: {fp32: {atol: true, rtol: 1.0e-4}}"),
     "tolerances.fp32.atol", "got the boolean true"),
    (("precisions: [fp32]", "precisions: [fp32]\nname: ''"), "name", "at least 1 character"),
])
def test_config_schema_errors_name_the_file_and_field(cli, tmp_path, change, field, words):
    path = write(tmp_path, GOOD.replace(*change))
    result = cli("export", "--config", str(path), "--out", str(tmp_path / "m"))
    assert result.exit_code == 2, result.stderr
    line = one_line(result)
    assert f"{path}: {field}: " in line and words in line, line
    assert not (tmp_path / "m" / "se").exists()


def test_the_largest_seed_and_float_tolerances_from_integers_are_accepted(tmp_path):
    text = GOOD + "seed: 4294967295\ntolerances: {fp32: {atol: 1, rtol: 1.0e-4}}\n"
    config = flags(write(tmp_path, text))
    assert config.seed == 2**32 - 1 and config.tolerances["fp32"].atol == 1.0


def test_bad_seed_names_the_config_and_does_not_crash(tmp_path):
    with pytest.raises(UserInputError, match=r"cfg\.yaml: seed: "):
        flags(write(tmp_path, GOOD + "seed: -1\n"))


def test_a_key_given_twice_is_an_error_not_the_last_one_silently(cli, tmp_path):
    path = write(tmp_path, GOOD + "opset: 18\nopset: 17\n")
    result = cli("export", "--config", str(path), "--out", str(tmp_path / "m"))
    assert result.exit_code == 2
    assert one_line(result) == f"error: {path}: 'opset' is given twice at line 6 (keep one of them)"
    nested = write(tmp_path, GOOD.replace("args: {channels: 32}", "args: {channels: 32, channels: 16}"))
    assert "'channels' is given twice at line 2" in one_line(cli("export", "--config", str(nested)))


def test_an_error_caused_by_a_flag_says_the_flags_were_applied(cli, tmp_path):
    path = write(tmp_path, GOOD)
    result = cli("export", "--config", str(path), "--batch", "1:8:4", "--out", str(tmp_path / "m"))
    assert result.exit_code == 2
    assert one_line(result).startswith(f"error: {path} with the flags: input.batch: ")
