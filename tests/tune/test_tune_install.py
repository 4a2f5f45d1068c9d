"""tune's install goes through the repository journal like export's: a kill at any step leaves the previous
state or the new one, and a command recovering the repository meanwhile never deletes the live run's staging."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from deploykit.repository_journal import KILL_AT_STEP_ENV, recover
from tests.export.test_install_crash import pbtxt, snapshot, write_entry

REPO_ROOT = Path(__file__).resolve().parents[2]
PICK = SimpleNamespace(name="openvino-bf16", engine="openvino", precision="bf16")


def source_export(root: Path) -> Path:
    """An export's model directory, as tune's fp32 export leaves it."""
    write_entry(root / "m" / "1", "m", 2.0, 8)
    (root / "m" / "config.pbtxt").write_text(pbtxt("m", 8))
    return root / "m"


def old_repository(repo: Path) -> None:
    """m_cpu/1 from an earlier tune, served by ONNX Runtime."""
    write_entry(repo / "m_cpu" / "1", "m_cpu", 1.0, 4)
    (repo / "m_cpu" / "config.pbtxt").write_text(pbtxt("m_cpu", 4))


def tune_install(source: Path, repo: Path) -> Path:
    from deploykit.tune.install import install

    return install(PICK, source, repo, "m_cpu", {"pick": PICK.name}, "| candidate |\n")


CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from tests.tune.test_tune_install import tune_install
    tune_install(Path(sys.argv[1]), Path(sys.argv[2]))
""")


def test_kill_at_every_step_of_a_tune_install_leaves_the_old_or_the_new_model(tmp_path):
    source = source_export(tmp_path / "export")
    reference = tmp_path / "reference"
    old_repository(reference)
    old = snapshot(reference)
    assert tune_install(source, reference) == reference / "m_cpu" / "2"
    new = snapshot(reference)
    assert 'backend: "openvino"' in (reference / "m_cpu" / "config.pbtxt").read_text()
    assert "m_cpu/2/tune_report.md" in new and "m_cpu/1/model.onnx" in new
    outcomes = []
    for step in range(32):
        repo = tmp_path / f"repo{step}"
        old_repository(repo)
        env = {**os.environ, KILL_AT_STEP_ENV: str(step), "PYTHONPATH": str(REPO_ROOT)}
        code = subprocess.run([sys.executable, "-c", CHILD, str(source), str(repo)], env=env, cwd=REPO_ROOT,
                              timeout=120, capture_output=True).returncode
        if code == 0:
            break
        assert code == -9, f"step {step}: exit {code}"
        recover(repo)
        after = snapshot(repo)
        assert after in (old, new), f"step {step}: a mix of old and new: {sorted(after)}"
        assert not list(repo.rglob(".*")), f"step {step}: leftovers {list(repo.rglob('.*'))}"
        outcomes.append("old" if after == old else "new")
    else:
        pytest.fail("the install never finished")
    assert outcomes[0] == "old" and outcomes[-1] == "new", outcomes


def test_a_recovery_during_a_tune_install_leaves_its_staging_alone(tmp_path, monkeypatch):
    """Two commands may share a repository: a serve or export starting while tune installs recovers the
    repository, and must see tune's staging directory as a live run's."""
    import deploykit.tune.install as tune_install_mod

    source = source_export(tmp_path / "export")
    repo = tmp_path / "repo"
    old_repository(repo)
    real_copy = tune_install_mod.shutil.copy2

    def copy_while_another_command_recovers(src, dst, *args, **kwargs):
        recover(repo)
        return real_copy(src, dst, *args, **kwargs)

    monkeypatch.setattr(tune_install_mod.shutil, "copy2", copy_while_another_command_recovers)
    version = tune_install(source, repo)
    assert (version / "model.onnx").read_bytes() == (source / "1" / "model.onnx").read_bytes()
    assert not list(repo.rglob(".*"))
