"""Export configs: one YAML per block or network in export_configs/, validated by a pydantic schema.

A bad file is reported with the file, the field and the fix, e.g.
`export_configs/sam.yaml: input.batch: min (8) > max (4); set min <= opt <= max`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo,
                      field_validator, model_validator)

from deploykit.errors import UserInputError

CONFIG_DIR_NAME = "export_configs"
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int8_trt")  # bf16/int8*: deploykit.precisions


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Integers are strict: YAML's `true` is not 1 and "17" is not 17 (pydantic's lax mode would take both).
Int = Annotated[int, Field(strict=True)]


def _not_bool(value):
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got the boolean {str(value).lower()}")
    return value


# Floats take ints and numeric strings as before (PyYAML reads 1e-4 as a string), but not booleans.
Float = Annotated[float, BeforeValidator(_not_bool)]
SEED_MAX = 2**32 - 1  # numpy's seeds are 32-bit


class Range(_Strict):
    """A dimension: `opt` is the size used for export and tuning; min/max make it dynamic."""

    opt: Int = Field(gt=0)
    min: Int | None = Field(default=None, gt=0)
    max: Int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _ordered(self):
        lo = self.min if self.min is not None else self.opt
        hi = self.max if self.max is not None else self.opt
        if not lo <= self.opt <= hi:
            raise ValueError(f"min ({lo}) <= opt ({self.opt}) <= max ({hi}) does not hold; reorder the values")
        return self

    @property
    def dynamic(self) -> bool:
        return (self.min is not None and self.min != self.opt) or (self.max is not None and self.max != self.opt)

    @property
    def lo(self) -> int:
        return self.min if self.min is not None else self.opt

    @property
    def hi(self) -> int:
        return self.max if self.max is not None else self.opt


class BatchRange(_Strict):
    min: Int = Field(default=1, gt=0)
    opt: Int = Field(default=1, gt=0)
    max: Int = Field(default=32, gt=0)

    @model_validator(mode="after")
    def _ordered(self):
        if not self.min <= self.opt <= self.max:
            raise ValueError(f"min ({self.min}) <= opt ({self.opt}) <= max ({self.max}) does not hold; reorder the values")
        return self


class Source(_Strict):
    """What to build: a registered block or network, the user's own module (`PKG.MOD:CALLABLE` or
    `file.py:CALLABLE`, which runs the user's code) or a saved torch.export program (.pt2); constructor
    arguments and weights."""

    block: str | None = None
    network: str | None = None
    module: str | None = Field(default=None, min_length=1)
    program: str | None = Field(default=None, min_length=1)
    variant: Literal["reference", "safe"] = "safe"
    args: dict = Field(default_factory=dict)
    weights: str | None = None

    @model_validator(mode="after")
    def _one_source(self):
        given = [k for k in ("block", "network", "module", "program") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("set exactly one of 'block', 'network', 'module' or 'program'")
        if self.program is not None and (self.args or self.weights):
            raise ValueError("a saved program carries its weights and arguments; drop 'args' and 'weights'")
        return self

    @property
    def registry(self) -> bool:
        return self.block is not None or self.network is not None

    @property
    def label(self) -> str:
        return self.block or self.network or self.module or self.program


class InputSpec(_Strict):
    name: str = Field(default="input", min_length=1)
    channels: Int | None = Field(default=None, gt=0)
    batch: BatchRange = Field(default_factory=BatchRange)
    height: Range
    width: Range


class NamedInput(_Strict):
    """One input of a user model: each dimension a size or a {min, opt, max} range."""

    name: str = Field(min_length=1)
    dtype: Literal["float32", "float16", "int64", "int32", "bool"] = "float32"
    shape: list[Annotated[int, Field(strict=True, gt=0)] | Range] = Field(min_length=1)
    low: Int = 0      # integer inputs: seeded values in [low, high)
    high: Int = 2

    @model_validator(mode="after")
    def _value_range(self):
        if self.high <= self.low:
            raise ValueError(f"high ({self.high}) must exceed low ({self.low})")
        return self


class ToleranceSpec(_Strict):
    atol: Float = Field(ge=0)
    rtol: Float = Field(ge=0)
    mode: Literal["elementwise", "max", "mean", "quantile"] = "elementwise"


def _default_tolerances() -> dict[str, ToleranceSpec]:
    return {"fp32": ToleranceSpec(atol=1e-4, rtol=1e-4), "fp16": ToleranceSpec(atol=2e-2, rtol=2e-2)}


class ExportConfig(_Strict):
    name: str | None = Field(default=None, min_length=1)
    source: Source
    input: InputSpec | None = None                 # registry blocks and networks: one NCHW image input
    inputs: list[NamedInput] | None = None         # user modules: any number of named inputs
    output_name: str = Field(default="output", min_length=1)
    rewrite: bool = True                           # user modules: swap recognised blocks for export-safe twins
    opset: Int = Field(default=18, ge=13, le=23)
    precisions: list[Literal[PRECISIONS]] = Field(default_factory=lambda: ["fp32"])
    tolerances: dict[Literal["fp32", "fp16"], ToleranceSpec] = Field(default_factory=_default_tolerances)
    # Per output name, tolerances that replace `tolerances` for that output (e.g. logits vs. box coordinates).
    output_tolerances: dict[str, dict[Literal["fp32", "fp16"], ToleranceSpec]] = Field(default_factory=dict)
    simplify: bool = True
    exporters: list[Literal["dynamo", "torchscript"]] = Field(default_factory=lambda: ["dynamo", "torchscript"])
    seed: Int = Field(default=0, ge=0, le=SEED_MAX)
    calibration: str | None = None   # INT8 calibration inputs: a .npz file or a directory (None: random, warned)
    # Where the fields came from (a file path, or "defaults of 'se' with flags"), for errors found later.
    _origin: str = PrivateAttr(default="<config>")

    @property
    def origin(self) -> str:
        return self._origin

    @field_validator("output_name")
    @classmethod
    def _output_not_input(cls, value: str, info: ValidationInfo) -> str:
        spec = info.data.get("input")
        if spec is not None and value == spec.name:
            raise ValueError(f"'{value}' is also input.name; give the output another name")
        return value

    @model_validator(mode="after")
    def _consistent(self):
        if not self.precisions:
            raise ValueError("precisions is empty; list at least one of fp32, fp16")
        if not self.exporters:
            raise ValueError("exporters is empty; list dynamo and/or torchscript")
        if self.source.registry:
            if self.input is None:
                raise ValueError("input: required field is missing; add it")
            if self.inputs is not None:
                raise ValueError("inputs: registry blocks and networks take one image input; use 'input'")
        else:
            if self.input is not None:
                raise ValueError("input: a user model lists its inputs under 'inputs' (name, dtype, shape)")
            if self.source.module is not None and not self.inputs:
                raise ValueError("inputs: required for a module source; list each input's name, dtype and shape")
            names = [i.name for i in self.inputs or ()]
            if len(set(names)) != len(names):
                raise ValueError(f"inputs: names must be unique, got {names}")
        for p in self.precisions:
            if p not in self.tolerances and p in ("fp32", "fp16"):  # bf16/int8 are gated by deploykit.precisions
                self.tolerances[p] = _default_tolerances()[p]
        return self

    @property
    def model_name(self) -> str:
        return self.name or _default_name(self.source)

    @property
    def dynamic_hw(self) -> bool:
        return self.input is not None and (self.input.height.dynamic or self.input.width.dynamic)

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def _default_name(source: Source) -> str:
    """The model name when the config gives none: the registry name, or the user's callable / program file."""
    import re

    if source.registry:
        return source.block or source.network
    text = source.module.rpartition(":")[2] if source.module else Path(source.program).stem
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text).strip("._-").lower() or "model"


# Errors whose message is clearer with the value the file gave.
_SHOW_INPUT = {"int_type", "int_parsing", "int_from_float", "float_type", "float_parsing", "string_type", "bool_type",
               "bool_parsing", "greater_than", "greater_than_equal", "less_than", "less_than_equal",
               "string_too_short"}


def _show(value) -> str:
    """A config value as the YAML file wrote it, shortened."""
    if isinstance(value, bool) or value is None:
        text = {True: "true", False: "false", None: "null"}[value]
    elif isinstance(value, str):
        text = repr(value)
    else:
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _format_validation_error(source: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field; remove it or check its spelling"
        elif err["type"] == "missing":
            msg = "required field is missing; add it"
        elif err["type"] in _SHOW_INPUT:
            msg = f"{msg}, got {_show(err['input'])}"
        parts.append(f"{loc}: {msg}")
    more = f" (+{len(exc.errors()) - 3} more)" if len(exc.errors()) > 3 else ""
    return f"{source}: " + "; ".join(parts) + more


def parse_config(data, source: str = "<config>") -> ExportConfig:
    if not isinstance(data, dict):
        raise UserInputError(f"{source}: the top level must be a mapping of fields, got {type(data).__name__}",
                             hint="start the file with fields such as source: and input:")
    try:
        config = ExportConfig.model_validate(data)
    except ValidationError as exc:
        raise UserInputError(_format_validation_error(source, exc),
                             hint="fix the field in the config; README's Export section lists the fields") from None
    config._origin = source
    return config


class _DuplicateKey(Exception):
    pass


class _AliasRefused(Exception):
    pass


def _unique_key_loader():
    """yaml's SafeLoader, except that a key given twice in one mapping is an error (it would keep the last),
    and aliases (`*name`) are refused: nested aliases expand exponentially (a 1 KB "billion laughs" file
    becomes gigabytes), and an export config has no need for them."""
    import yaml

    class Loader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise _AliasRefused(f"alias '*{event.anchor[:40]}' at line {event.start_mark.line + 1}")
            return super().compose_node(parent, index)

        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise _DuplicateKey(f"'{key}' is given twice at line {key_node.start_mark.line + 1}")
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return Loader


def load_config(path: str | Path) -> ExportConfig:
    """Read and validate a YAML export config."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"config '{path}' does not exist", hint="pass an existing YAML file")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_unique_key_loader())
    except _DuplicateKey as exc:
        raise UserInputError(f"{path}: {exc}", hint="keep one of them") from None
    except _AliasRefused as exc:
        raise UserInputError(f"{path}: YAML aliases are not allowed in an export config: {exc}",
                             hint="write the value out where the alias stands") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserInputError(f"{path}: malformed YAML{where}: {problem}", hint="fix the YAML syntax") from None
    except UnicodeDecodeError:
        raise UserInputError(f"{path}: not a UTF-8 text file", hint="pass a YAML export config") from None
    config = parse_config(data, str(path))
    _resolve_paths(config, path.parent)
    return config


def _resolve_paths(config: ExportConfig, base: Path) -> None:
    """Relative paths in a config file are relative to the file, not to the current directory."""
    src = config.source
    if src.module and ".py:" in src.module and not Path(src.module.rpartition(":")[0]).is_absolute():
        src.module = str((base / src.module).resolve())
    for key in ("weights", "program"):
        value = getattr(src, key)
        if value and not Path(value).is_absolute():
            setattr(src, key, str((base / value).resolve()))


def find_config_dir(start: Path | None = None) -> Path | None:
    """export_configs/ in the working directory or one of its parents, else the one beside the package."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_DIR_NAME
        if candidate.is_dir():
            return candidate
    packaged = Path(__file__).resolve().parents[2] / CONFIG_DIR_NAME
    return packaged if packaged.is_dir() else None


def default_config(block: str) -> ExportConfig:
    """export_configs/<block>.yaml when it exists, else a config from the block's registry defaults."""
    folder = find_config_dir()
    if folder is not None and (folder / f"{block}.yaml").is_file():
        return load_config(folder / f"{block}.yaml")
    from deploykit.blocks import spec

    s = spec(block)
    c, h, w = s.input_shape()
    return parse_config({"source": {"block": block}, "input": {"channels": c, "height": {"opt": h}, "width": {"opt": w}}},
                        f"registry defaults of '{block}'")
