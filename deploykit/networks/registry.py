"""Network specs: pure data, so `deploykit list` shows the networks without importing torch.

Each entry names the paper, the official repository whose checkpoint keys the reference reproduces, the
builder (module and function), the deploykit blocks inside, and the published parameter count with the
rounding it was published at (the tests assert the built network lands within it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from deploykit._registry import VARIANTS, PaperSpec, lookup

__all__ = ["NETWORKS", "VARIANTS", "NetworkSpec", "names", "spec"]


@dataclass(frozen=True)
class NetworkSpec(PaperSpec):
    builder: str
    blocks: tuple[str, ...]
    # Published parameter count in millions, and half a unit of its last published digit.
    params_m: float
    params_rounding_m: float
    params_source: str
    checkpoint_layout: str
    defaults: dict[str, Any] = field(default_factory=dict)
    input_size: tuple[int, int] = (224, 224)
    # True when the authors' network only accepts `input_size` (HA-CNN asserts 160 x 64).
    fixed_input_size: bool = False
    published_accuracy: str = ""
    notes: str = ""

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "blocks": list(self.blocks), "params_m": self.params_m,
                "input_shape": [3, *self.input_size], "defaults": dict(self.defaults)}


_JONGCHAN = "Jongchan/attention-module MODELS/model_resnet.py ResidualNet"
_JONGCHAN_CKPT = ("ResidualNet keys (conv1, bn1, layerN.i.{conv,bn}*, layerN.i.cbam.*, bamN.*, fc); the released "
                  "checkpoints' {'state_dict': {'module.' ...}} nesting is unwrapped")
# Paper, arXiv link and the source of the parameter counts of the two ResidualNet attention types.
_RESIDUAL_NET_PAPERS = {
    "cbam": ("Woo et al., CBAM: Convolutional Block Attention Module, ECCV 2018", "https://arxiv.org/abs/1807.06521",
             "CBAM paper, Table 4"),
    "bam": ("Park et al., BAM: Bottleneck Attention Module, BMVC 2018", "https://arxiv.org/abs/1807.06514",
            "BAM paper, ImageNet table"),
}


def _residual_net(name: str, title: str, block: str, **fields: Any) -> NetworkSpec:
    """A ResidualNet of the CBAM/BAM authors: one repository, module and key layout for both attention types."""
    paper, arxiv, params_source = _RESIDUAL_NET_PAPERS[block]
    return NetworkSpec(name=name, title=title, paper=paper, arxiv=arxiv, official_repo=_JONGCHAN,
                       module="deploykit.networks.resnet_attention", builder=name, blocks=(block,),
                       params_rounding_m=0.005, params_source=params_source, checkpoint_layout=_JONGCHAN_CKPT,
                       **fields)


def _smt(name: str, title: str, **fields: Any) -> NetworkSpec:
    """An SMT size, built like the official builder of the same name in AFeng-x/SMT."""
    return NetworkSpec(name=name, title=title,
                       paper="Lin et al., Scale-Aware Modulation Meet Transformer, ICCV 2023",
                       arxiv="https://arxiv.org/abs/2307.08579", official_repo=f"AFeng-x/SMT models/smt.py {name}",
                       module="deploykit.networks.smt", builder=name, blocks=("sam",),
                       **{"checkpoint_layout": "official SMT keys, as smt_t", **fields})


NETWORKS: dict[str, NetworkSpec] = {
    s.name: s
    for s in [
        _residual_net("resnet18_cbam", "ResNet-18 + CBAM", "cbam", params_m=11.78,
                      published_accuracy="70.73 top-1 (CBAM paper)"),
        _residual_net("resnet50_cbam", "ResNet-50 + CBAM", "cbam", params_m=28.09,
                      published_accuracy="77.622 top-1 (released checkpoint)"),
        _residual_net("resnet18_bam", "ResNet-18 + BAM", "bam", params_m=11.71),
        _residual_net("resnet50_bam", "ResNet-50 + BAM", "bam", params_m=25.92,
                      published_accuracy="76.860 top-1 (released checkpoint)"),
        NetworkSpec(
            name="se_resnet50", title="SE-ResNet-50",
            paper="Hu et al., Squeeze-and-Excitation Networks, CVPR 2018",
            arxiv="https://arxiv.org/abs/1709.01507",
            official_repo="hujie-frank/SENet (Caffe); PyTorch port Cadene pretrained-models senet.py se_resnet50",
            module="deploykit.networks.senet", builder="se_resnet50", blocks=("se",),
            params_m=28.09, params_rounding_m=0.005, params_source="CBAM paper, Table 4 (ResNet50 + SE)",
            checkpoint_layout="Cadene/timm senet.py keys (layer0.conv1, layerN.i.se_module.fc1, last_linear): "
                              "se_resnet50-ce0d4300.pth and timm legacy_seresnet50 load; timm's seresnet50 "
                              "(torchvision-style stride) is a different network and does not",
            published_accuracy="77.63 top-1 (Cadene port of the Caffe weights)",
        ),
        NetworkSpec(
            name="gsop_resnet50", title="GSoP-Net1 (ResNet-50)",
            paper="Gao et al., Global Second-order Pooling Convolutional Networks, CVPR 2019",
            arxiv="https://arxiv.org/abs/1811.12006",
            official_repo="ZilinGao/Global-Second-order-Pooling-Convolutional-Networks torchvision/models/resnet.py",
            module="deploykit.networks.gsop", builder="gsop_resnet50", blocks=("gsop",),
            params_m=28.29, params_rounding_m=0.005, params_source="GSoP paper, ImageNet table",
            checkpoint_layout="official ResNet keys; GSoP keys (conv_for_DR, bn_for_DR, row_bn, row_conv_group, "
                              "fc_adapt_channels) directly on the last Bottleneck of each stage",
            published_accuracy="77.98 top-1 (22.02 error)",
            notes="layer4 has stride 1 (14 x 14 at 224), as the authors' network.",
        ),
        NetworkSpec(
            name="epsanet50_small", title="EPSANet-50 (Small)",
            paper="Zhang et al., EPSANet: An Efficient Pyramid Squeeze Attention Block, arXiv 2021",
            arxiv="https://arxiv.org/abs/2105.14447", official_repo="murufeng/EPSANet models/epsanet.py epsanet50",
            module="deploykit.networks.epsanet", builder="epsanet50_small", blocks=("psa",),
            params_m=22.56, params_rounding_m=0.005, params_source="official README, Model Zoo",
            checkpoint_layout="official EPSANet keys (layerN.i.conv2.conv_1..4, layerN.i.conv2.se.fc1/fc2)",
            published_accuracy="77.49 top-1",
        ),
        _smt("smt_t", "SMT-T", params_m=11.5, params_rounding_m=0.05, params_source="SMT paper, Table 1",
             checkpoint_layout="official SMT keys (patch_embed1.conv.*, blockN.i.attn.*, blockN.i.mlp.*, normN, "
                               "head); the release's {'model': ...} nesting is unwrapped",
             published_accuracy="82.2 top-1"),
        _smt("smt_s", "SMT-S", params_m=22.55, params_rounding_m=0.005,
             params_source="count of the official smt_s / configs/smt/smt_small_224.yaml (the paper prints 20.5 M, "
                           "the README 21 M; neither matches the authors' own configuration)",
             published_accuracy="83.7 top-1"),
        _smt("smt_b", "SMT-B", params_m=32.0, params_rounding_m=0.05, params_source="SMT paper, Table 1",
             published_accuracy="84.3 top-1"),
        NetworkSpec(
            name="sa_resnet50", title="SA-ResNet-50",
            paper="Zhang and Yang, SA-Net: Shuffle Attention for Deep Convolutional Neural Networks, ICASSP 2021",
            arxiv="https://arxiv.org/abs/2102.00240", official_repo="wofmanaf/SA-Net models/sa_resnet.py sa_resnet50",
            module="deploykit.networks.sanet", builder="sa_resnet50", blocks=("shuffle",),
            params_m=25.56, params_rounding_m=0.005, params_source="official README",
            checkpoint_layout="official SA-Net keys (torchvision ResNet with layerN.i.sa.{cweight,cbias,sweight,"
                              "sbias,gn})",
            published_accuracy="77.88 top-1",
        ),
        NetworkSpec(
            name="sknet50", title="SKNet-50",
            paper="Li et al., Selective Kernel Networks, CVPR 2019",
            arxiv="https://arxiv.org/abs/1903.06586",
            official_repo="implus/SKNet (Caffe); SK unit and ResNeXt-50 (32x4d) layout of the paper, Table 1",
            module="deploykit.networks.sknet", builder="sknet50", blocks=("sk",),
            params_m=27.5, params_rounding_m=0.05, params_source="SK paper, Table 2",
            checkpoint_layout="deploykit layout: ResNet keys with the SK unit as layerN.i.conv2 (see "
                              "deploykit.blocks.sk for the unit's keys)",
            published_accuracy="79.21 top-1 (20.79 error)",
        ),
        NetworkSpec(
            name="ha_cnn", title="HA-CNN",
            paper="Li et al., Harmonious Attention Network for Person Re-Identification, CVPR 2018",
            arxiv="https://arxiv.org/abs/1802.08122",
            official_repo="KaiyangZhou/deep-person-reid torchreid/models/hacnn.py HACNN",
            module="deploykit.networks.hacnn", builder="hacnn", blocks=("hacnn",),
            params_m=2.93, params_rounding_m=0.005,
            params_source="count of the official HACNN at test time (classifiers excluded), the paper prints "
                          "2.7 M; torchreid's model zoo 4.5 M with a training classifier",
            checkpoint_layout="torchreid HACNN keys (conv, inception1-3, ha1-3.soft_attn/hard_attn, local_conv1-3, "
                              "fc_global, fc_local, classifier_global/local)",
            defaults={"num_classes": 751},
            input_size=(160, 64), fixed_input_size=True,
            published_accuracy="91.2 rank-1 / 75.7 mAP on Market-1501 (paper)",
            notes="Output in eval mode: the L2-normalised global and local features concatenated (B, 1024). "
                  "Named ha_cnn: 'hacnn' is the soft-attention block.",
        ),
    ]
}


def names() -> list[str]:
    """Registered network names, in registry order."""
    return list(NETWORKS)


def spec(name: str) -> NetworkSpec:
    """The spec of network `name`; an unknown name raises UserInputError with the valid names."""
    return lookup(NETWORKS, "network", name)
