"""The coverage benchmark's own corpus: small user models in the style of common vision architectures with
attention blocks, beyond tests/user_models. Each imitates published code (named in its docstring) and is built
small (a forward in milliseconds); some hold blocks deploykit recognises, some blocks it does not (exported as
written), some look-alikes it must keep.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn(cin, cout, k=3, stride=1, groups=1, act=nn.ReLU):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class _Classifier(nn.Module):
    """stem -> blocks -> global mean -> linear: the frame of every classifier below."""

    def __init__(self, blocks, width, num_classes=10):
        super().__init__()
        self.stem = _conv_bn(3, blocks[0].in_channels if hasattr(blocks[0], "in_channels") else width, 3, 2)
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


# --- SE-ResNet (Cadene pretrainedmodels / timm senet.py) -----------------------------------------------------


class CadeneSEModule(nn.Module):
    def __init__(self, channels, reduction):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, padding=0)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, padding=0)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        module_input = x
        x = self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))
        return module_input * x


class SEBottleneck(nn.Module):
    def __init__(self, inplanes, planes, stride=1, reduction=4):
        super().__init__()
        self.in_channels = inplanes
        self.body = nn.Sequential(_conv_bn(inplanes, planes, 1), _conv_bn(planes, planes, 3, stride),
                                  _conv_bn(planes, planes * 4, 1, act=None))
        self.se_module = CadeneSEModule(planes * 4, reduction)
        self.downsample = _conv_bn(inplanes, planes * 4, 1, stride, act=None) if stride != 1 or inplanes != planes * 4 \
            else nn.Identity()

    def forward(self, x):
        return F.relu(self.se_module(self.body(x)) + self.downsample(x))


def se_resnet():
    return _Classifier([SEBottleneck(16, 8), SEBottleneck(32, 8), SEBottleneck(32, 16, 2)], 64)


# --- SK-ResNeXt (pppLang/SKNet SKConv inside a bottleneck) ----------------------------------------------------


class SKConv(nn.Module):
    def __init__(self, features, M=2, G=8, r=4, stride=1, L=8):
        super().__init__()
        d = max(int(features / r), L)
        self.M, self.features = M, features
        self.convs = nn.ModuleList([nn.Sequential(
            nn.Conv2d(features, features, 3, stride, padding=1 + i, dilation=1 + i, groups=G, bias=False),
            nn.BatchNorm2d(features), nn.ReLU(inplace=False)) for i in range(M)])
        self.gap = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Sequential(nn.Conv2d(features, d, 1, bias=False), nn.BatchNorm2d(d), nn.ReLU(inplace=False))
        self.fcs = nn.ModuleList([nn.Conv2d(d, features, 1) for _ in range(M)])
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x):
        b = x.shape[0]
        feats = torch.cat([conv(x) for conv in self.convs], dim=1)
        feats = feats.view(b, self.M, self.features, feats.shape[2], feats.shape[3])
        z = self.fc(self.gap(feats.sum(1)))
        att = self.softmax(torch.cat([fc(z) for fc in self.fcs], 1).view(b, self.M, self.features, 1, 1))
        return (feats * att).sum(1)


class SKUnit(nn.Module):
    def __init__(self, cin, mid, cout, stride=1, M=2):
        super().__init__()
        self.in_channels = cin
        self.conv1 = _conv_bn(cin, mid, 1)
        self.sk = SKConv(mid, M=M, stride=stride)
        self.conv3 = _conv_bn(mid, cout, 1, act=None)
        self.shortcut = nn.Identity() if cin == cout and stride == 1 else _conv_bn(cin, cout, 1, stride, act=None)

    def forward(self, x):
        return F.relu(self.conv3(self.sk(self.conv1(x))) + self.shortcut(x))


def sk_resnext():
    return _Classifier([SKUnit(16, 32, 32), SKUnit(32, 32, 32, M=3), SKUnit(32, 64, 64, 2)], 64)


# --- SA-ResNet (wofmanaf/SA-Net sa_layer after the bottleneck's last BN) --------------------------------------


class sa_layer(nn.Module):  # noqa: N801 - the authors' name
    def __init__(self, channel, groups=4):
        super().__init__()
        self.groups = groups
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        k = channel // (2 * groups)
        self.cweight = nn.Parameter(torch.zeros(1, k, 1, 1))
        self.cbias = nn.Parameter(torch.ones(1, k, 1, 1))
        self.sweight = nn.Parameter(torch.zeros(1, k, 1, 1))
        self.sbias = nn.Parameter(torch.ones(1, k, 1, 1))
        self.sigmoid = nn.Sigmoid()
        self.gn = nn.GroupNorm(k, k)

    def forward(self, x):
        b, c, h, w = x.shape
        x = x.reshape(b * self.groups, -1, h, w)
        x_0, x_1 = x.chunk(2, dim=1)
        xn = x_0 * self.sigmoid(self.cweight * self.avg_pool(x_0) + self.cbias)
        xs = x_1 * self.sigmoid(self.sweight * self.gn(x_1) + self.sbias)
        out = torch.cat([xn, xs], dim=1).reshape(b, -1, h, w)
        out = out.reshape(b, 2, -1, h, w).permute(0, 2, 1, 3, 4)
        return out.reshape(b, -1, h, w)


class SABottleneck(SEBottleneck):
    def __init__(self, inplanes, planes, stride=1):
        super().__init__(inplanes, planes, stride)
        self.se_module = sa_layer(planes * 4)


def sa_resnet():
    return _Classifier([SABottleneck(16, 8), SABottleneck(32, 8, 2)], 32)


# --- ResNet with luuuyi/CBAM.PyTorch gates (ca and sa apart: gates, not CBAM modules) -------------------------


class ChannelAttention(nn.Module):
    def __init__(self, in_planes, ratio=4):
        super().__init__()
        self.avg_pool, self.max_pool = nn.AdaptiveAvgPool2d(1), nn.AdaptiveMaxPool2d(1)
        self.fc1 = nn.Conv2d(in_planes, in_planes // ratio, 1, bias=False)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Conv2d(in_planes // ratio, in_planes, 1, bias=False)

    def forward(self, x):
        return torch.sigmoid(self.fc2(self.relu1(self.fc1(self.avg_pool(x)))) +
                             self.fc2(self.relu1(self.fc1(self.max_pool(x)))))


class SpatialAttention(nn.Module):
    def __init__(self, kernel_size=7):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x):
        return torch.sigmoid(self.conv1(torch.cat([x.mean(1, keepdim=True), x.max(1, keepdim=True)[0]], 1)))


class CBAMBasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.in_channels = inplanes
        self.conv = nn.Sequential(_conv_bn(inplanes, planes, 3, stride), _conv_bn(planes, planes, 3, act=None))
        self.ca, self.sa = ChannelAttention(planes), SpatialAttention()
        self.downsample = nn.Identity() if stride == 1 and inplanes == planes else _conv_bn(inplanes, planes, 1, stride,
                                                                                             act=None)

    def forward(self, x):
        out = self.conv(x)
        out = self.ca(out) * out
        out = self.sa(out) * out
        return F.relu(out + self.downsample(x))


def cbam_resnet_gates():
    return _Classifier([CBAMBasicBlock(16, 16), CBAMBasicBlock(16, 32, 2)], 32)


# --- YOLO-style detector with the ports' CBAM module in the neck, two outputs as a tuple ----------------------


class YoloCBAM(nn.Module):
    def __init__(self, c1, ratio=8, kernel_size=7):
        super().__init__()
        self.channel_attention = nn.Module()
        self.channel_attention.shared_MLP = nn.Sequential(nn.Conv2d(c1, c1 // ratio, 1, bias=False), nn.ReLU(),
                                                          nn.Conv2d(c1 // ratio, c1, 1, bias=False))
        self.spatial_attention = nn.Module()
        self.spatial_attention.conv2d = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x):
        mlp = self.channel_attention.shared_MLP
        out = torch.sigmoid(mlp(F.adaptive_avg_pool2d(x, 1)) + mlp(F.adaptive_max_pool2d(x, 1))) * x
        pooled = torch.cat([out.mean(1, keepdim=True), out.max(1, keepdim=True)[0]], 1)
        return torch.sigmoid(self.spatial_attention.conv2d(pooled)) * out


class YoloTiny(nn.Module):
    def __init__(self, width=16, num_classes=3):
        super().__init__()
        self.backbone = nn.Sequential(_conv_bn(3, width, 3, 2, act=nn.SiLU), _conv_bn(width, 2 * width, 3, 2, act=nn.SiLU),
                                      _conv_bn(2 * width, 4 * width, 3, 2, act=nn.SiLU))
        self.neck = YoloCBAM(4 * width)
        self.cls = nn.Conv2d(4 * width, num_classes, 1)
        self.reg = nn.Conv2d(4 * width, 4, 1)

    def forward(self, x):
        f = self.neck(self.backbone(x))
        return self.cls(f).flatten(2).transpose(1, 2), self.reg(f).flatten(2).transpose(1, 2)


def yolo_cbam():
    return YoloTiny()


# --- GhostNet-style (huawei-noah GhostNet / timm ghostnet: SqueezeExcite with hard_sigmoid function) ----------


def hard_sigmoid(x, inplace: bool = False):
    return F.relu6(x + 3.0) / 6.0


class GhostSqueezeExcite(nn.Module):
    def __init__(self, in_chs, se_ratio=0.25, divisor=4):
        super().__init__()
        reduced = max(divisor, int(in_chs * se_ratio + divisor / 2) // divisor * divisor)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_reduce = nn.Conv2d(in_chs, reduced, 1, bias=True)
        self.act1 = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv2d(reduced, in_chs, 1, bias=True)

    def forward(self, x):
        x_se = self.conv_expand(self.act1(self.conv_reduce(self.avg_pool(x))))
        return x * hard_sigmoid(x_se)


class GhostModule(nn.Module):
    def __init__(self, inp, oup, relu=True):
        super().__init__()
        init = math.ceil(oup / 2)
        self.oup = oup
        self.primary = _conv_bn(inp, init, 1, act=nn.ReLU if relu else None)
        self.cheap = _conv_bn(init, init, 3, groups=init, act=nn.ReLU if relu else None)

    def forward(self, x):
        x1 = self.primary(x)
        return torch.cat([x1, self.cheap(x1)], dim=1)[:, :self.oup]


class GhostBottleneck(nn.Module):
    def __init__(self, cin, mid, cout, se=True):
        super().__init__()
        self.in_channels = cin
        self.ghost1 = GhostModule(cin, mid)
        self.se = GhostSqueezeExcite(mid) if se else nn.Identity()
        self.ghost2 = GhostModule(mid, cout, relu=False)

    def forward(self, x):
        return self.ghost2(self.se(self.ghost1(x))) + x


def ghostnet():
    return _Classifier([GhostBottleneck(16, 48, 16), GhostBottleneck(16, 72, 16), GhostBottleneck(16, 40, 16, se=False)],
                       16)


# --- ECA-ResNet (BangguWu/ECANet eca_layer: conv1d over the channel axis): not a deploykit block ------------


class eca_layer(nn.Module):  # noqa: N801 - the authors' name
    def __init__(self, channel, k_size=3):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k_size, padding=(k_size - 1) // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        y = self.avg_pool(x)
        y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        return x * self.sigmoid(y).expand_as(x)


class ECABasicBlock(CBAMBasicBlock):
    def __init__(self, inplanes, planes, stride=1):
        super().__init__(inplanes, planes, stride)
        del self.ca, self.sa
        self.eca = eca_layer(planes)

    def forward(self, x):
        return F.relu(self.eca(self.conv(x)) + self.downsample(x))


def eca_resnet():
    return _Classifier([ECABasicBlock(16, 16), ECABasicBlock(16, 32, 2)], 32)


# --- MobileNetV2 with Coordinate Attention (houqb/CoordAttention): not a deploykit block -------------------


class h_sigmoid(nn.Module):  # noqa: N801
    def __init__(self, inplace=True):
        super().__init__()
        self.relu = nn.ReLU6(inplace=inplace)

    def forward(self, x):
        return self.relu(x + 3) / 6


class h_swish(nn.Module):  # noqa: N801
    def __init__(self, inplace=True):
        super().__init__()
        self.sigmoid = h_sigmoid(inplace=inplace)

    def forward(self, x):
        return x * self.sigmoid(x)


class CoordAtt(nn.Module):
    def __init__(self, inp, oup, reduction=8):
        super().__init__()
        self.pool_h, self.pool_w = nn.AdaptiveAvgPool2d((None, 1)), nn.AdaptiveAvgPool2d((1, None))
        mip = max(8, inp // reduction)
        self.conv1 = nn.Conv2d(inp, mip, 1)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = h_swish()
        self.conv_h = nn.Conv2d(mip, oup, 1)
        self.conv_w = nn.Conv2d(mip, oup, 1)

    def forward(self, x):
        identity = x
        n, c, h, w = x.size()
        x_h = self.pool_h(x)
        x_w = self.pool_w(x).permute(0, 1, 3, 2)
        y = self.act(self.bn1(self.conv1(torch.cat([x_h, x_w], dim=2))))
        x_h, x_w = torch.split(y, [h, w], dim=2)
        a_h = self.conv_h(x_h).sigmoid()
        a_w = self.conv_w(x_w.permute(0, 1, 3, 2)).sigmoid()
        return identity * a_w * a_h


class CAInvertedResidual(nn.Module):
    def __init__(self, cin, cout, expand=4):
        super().__init__()
        self.in_channels = cin
        mid = cin * expand
        self.conv = nn.Sequential(_conv_bn(cin, mid, 1, act=nn.ReLU6), _conv_bn(mid, mid, 3, groups=mid, act=nn.ReLU6),
                                  CoordAtt(mid, mid), _conv_bn(mid, cout, 1, act=None))

    def forward(self, x):
        return x + self.conv(x)


def coordatt_mobilenetv2():
    return _Classifier([CAInvertedResidual(16, 16), CAInvertedResidual(16, 16)], 16)


# --- A tiny ViT (timm vision_transformer style: qkv Linear, Mlp fc1/fc2): SE's key names, not SE -------------


class Attention(nn.Module):
    def __init__(self, dim, num_heads=2):
        super().__init__()
        self.num_heads, self.scale = num_heads, (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, 4 * dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    def __init__(self, dim=32, depth=2, patch=8, image=32, num_classes=10):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


def tiny_vit():
    return TinyViT()


# --- UNet with scSE decoder blocks (Roy et al. 2018; segmentation_models.pytorch SCSEModule) -----------------


class SCSEModule(nn.Module):
    def __init__(self, in_channels, reduction=4):
        super().__init__()
        self.cSE = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, in_channels // reduction, 1),
                                 nn.ReLU(inplace=True), nn.Conv2d(in_channels // reduction, in_channels, 1), nn.Sigmoid())
        self.sSE = nn.Sequential(nn.Conv2d(in_channels, 1, 1), nn.Sigmoid())

    def forward(self, x):
        return x * self.cSE(x) + x * self.sSE(x)


class SCSEUNet(nn.Module):
    def __init__(self, width=8, num_classes=2):
        super().__init__()
        w = width
        self.enc1, self.enc2 = _conv_bn(3, w), nn.Sequential(nn.MaxPool2d(2), _conv_bn(w, 2 * w))
        self.enc3 = nn.Sequential(nn.MaxPool2d(2), _conv_bn(2 * w, 4 * w))
        self.dec2 = nn.Sequential(_conv_bn(6 * w, 2 * w), SCSEModule(2 * w))
        self.dec1 = nn.Sequential(_conv_bn(3 * w, w), SCSEModule(w, 2))
        self.out = nn.Conv2d(w, num_classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(torch.cat([e2, F.interpolate(e3, scale_factor=2.0, mode="nearest")], 1))
        d1 = self.dec1(torch.cat([e1, F.interpolate(d2, scale_factor=2.0, mode="nearest")], 1))
        return self.out(d1)


def scse_unet():
    return SCSEUNet()


# --- SimAM (ZjjConan/SimAM, parameter-free; reads H and W from the shape) ------------------------------------


class SimAM(nn.Module):
    def __init__(self, e_lambda=1e-4):
        super().__init__()
        self.e_lambda = e_lambda

    def forward(self, x):
        b, c, h, w = x.size()
        n = w * h - 1
        d = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
        y = d / (4 * (d.sum(dim=[2, 3], keepdim=True) / n + self.e_lambda)) + 0.5
        return x * torch.sigmoid(y)


class SimAMBlock(CBAMBasicBlock):
    def __init__(self, inplanes, planes, stride=1):
        super().__init__(inplanes, planes, stride)
        del self.ca, self.sa
        self.simam = SimAM()

    def forward(self, x):
        return F.relu(self.simam(self.conv(x)) + self.downsample(x))


def simam_resnet():
    return _Classifier([SimAMBlock(16, 16), SimAMBlock(16, 32, 2)], 32)


# --- BAM ResNet at dynamic H, W: BAM written with the full (H, W) window, as ports that fixed the official -----


def bam_resnet_dynamic():
    from tests.user_models.bam_resnet import BAM, ChannelGate, ResNetBAM

    class FullWindowChannelGate(ChannelGate):
        def forward(self, in_tensor):
            pooled = F.avg_pool2d(in_tensor, (in_tensor.size(2), in_tensor.size(3)))
            return self.gate_c(pooled).unsqueeze(2).unsqueeze(3).expand_as(in_tensor)

    model = ResNetBAM()
    for m in model.modules():
        if isinstance(m, BAM):
            m.channel_att.__class__ = FullWindowChannelGate
    return model


# name -> (factory, input (C, H, W) at opt, dynamic H/W range or None, expected swapped blocks, expected kept)
EXTRA = {
    "se_resnet": (se_resnet, (3, 32, 32), (16, 48), ("se",) * 3, ()),
    "sk_resnext": (sk_resnext, (3, 32, 32), (16, 48), ("sk",) * 3, ()),
    "sa_resnet": (sa_resnet, (3, 32, 32), (16, 48), ("shuffle",) * 2, ()),
    "cbam_resnet_gates": (cbam_resnet_gates, (3, 32, 32), (16, 48), (), ("se",) * 2),
    "yolo_cbam": (yolo_cbam, (3, 64, 64), (32, 96), ("cbam",), ()),
    "ghostnet": (ghostnet, (3, 32, 32), (16, 48), ("se",) * 2, ()),
    "eca_resnet": (eca_resnet, (3, 32, 32), (16, 48), (), ()),
    "coordatt_mobilenetv2": (coordatt_mobilenetv2, (3, 32, 32), (16, 48), (), ()),
    "tiny_vit": (tiny_vit, (3, 32, 32), None, (), ()),
    "scse_unet": (scse_unet, (3, 32, 32), (16, 64), (), ()),
    "simam_resnet": (simam_resnet, (3, 32, 32), (16, 48), (), ()),
    "bam_resnet_dynamic": (bam_resnet_dynamic, (3, 32, 32), (16, 48), ("bam",) * 2, ()),
}
