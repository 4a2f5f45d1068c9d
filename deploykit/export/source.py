"""Kept for the callers of `build_modules` (validate, bench): the source layer is deploykit.sources."""

from __future__ import annotations


def build_modules(config):
    """The ModelSource of `config` (exported, reference, channels, weights_report, inputs, output names)."""
    from deploykit.sources import build_source

    return build_source(config)
