"""The published networks built from deploykit's blocks, their checkpoints, and whole-model conversion.

Public API:
    names()                                   -> registered network names
    spec(name)                                -> NetworkSpec (paper, published params), no torch import
    create(name, variant="reference"|"safe", **overrides) -> torch.nn.Module (eval mode not set)
    load_checkpoint(model, path_or_state)     -> loads an authors' checkpoint (nested dicts, `module.` prefixes)
    count_parameters(model)                   -> parameters counted as the papers count them
    default_config(name)                      -> ExportConfig from export_configs/<name>.yaml (or the registry)
    make_export_safe(model)                   -> (model, report); see deploykit.networks.convert
"""

from __future__ import annotations

from deploykit.networks.registry import NETWORKS, VARIANTS, NetworkSpec, names, spec


def create(name: str, variant: str = "reference", **overrides):
    """Build network `name` with its registry defaults updated by `overrides`.

    Args:
        name: a registered network name (`names()`).
        variant: "reference" (the authors' computation) or "safe" (export-safe blocks and network code).
        **overrides: builder arguments (num_classes, and per family reduced widths/depths for fast tests).
    """
    from deploykit._registry import build

    net = spec(name)
    return build(net, "network", variant, lambda _: net.builder, net.defaults, overrides,
                 errors=(Exception,), hint="fix source.args in the export config", variant=variant)


def count_parameters(model) -> int:
    """Parameters as the papers count them: every parameter, minus training-only heads a network declares
    in `TRAINING_ONLY_PREFIXES` (HA-CNN's classifiers, unused at test time)."""
    skip = tuple(getattr(model, "TRAINING_ONLY_PREFIXES", ()))
    return sum(p.numel() for name, p in model.named_parameters() if not (skip and name.startswith(skip)))


def load_checkpoint(model, source, *, strict: bool = True):
    """Load an authors' checkpoint (local path or state dict) into a network built by `create`.

    Reads with `torch.load(weights_only=True)`, unwraps `state_dict` / `model` nesting and DataParallel's
    `module.` prefix; a key mismatch raises UserInputError listing the missing and unexpected keys.
    """
    from deploykit.blocks.checkpoints import load_checkpoint as _load
    from deploykit.errors import UserInputError

    converters = tuple(getattr(model, "KEY_CONVERTERS", ()))
    try:
        return _load(model, source, strict=strict, converters=converters)
    except UserInputError as exc:
        raise UserInputError(exc.message, hint=f"check that the checkpoint is a {type(model).__name__} of the "
                                               "same depth, widths and num_classes") from None


def default_config(name: str):
    """export_configs/<name>.yaml when it exists, else a config from the network's registry defaults."""
    from deploykit.export.config import find_config_dir, load_config, parse_config

    net = spec(name)
    folder = find_config_dir()
    if folder is not None and (folder / f"{name}.yaml").is_file():
        config = load_config(folder / f"{name}.yaml")
        if config.source.network != name:
            from deploykit.errors import UserInputError

            raise UserInputError(f"{folder / f'{name}.yaml'}: source.network is {config.source.network!r}, "
                                 f"not '{name}'", hint="set source.network to the file's name")
        return config
    h, w = net.input_size
    return parse_config({"source": {"network": name}, "precisions": ["fp32", "fp16"],
                         "input": {"channels": 3, "batch": {"min": 1, "opt": 8, "max": 32},
                                   "height": {"opt": h}, "width": {"opt": w}}},
                        f"registry defaults of network '{name}'")


def make_export_safe(model, example_inputs=None, **kwargs):
    """See deploykit.networks.convert.make_export_safe."""
    from deploykit.networks.convert import make_export_safe as _convert

    return _convert(model, example_inputs, **kwargs)


__all__ = ["NETWORKS", "NetworkSpec", "VARIANTS", "count_parameters", "create",
           "default_config", "load_checkpoint", "make_export_safe", "names", "spec"]
