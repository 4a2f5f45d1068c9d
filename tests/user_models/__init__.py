"""A corpus of user models written in the style of real model code (not deploykit's), for the user-model pipeline.

Each file holds one model and a factory with small default widths (a CPU forward takes milliseconds). `CORPUS`
lists them with their example inputs, so tests can parametrize over it:

    @pytest.mark.parametrize("entry", CORPUS, ids=lambda e: e.name)
    def test_something(entry):
        model = entry.build().eval()
        outputs = model(*entry.example_inputs())

`InputSpec.dynamic` maps a dimension to its (min, opt, max); `shape` is the example (opt) shape. The CLI form of a
source is `entry.module_arg` (`tests/user_models/<file>.py:<factory>`) and of its inputs `entry.input_args()`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class InputSpec:
    """One named model input.

    Attributes:
        name: the input's name (the forward argument it feeds, in order).
        shape: example shape, every dynamic dimension at its opt value.
        dtype: "float32" or "int64" (torch dtype name).
        dynamic: dimension -> (min, opt, max) for the dimensions that may vary.
        high: for integer inputs, values are drawn from [0, high).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    dynamic: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    high: int | None = None

    def example(self, gen: torch.Generator, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        shape = tuple(shape or self.shape)
        if self.dtype == "int64":
            return torch.randint(0, self.high or 2, shape, generator=gen, dtype=torch.int64)
        if self.name == "mask":  # a binary mask, as such inputs are
            return (torch.rand(shape, generator=gen) > 0.5).float()
        return torch.randn(shape, generator=gen, dtype=getattr(torch, self.dtype))

    def cli_shape(self) -> str:
        return "x".join(str(s) for s in self.shape)


@dataclass(frozen=True)
class UserModel:
    """One corpus entry.

    Attributes:
        name: short id.
        file: file name in this package.
        factory: the callable in that file returning the nn.Module.
        inputs: its inputs, in forward order.
        outputs: output names (dict keys for dict outputs; one name for a tensor output).
        swapped: deploykit block names make_export_safe is expected to swap in, one per recognised module.
        kept: block names of modules that look like a block but must be kept.
        imitates: the real architecture it imitates.
    """

    name: str
    file: str
    factory: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[str, ...] = ("output",)
    swapped: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    imitates: str = ""

    @property
    def path(self) -> Path:
        return HERE / self.file

    @property
    def module_arg(self) -> str:
        return f"tests/user_models/{self.file}:{self.factory}"

    def build(self, **kwargs) -> torch.nn.Module:
        module = importlib.import_module(f"{__name__}.{Path(self.file).stem}")
        return getattr(module, self.factory)(**kwargs)

    def example_inputs(self, seed: int = 0, sizes: dict[str, tuple[int, ...]] | None = None) -> tuple:
        gen = torch.Generator().manual_seed(seed)
        return tuple(spec.example(gen, (sizes or {}).get(spec.name)) for spec in self.inputs)

    def input_args(self) -> list[str]:
        """The --input / --dynamic flags: each input with its dtype (and value range for integers, so labels stay
        valid class indices) and every dynamic dimension's min:opt:max."""
        args = []
        for spec in self.inputs:
            values = f":0..{spec.high}" if spec.high else ""
            args += ["--input", f"{spec.name}:{spec.cli_shape()}:{spec.dtype}{values}"]
            if spec.dynamic:
                axes = ",".join(f"{a}={lo}:{opt}:{hi}" for a, (lo, opt, hi) in sorted(spec.dynamic.items()))
                args += ["--dynamic", f"{spec.name}:{axes}"]
        return args


def _image(h: int = 64, w: int | None = None, *, hw: tuple[int, int, int] | None = None, name: str = "images",
           channels: int = 3) -> InputSpec:
    """(B, C, H, W) float input, batch 1..4 dynamic, and H, W dynamic over `hw` = (min, opt, max) when given."""
    w = h if w is None else w
    dynamic = {0: (1, 2, 4)}
    if hw is not None:
        dynamic.update({2: hw, 3: hw})
        h = w = hw[1]
    return InputSpec(name, (2, channels, h, w), "float32", dynamic)


CORPUS: tuple[UserModel, ...] = (
    UserModel("cbam_detector", "cbam_detector.py", "cbam_detector", (_image(64, hw=(32, 64, 96)),),
              outputs=("boxes", "scores", "features"), swapped=("cbam",),
              imitates="FCOS/CenterNet-style detector, CBAM neck as Jongchan/attention-module"),
    UserModel("image_mask", "image_mask.py", "image_mask_refiner",
              (_image(32, hw=(16, 32, 64), name="image"), _image(32, hw=(16, 32, 64), name="mask", channels=1)),
              swapped=("se", "se"), imitates="mask-guided matting/inpainting refiner with torchvision SE"),
    UserModel("se_unet", "se_unet.py", "se_unet", (_image(64, hw=(32, 64, 96)),), swapped=("se", "se", "se"),
              imitates="UNet with SE (Linear fc layout) in every decoder block"),
    UserModel("mobilenetv3", "mobilenetv3.py", "mobilenetv3_small", (_image(64, hw=(32, 64, 96)),),
              swapped=("se",) * 4, imitates="torchvision MobileNetV3-Small, hard-sigmoid SqueezeExcitation"),
    UserModel("efficientnet", "efficientnet.py", "efficientnet_tiny", (_image(64, hw=(32, 64, 96)),),
              swapped=("se",) * 4, imitates="timm EfficientNet blocks, SqueezeExcite with SiLU"),
    UserModel("regnety", "regnety.py", "regnety_tiny", (_image(64, hw=(32, 64, 96)),), swapped=("se",) * 4,
              imitates="timm RegNetY bottlenecks, SEModule sized from the block input"),
    UserModel("resnet_bam", "bam_resnet.py", "resnet_bam", (_image(32),), swapped=("bam", "bam"),
              imitates="ResNet with BAM between stages, Jongchan/attention-module (square inputs: the official "
                       "pool window is H x H)"),
    UserModel("class_conditional", "class_conditional.py", "class_conditional",
              (_image(32, hw=(32, 32, 64), name="image"), InputSpec("labels", (2,), "int64", {0: (1, 2, 4)}, high=5)),
              swapped=("cbam",), imitates="FiLM class-conditional net (int64 labels), timm CbamModule"),
    UserModel("nonlocal_net", "nonlocal_net.py", "nonlocal_net", (_image(32, hw=(16, 32, 48)),), kept=("se",),
              imitates="non-local block + GCNet-style context gate with SE keys (kept, exported as written)"),
)

BY_NAME = {entry.name: entry for entry in CORPUS}
