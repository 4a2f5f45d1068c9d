"""The command line: fast start without torch, clear one-line errors with documented exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from deploykit.blocks import names


def test_help_and_list_do_not_import_torch():
    code = (
        "import sys\n"
        "from deploykit.cli import main\n"
        "for args in (['--help'], ['list'], ['list', '--json'], ['export', '--help'], ['validate', '--help']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code in (0, None), (args, exc.code)\n"
        "heavy = [m for m in ('torch', 'onnx', 'onnxruntime', 'onnxsim') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout


def test_list_json_names_every_block(cli):
    result = cli("list", "--json")
    assert result.exit_code == 0
    listed = [b["name"] for b in result.json()["blocks"]]
    assert listed == names()
    sam = next(b for b in result.json()["blocks"] if b["name"] == "sam")
    assert "2307.08579" in sam["arxiv"] and sam["defaults"]["dim"] == 64


def test_unknown_block_lists_valid_names_and_close_match(cli):
    result = cli("export", "--block", "sma")
    assert result.exit_code == 2
    assert "did you mean 'sam'" in result.stderr
    for name in names():
        assert name in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_command_suggests(cli):
    result = cli("exprot")
    assert result.exit_code == 2
    assert "export" in result.stderr


def test_bad_flag_values_exit_2(cli):
    for args in (("export", "--block", "se", "--batch", "8:1"), ("export", "--block", "se", "--size", "0x14"),
                 ("export", "--block", "se", "--batch", "4:2:1")):
        result = cli(*args)
        assert result.exit_code == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_console_script_exit_codes_without_traceback(tmp_path):
    """The installed entry point, as a user runs it: a truncated model is exit 2 and one error line."""
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(b"\x08\x07\x12\x05hello\x3a\xff\xff")
    proc = subprocess.run([sys.executable, "-m", "deploykit", "validate", str(bad)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "not a readable ONNX model" in proc.stderr


@pytest.mark.parametrize("content", [b"", b"not an onnx file at all \x00\x01", b"\x0a\xff\xff\xff\xff\x0f"])
def test_validate_unreadable_files_exit_2(cli, tmp_path, content):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    result = cli("validate", str(path))
    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_validate_missing_file_exit_2(cli, tmp_path):
    result = cli("validate", str(tmp_path / "nope.onnx"))
    assert result.exit_code == 2
    assert "does not exist" in result.stderr
