"""House style of user errors, checked over the whole package's source.

The CLI prints `error: <message> (<hint>)`. A message that itself ends in a parenthesis reads as two
asides in a row, "... (not an ONNX file?) (pass an .onnx model file)", and the reader cannot tell which
one is the fix. Messages put such details after a colon or a semicolon instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

import deploykit
from deploykit.errors import UserInputError

ERROR_CLASSES = {"DeployKitError", "CheckFailed", "UserInputError", "MissingDependency"}
PACKAGE = Path(deploykit.__file__).parent


def _message_end(node: ast.expr) -> str | None:
    """The literal text a message expression ends with, or None when it ends with a computed value."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values:
        return _message_end(node.values[-1])
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _message_end(node.right)
    return None


def errors_with_hint_ending_in_parenthesis(source: str, filename: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
        if name not in ERROR_CLASSES or not any(k.arg == "hint" for k in node.keywords):
            continue
        end = _message_end(node.args[0])
        if end is not None and end.rstrip().endswith(")"):
            found.append(f"{filename}:{node.lineno}")
    return found


def test_the_scan_finds_a_message_ending_in_a_parenthesis():
    bad = 'raise UserInputError(f"{p} parsed as an empty model (not an ONNX file?)", hint="pass an .onnx file")'
    good = 'raise UserInputError(f"{p} parsed as an empty model; it is not an ONNX file", hint="pass an .onnx file")'
    assert errors_with_hint_ending_in_parenthesis(bad, "bad.py") == ["bad.py:1"]
    assert errors_with_hint_ending_in_parenthesis(good, "good.py") == []
    # Without a hint, a closing parenthesis ends the line and reads fine.
    assert errors_with_hint_ending_in_parenthesis('raise CheckFailed("x (y)")', "nohint.py") == []


def test_no_user_error_message_ends_in_a_parenthesis_before_its_hint():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 50  # the scan really walked the package
    offenders = [hit for path in files
                 for hit in errors_with_hint_ending_in_parenthesis(path.read_text(), str(path.relative_to(PACKAGE)))]
    assert offenders == [], "user errors whose message ends in '(...)' right before the '(hint)': " + ", ".join(offenders)


def test_one_line_joins_message_and_hint():
    err = UserInputError("model repository 'r' has no model: no <name>/config.pbtxt in it", hint="export one")
    assert err.one_line() == "model repository 'r' has no model: no <name>/config.pbtxt in it (export one)"


def user_errors_without_hint(source: str, filename: str) -> list[str]:
    """UserInputError calls with no `hint=`: the README promises `error: <what failed> (<what to do>)` for
    every unusable input, so each of them must say what to do."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
        if name == "UserInputError" and not any(k.arg in ("hint", None) for k in node.keywords):
            found.append(f"{filename}:{node.lineno}")
    return found


def test_the_scan_finds_a_user_error_without_a_hint():
    assert user_errors_without_hint('raise UserInputError(f"ONNX model {p} does not exist")', "b.py") == ["b.py:1"]
    assert user_errors_without_hint('raise UserInputError("x", hint="pass an existing file")', "g.py") == []
    assert user_errors_without_hint('raise CheckFailed("outputs differ")', "verdict.py") == []


def test_every_user_input_error_says_what_to_do():
    files = sorted(PACKAGE.rglob("*.py"))
    offenders = [hit for path in files
                 for hit in user_errors_without_hint(path.read_text(), str(path.relative_to(PACKAGE)))]
    assert offenders == [], "UserInputErrors without a (what to do) hint: " + ", ".join(offenders)


def test_a_long_echoed_value_is_cut_in_the_error_line():
    """A config's arguments or a path echoed into an error stay readable (the issue saw 39 MB lines)."""
    err = UserInputError("bad constructor arguments " + "{'a': [1, 2, 3]} " * 100_000, hint="fix source.args")
    line = err.one_line()
    assert len(line) < 2200 and line.endswith("more characters] (fix source.args)")
    assert UserInputError("short", hint="h").one_line() == "short (h)"
