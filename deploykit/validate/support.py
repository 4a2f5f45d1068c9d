"""The ONNX-TensorRT parser's support lists, as data: deploykit/data/tensorrt_onnx_support.json.

The file is a hand transcription of the support matrix in onnx/onnx-tensorrt (docs/operators.md) for one
10.x release, plus the 11.x changes NVIDIA documents, with the checkable restrictions written as `rules`.
It names the release and the documents it was read from; this module only loads it and merges the 11.x
additions over the 10.x table, so the audit (and the tests) never carry a second copy of the facts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

SUPPORT_FILE = Path(__file__).resolve().parents[1] / "data" / "tensorrt_onnx_support.json"

# ONNX TensorProto element type names -> the spelling of the support matrix's "Supported Types" column.
MATRIX_TYPE_NAMES = {
    "FLOAT": "FP32", "FLOAT16": "FP16", "BFLOAT16": "BF16", "INT32": "INT32", "INT64": "INT64", "INT8": "INT8",
    "UINT8": "UINT8", "BOOL": "BOOL", "FLOAT8E4M3FN": "FP8", "FLOAT4E2M1": "FP4", "INT4": "INT4",
}


@dataclass(frozen=True)
class OpSupport:
    """One row of the support matrix.

    Attributes:
        supported: the matrix says Y.
        types: the "Supported Types" column (FP32, FP16, ...); empty when the matrix lists none.
        restrictions: the "Restrictions" column, paraphrased.
    """

    supported: bool
    types: tuple[str, ...] = ()
    restrictions: str = ""


@dataclass(frozen=True)
class SupportTable:
    """What one TensorRT major version's ONNX parser accepts.

    Attributes:
        key: "10.x" or "11.x".
        tensorrt: the release the table was read for ("10.15").
        read_from: the documents it was read from.
        applies_to: which releases it is used for, and what is known to be missing.
        opset_min / opset_max: the ai.onnx opset range the parser supports.
        operators: op type -> OpSupport for the default (ai.onnx) domain.
        custom_operators: domain -> op types the parser imports natively outside ai.onnx.
        rules: the restriction rules (dicts from the data file) for this version.
    """

    key: str
    tensorrt: str
    read_from: str
    applies_to: str
    opset_min: int
    opset_max: int
    operators: dict[str, OpSupport]
    custom_operators: dict[str, frozenset[str]] = field(default_factory=dict)
    rules: tuple[dict, ...] = ()

    @property
    def label(self) -> str:
        return f"TensorRT {self.key}"


def _ops(table: dict) -> dict[str, OpSupport]:
    return {name: OpSupport(bool(row["supported"]), tuple(row.get("types", ())), row.get("restrictions", ""))
            for name, row in table.items()}


@lru_cache(maxsize=None)
def load_raw(path: str | None = None) -> dict:
    """The data file as JSON (cached)."""
    return json.loads(Path(path or SUPPORT_FILE).read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def load_tables(path: str | None = None) -> dict[str, SupportTable]:
    """Every version in the data file, "11.x" built on "10.x" through its `based_on` key."""
    raw = load_raw(path)
    tables: dict[str, SupportTable] = {}
    for key, entry in raw["versions"].items():  # the base version comes first in the file
        operators = dict(tables[entry["based_on"]].operators) if entry.get("based_on") else {}
        operators.update(_ops(entry.get("operators", {})))
        operators.update(_ops(entry.get("operators_added", {})))
        for name in entry.get("operators_removed", ()):
            operators[name] = OpSupport(False, (), f"removed in TensorRT {key}")
        rules = tuple(r for r in raw.get("rules", ()) if key in r.get("versions", (key,)))
        tables[key] = SupportTable(
            key=key, tensorrt=entry["tensorrt"], read_from=entry["read_from"], applies_to=entry.get("applies_to", ""),
            opset_min=int(entry["opset_min"]), opset_max=int(entry["opset_max"]), operators=operators,
            custom_operators={d: frozenset(v) for d, v in entry.get("custom_operators", {}).items()}, rules=rules,
        )
    return tables


def source_line(path: str | None = None) -> str:
    """"onnx/onnx-tensorrt docs/operators.md (TensorRT 10.15 for 10.x, 11.0-11.4 for 11.x)" for reports."""
    raw = load_raw(path)
    src = raw["source"]
    versions = ", ".join(f"{t.tensorrt} for {k}" for k, t in load_tables(path).items())
    repo = src["repository"].removeprefix("https://github.com/")
    return f"{repo} {src['file']} (TensorRT {versions})"
