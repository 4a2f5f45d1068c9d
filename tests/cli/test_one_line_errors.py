"""Every failure of every subcommand is one line on stderr, `error: <what failed> (<what to do>)`, with the
documented exit code; with --json, stdout still carries exactly one JSON object."""

from __future__ import annotations

import json

import pytest


def one_line(result) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    assert "Usage:" not in result.stderr and "Try '" not in result.stderr
    return lines[0]


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "afile"
    path.write_text("x")
    return str(path)


# (arguments, key words of the message); "{file}" and "{dir}" are filled in by the test.
USAGE_ERRORS = [
    (("export", "--block", "se", "--opset", "99"), ("'--opset'", "99", "13<=x<=23")),
    (("export", "--block", "se", "--batch", "0:1:2"), ("--batch", "'0:1:2'", "MIN:OPT:MAX")),
    (("export", "--block", "se", "--size", "0x0"), ("--size", "'0x0'", "zero or negative")),
    (("export", "--block", "se", "--out", "{file}"), ("'--out'", "is a file")),
    (("export", "--config", "{dir}"), ("'--config'", "is a directory")),
    (("export", "--block", "se", "--force", "--new-version"), ("--force and --new-version exclude each other",)),
    (("export", "--block", "se", "--colour", "blue"), ("no such option", "--colour")),
    (("export", "--blok", "se"), ("no such option", "did you mean '--block'")),
    (("export", "--block", "se", "extra"), ("unexpected extra argument: extra",)),
    (("export", "--block"), ("'--block' requires an argument",)),
    (("export",), ("pass --block NAME, --model NAME or --config FILE",)),
    (("validate",), ("missing argument 'PATH'",)),
    (("validate", "m.onnx", "--check-mode", "median"), ("'--check-mode'", "'median'")),
    (("validate", "m.onnx", "--seed", "-1"), ("'--seed'", "0<=x<=4294967295")),
    (("build", "m.onnx", "--opt-level", "9"), ("'--opt-level'", "0<=x<=5")),
    (("bench", "--block", "se", "--model", "resnet18_cbam"), ("exactly one of", "got --block, --model")),
    (("bench", "--block", "se", "--batch", "0"), ("--batch", "positive integers")),
    (("bench", "--block", "se", "--seed", "-1"), ("'--seed'", "0<=x<=4294967295")),
    (("serve", "--port", "99999"), ("'--port'", "0<=x<=65535")),
    (("list", "--bogus"), ("no such option", "--bogus")),
]


@pytest.mark.parametrize("args,words", USAGE_ERRORS, ids=lambda v: " ".join(v) if isinstance(v[0], str) else None)
def test_usage_errors_are_one_line_with_the_help_command(cli, tmp_path, a_file, args, words):
    args = tuple(a.replace("{file}", a_file).replace("{dir}", str(tmp_path)) for a in args)
    result = cli(*args)
    assert result.exit_code == 2, result.stderr
    line = one_line(result)
    assert line.endswith(f"(see deploykit {args[0]} --help)"), line
    for word in words:
        assert word in line, (word, line)
    assert not line.removesuffix(f" (see deploykit {args[0]} --help)").endswith(")"), "two asides in a row"


def test_unknown_command_is_one_line(cli):
    result = cli("exprot")
    assert result.exit_code == 2
    line = one_line(result)
    assert "did you mean 'export'" in line and line.endswith("(see deploykit --help)")


def _export_shape() -> set[str]:
    from deploykit.export.config import parse_config
    from deploykit.export.pipeline import ExportStatus

    config = parse_config({"source": {"block": "se"}, "input": {"height": {"opt": 8}, "width": {"opt": 8}}})
    return set(ExportStatus(config).as_dict())


@pytest.mark.parametrize("args", [
    ("export", "--block", "se", "--opset", "99", "--json"),
    ("export", "--json", "--bogus"),
    ("export", "--block", "sma", "--json"),  # unusable input, not usage: the same one object
    ("export", "--json"),
])
def test_export_json_failures_print_one_object_in_the_export_shape(cli, args):
    result = cli(*args)
    assert result.exit_code == 2
    line = one_line(result)
    out = json.loads(result.stdout)  # exactly one JSON document on stdout
    assert set(out) == _export_shape()
    assert out["passed"] is False and out["error"] == line.removeprefix("error: ")


def test_export_json_when_the_model_exists_already(cli, tmp_path):
    (tmp_path / "se" / "1").mkdir(parents=True)
    result = cli("export", "--block", "se", "--out", str(tmp_path), "--precision", "fp32", "--json")
    assert result.exit_code == 2
    line = one_line(result)
    out = json.loads(result.stdout)
    assert out["passed"] is False and out["model"] == "se" and "--force" in out["error"]
    assert out["error"] == line.removeprefix("error: ")


@pytest.mark.parametrize("args,key", [
    (("validate", "--json"), "passed"),
    (("validate", "nope.onnx", "--json"), "passed"),
    (("build", "m.onnx", "--opt-level", "9", "--json"), "status"),
    (("bench", "--json"), "passed"),
    (("list", "--json", "--bogus"), "passed"),
])
def test_json_failures_of_the_other_commands(cli, args, key):
    result = cli(*args)
    assert result.exit_code == 2
    line = one_line(result)
    out = json.loads(result.stdout)
    assert out[key] in (False, "failed") and out["error"] == line.removeprefix("error: ")


@pytest.mark.parametrize("as_json", [False, True])
def test_ctrl_c_is_one_line_and_exit_130(cli, tmp_path, monkeypatch, as_json):
    from deploykit.export import pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run_export", interrupted)
    result = cli("export", "--block", "se", "--out", str(tmp_path), *(["--json"] if as_json else []))
    assert result.exit_code == 130
    assert result.stderr == "error: interrupted; nothing half-written was kept\n"
    if as_json:
        assert json.loads(result.stdout)["error"].startswith("interrupted")
    else:
        assert result.stdout == ""


def test_a_failure_after_the_json_was_printed_does_not_print_a_second_object(cli, tmp_path):
    from tests.trt import onnx_zoo

    model = onnx_zoo.conv_relu(tmp_path / "models", dynamic=False)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = cli("validate", str(model), "--no-run", "--json", "--report", str(blocker / "report.md"))
    assert result.exit_code == 2
    line = one_line(result)
    assert "cannot write the report" in line
    assert "passed" in json.loads(result.stdout)  # the validation's own object, and only it
