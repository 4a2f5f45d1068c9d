"""Every corpus model builds, runs in eval mode at the example size and at each end of its dynamic ranges,
returns the outputs its entry names, and is deterministic (same inputs, same outputs, bit for bit)."""

from __future__ import annotations

import pytest
import torch

from tests.user_models import CORPUS, UserModel


def _flat(outputs, names):
    if isinstance(outputs, dict):
        assert tuple(outputs) == names
        return list(outputs.values())
    outputs = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
    assert len(outputs) == len(names)
    return outputs


def _sizes(entry: UserModel, which: int) -> dict[str, tuple[int, ...]]:
    """Each input's shape with every dynamic dimension at its min (0), opt (1) or max (2)."""
    return {s.name: tuple(s.dynamic[d][which] if d in s.dynamic else n for d, n in enumerate(s.shape))
            for s in entry.inputs}


@pytest.mark.parametrize("entry", CORPUS, ids=lambda e: e.name)
def test_builds_runs_and_is_deterministic(entry):
    torch.manual_seed(0)
    model = entry.build().eval()
    assert isinstance(model, torch.nn.Module)
    assert entry.path.is_file() and entry.imitates
    assert model.__class__.__module__.startswith("tests.user_models.")
    for which in (0, 1, 2):
        inputs = entry.example_inputs(seed=which, sizes=_sizes(entry, which))
        for spec, x in zip(entry.inputs, inputs):
            assert str(x.dtype) == f"torch.{spec.dtype}"
        with torch.no_grad():
            first = _flat(model(*inputs), entry.outputs)
            again = _flat(model(*inputs), entry.outputs)
        for a, b in zip(first, again):
            assert a.dtype == torch.float32 and torch.isfinite(a).all()
            assert torch.equal(a, b)
            assert a.shape[0] == inputs[0].shape[0]         # batch in, batch out


@pytest.mark.parametrize("entry", CORPUS, ids=lambda e: e.name)
def test_two_builds_with_one_seed_are_the_same_model(entry):
    torch.manual_seed(1)
    a = entry.build().eval()
    torch.manual_seed(1)
    b = entry.build().eval()
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_corpus_covers_the_issue_list():
    names = {e.name for e in CORPUS}
    assert {"cbam_detector", "image_mask", "se_unet", "mobilenetv3", "class_conditional", "nonlocal_net"} <= names
    assert any(len(e.outputs) == 3 for e in CORPUS)
    assert any(len(e.inputs) == 2 and e.inputs[1].dtype == "float32" for e in CORPUS)
    assert any(s.dtype == "int64" for e in CORPUS for s in e.inputs)
    assert any(e.kept for e in CORPUS)
