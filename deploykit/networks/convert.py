"""`make_export_safe(model)`: replace every attention module deploykit recognises with its export-safe twin.

A module is recognised by its parameter layout, not its class name: its own state-dict keys and shapes must be
exactly those of a deploykit block built with arguments inferred from them (directly, or after one of the
block's key converters for other published layouts, e.g. timm's CBAM or the Linear-layout SE). Shapes cannot
tell everything (CBAM's pool types, Shuffle Attention's groups, a self-attention's head count): those come from
the module's attributes when it has them, and the proof below rejects a wrong guess.

Every candidate is proved before it is swapped in: the twin, loaded with the module's own weights, must give
the module's outputs on random input, and again after both get the same seeded non-trivial weights
(deploykit.blocks.init), so a match cannot rest on weights that happen to make two different functions agree
(a freshly initialised Shuffle Attention is the identity gate). Modules that look like a block but fail any
step are left in place and reported with the reason. With `example_inputs`, the whole model is compared
before and after as well.

Recognised: deploykit's reference blocks and the authors' modules with the same keys: CBAM and BAM
(Jongchan/attention-module), SE (Cadene/timm `SEModule`, the Linear `fc.0/fc.2` layout), GSoP (standalone, or
the authors' Bottleneck carrying it), PSA (EPSANet `PSAModule`), HA-CNN `SoftAttn`, SMT `Attention` (called
with tokens and H, W: the twin keeps that interface), Shuffle Attention (`sa_layer`), Selective Kernel (timm
`SelectiveKernel`, SKNet_pytorch `SKConv`).
"""

from __future__ import annotations

import copy
import importlib
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from deploykit.blocks.registry import BLOCKS
from deploykit.blocks.sam import ScaleAwareModulationSafe

CHECK_SIZE = 16     # spatial size of the random check input (even: HA-CNN's soft attention needs it)
CHECK_BATCH = 2


@dataclass
class ModuleConversion:
    """One module the walk recognised, or nearly did."""

    path: str
    original: str
    block: str | None
    replacement: str | None = None
    source: str = ""
    args: dict = field(default_factory=dict)
    max_abs: float | None = None           # twin vs module, with the module's weights
    max_abs_seeded: float | None = None    # twin vs module, both with seeded verification weights
    reason: str = ""


@dataclass
class ConversionReport:
    """What make_export_safe replaced, what it recognised but could not replace, and the whole-model check."""

    replaced: list[ModuleConversion] = field(default_factory=list)
    not_replaced: list[ModuleConversion] = field(default_factory=list)
    already_safe: list[str] = field(default_factory=list)
    model_check: dict | None = None

    def __bool__(self) -> bool:
        """True when the converted model was shown (or, without example inputs, every swap was shown) equal."""
        return self.model_check is None or bool(self.model_check["passed"])

    def as_dict(self) -> dict[str, Any]:
        return {"replaced": [asdict(c) for c in self.replaced], "not_replaced": [asdict(c) for c in self.not_replaced],
                "already_safe": list(self.already_safe), "model_check": self.model_check}

    def summary(self) -> str:
        lines = [f"replaced {len(self.replaced)}, not replaced {len(self.not_replaced)}, "
                 f"already export-safe {len(self.already_safe)}"]
        for c in self.replaced:
            lines.append(f"  + {c.path or '<root>'}: {c.original} -> {c.replacement} ({c.source}; max abs "
                         f"{c.max_abs:.1e}, seeded {c.max_abs_seeded:.1e})")
        for c in self.not_replaced:
            lines.append(f"  - {c.path or '<root>'}: {c.original} looks like '{c.block}' but was kept: {c.reason}")
        if self.model_check is not None:
            lines.append(f"  model check: {'passed' if self.model_check['passed'] else 'FAILED'}, max abs "
                         f"{self.model_check['max_abs']:.2e} on {self.model_check['input_shapes']}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


# --- signatures ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signature:
    """How to recognise one kind of module.

    Attributes:
        block: deploykit block (or network unit) name, for the report.
        anchor: a key of the canonical layout whose presence makes the module a candidate.
        infer: (module, canonical state) -> constructor kwargs, or None when the shapes do not fit at all.
        channels: kwargs -> input channels of the check input.
        build: (kwargs, variant) -> module; None builds deploykit block `block`.
        tokens: the authors call it with (tokens, H, W) instead of an NCHW tensor.
        is_safe: module -> True when it already is the export-safe twin.
        variants: (module, kwargs) -> the options the weights cannot tell (an activation, a gate, pool types),
            each a dict merged into kwargs, most likely first; every one is proved in turn and the first proved
            equal is swapped in.
    """

    block: str
    anchor: str
    infer: Callable[[nn.Module, dict], dict | None]
    channels: Callable[[dict], int]
    build: Callable[[dict, str], nn.Module] | None = None
    is_safe: Callable[[nn.Module], bool] | None = None
    variants: Callable[[nn.Module, dict], list[dict]] | None = None


def _block_module(name: str):
    return importlib.import_module(BLOCKS[name].module)


def _block_classes(name: str) -> tuple[type, type]:
    module = _block_module(name)
    spec = BLOCKS[name]
    return getattr(module, spec.reference), getattr(module, spec.safe)


def _shape(state: dict, key: str) -> tuple[int, ...] | None:
    value = state.get(key)
    return tuple(value.shape) if value is not None else None


def _attr(module: nn.Module, dotted: str, default=None):
    obj = module
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return default
    return obj


def _ratio(channels: int, hidden: int) -> int | None:
    """The reduction r with channels // r == hidden, if there is one."""
    if hidden <= 0 or channels < hidden:
        return None
    r = channels // hidden
    return r if channels // r == hidden else None


def _infer_se(module, state):
    w1, w2 = _shape(state, "fc1.weight"), _shape(state, "fc2.weight")
    if w1 is None or w2 is None or len(w1) != 4 or w1[2:] != (1, 1) or w2 != (w1[1], w1[0], 1, 1):
        return None
    if w1[0] > w1[1]:
        return None  # an expansion (a transformer's MLP), not a squeeze
    bias = "fc1.bias" in state
    if bias != ("fc2.bias" in state):
        return None
    r = _ratio(w1[1], w1[0])
    kwargs = {"channels": w1[1], "reduction": r} if r is not None else {"channels": w1[1], "rd_channels": w1[0]}
    return kwargs if bias else {**kwargs, "bias": False}


# Activation modules by class name (lower case, no underscores), as torch, timm and the common ports name them.
_ACTIVATION_NAMES = {"relu": "relu", "relu6": "relu6", "silu": "silu", "swish": "silu", "gelu": "gelu",
                     "hardswish": "hardswish", "hswish": "hardswish", "sigmoid": "sigmoid",
                     "hardsigmoid": "hardsigmoid", "hsigmoid": "hardsigmoid"}


def _activations_in(module: nn.Module) -> list[str]:
    """Names of the activation modules `module` holds, in registration order (tanh-GELU told apart)."""
    found = []
    for sub in module.modules():
        name = _ACTIVATION_NAMES.get(type(sub).__name__.lower().replace("_", ""))
        if name == "gelu" and getattr(sub, "approximate", "none") == "tanh":
            name = "gelu_tanh"
        if name is not None:
            found.append(name)
    return found


def _se_variants(module, kwargs):
    """(activation, gate) pairs, those the module's own activation modules name first, then every other pair
    (a functional activation leaves no module to read)."""
    from deploykit.blocks.se import ACTIVATIONS, GATES

    found = _activations_in(module)
    gates = [g for g in found if g in GATES]
    acts = [a for a in found if a in ACTIVATIONS]
    gate_first = gates[-1:] + [g for g in GATES if g not in gates[-1:]]
    act_first = acts[:1] + [a for a in ACTIVATIONS if a not in acts[:1]]
    return [{"activation": a, "gate": g} for g in gate_first for a in act_first]


def _infer_cbam(module, state):
    w = _shape(state, "ChannelGate.mlp.1.weight")
    if w is None or len(w) != 2:
        return None
    r = _ratio(w[1], w[0])
    if r is None:
        return None
    pools = _attr(module, "ChannelGate.pool_types")
    pools = tuple(pools) if isinstance(pools, (list, tuple)) and pools else ("avg", "max")
    return {"gate_channels": w[1], "reduction_ratio": r, "pool_types": pools,
            "no_spatial": "SpatialGate.spatial.conv.weight" not in state}


def _count(state: dict, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.fullmatch(k))})


def _infer_bam(module, state):
    w = _shape(state, "channel_att.gate_c.gate_c_fc_0.weight")
    if w is None or len(w) != 2:
        return None
    r = _ratio(w[1], w[0])
    if r is None:
        return None
    dil = _attr(module, "spatial_att.gate_s.gate_s_conv_di_0.dilation")
    return {"gate_channel": w[1], "reduction_ratio": r,
            "num_layers": _count(state, r"channel_att\.gate_c\.gate_c_fc_(\d+)\.weight"),
            "dilation_conv_num": _count(state, r"spatial_att\.gate_s\.gate_s_conv_di_(\d+)\.weight"),
            "dilation_val": int(dil[0]) if dil else 4}


def _infer_gsop(module, state):
    w = _shape(state, "conv_for_DR.weight")
    if w is None or len(w) != 4:
        return None
    stride = _attr(module, "conv_for_DR.stride")
    return {"channels": w[1], "att_dim": w[0], "dr_stride": int(stride[0]) if stride else None}


def _infer_gsop_bottleneck(module, state):
    c1, c2, dr = _shape(state, "conv1.weight"), _shape(state, "conv2.weight"), _shape(state, "conv_for_DR.weight")
    if c1 is None or c2 is None or dr is None or len(c1) != 4 or len(c2) != 4:
        return None
    stride = _attr(module, "conv2.stride")
    return {"inplanes": c1[1], "planes": c1[0], "stride": int(stride[0]) if stride else 1,
            "downsample": "downsample.0.weight" in state, "att_dim": dr[0]}


def _build_gsop_bottleneck(kwargs, variant):
    from deploykit.networks._resnet import projection_shortcut
    from deploykit.networks.gsop import GSoPBottleneck

    inplanes, planes, stride = kwargs["inplanes"], kwargs["planes"], kwargs["stride"]
    downsample = projection_shortcut(inplanes, planes * 4, stride) if kwargs["downsample"] else None
    return GSoPBottleneck(inplanes, planes, stride, downsample, attention=True, att_dim=kwargs["att_dim"],
                          variant=variant)


def _gsop_bottleneck_is_safe(module):
    from deploykit.networks.gsop import GSoPBottleneck

    _, safe = _block_classes("gsop")
    return isinstance(module, GSoPBottleneck) and isinstance(module.gsop, safe)


def _infer_psa(module, state):
    shapes = [_shape(state, f"conv_{i}.weight") for i in range(1, 5)]
    if any(s is None or len(s) != 4 for s in shapes):
        return None
    groups = [_attr(module, f"conv_{i}.groups") for i in range(1, 5)]
    if any(g is None for g in groups):
        return None
    stride = _attr(module, "conv_1.stride")
    return {"inplans": shapes[0][1] * groups[0], "planes": 4 * shapes[0][0],
            "conv_kernels": tuple(s[-1] for s in shapes), "conv_groups": tuple(int(g) for g in groups),
            "stride": int(stride[0]) if stride else 1}


def _infer_soft_attn(module, state):
    w = _shape(state, "channel_attn.conv1.conv.weight")
    return {"in_channels": w[1]} if w is not None and len(w) == 4 else None


def _infer_sam(module, state):
    heads_ca = _count(state, r"local_conv_(\d+)\.weight")
    if "v.weight" in state and heads_ca:
        dim = _shape(state, "v.weight")[0]
        proj0 = _shape(state, "proj0.weight")
        if proj0 is None:
            return None
        sa = _attr(module, "sa_num_heads")
        return {"dim": dim, "ca_num_heads": heads_ca, "sa_num_heads": sa if isinstance(sa, int) else 1,
                "qkv_bias": "v.bias" in state, "ca_attention": 1, "expand_ratio": proj0[0] // dim}
    if "q.weight" in state and "kv.weight" in state:
        heads = _attr(module, "sa_num_heads")
        if not isinstance(heads, int):
            return None  # the head count is not in the weights
        ca = _attr(module, "ca_num_heads")
        kwargs = {"dim": _shape(state, "q.weight")[0], "ca_num_heads": ca if isinstance(ca, int) else 1,
                  "sa_num_heads": heads, "qkv_bias": "q.bias" in state, "ca_attention": 0}
        scale = _attr(module, "scale")
        if isinstance(scale, float):
            kwargs["qk_scale"] = scale
        return kwargs
    return None


def _infer_shuffle(module, state):
    w = _shape(state, "cweight")
    groups = _attr(module, "groups")
    if w is None or len(w) != 4 or not isinstance(groups, int):
        return None
    return {"channel": 2 * w[1] * groups, "groups": groups}


def _infer_sk(module, state):
    w, fc = _shape(state, "paths.0.conv.weight"), _shape(state, "attn.fc_reduce.weight")
    if w is None or fc is None or len(w) != 4 or w[1] == 0 or w[0] % w[1]:
        return None
    stride = next((m.stride[0] for m in module.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)), 1)
    return {"channels": w[0], "groups": w[0] // w[1], "attn_channels": fc[0], "stride": int(stride)}


def signatures() -> tuple[Signature, ...]:
    """Recognised layouts, most specific first (a module matched by one is not looked into further)."""
    return (
        Signature("gsop_bottleneck", "conv_for_DR.weight", _infer_gsop_bottleneck, lambda k: k["inplanes"],
                  build=_build_gsop_bottleneck, is_safe=_gsop_bottleneck_is_safe),
        Signature("cbam", "ChannelGate.mlp.1.weight", _infer_cbam, lambda k: k["gate_channels"]),
        Signature("bam", "channel_att.gate_c.gate_c_fc_0.weight", _infer_bam, lambda k: k["gate_channel"]),
        Signature("gsop", "conv_for_DR.weight", _infer_gsop, lambda k: k["channels"]),
        Signature("psa", "conv_1.weight", _infer_psa, lambda k: k["inplans"]),
        Signature("hacnn", "channel_attn.conv1.conv.weight", _infer_soft_attn, lambda k: k["in_channels"]),
        Signature("sam", "proj.weight", _infer_sam, lambda k: k["dim"]),
        Signature("shuffle", "cweight", _infer_shuffle, lambda k: k["channel"]),
        Signature("sk", "paths.0.conv.weight", _infer_sk, lambda k: k["channels"]),
        Signature("se", "fc1.weight", _infer_se, lambda k: k["channels"], variants=_se_variants),
    )


# --- the walk ------------------------------------------------------------------------------------------------


def _local_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in module.state_dict().items()}


def _canonical(sig: Signature, state: dict) -> list[tuple[dict, str]]:
    """The state in the block's own layout: as it is (when the anchor key is there) and through every one of
    the block's key converters that applies (e.g. Linear `fc1`/`fc2` share SE's key names, not its shapes)."""
    found = [(state, "")] if sig.anchor in state else []
    if sig.build is not None:
        return found
    for convert in getattr(_block_module(sig.block), "KEY_CONVERTERS", ()):
        mapped = convert(dict(state))
        # A converter that drops keys extracts a block from a bigger module (e.g. a whole EPSABlock): that
        # module computes something else, so it is not this block.
        if mapped is not None and sig.anchor in mapped and len(mapped) >= len(state):
            found.append((mapped, convert.__name__))
    return found


def _is_safe(sig: Signature, module: nn.Module) -> bool:
    if sig.is_safe is not None:
        return sig.is_safe(module)
    return isinstance(module, _block_classes(sig.block)[1])


def _build(sig: Signature, kwargs: dict, variant: str, tokens: bool) -> nn.Module:
    if sig.build is not None:
        return sig.build(kwargs, variant)
    from deploykit import blocks

    if tokens and variant == "safe":
        return TokenScaleAwareModulationSafe(**kwargs)
    return blocks.create(sig.block, variant, **kwargs)


def _layout_mismatch(expected: dict, actual: dict) -> str:
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    if missing or extra:
        return f"keys differ from the block's (missing {missing[:4]}, extra {extra[:4]})"
    bad = [k for k in expected if tuple(expected[k].shape) != tuple(actual[k].shape)]
    return f"shapes differ at {bad[:4]}" if bad else ""


def _check_args(sig: Signature, kwargs: dict, tokens: bool, like: torch.Tensor, seed: int):
    gen = torch.Generator().manual_seed(seed)
    c, s = sig.channels(kwargs), CHECK_SIZE
    if tokens:
        x = torch.randn(CHECK_BATCH, s * s, c, generator=gen)
        return (x.to(like.device, like.dtype), s, s)
    return (torch.randn(CHECK_BATCH, c, s, s, generator=gen).to(like.device, like.dtype),)


def _run(module: nn.Module, args: tuple) -> torch.Tensor:
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            return module(*args)
    finally:
        module.train(was_training)


def _max_abs(a, b) -> float:
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.shape != b.shape:
        return float("inf")
    return (a.float() - b.float()).abs().max().item()


def _leaves(outputs) -> list:
    """The tensors of a model's output (a tensor, or tuples, lists and dicts of them), in a stable order."""
    if isinstance(outputs, dict):
        return [leaf for key in outputs for leaf in _leaves(outputs[key])]
    if isinstance(outputs, (tuple, list)):
        return [leaf for item in outputs for leaf in _leaves(item)]
    return [outputs]


def _close(expected: torch.Tensor, diff: float, atol: float, rtol: float) -> bool:
    return diff <= atol + rtol * expected.float().abs().max().item()


def _try_signature(sig: Signature, module: nn.Module, path: str, canon: tuple[dict, str], atol: float, rtol: float,
                   seed: int):
    """(twin, record) when `module` is this block and the twin is proved equal; (None, record) for a near miss;
    None when the shapes do not fit the block at all."""
    state, converter = canon
    kwargs = sig.infer(module, state)
    if kwargs is None:
        return None
    ref_cls = _block_classes(sig.block)[0] if sig.build is None else None
    tokens = sig.block == "sam" and not isinstance(module, ref_cls)
    ours = (ref_cls is not None and isinstance(module, ref_cls)) or type(module).__module__.startswith("deploykit.")
    source = "deploykit reference" if ours else "authors' layout"
    if converter:
        source += f" via {converter}"
    options = sig.variants(module, kwargs) if sig.variants is not None else [{}]
    if converter:
        # A converted layout that still differs from the block's is another module that shares some key
        # names (a transformer's Linear fc1/fc2 MLP has SE's names), not a near miss worth a note.
        try:
            if _layout_mismatch(_build(sig, {**kwargs, **options[0]}, "safe", tokens).state_dict(), state):
                return None
        except (TypeError, ValueError):
            return None
    first = None
    for option in options:
        twin, record = _prove(sig, module, path, state, {**kwargs, **option}, tokens, source, atol, rtol, seed)
        if twin is not None:
            return twin, record
        first = first or record
    if len(options) > 1:
        first.reason += f" (and with each of the {len(options) - 1} other {'/'.join(options[0])} options)"
    return None, first


def _prove(sig, module, path, state, kwargs, tokens, source, atol, rtol, seed):
    """Build the twin with `kwargs`, load the module's weights and compare on random input, then again with
    seeded weights in both: (twin, record) when both agree, else (None, record with the reason)."""
    from deploykit.blocks.init import randomize_for_verification

    record = ModuleConversion(path, f"{type(module).__module__}.{type(module).__qualname__}", sig.block,
                              source=source, args={k: (list(v) if isinstance(v, tuple) else v)
                                                   for k, v in kwargs.items()})
    try:
        twin = _build(sig, kwargs, "safe", tokens)
    except (TypeError, ValueError) as exc:
        record.reason = f"the inferred arguments do not build the block: {exc}"
        return None, record
    mismatch = _layout_mismatch(twin.state_dict(), state)
    if mismatch:
        record.reason = mismatch
        return None, record
    twin.load_state_dict(state, strict=True)
    like = next(v for v in state.values() if v.is_floating_point())
    twin.to(device=like.device, dtype=like.dtype)
    checks = _check_inputs(sig, kwargs, tokens, like, seed)
    try:
        record.max_abs = _max_diff(module, twin, checks)
        if not all(_close(e, d, atol, rtol) for e, d in record.max_abs):
            record.max_abs = max(d for _, d in record.max_abs)
            record.reason = f"outputs differ on random input (max abs {record.max_abs:.3g})"
            return None, record
        record.max_abs = max(d for _, d in record.max_abs)
        # Same check with seeded non-trivial weights in both: the match must hold for any weights.
        seeded = randomize_for_verification(copy.deepcopy(module), seed=seed)
        seeded_state = next(c for c, name in _canonical(sig, _local_state(seeded)) if name == _converter_of(source))
        twin_seeded = _build(sig, kwargs, "safe", tokens).to(device=like.device, dtype=like.dtype)
        twin_seeded.load_state_dict(seeded_state, strict=True)
        diffs = _max_diff(seeded, twin_seeded, checks)
        record.max_abs_seeded = max(d for _, d in diffs)
        if not all(_close(e, d, atol, rtol) for e, d in diffs):
            record.reason = (f"outputs agree with these weights but differ with seeded random weights (max abs "
                             f"{record.max_abs_seeded:.3g}): a different function")
            return None, record
    except Exception as exc:  # noqa: BLE001 - a module that cannot be called like the block is not the block
        record.reason = f"calling it as the block failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
        return None, record
    twin.train(module.training)
    record.replacement = f"{type(twin).__module__}.{type(twin).__qualname__}"
    return twin, record


def _converter_of(source: str) -> str:
    return source.rpartition(" via ")[2] if " via " in source else ""


def _check_inputs(sig, kwargs, tokens, like, seed) -> list[tuple]:
    """Two random inputs: standard normal, and one with per-channel offsets and a wider spread, so that pooled
    statistics are far from zero and activations that agree near zero (ReLU / ReLU6, SiLU / GELU) are told
    apart."""
    plain = _check_args(sig, kwargs, tokens, like, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    x = plain[0]
    axis = 2 if tokens else 1
    shape = [1] * x.dim()
    shape[axis] = x.shape[axis]
    offset = (torch.randn(shape, generator=gen) * 3).to(x.device, x.dtype)
    return [plain, (x * 4 + offset, *plain[1:])]


def _max_diff(module, twin, checks) -> list[tuple[torch.Tensor, float]]:
    out = []
    for args in checks:
        expected = _run(module, args)
        out.append((expected, _max_abs(expected, _run(twin, args))))
    return out


def _convert_module(module: nn.Module, path: str, report: ConversionReport, atol, rtol, seed) -> nn.Module | None:
    """The twin replacing `module` (`module` itself when it already is one), or None: then its children are
    visited."""
    if not any(True for _ in module.parameters()):
        return None
    state = _local_state(module)
    near: list[ModuleConversion] = []
    for sig in signatures():
        candidates = _canonical(sig, state)
        if candidates and _is_safe(sig, module):
            report.already_safe.append(path or "<root>")
            return module
        for canon in candidates:
            result = _try_signature(sig, module, path, canon, atol, rtol, seed)
            if result is None:
                continue
            twin, record = result
            if twin is not None:
                report.replaced.append(record)
                return twin
            near.append(record)
    if near:
        report.not_replaced.append(near[0])
    return None


def _walk(parent: nn.Module, prefix: str, report: ConversionReport, atol, rtol, seed) -> None:
    for name, child in list(parent.named_children()):
        path = f"{prefix}{name}"
        twin = _convert_module(child, path, report, atol, rtol, seed)
        if twin is None:
            _walk(child, path + ".", report, atol, rtol, seed)
        elif twin is not child:
            setattr(parent, name, twin)


def make_export_safe(model: nn.Module, example_inputs=None, *, inplace: bool = False, seed: int = 0,
                     atol: float = 1e-5, rtol: float = 1e-4) -> tuple[nn.Module, ConversionReport]:
    """Replace every recognised module of `model` with its export-safe twin, each swap proved on random input.

    Args:
        model: any nn.Module.
        example_inputs: optional tensor (or tuple of tensors) for a whole-model check before/after, in eval mode.
        inplace: convert `model` itself; by default a deep copy is converted and `model` is left untouched.
        seed: seed of the random check inputs and of the verification weights.
        atol: absolute tolerance of every check.
        rtol: tolerance relative to the largest reference output.

    Returns:
        (converted model, ConversionReport). `bool(report)` is False only when the whole-model check failed.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"make_export_safe takes a torch.nn.Module, got {type(model).__name__}")
    args = None
    if example_inputs is not None:
        args = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
        before = _run(model, args)
    if not inplace:
        model = copy.deepcopy(model)
    report = ConversionReport()
    root = _convert_module(model, "", report, atol, rtol, seed)
    if root is None:
        _walk(model, "", report, atol, rtol, seed)
    else:
        model = root
    if args is not None:
        after = _run(model, args)
        outs_b, outs_a = _leaves(before), _leaves(after)
        diffs = [_max_abs(b, a) for b, a in zip(outs_b, outs_a)]
        worst = max(diffs) if diffs else float("inf")
        passed = len(outs_b) == len(outs_a) and all(_close(b, d, atol, rtol) for b, d in zip(outs_b, diffs))
        report.model_check = {"passed": passed, "max_abs": worst,
                              "input_shapes": [list(a.shape) for a in args if isinstance(a, torch.Tensor)]}
    return model, report


class TokenScaleAwareModulationSafe(ScaleAwareModulationSafe):
    """Export-safe SMT attention with the authors' token interface `forward(x, H, W)`, x of shape (B, H*W, C).

    The tokens become an NCHW map by a transpose and an unflatten with the given H and W (no size read from the
    tensor), the safe twin computes natively in NCHW, and the result goes back to tokens.
    """

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:  # noqa: N803 - the authors' names
        image = x.transpose(1, 2).unflatten(2, (H, W))
        return super().forward(image).flatten(2).transpose(1, 2)
