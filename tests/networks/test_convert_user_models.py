"""make_export_safe over the user-model corpus (tests/user_models): every recognised block swapped after proof,
every look-alike kept with a reason, and each converted model equal to the original on its own inputs."""

from __future__ import annotations

import pytest
import torch

from deploykit.blocks.init import randomize_for_verification
from deploykit.networks.convert import make_export_safe
from tests.user_models import CORPUS


@pytest.mark.parametrize("entry", CORPUS, ids=lambda e: e.name)
def test_corpus_model_is_converted_as_expected(entry):
    torch.manual_seed(0)
    model = randomize_for_verification(entry.build(), seed=21).eval()
    inputs = entry.example_inputs(seed=3)
    converted, report = make_export_safe(model, inputs)
    assert sorted(c.block for c in report.replaced) == sorted(entry.swapped), report.summary()
    assert sorted(c.block for c in report.not_replaced) == sorted(entry.kept), report.summary()
    assert all(c.reason for c in report.not_replaced)
    assert all(c.max_abs <= 1e-4 and c.max_abs_seeded <= 1e-4 for c in report.replaced)
    assert report.model_check["passed"], report.summary()
    # On other inputs than the check's, at the largest size of each dynamic dimension.
    big = {s.name: tuple(s.dynamic[d][2] if d in s.dynamic else n for d, n in enumerate(s.shape))
           for s in entry.inputs}
    other = entry.example_inputs(seed=4, sizes=big)
    with torch.no_grad():
        expected, got = model(*other), converted(*other)
    expected = expected if isinstance(expected, dict) else {"output": expected}
    got = got if isinstance(got, dict) else {"output": got}
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-4, rtol=1e-4)
