"""Block specs: pure data, so listing blocks never imports torch.

Each entry names the paper, the official repository whose checkpoints the reference loads, the module and
class names of the two variants, the registry defaults and the channel argument that sets the input's C.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from deploykit._registry import VARIANTS, PaperSpec, lookup

__all__ = ["BLOCKS", "VARIANTS", "BlockSpec", "names", "spec"]


@dataclass(frozen=True)
class BlockSpec(PaperSpec):
    reference: str
    safe: str
    defaults: dict[str, Any]
    channels_arg: str
    size: tuple[int, int] = (14, 14)
    # Checkpoint key layouts other than the reference's that the loader maps (see checkpoints.py).
    key_layouts: tuple[str, ...] = ()
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def input_shape(self, **overrides) -> tuple[int, int, int]:
        """(C, H, W) of the default example input, C following a channels override."""
        args = {**self.defaults, **overrides}
        return int(args[self.channels_arg]), self.size[0], self.size[1]

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "defaults": dict(self.defaults), "input_shape": list(self.input_shape())}


BLOCKS: dict[str, BlockSpec] = {
    s.name: s
    for s in [
        BlockSpec(
            name="se",
            title="Squeeze-and-Excitation",
            paper="Hu et al., Squeeze-and-Excitation Networks, CVPR 2018",
            arxiv="https://arxiv.org/abs/1709.01507",
            official_repo="hujie-frank/SENet (Caffe); PyTorch weights via timm senet.py SEModule",
            module="deploykit.blocks.se",
            reference="SEModule",
            safe="SEModuleSafe",
            defaults={"channels": 64, "reduction": 16},
            channels_arg="channels",
            key_layouts=("timm/Cadene conv fc1/fc2", "Linear fc.0/fc.2 (External-Attention SEAttention)",
                         "Linear fc1/fc2", "timm SqueezeExcite conv_reduce/conv_expand"),
        ),
        BlockSpec(
            name="sam",
            title="SMT scale-aware modulation",
            paper="Lin et al., Scale-Aware Modulation Meet Transformer, ICCV 2023",
            arxiv="https://arxiv.org/abs/2307.08579",
            official_repo="AFeng-x/SMT models/smt.py Attention",
            module="deploykit.blocks.sam",
            reference="ScaleAwareModulation",
            safe="ScaleAwareModulationSafe",
            defaults={"dim": 64, "ca_num_heads": 4, "sa_num_heads": 8, "qkv_bias": True, "ca_attention": 1,
                      "expand_ratio": 2},
            channels_arg="dim",
            notes="ca_attention=0 selects the multi-head self-attention branch (SMT stages 3-4).",
        ),
        BlockSpec(
            name="cbam",
            title="Convolutional Block Attention Module",
            paper="Woo et al., CBAM: Convolutional Block Attention Module, ECCV 2018",
            arxiv="https://arxiv.org/abs/1807.06521",
            official_repo="Jongchan/attention-module MODELS/cbam.py",
            module="deploykit.blocks.cbam",
            reference="CBAM",
            safe="CBAMSafe",
            defaults={"gate_channels": 64, "reduction_ratio": 16},
            channels_arg="gate_channels",
            key_layouts=("timm CbamModule (channel.fc1/fc2 1x1 convs, spatial.conv.conv/bn, mean-first pool)",
                         "two-gate ports (channel MLP child + one bare spatial conv: luuuyi/CBAM.PyTorch, YOLO)"),
            notes="pool_types may add 'lp' and 'lse' to ('avg', 'max'); no_spatial=True drops the spatial gate.",
        ),
        BlockSpec(
            name="bam",
            title="Bottleneck Attention Module",
            paper="Park et al., BAM: Bottleneck Attention Module, BMVC 2018",
            arxiv="https://arxiv.org/abs/1807.06514",
            official_repo="Jongchan/attention-module MODELS/bam.py",
            module="deploykit.blocks.bam",
            reference="BAM",
            safe="BAMSafe",
            defaults={"gate_channel": 64},
            channels_arg="gate_channel",
            notes="Official code raises NameError on construction and pools an H x H window (H == W only); "
                  "the reference fixes both, equal to the official output whenever H == W.",
        ),
        BlockSpec(
            name="gsop",
            title="Global Second-order Pooling (channel GSoP)",
            paper="Gao et al., Global Second-order Pooling Convolutional Networks, CVPR 2019",
            arxiv="https://arxiv.org/abs/1811.12006",
            official_repo="ZilinGao/Global-Second-order-Pooling-Convolutional-Networks torchvision/models/resnet.py",
            module="deploykit.blocks.gsop",
            reference="GSoP",
            safe="GSoPSafe",
            defaults={"channels": 256, "att_dim": 128},
            channels_arg="channels",
            size=(28, 28),
            key_layouts=("official Bottleneck state dict (conv1..bn3, downsample dropped)",),
            notes="Input is the Bottleneck's tensor after bn3; output pre_att * att (the residual add stays in the "
                  "network). dr_stride=None applies the official rule (2 for C <= 256, else 1); 28x28 so the "
                  "stride-2 reduction leaves a 14x14 covariance map.",
        ),
        BlockSpec(
            name="psa",
            title="Pyramid Squeeze Attention (EPSANet)",
            paper="Zhang et al., EPSANet: An Efficient Pyramid Squeeze Attention Block, arXiv 2021",
            arxiv="https://arxiv.org/abs/2105.14447",
            official_repo="murufeng/EPSANet models/epsanet.py PSAModule",
            module="deploykit.blocks.psa",
            reference="PSAModule",
            safe="PSAModuleSafe",
            defaults={"inplans": 64, "planes": 64},
            channels_arg="inplans",
            key_layouts=("official EPSABlock state dict (conv2.* prefix)",),
            notes="Output channels are planes; branches concatenated in reversed order [4, 3, 2, 1] as the official "
                  "weights expect. conv_groups=(32, 32, 32, 32) is EPSANet 'large' (needs planes // 4 % 32 == 0).",
        ),
        BlockSpec(
            name="hacnn",
            title="HA-CNN soft attention",
            paper="Li et al., Harmonious Attention Network for Person Re-Identification, CVPR 2018",
            arxiv="https://arxiv.org/abs/1802.08122",
            official_repo="KaiyangZhou/deep-person-reid torchreid/models/hacnn.py SoftAttn",
            module="deploykit.blocks.hacnn",
            reference="SoftAttn",
            safe="SoftAttnSafe",
            defaults={"in_channels": 128},
            channels_arg="in_channels",
            # HA-CNN's first attention sees 128 x 40 x 16 (160 x 64 input); its sizes are always even.
            size=(40, 16),
            notes="Output is the attention map (values in [0.5, 1)), not x * map. For odd H or W the official "
                  "(reference) map is (H+1) x (W+1); the twin returns its top-left H x W window.",
            extra={"reference_needs_even_hw": True},
        ),
        BlockSpec(
            name="sk",
            title="Selective Kernel unit",
            paper="Li et al., Selective Kernel Networks, CVPR 2019",
            arxiv="https://arxiv.org/abs/1903.06586",
            official_repo="implus/SKNet (Caffe); keys of timm SelectiveKernel as in skresnext50_32x4d",
            module="deploykit.blocks.sk",
            reference="SKConv",
            safe="SKConvSafe",
            # SKNet-50's first SK unit: 128 channels, 3x3 g32 + 3x3 g32 dilation 2, d = max(C/16, 32).
            defaults={"channels": 128, "groups": 32},
            channels_arg="channels",
            key_layouts=("ResearchingDexter/SKNet_pytorch SKConv (conv.i.j, fc1.j, fc2)",
                         "pppLang/SKNet SKConv (convs.i.j, fc.j, fcs.i)"),
            notes="Loads the conv2 unit of each block of timm's skresnext50_32x4d weights (strict).",
        ),
        BlockSpec(
            name="shuffle",
            title="Shuffle Attention",
            paper="Zhang and Yang, SA-Net: Shuffle Attention for Deep Convolutional Neural Networks, ICASSP 2021",
            arxiv="https://arxiv.org/abs/2102.00240",
            official_repo="wofmanaf/SA-Net models/sa_resnet.py sa_layer",
            module="deploykit.blocks.shuffle",
            reference="ShuffleAttention",
            safe="ShuffleAttentionSafe",
            defaults={"channel": 256, "groups": 64},
            channels_arg="channel",
            notes="channel must be divisible by 2 * groups (SA-ResNet-50 uses 256 ... 2048 with groups 64).",
        ),
    ]
}


def names() -> list[str]:
    """Registered block names, in registry order."""
    return list(BLOCKS)


def spec(name: str) -> BlockSpec:
    """The spec of block `name`; an unknown name raises UserInputError with the valid names."""
    return lookup(BLOCKS, "block", name)
