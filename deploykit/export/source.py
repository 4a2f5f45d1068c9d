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


def weights_and_twin(reference, make_safe, config, load_checkpoint=None):
    """Load the configured weights into `reference` (or seeded non-trivial ones), put it in eval mode, and
    return (the module to export, a weights report): the safe twin carrying the same weights, or the reference."""
    from deploykit.blocks.init import randomize_for_verification

    if load_checkpoint is None:
        from deploykit.blocks import load_checkpoint

    src = config.source
    if src.weights:
        report = load_checkpoint(reference, src.weights)
        weights = {"path": src.weights, "converted_by": report.converted_by,
                   "stripped_prefix": report.stripped_prefix, "nested_key": report.nested_key}
    else:
        randomize_for_verification(reference, seed=config.seed)
        weights = {"path": None, "note": f"no weights given: seeded random weights (seed {config.seed}) with "
                                         "non-trivial normalisation statistics, so parity is meaningful"}
    reference.eval()
    if src.variant != "safe":
        return reference, weights
    exported = make_safe()
    exported.load_state_dict(reference.state_dict(), strict=True)
    return exported.eval(), weights


def build_modules(config) -> SourceModules:
    """Instantiate the configured block, load its weights (or seeded non-trivial ones) into both variants."""
    from deploykit import blocks

    src = config.source
    if src.network is not None:
        from deploykit.networks import build_network_modules  # added with the networks

        return build_network_modules(config)
    spec = blocks.spec(src.block)
    try:
        reference = blocks.create(src.block, "reference", **src.args)
    except UserInputError as exc:   # arguments the constructor's signature rejects
        raise UserInputError(f"{config.origin}: {exc.message}", hint=exc.hint) from None
    except Exception as exc:  # noqa: BLE001 - any failure of the authors' constructor means args it cannot take
        raise UserInputError(f"{config.origin}: block '{src.block}' cannot be built with source.args {src.args}: "
                             f"{type(exc).__name__}: {exc}", hint="fix source.args in the export config") from None
    exported, weights = weights_and_twin(reference, lambda: blocks.create(src.block, "safe", **src.args), config)
    channels = spec.input_shape(**src.args)[0]
    if config.input.channels is not None and config.input.channels != channels:
        raise UserInputError(
            f"{config.origin}: input.channels is {config.input.channels} but block '{src.block}' with args "
            f"{src.args} takes {channels}",
            hint=f"set input.channels to {channels} or change source.args.{spec.channels_arg}",
        )
    return SourceModules(exported, reference, channels, weights)
