"""Loading the authors' checkpoints from local files: nesting, DataParallel prefixes, strict keys, safe unpickling."""

from __future__ import annotations

import pickle

import pytest
import torch

from deploykit import networks
from deploykit.blocks.init import randomize_for_verification
from deploykit.errors import UserInputError
from tests.networks.small import SMALL_ARGS


def trained(name: str, seed: int = 5):
    return randomize_for_verification(networks.create(name, "reference", **SMALL_ARGS[name]), seed=seed).eval()


@pytest.mark.parametrize("name,wrap", [
    # Jongchan/attention-module's train_imagenet.py: {'epoch', 'arch', 'state_dict': DataParallel state, ...}
    ("resnet50_cbam", lambda s: {"epoch": 100, "arch": "resnet", "best_prec1": 77.6,
                                 "state_dict": {f"module.{k}": v for k, v in s.items()}}),
    # AFeng-x/SMT releases: {'model': state, ...}
    ("smt_t", lambda s: {"model": s, "epoch": 299}),
    # a bare state dict
    ("ha_cnn", lambda s: s),
])
def test_authors_checkpoint_file_round_trips(name, wrap, tmp_path):
    source = trained(name)
    path = tmp_path / "checkpoint.pth"
    torch.save(wrap(source.state_dict()), path)
    target = networks.create(name, "safe", **SMALL_ARGS[name]).eval()
    report = networks.load_checkpoint(target, path)
    assert report.stripped_prefix == ("module." if name == "resnet50_cbam" else None)
    x = torch.randn(2, 3, 160, 64) if name == "ha_cnn" else torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(source(x), target(x), atol=1e-5)


def test_mismatch_lists_missing_and_unexpected_keys(tmp_path):
    state = trained("resnet18_cbam").state_dict()
    del state["layer2.0.cbam.ChannelGate.mlp.1.weight"]
    state["layer2.0.se.fc1.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(UserInputError) as info:
        networks.load_checkpoint(networks.create("resnet18_cbam", **SMALL_ARGS["resnet18_cbam"]), path)
    message = info.value.one_line()
    assert "missing [layer2.0.cbam.ChannelGate.mlp.1.weight]" in message
    assert "unexpected [layer2.0.se.fc1.weight]" in message
    assert "num_classes" in message  # the hint says what to check


def test_shape_mismatch_is_reported(tmp_path):
    path = tmp_path / "other_classes.pth"
    torch.save(networks.create("se_resnet50", num_classes=10, **SMALL_ARGS["se_resnet50"]).state_dict(), path)
    with pytest.raises(UserInputError, match=r"last_linear.weight: checkpoint \(10, 512\) vs model \(1000, 512\)"):
        networks.load_checkpoint(networks.create("se_resnet50", **SMALL_ARGS["se_resnet50"]), path)


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_pickled_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"x": _Payload()}}, f)
    with pytest.raises(UserInputError, match="weights_only"):
        networks.load_checkpoint(networks.create("resnet18_cbam", **SMALL_ARGS["resnet18_cbam"]), path)
    assert "this must never run" not in capsys.readouterr().out


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        networks.load_checkpoint(networks.create("smt_t", **SMALL_ARGS["smt_t"]), tmp_path / "nope.pth")
