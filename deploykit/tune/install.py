"""The tuned pick into the model repository: a new version of `<out>/<name>`, in the layout Triton loads.

ONNX Runtime picks are `platform: "onnxruntime_onnx"`; OpenVINO picks are `backend: "openvino"` with
`default_model_filename: "model.onnx"` (Triton's OpenVINO backend reads ONNX by that name) and `HINT_BF16`
for bf16. The version directory is staged beside its place and renamed in, so an existing version is
never touched; config.pbtxt and the report are replaced atomically after it.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

from deploykit.repository import MANIFEST_NAME, atomic_write_json, atomic_write_text, version_dirs


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
    """Write the pick as the next version of out_dir/name; returns the version directory."""
    model_dir = Path(out_dir) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    existing = version_dirs(model_dir)
    version = (existing[-1] + 1) if existing else 1
    source_version = source_dir / str(version_dirs(source_dir)[-1])
    staging = model_dir / f".staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        shutil.copy2(source_version / "model.onnx", staging / "model.onnx")
        manifest = json.loads((source_version / MANIFEST_NAME).read_text())
        manifest.update({"model": name, "version": version, "precision": pick.precision,
                         "engine": pick.engine, "tune": tune_record})
        atomic_write_json(staging / MANIFEST_NAME, manifest)
        staging.rename(model_dir / str(version))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    atomic_write_text(model_dir / "config.pbtxt",
                      triton_config((source_dir / "config.pbtxt").read_text(), name, pick.engine, pick.precision))
    atomic_write_text(model_dir / "tune_report.md", report_md)
    if plot_png is not None and plot_png.is_file():
        shutil.copy2(plot_png, model_dir / "tune.png")
    return model_dir / str(version)
