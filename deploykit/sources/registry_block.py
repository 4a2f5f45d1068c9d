"""A registered block (`--block se`): the authors' reference and its export-safe twin with the same weights."""

from __future__ import annotations

from deploykit.errors import UserInputError
from deploykit.sources import ModelSource
from deploykit.sources.image import image_source


def build(config) -> ModelSource:
    from deploykit import blocks
    from deploykit.sources.weights import exported_twin, load_into

    src = config.source
    spec = blocks.spec(src.block)
    try:
        reference = blocks.create(src.block, "reference", **src.args)
    except UserInputError as exc:   # arguments the constructor's signature rejects
        raise UserInputError(f"{config.origin}: {exc.message}", hint=exc.hint) from None
    except Exception as exc:  # noqa: BLE001 - any failure of the authors' constructor means args it cannot take
        raise UserInputError(f"{config.origin}: block '{src.block}' cannot be built with source.args {src.args}: "
                             f"{type(exc).__name__}: {exc}", hint="fix source.args in the export config") from None
    channels = spec.input_shape(**src.args)[0]
    if config.input.channels is not None and config.input.channels != channels:
        raise UserInputError(
            f"{config.origin}: input.channels is {config.input.channels} but block '{src.block}' with args "
            f"{src.args} takes {channels}",
            hint=f"set input.channels to {channels} or change source.args.{spec.channels_arg}",
        )
    weights = load_into(reference, src.weights, config.seed)
    exported = exported_twin(reference, src.variant, lambda: blocks.create(src.block, "safe", **src.args))
    return image_source(config, "block", exported, reference, channels, weights)
