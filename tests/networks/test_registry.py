"""The network registry: published parameter counts, the authors' key layouts, configs, listing without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deploykit import networks
from deploykit.errors import UserInputError
from deploykit.export.config import find_config_dir, load_config
from tests.networks.small import SMALL_ARGS

REPO = Path(__file__).resolve().parents[2]
NAMES = networks.names()


def test_every_network_has_small_test_arguments():
    assert sorted(SMALL_ARGS) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_is_the_published_one(name):
    net = networks.spec(name)
    model = networks.create(name, "reference")
    count_m = networks.count_parameters(model) / 1e6
    # Within the rounding of the published figure (22.56 M -> +-0.005 M).
    assert abs(count_m - net.params_m) <= net.params_rounding_m + 1e-9, (name, count_m, net.params_m)


@pytest.mark.parametrize("name", NAMES)
def test_safe_network_has_the_reference_keys(name):
    ref = networks.create(name, "reference", **SMALL_ARGS[name])
    safe = networks.create(name, "safe", **SMALL_ARGS[name])
    ref_state, safe_state = ref.state_dict(), safe.state_dict()
    assert list(ref_state) == list(safe_state)
    assert all(ref_state[k].shape == safe_state[k].shape for k in ref_state)
    safe.load_state_dict(ref_state, strict=True)


# Keys and shapes read from the authors' networks (their module names and constructor arithmetic), written out
# here independently of deploykit's code. A checkpoint with these keys loads with strict=True.
AUTHORS_KEYS = {
    "resnet50_cbam": {
        "conv1.weight": (64, 3, 7, 7),
        "layer1.0.cbam.ChannelGate.mlp.1.weight": (16, 256),          # CBAM(planes * 4, 16)
        "layer1.0.cbam.ChannelGate.mlp.3.bias": (256,),
        "layer4.2.cbam.SpatialGate.spatial.conv.weight": (1, 2, 7, 7),
        "layer4.2.cbam.SpatialGate.spatial.bn.running_var": (1,),
        "layer2.0.downsample.0.weight": (512, 256, 1, 1),
        "fc.weight": (1000, 2048),
    },
    "resnet18_cbam": {
        "layer1.1.cbam.ChannelGate.mlp.1.weight": (4, 64),            # BasicBlock: CBAM(planes, 16)
        "layer4.1.cbam.ChannelGate.mlp.3.weight": (512, 32),
        "fc.weight": (1000, 512),
    },
    "resnet50_bam": {
        "bam1.channel_att.gate_c.gate_c_fc_0.weight": (16, 256),
        "bam1.channel_att.gate_c.gate_c_bn_1.running_mean": (16,),
        "bam3.spatial_att.gate_s.gate_s_conv_di_1.weight": (64, 64, 3, 3),
        "bam3.spatial_att.gate_s.gate_s_conv_final.weight": (1, 64, 1, 1),
        "bam2.channel_att.gate_c.gate_c_fc_final.weight": (512, 32),
    },
    "resnet18_bam": {
        "bam1.channel_att.gate_c.gate_c_fc_0.weight": (4, 64),
        "bam3.spatial_att.gate_s.gate_s_conv_reduce0.weight": (16, 256, 1, 1),
    },
    "se_resnet50": {
        "layer0.conv1.weight": (64, 3, 7, 7),
        "layer0.bn1.running_mean": (64,),
        "layer1.0.se_module.fc1.weight": (16, 256, 1, 1),
        "layer3.5.se_module.fc2.bias": (1024,),
        "layer4.0.downsample.0.weight": (2048, 1024, 1, 1),
        "last_linear.weight": (1000, 2048),
    },
    "gsop_resnet50": {
        "layer1.2.conv_for_DR.weight": (128, 256, 1, 1),
        "layer1.2.row_conv_group.weight": (512, 1, 128, 1),
        "layer2.3.fc_adapt_channels.weight": (512, 512, 1, 1),
        "layer3.5.row_bn.running_var": (128,),
        "layer4.2.fc_adapt_channels.bias": (2048,),
        "layer4.0.downsample.0.weight": (2048, 1024, 1, 1),
    },
    "epsanet50_small": {
        "layer1.0.conv2.conv_1.weight": (16, 64, 3, 3),
        "layer1.0.conv2.conv_4.weight": (16, 4, 9, 9),                 # 64 in, 16 groups
        "layer1.0.conv2.se.fc1.weight": (1, 16, 1, 1),
        "layer4.2.conv2.conv_3.weight": (128, 64, 7, 7),               # 512 in, 8 groups
        "fc.weight": (1000, 2048),
    },
    "smt_t": {
        "patch_embed1.conv.0.weight": (64, 3, 3, 3),
        "patch_embed1.conv.3.weight": (64, 64, 2, 2),
        "patch_embed2.proj.weight": (128, 64, 3, 3),
        "block1.0.attn.local_conv_4.weight": (16, 1, 9, 9),
        "block1.0.attn.proj0.weight": (128, 4, 1, 1),                  # groups dim / heads
        "block1.1.mlp.dwconv.dwconv.weight": (256, 1, 3, 3),
        "block3.1.attn.kv.weight": (512, 256),                         # stage 3, odd block: self-attention
        "block3.2.attn.v.weight": (256, 256),
        "block4.0.attn.local_conv.weight": (512, 1, 3, 3),
        "norm4.weight": (512,),
        "head.weight": (1000, 512),
    },
    "smt_b": {
        "patch_embed1.conv.0.weight": (64, 3, 7, 7),
        "block1.3.mlp.fc1.weight": (512, 64),                          # mlp ratio 8
        "block3.27.attn.q.weight": (256, 256),
        "block4.1.mlp.fc2.weight": (512, 1024),
    },
    "sa_resnet50": {
        "layer1.0.sa.cweight": (1, 2, 1, 1),                           # 256 / (2 * 64)
        "layer4.2.sa.gn.weight": (16,),
        "layer3.0.conv2.weight": (256, 256, 3, 3),
    },
    "sknet50": {
        "layer1.0.conv1.conv.weight": (128, 64, 1, 1),
        "layer1.0.conv2.paths.1.conv.weight": (128, 4, 3, 3),
        "layer1.0.conv2.attn.fc_reduce.weight": (32, 128, 1, 1),
        "layer1.0.conv2.attn.fc_select.weight": (256, 32, 1, 1),
        "layer4.0.conv2.attn.fc_reduce.weight": (64, 1024, 1, 1),
        "layer4.2.conv3.bn.running_mean": (2048,),
    },
    "ha_cnn": {
        "conv.conv.weight": (32, 3, 3, 3),
        "inception1.0.stream4.1.conv.weight": (32, 32, 1, 1),
        "inception3.1.stream3.1.conv.weight": (192, 384, 1, 1),
        "ha1.hard_attn.fc.weight": (8, 128),
        "ha3.soft_attn.channel_attn.conv1.conv.weight": (24, 384, 1, 1),
        "ha2.soft_attn.spatial_attn.conv1.conv.weight": (1, 1, 3, 3),
        "local_conv3.stream2.2.conv.weight": (96, 96, 3, 3),
        "fc_local.0.weight": (512, 1536),
        "classifier_local.weight": (751, 512),
    },
}


@pytest.mark.parametrize("name", sorted(AUTHORS_KEYS))
def test_keys_follow_the_authors_layout(name):
    state = networks.create(name, "reference").state_dict()
    for key, shape in AUTHORS_KEYS[name].items():
        assert key in state, f"{name}: missing {key}"
        assert tuple(state[key].shape) == shape, (key, tuple(state[key].shape), shape)


def test_attention_placement():
    """CBAM in every block, BAM only after layer1-3, GSoP only in the last block of each stage."""
    cbam = networks.create("resnet50_cbam").state_dict()
    blocks_with_cbam = {k.split(".cbam.")[0] for k in cbam if ".cbam." in k}
    assert len(blocks_with_cbam) == 3 + 4 + 6 + 3
    bam = networks.create("resnet50_bam").state_dict()
    assert {k.split(".")[0] for k in bam if k.startswith("bam")} == {"bam1", "bam2", "bam3"}
    assert not any(".cbam." in k for k in bam)
    gsop = networks.create("gsop_resnet50").state_dict()
    assert {k.split(".conv_for_DR")[0] for k in gsop if ".conv_for_DR.weight" in k} == {
        "layer1.2", "layer2.3", "layer3.5", "layer4.2"}


def test_strides_where_the_authors_put_them():
    gsop = networks.create("gsop_resnet50")
    # GSoP-Net1 keeps layer4 at stride 1; DR conv stride 2 only in layer1 (planes <= 64).
    assert gsop.layer4[0].conv2.stride == (1, 1) and gsop.layer4[0].downsample[0].stride == (1, 1)
    assert gsop.layer1[2].conv_for_DR.stride == (2, 2) and gsop.layer2[3].conv_for_DR.stride == (1, 1)
    with torch.no_grad():
        assert gsop.eval().forward_features(torch.zeros(1, 3, 224, 224)).shape == (1, 2048, 14, 14)
    se = networks.create("se_resnet50")
    # The Caffe SE-ResNet strides in the first 1x1 conv, not the 3x3.
    assert se.layer2[0].conv1.stride == (2, 2) and se.layer2[0].conv2.stride == (1, 1)


def test_unknown_network_suggests_the_close_name():
    with pytest.raises(UserInputError, match="did you mean 'resnet50_cbam'"):
        networks.spec("resnet50_cbma")
    # No close name: the valid ones still follow their own clause.
    with pytest.raises(UserInputError, match="^unknown variant 'fast'; valid variants: reference, safe$"):
        networks.create("smt_t", "fast")


def test_bad_builder_arguments_are_user_errors():
    with pytest.raises(UserInputError, match="network 'sa_resnet50': bad arguments"):
        networks.create("sa_resnet50", widths=(8, 16, 32, 64))       # Shuffle Attention needs C % 128 == 0


@pytest.mark.parametrize("name", NAMES)
def test_shipped_export_config(name):
    path = find_config_dir(REPO) / f"{name}.yaml"
    config = load_config(path)
    assert config.source.network == name and config.model_name == name
    assert set(config.precisions) == {"fp32", "fp16"}
    assert config.input.channels == 3
    assert (config.input.height.opt, config.input.width.opt) == networks.spec(name).input_size
    assert config.input.batch.min == 1 and config.input.batch.max > config.input.batch.min  # dynamic batch


def test_list_shows_networks_without_importing_torch():
    code = (
        "import json, sys, io, contextlib\n"
        "from deploykit.cli import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    try:\n"
        "        main(['list', '--json'])\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code in (0, None)\n"
        "assert 'torch' not in sys.modules\n"
        "print(buf.getvalue())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(proc.stdout)
    assert [n["name"] for n in listing["networks"]] == NAMES
    assert listing["blocks"]  # the blocks key is unchanged
    smt = next(n for n in listing["networks"] if n["name"] == "smt_t")
    assert smt["blocks"] == ["sam"] and smt["params_m"] == 11.5 and smt["input_shape"] == [3, 224, 224]
