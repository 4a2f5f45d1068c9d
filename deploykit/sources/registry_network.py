"""A registered network (`--model resnet50_cbam`): reference and export-safe networks with the same weights."""

from __future__ import annotations

from deploykit.errors import UserInputError
from deploykit.sources import ModelSource
from deploykit.sources.image import image_source


def build(config) -> ModelSource:
    from deploykit import networks
    from deploykit.sources.weights import exported_twin, load_into

    src, inp = config.source, config.input
    net = networks.spec(src.network)
    if inp.channels not in (None, 3):
        raise UserInputError(f"{config.origin}: input.channels is {inp.channels} but network '{src.network}' takes "
                             "RGB images", hint="set input.channels to 3")
    if net.fixed_input_size and (inp.height.dynamic or inp.width.dynamic
                                 or (inp.height.opt, inp.width.opt) != net.input_size):
        h, w = net.input_size
        raise UserInputError(f"{config.origin}: network '{src.network}' only accepts {h}x{w} inputs: its local "
                             "branch crops at fixed sizes", hint=f"use --size {h}x{w} without --dynamic-hw")
    try:
        reference = networks.create(src.network, "reference", **src.args)
    except UserInputError as exc:
        raise UserInputError(f"{config.origin}: {exc.message}", hint=exc.hint) from None
    weights = load_into(reference, src.weights, config.seed, load=networks.load_checkpoint)
    exported = exported_twin(reference, src.variant, lambda: networks.create(src.network, "safe", **src.args))
    return image_source(config, "network", exported, reference, 3, weights)
