"""The tuned pick into the model repository: a new version of `<out>/<name>`, in the layout Triton loads.

ONNX Runtime picks are `platform: "onnxruntime_onnx"`; OpenVINO picks are `backend: "openvino"` with
`default_model_filename: "model.onnx"` (Triton's OpenVINO backend reads ONNX by that name) and `HINT_BF16`
for bf16. The version directory (with the tune table and plot) and config.pbtxt are installed through the repository
journal (`deploykit.repository_journal`), so an existing version is never touched.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from deploykit.errors import Interrupted
from deploykit.repository import MANIFEST_NAME, atomic_write_json, atomic_write_text, version_dirs
from deploykit.repository_journal import install_version, recover


def triton_config(source_pbtxt: str, name: str, engine: str, precision: str) -> str:
    lines = []
    for line in source_pbtxt.splitlines():
        if line.startswith("name:"):
            lines.append(f'name: "{name}"')
        elif line.startswith(("platform:", "backend:")):
            lines += (['platform: "onnxruntime_onnx"'] if engine == "onnxruntime"
                      else ['backend: "openvino"', 'default_model_filename: "model.onnx"'])
        elif line.startswith("default_model_filename:") or "HINT_BF16" in line:
            continue
        else:
            lines.append(line)
    if engine == "openvino" and precision == "bf16":
        lines.append('parameters: { key: "HINT_BF16" value: { string_value: "YES" } }')
    return "\n".join(lines) + "\n"


def install(pick, source_dir: Path, out_dir: Path, name: str, tune_record: dict, report_md: str,
            plot_png: Path | None = None) -> Path:
    """Write the pick as the next version of out_dir/name; returns the version directory.

    The version directory (model, manifest, the tune table and plot) and config.pbtxt go in through the
    repository journal, so a kill at any moment leaves the previous state or the new one, and a concurrent
    command's recovery never mistakes this run's staging directory for a dead run's."""
    model_dir = Path(out_dir) / name
    recover(Path(out_dir))   # an install a kill interrupted is settled before the next version is counted
    existing = version_dirs(model_dir) if model_dir.is_dir() else []
    version = (existing[-1] + 1) if existing else 1
    source_version = source_dir / str(version_dirs(source_dir)[-1])

    def fill(staging: Path) -> None:
        shutil.copy2(source_version / "model.onnx", staging / "model.onnx")
        manifest = json.loads((source_version / MANIFEST_NAME).read_text())
        manifest.update({"model": name, "version": version, "precision": pick.precision,
                         "engine": pick.engine, "tune": tune_record})
        atomic_write_json(staging / MANIFEST_NAME, manifest)
        atomic_write_text(staging / "tune_report.md", report_md)
        if plot_png is not None and plot_png.is_file():
            shutil.copy2(plot_png, staging / "tune.png")
        atomic_write_text(staging / "config.pbtxt", triton_config((source_dir / "config.pbtxt").read_text(), name,
                                                                  pick.engine, pick.precision))

    target, interrupted = install_version(Path(out_dir), model_dir, version, fill)
    if interrupted:
        raise Interrupted(f"interrupted after the install; the repository holds the new model {name}/{version}")
    return target
