"""Building the PyTorch side of an export: the module to export and the reference it is compared with."""

from __future__ import annotations

from dataclasses import dataclass

from deploykit.errors import UserInputError


@dataclass
class SourceModules:
    exported: object          # torch.nn.Module, eval mode: what goes to ONNX
    reference: object         # torch.nn.Module, eval mode: the authors' semantics it must equal
    channels: int
    weights_report: dict


def build_modules(config) -> SourceModules:
    """Instantiate the configured block, load its weights (or seeded non-trivial ones) into both variants."""
    from deploykit import blocks
    from deploykit.blocks.init import randomize_for_verification

    src = config.source
    if src.network is not None:
        from deploykit.networks import build_network_modules  # added with the networks

        return build_network_modules(config)
    spec = blocks.spec(src.block)
    try:
        reference = blocks.create(src.block, "reference", **src.args)
    except (ValueError, AssertionError) as exc:
        raise UserInputError(f"block '{src.block}' cannot be built with args {src.args}: {exc}",
                             hint="fix source.args in the export config") from None
    if src.weights:
        report = blocks.load_checkpoint(reference, src.weights)
        weights = {"path": src.weights, "converted_by": report.converted_by, "stripped_prefix": report.stripped_prefix}
    else:
        randomize_for_verification(reference, seed=config.seed)
        weights = {"path": None, "note": f"no weights given: seeded random weights (seed {config.seed}) with "
                                         "non-trivial normalisation statistics, so parity is meaningful"}
    reference.eval()
    if src.variant == "safe":
        exported = blocks.create(src.block, "safe", **src.args)
        exported.load_state_dict(reference.state_dict(), strict=True)
        exported.eval()
    else:
        exported = reference
    channels = spec.input_shape(**src.args)[0]
    if config.input.channels is not None and config.input.channels != channels:
        raise UserInputError(
            f"input.channels is {config.input.channels} but block '{src.block}' with args {src.args} takes {channels}",
            hint=f"set input.channels to {channels} or change source.args.{spec.channels_arg}",
        )
    return SourceModules(exported, reference, channels, weights)
