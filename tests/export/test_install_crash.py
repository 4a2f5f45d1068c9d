"""Crash consistency of the install (deploykit/repository_journal.py), tested as SQLite and git are:
SIGKILL at every step of an install, then the next command's recovery must leave exactly the old or exactly
the new repository, and the serving loader must load it and answer an inference."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from deploykit.repository import TensorSpec, config_pbtxt
from deploykit.repository_journal import KILL_AT_STEP_ENV, LOCK_PREFIX, Run, Staged, install, recover, staging_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS = ("m", "m_fp16")   # two entries installed together, like an export's fp32 and fp16 models


def tiny_model(scale: float) -> bytes:
    """y = x * scale: old and new models differ in what they answer."""
    k = onnx.numpy_helper.from_array(np.array(scale, dtype=np.float32), "k")
    graph = helper.make_graph([helper.make_node("Mul", ["input", "k"], ["output"])], "tiny",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 4])], [k])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def pbtxt(name: str, max_batch: int) -> str:
    return config_pbtxt(name, "onnxruntime_onnx", [TensorSpec("input", "float32", (-1, 4))],
                        [TensorSpec("output", "float32", (-1, 4))], max_batch)


def write_entry(directory: Path, name: str, scale: float, max_batch: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.onnx").write_bytes(tiny_model(scale))
    (directory / "deploykit.json").write_text(f'{{"scale": {scale}}}\n')


def old_repository(repo: Path) -> None:
    for name in MODELS:
        write_entry(repo / name / "1", name, 1.0, 4)
        (repo / name / "config.pbtxt").write_text(pbtxt(name, 4))


def install_new(repo: Path) -> None:
    """What `deploykit export --force` does once its graphs are verified: stage, then install."""
    with Run(repo) as run:
        staged = []
        for name in MODELS:
            staging = staging_dir(run, repo / name)
            write_entry(staging, name, 2.0, 8)
            (staging / "config.pbtxt").write_text(pbtxt(name, 8))
            staged.append(Staged(staging, repo / name / "1", repo / name / "config.pbtxt"))
        install(run, staged)


CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from tests.export.test_install_crash import install_new
    install_new(Path(sys.argv[1]))
""")


def snapshot(repo: Path) -> dict:
    return {str(p.relative_to(repo)): p.read_bytes() for p in sorted(repo.rglob("*")) if p.is_file()}


def serve_answers(repo: Path) -> float:
    """Load the repository as `deploykit serve` does and return the scale every model answers with."""
    pytest.importorskip("fastapi")
    from deploykit.serve.models import Repository, _release

    loaded = Repository.load(repo)
    x = np.arange(8, dtype=np.float32).reshape(2, 4) + 1
    scales = set()
    try:
        for name in MODELS:
            out = loaded.get(name).runner.infer({"input": x})["output"]
            scales.add(float(np.round(out / x, 6).mean()))
    finally:
        for model in loaded.models.values():
            _release(model)
    assert len(scales) == 1, scales   # never one model old and the other new
    return scales.pop()


def run_killed_at(repo: Path, step: int) -> int:
    env = {**os.environ, KILL_AT_STEP_ENV: str(step), "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-c", CHILD, str(repo)], env=env, cwd=REPO_ROOT, timeout=120,
                          capture_output=True).returncode


def test_kill_at_every_step_of_the_install_leaves_the_old_or_the_new_repository(tmp_path):
    reference_old, reference_new = tmp_path / "old", tmp_path / "new"
    old_repository(reference_old)
    old_repository(reference_new)
    install_new(reference_new)
    old, new = snapshot(reference_old), snapshot(reference_new)
    assert old != new and set(old) == set(new)
    outcomes = []
    for step in range(64):
        repo = tmp_path / f"repo{step}"
        old_repository(repo)
        code = run_killed_at(repo, step)
        if code == 0:   # the install ran past its last step: every step was tried
            break
        assert code == -9, f"step {step}: exit {code}"
        recover(repo)
        after = snapshot(repo)
        assert after in (old, new), f"step {step}: a mix of old and new: {sorted(after)}"
        assert sorted(p.name for p in repo.iterdir()) == list(MODELS), f"step {step}: leftovers"
        assert not [p for p in repo.rglob(".*")], f"step {step}: leftovers {list(repo.rglob('.*'))}"
        scale = serve_answers(repo)
        assert scale == (1.0 if after == old else 2.0)
        outcomes.append("old" if after == old else "new")
    else:
        pytest.fail("the install never finished")
    # Both outcomes happen: kills before the last rename roll back, kills after it roll forward.
    assert len(outcomes) >= 8 and outcomes[0] == "old" and outcomes[-1] == "new" and set(outcomes) == {"old", "new"}
    assert outcomes == sorted(outcomes, key=lambda o: o == "new"), outcomes   # once new, always new


def test_recovery_leaves_a_live_runs_files_alone(tmp_path):
    """Two exports may share a repository: what a live run owns (its lock is held) is not touched."""
    repo = tmp_path / "repo"
    old_repository(repo)
    with Run(repo) as live:
        staging = staging_dir(live, repo / "m")
        write_entry(staging, "m", 2.0, 8)
        work = repo / f".deploykit-export-{live.id}-abcd"
        work.mkdir()
        # a dead run's leftovers: its lock file exists but nobody holds it
        dead = "0123456789ab"
        (repo / f"{LOCK_PREFIX}{dead}.lock").write_text("12345\n")
        (repo / "m" / f".staging-{dead}-1a2b3c4d").mkdir()
        (repo / f".deploykit-export-{dead}-xyz").mkdir()
        (repo / "m" / f".old-{dead}-1").mkdir()
        recover(repo)
        assert staging.is_dir() and work.is_dir() and live.lock_path.is_file()
        assert not (repo / "m" / f".staging-{dead}-1a2b3c4d").exists()
        assert not (repo / f".deploykit-export-{dead}-xyz").exists()
        assert not (repo / "m" / f".old-{dead}-1").exists()
        assert not (repo / f"{LOCK_PREFIX}{dead}.lock").exists()
        # the live lock really is held: a second flock fails
        fd = os.open(live.lock_path, os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
    assert serve_answers(repo) == 1.0


def test_leftovers_of_deploykit_before_journals_are_cleaned_and_a_lone_aside_restored(tmp_path):
    """The 49 leftovers of the issue: `.old-<name>-<hex8>`, `.staging-<hex8>`, `.deploykit-export-<random>`.
    Where a kill left config.pbtxt only moved aside (serve refused to start), it is put back."""
    repo = tmp_path / "repo"
    old_repository(repo)
    expected = snapshot(repo)
    os.replace(repo / "m" / "config.pbtxt", repo / "m" / ".old-config.pbtxt-1a2b3c4d")
    (repo / "m" / ".staging-9f8e7d6c").mkdir()
    (repo / "m_fp16" / ".old-1-0badf00d").mkdir()
    (repo / ".deploykit-export-q1w2e3r4").mkdir()
    actions = recover(repo)
    assert snapshot(repo) == expected and not list(repo.rglob(".*"))
    assert any("restored" in a and "config.pbtxt" in a for a in actions), actions
    assert serve_answers(repo) == 1.0


def test_a_clean_repository_is_not_written(tmp_path):
    """Recovery on a clean repository changes nothing, so a read-only repository still serves."""
    repo = tmp_path / "repo"
    old_repository(repo)
    before = {str(p): p.stat().st_mtime_ns for p in [repo, *repo.rglob("*")]}
    assert recover(repo) == []
    assert {str(p): p.stat().st_mtime_ns for p in [repo, *repo.rglob("*")]} == before


# A failpoint that needs no hook in deploykit (so it runs on any version): SIGKILL at the Nth rename of a
# staged or moved-aside entry during a real `deploykit export --force`.
KILL_AT_RENAME = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    kill_at, seen, real = int(sys.argv[1]), [0], os.replace
    def replace(src, dst):
        if any(Path(p).name.startswith((".old-", ".staging-")) for p in (src, dst)):
            if seen[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            seen[0] += 1
        real(src, dst)
    os.replace = replace
    from deploykit.cli import main
    main(sys.argv[2:])
""")


def served_batches(repo: Path) -> set[str]:
    """Load the repository with serve's loader (which recovers it first), run every model, and return the
    batch ranges its models were exported with: one range means no model is old while another is new."""
    import json

    pytest.importorskip("fastapi")
    from deploykit.repository import sha256_file
    from deploykit.serve.models import Repository

    loaded = Repository.load(repo)
    batches = set()
    for name in ("se", "se_fp16"):
        manifest = json.loads((repo / name / "1" / "deploykit.json").read_text())
        batch = manifest["config"]["input"]["batch"]
        config_max = 0 if batch["min"] == batch["max"] else batch["max"]
        assert f"max_batch_size: {config_max}\n" in (repo / name / "config.pbtxt").read_text()
        assert manifest["onnx"]["sha256"] == sha256_file(repo / name / "1" / "model.onnx")
        mv = loaded.get(name)
        spec = manifest["inputs"][0]
        shape = tuple(2 if d == -1 else d for d in spec["shape"])
        x = np.random.default_rng(0).standard_normal(shape).astype(spec["dtype"])
        out = mv.runner.infer({spec["name"]: x})[manifest["outputs"][0]["name"]]
        assert out.shape == shape and np.isfinite(out).all()
        batches.add(json.dumps(batch))
    return batches


@pytest.mark.slow
def test_kill_9_at_every_rename_of_a_real_export_then_serve_loads_old_or_new(tmp_path):
    """The issue's case: kill -9 while `export --force` renames the new models into place broke the
    repository (config.pbtxt missing, or a new config.pbtxt beside a moved-away version)."""
    base = ["export", "--block", "se", "--out", str(tmp_path), "--size", "14x14"]
    subprocess.run([sys.executable, "-m", "deploykit", *base, "--batch", "1:2:4"], check=True, cwd=REPO_ROOT,
                   capture_output=True, timeout=300)
    pristine = tmp_path.parent / f"{tmp_path.name}-old"
    shutil.copytree(tmp_path, pristine)
    old = {json_batch("1:2:4")}
    outcomes = []
    for n in range(20):
        proc = subprocess.run([sys.executable, "-c", KILL_AT_RENAME, str(n), *base, "--force", "--batch", "2:2:2"],
                              cwd=REPO_ROOT, capture_output=True, timeout=300)
        batches = served_batches(tmp_path)
        assert len(batches) == 1, (n, batches)
        assert not list(tmp_path.rglob(".*")), (n, [str(p) for p in tmp_path.rglob(".*")])
        if proc.returncode == 0:
            assert batches == {json_batch("2:2:2")}
            break
        assert proc.returncode == -9, (n, proc.returncode, proc.stderr.decode()[-800:])
        outcomes.append("old" if batches == old else "new")
        shutil.rmtree(tmp_path)   # back to the old models for the next kill
        shutil.copytree(pristine, tmp_path)
    else:
        pytest.fail("the export never finished")
    assert len(outcomes) >= 8, outcomes


def json_batch(text: str) -> str:
    import json

    lo, opt, hi = (int(v) for v in text.split(":"))
    return json.dumps({"min": lo, "opt": opt, "max": hi})


@pytest.mark.parametrize("command", ["export", "validate", "build", "serve"])
def test_every_command_that_opens_the_repository_recovers_it_first(cli, tmp_path, command):
    """Killed right after moving the first config.pbtxt aside (the moment that broke serve in the issue):
    the next command of any kind puts the repository back before it reads it."""
    repo = tmp_path / "repo"
    old_repository(repo)
    old = snapshot(repo)
    assert run_killed_at(repo, 2) == -9   # steps: 0 journal, 1 config aside, 2 config in place
    assert snapshot(repo) != old and list(repo.glob(".deploykit-journal-*.json"))
    model = str(repo / "m" / "1" / "model.onnx")
    if command == "export":
        (repo / "se").write_text("a file where the model directory goes: the export stops after recovering")
        args = ("export", "--block", "se", "--out", str(repo), "--size", "14x14")
    elif command == "validate":
        args = ("validate", model, "--no-run")
    elif command == "build":
        args = ("build", model, "--out", str(tmp_path / "plans"))
    else:
        pytest.importorskip("fastapi")
        from deploykit.serve.models import Repository

        Repository.load(repo)
        args = None
    if args:
        result = cli(*args)
        assert "Traceback" not in result.stderr, result.stderr
    if command == "export":
        (repo / "se").unlink()
    assert snapshot(repo) == old and not list(repo.rglob(".*"))


def test_a_repository_mounted_elsewhere_after_the_crash_recovers(tmp_path):
    """The journal names paths relative to the repository: a container mounting it at /models still recovers."""
    repo = tmp_path / "repo"
    old_repository(repo)
    old = snapshot(repo)
    assert run_killed_at(repo, 4) == -9
    moved = tmp_path / "mounted"
    os.replace(repo, moved)
    assert any("rolled back" in a for a in recover(moved))
    assert snapshot(moved) == old and not list(moved.rglob(".*"))


# A run dies inside an atomic write (deploykit/repository.py): its temporary file is written, the rename
# never comes. `os.fsync` is the failpoint: it kills the process (or, for the live run, blocks it).
WRITER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from deploykit.repository import atomic_write_text
    from deploykit.repository_journal import Run
    repo, target, how = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    run = Run(repo)
    def failpoint(fd):
        if how == "die":
            os._exit(9)
        print(run.id, flush=True)
        time.sleep(600)
    os.fsync = failpoint
    atomic_write_text(repo / target, "half-written")
""")


def _writer(repo: Path, target: str, how: str):
    return subprocess.Popen([sys.executable, "-c", WRITER, str(repo), target, how], cwd=REPO_ROOT, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, stdout=subprocess.PIPE)


def test_temporary_files_of_a_killed_run_are_cleaned_and_a_live_runs_kept(tmp_path):
    from deploykit.repository import TMP_PREFIX

    repo = tmp_path / "repo"
    old_repository(repo)
    expected = snapshot(repo)
    for target in ("m/export_report.md", "m_fp16/1/deploykit.json", "m/config.pbtxt"):
        assert _writer(repo, target, "die").wait(timeout=120) == 9
    live = _writer(repo, "m/1/deploykit.json", "wait")
    try:
        live_id = live.stdout.readline().strip()   # printed from inside its write, the temporary file made
        temporaries = sorted(p.relative_to(repo).as_posix() for p in repo.rglob(f"{TMP_PREFIX}*"))
        assert len(temporaries) == 4, temporaries
        assert all(Path(t).name.endswith(".tmp") for t in temporaries)
        # a probe of deploykit before runs owned them
        (repo / ".deploykit-write-test-0a1b2c3d").write_bytes(b"")
        actions = recover(repo)
        left = sorted(p.relative_to(repo).as_posix() for p in repo.rglob(".*") if not p.name.startswith(LOCK_PREFIX))
        assert len(left) == 1 and left[0].startswith(f"m/1/{TMP_PREFIX}{live_id}-"), (left, actions)
        assert sum("removed" in a for a in actions) == 4, actions
        assert live.poll() is None   # the live run's write goes on
    finally:
        live.kill()
        live.wait(timeout=60)
    recover(repo)
    assert not list(repo.rglob(".*")) and snapshot(repo) == expected
    assert serve_answers(repo) == 1.0


def test_an_exports_write_test_is_its_run_lock(tmp_path):
    """The export's writability probe is the run's own lock: nothing else is left for a kill to strand."""
    from deploykit.export.pipeline import _open_output_dir

    run = _open_output_dir(tmp_path / "new" / "repo")
    try:
        assert [p.name for p in (tmp_path / "new" / "repo").iterdir()] == [run.lock_path.name]
    finally:
        run.close()
    assert not list((tmp_path / "new" / "repo").iterdir())
