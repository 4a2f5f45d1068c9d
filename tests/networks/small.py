"""Reduced versions of every registered network: the same structure (every block kind, stride, branch and
key pattern) with fewer blocks per stage and narrower stages, so exports and parity checks take seconds.

Widths respect each block's constraints: PSA needs planes >= 64 (its SE reduces planes / 4 by 16), Shuffle
Attention needs planes * 4 divisible by 128, the SK unit's 32 groups need planes * 2 >= 32. HA-CNN is small
already and only runs at 160 x 64, so it keeps its size.
"""

from __future__ import annotations

_RESNET = {"widths": (16, 32, 64, 128), "layers": (1, 1, 1, 1)}
_SMT = {"embed_dims": (32, 64, 128, 256), "depths": (1, 1, 2, 1)}

SMALL_ARGS: dict[str, dict] = {
    "resnet18_cbam": _RESNET,
    "resnet50_cbam": _RESNET,
    "resnet18_bam": _RESNET,
    "resnet50_bam": _RESNET,
    "se_resnet50": _RESNET,
    "gsop_resnet50": {**_RESNET, "layers": (1, 2, 1, 1), "att_dim": 16},
    "epsanet50_small": {"layers": (1, 1, 1, 1)},
    "smt_t": _SMT,
    "smt_s": {**_SMT, "depths": (1, 1, 3, 1)},
    "smt_b": _SMT,
    "sa_resnet50": {"widths": (32, 64, 128, 256), "layers": (1, 1, 1, 1)},
    "sknet50": {"widths": (32, 64, 128, 256), "layers": (1, 1, 1, 1)},
    "ha_cnn": {},
}


def small_size(name: str) -> tuple[int, int]:
    from deploykit.networks import spec

    net = spec(name)
    return net.input_size if net.fixed_input_size else (64, 64)
