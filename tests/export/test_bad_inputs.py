"""Bad inputs to `deploykit export`, `bench` and `build` (issue 17): one line on stderr, the documented exit
code, no traceback, and the models already in place untouched."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import SMALL

torch = pytest.importorskip("torch")

SE = ("export", "--block", "se", *SMALL, "--precision", "fp32")


def one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    assert lines and lines[-1].startswith("error: "), result.stderr
    return lines[-1]


def se_state(**changes) -> dict:
    from deploykit.export.config import default_config
    from deploykit.export.source import build_modules

    state = {k: v.clone() for k, v in build_modules(default_config("se")).reference.state_dict().items()}
    for key, value in changes.items():
        state[key.replace("__", ".")] = value(state[key.replace("__", ".")])
    return state


@pytest.fixture
def exported(cli, tmp_path) -> Path:
    """A repository holding a good se model, to check that nothing replaces it."""
    assert cli(*SE, "--out", str(tmp_path)).exit_code == 0
    return tmp_path


def model_bytes(repo: Path) -> dict:
    return {str(p.relative_to(repo)): p.read_bytes() for p in sorted(repo.rglob("*")) if p.is_file()}


def test_an_empty_checkpoint_is_one_line(cli, tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    result = cli(*SE, "--weights", str(tmp_path / "empty.pth"), "--out", str(tmp_path / "m"))
    line = one_line_error(result)
    assert result.exit_code == 2 and "is an empty file: 0 bytes (" in line, line


def test_a_truncated_checkpoint_keeps_whole_sentences(cli, tmp_path):
    torch.save(se_state(), tmp_path / "good.pth")
    data = (tmp_path / "good.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[:100])
    result = cli(*SE, "--weights", str(tmp_path / "cut.pth"), "--out", str(tmp_path / "m"))
    line = one_line_error(result)
    # torch: "PytorchStreamReader failed reading zip archive: failed finding central directory. This is an
    # internal miniz error. If you are seeing ..." -- the first sentence whole, nothing cut mid-word.
    assert result.exit_code == 2 and "failed finding central directory (pass a PyTorch state dict" in line, line


@pytest.mark.parametrize("what,change,words", [
    ("nan", lambda t: t.index_fill(0, torch.tensor([3]), float("nan")), ["'fc2.weight'", "non-finite", "nan"]),
    ("inf", lambda t: t.index_fill(0, torch.tensor([0]), float("inf")), ["'fc2.weight'", "non-finite", "inf"]),
    ("complex", lambda t: t.to(torch.complex64), ["'fc2.weight'", "complex", "imaginary part"]),
])
def test_non_finite_or_complex_checkpoints_are_refused_and_replace_nothing(cli, exported, what, change, words):
    before = model_bytes(exported)
    torch.save(se_state(fc2__weight=change), exported.parent / f"{what}.pth")
    result = cli(*SE, "--weights", str(exported.parent / f"{what}.pth"), "--out", str(exported), "--force")
    line = one_line_error(result)
    assert result.exit_code == 2 and all(w in line for w in words), line
    assert model_bytes(exported) == before


def overflowing_weights() -> dict:
    """Finite weights whose forward pass is not: fc1 answers 1e38 in every hidden unit, fc2 adds 1e30 and
    -1e30 times that, inf - inf = NaN, and the sigmoid gate passes the NaN on."""
    def fc2(t):
        t = torch.zeros_like(t)
        t[:, 0], t[:, 1] = 1e30, -1e30
        return t

    return se_state(fc1__weight=torch.zeros_like, fc1__bias=lambda t: torch.full_like(t, 1e38), fc2__weight=fc2,
                    fc2__bias=torch.zeros_like)


def test_a_reference_answering_nan_fails_the_export_naming_where_it_starts(cli, exported):
    before = model_bytes(exported)
    path = exported.parent / "overflow.pth"
    torch.save(overflowing_weights(), path)
    result = cli(*SE, "--weights", str(path), "--out", str(exported), "--force")
    line = one_line_error(result)
    assert result.exit_code == 1, result.stderr
    assert "holds NaN or Inf" in line and "the output of 'fc2'" in line and "--allow-non-finite" in line, line
    after = model_bytes(exported)   # the old model untouched; only the failed run's own report added
    assert {k: after.get(k) for k in before} == before and set(after) - set(before) == {"se/export_report.failed.md"}


def test_allow_non_finite_is_the_users_explicit_choice(cli, tmp_path):
    path = tmp_path / "overflow.pth"
    torch.save(overflowing_weights(), path)
    result = cli(*SE, "--weights", str(path), "--out", str(tmp_path / "m"), "--allow-non-finite", "--json")
    assert "holds NaN or Inf" not in result.stderr and "Traceback" not in result.stderr
    # The graphs were then compared with PyTorch as usual: the verdict is the comparison's, not a refusal.
    out = result.json()
    assert result.exit_code in (0, 1) and out["parity"]["fp32"]["shapes"], out["error"]
    # The choice is recorded loudly wherever the run is described: the JSON, the report and the manifest.
    assert out["allow_non_finite"] is True
    report = Path(out["report"]).read_text()
    assert "WARNING: exported with --allow-non-finite" in report
    assert "exported under --allow-non-finite: PyTorch's output" in report and "holds NaN or Inf" in report, report


@pytest.mark.parametrize("allow", [True, False])
def test_the_manifest_records_whether_non_finite_outputs_were_allowed(cli, tmp_path, allow):
    import json

    result = cli(*SE, "--out", str(tmp_path), "--json", *(["--allow-non-finite"] if allow else []))
    out = result.json()
    assert result.exit_code == 0 and out["allow_non_finite"] is allow, out["error"]
    manifest = json.loads(Path(out["manifest"]).read_text())
    assert manifest["allow_non_finite"] is allow
    assert not any("holds NaN or Inf" in n for n in manifest["source"]["notes"])   # these weights answer finitely
    assert ("WARNING: exported with --allow-non-finite" in Path(out["report"]).read_text()) is allow


BILLION_LAUGHS = """
source:
  block: se
  args:
    a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
    b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
    d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
    f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
    g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
    h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
    i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
input: {channels: 64, height: {opt: 14}, width: {opt: 14}}
"""


def test_yaml_billion_laughs_is_refused_at_once(cli, tmp_path):
    path = tmp_path / "laughs.yaml"
    path.write_text(BILLION_LAUGHS)
    assert path.stat().st_size < 1024
    start = time.monotonic()
    result = cli("export", "--config", str(path), "--out", str(tmp_path / "m"))
    line = one_line_error(result)
    assert time.monotonic() - start < 20
    assert result.exit_code == 2 and "aliases are not allowed" in line and "line 6" in line and len(line) < 400, line
    assert not (tmp_path / "m" / "se").exists()


def test_torch_allocator_failure_is_the_memory_error(cli, tmp_path, monkeypatch):
    """Under a memory limit torch raises RuntimeError('DefaultCPUAllocator: not enough memory ...'), not
    MemoryError."""
    from deploykit.export import verify

    def out_of_memory(*_a, **_k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: "
                           "you tried to allocate 205520896 bytes.")

    monkeypatch.setattr(verify, "torch_outputs", out_of_memory)
    result = cli(*SE, "--out", str(tmp_path))
    line = one_line_error(result)
    assert result.exit_code == 2 and "ran out of memory" in line and "--batch" in line, line
    assert not (tmp_path / "se").exists()


@pytest.mark.parametrize("flag,path", [
    ("--csv", "/proc/nope/x.csv"),     # no such directory
    ("--csv", "/proc/x.csv"),          # the directory exists but no file can be created (even as root)
    ("--plot", "{tmp}/nonexistent/dir/x.png"),
])
def test_bench_results_paths_are_checked_by_creating_a_file_first(cli, tmp_path, flag, path):
    path = path.format(tmp=tmp_path)
    if flag == "--plot":
        pytest.importorskip("matplotlib")
    start = time.monotonic()
    result = cli("bench", "--block", "se", "--batch", "1", "--iters", "1000", "--rounds", "5", flag, path)
    line = one_line_error(result)
    assert result.exit_code == 2 and path in line and line.endswith(")"), line
    assert result.stdout == "" and time.monotonic() - start < 30   # refused before benchmarking
    assert not (tmp_path / "nonexistent").exists()   # no parent directory created


def test_build_of_a_missing_model_says_what_to_do(cli):
    result = cli("build", "models/nope/1/model.onnx")
    line = one_line_error(result)
    assert result.exit_code == 2 and "does not exist (pass the path of an existing .onnx file" in line, line
