"""Small re-implementations of the building blocks of widely used model families, written the
way the model libraries write them (torchvision's ResNet and DenseNet, timm's norm-act
modules, RepVGG, EfficientNet/MobileNetV3 blocks, ResNetV2/BiT, NF-ResNet, ConvNeXt, ViT and
MLP-Mixer), at tiny widths, for the symmetry analysis tests.

``FAMILIES`` maps a family name to ``(factory, input shape)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# -- shared layers (as in timm.layers) ------------------------------------------------------


def drop_path(x, drop_prob: float = 0.0, training: bool = False):
    """timm.layers.drop_path: per-sample stochastic depth."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    random_tensor = x.new_empty(shape).bernoulli_(keep_prob)
    if keep_prob > 0.0:
        random_tensor.div_(keep_prob)
    return x * random_tensor


class DropPath(nn.Module):
    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        return drop_path(x, self.drop_prob, self.training)


class BatchNormAct2d(nn.BatchNorm2d):
    """timm.layers.BatchNormAct2d: BatchNorm2d that calls F.batch_norm itself, then the
    activation."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, apply_act=True, act_layer=nn.ReLU):
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.drop = nn.Identity()
        self.act = act_layer() if apply_act else nn.Identity()

    def forward(self, x):
        exponential_average_factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        bn_training = True if self.training else (self.running_mean is None)
        x = F.batch_norm(
            x,
            self.running_mean if not self.training or self.track_running_stats else None,
            self.running_var if not self.training or self.track_running_stats else None,
            self.weight,
            self.bias,
            bn_training,
            exponential_average_factor,
            self.eps,
        )
        return self.act(self.drop(x))


class GroupNormAct(nn.GroupNorm):
    """timm.layers.GroupNormAct."""

    def __init__(self, num_channels, num_groups=4, eps=1e-5, apply_act=True):
        super().__init__(num_groups, num_channels, eps=eps)
        self.act = nn.ReLU() if apply_act else nn.Identity()

    def forward(self, x):
        return self.act(F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps))


class ConvNormAct(nn.Module):
    """timm.layers.ConvNormAct: conv (no bias) and a norm-act module."""

    def __init__(self, cin, cout, k=1, stride=1, groups=1, apply_act=True, act_layer=nn.ReLU):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn = BatchNormAct2d(cout, apply_act=apply_act, act_layer=act_layer)

    def forward(self, x):
        return self.bn(self.conv(x))


class StdConv2d(nn.Conv2d):
    """timm.layers.StdConv2d: weight standardization through F.batch_norm on the weight."""

    def __init__(self, cin, cout, k, stride=1, padding=None, groups=1, bias=False, eps=1e-6):
        padding = k // 2 if padding is None else padding
        super().__init__(cin, cout, k, stride, padding, groups=groups, bias=bias)
        self.eps = eps

    def forward(self, x):
        weight = F.batch_norm(
            self.weight.reshape(1, self.out_channels, -1),
            None,
            None,
            training=True,
            momentum=0.0,
            eps=self.eps,
        ).reshape_as(self.weight)
        return F.conv2d(
            x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )


class ScaledStdConv2d(nn.Conv2d):
    """timm.layers.ScaledStdConv2d (NF-Nets): scaled weight standardization with a gain."""

    def __init__(self, cin, cout, k, stride=1, groups=1, bias=True, gamma=1.0, eps=1e-6):
        super().__init__(cin, cout, k, stride, k // 2, groups=groups, bias=bias)
        self.gain = nn.Parameter(torch.full((self.out_channels, 1, 1, 1), 1.0))
        self.scale = gamma * self.weight[0].numel() ** -0.5
        self.eps = eps

    def forward(self, x):
        weight = F.batch_norm(
            self.weight.reshape(1, self.out_channels, -1),
            None,
            None,
            weight=(self.gain * self.scale).view(-1),
            training=True,
            momentum=0.0,
            eps=self.eps,
        ).reshape_as(self.weight)
        return F.conv2d(
            x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )


class SqueezeExcite(nn.Module):
    """timm's efficientnet SqueezeExcite."""

    def __init__(self, chs, rd_chs, act_layer=nn.ReLU, gate=torch.sigmoid):
        super().__init__()
        self.conv_reduce = nn.Conv2d(chs, rd_chs, 1, bias=True)
        self.act1 = act_layer()
        self.conv_expand = nn.Conv2d(rd_chs, chs, 1, bias=True)
        self.gate = gate

    def forward(self, x):
        x_se = x.mean((2, 3), keepdim=True)
        x_se = self.conv_reduce(x_se)
        x_se = self.act1(x_se)
        x_se = self.conv_expand(x_se)
        return x * self.gate(x_se)


class LayerNorm2d(nn.LayerNorm):
    """timm.layers.LayerNorm2d: LayerNorm over the channels of an NCHW tensor."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Head(nn.Module):
    def __init__(self, chs, classes=5):
        super().__init__()
        self.fc = nn.Linear(chs, classes)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


# -- torchvision ResNet ---------------------------------------------------------------------
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, norm_layer=nn.BatchNorm2d):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, norm_layer=nn.BatchNorm2d):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = norm_layer(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = norm_layer(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """torchvision.models.ResNet at width 8, two stages."""

    def __init__(self, block=BasicBlock, layers=(1, 1), width=8, norm_layer=nn.BatchNorm2d):
        super().__init__()
        self._norm = norm_layer
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = norm_layer(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(2 * width * block.expansion, 5)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                self._norm(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, self._norm)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, norm_layer=self._norm) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# -- timm RegNet (conv-norm-act modules, group convs) ---------------------------------------
class RegNetBottleneck(nn.Module):
    def __init__(self, cin, cout, stride=1, group_size=4, drop_path_rate=0.1):
        super().__init__()
        self.conv1 = ConvNormAct(cin, cout, 1)
        self.conv2 = ConvNormAct(cout, cout, 3, stride, groups=cout // group_size)
        self.conv3 = ConvNormAct(cout, cout, 1, apply_act=False)
        self.downsample = ConvNormAct(cin, cout, 1, stride, apply_act=False)
        self.drop_path = DropPath(drop_path_rate)
        self.act3 = nn.ReLU()

    def forward(self, x):
        shortcut = x
        x = self.conv3(self.conv2(self.conv1(x)))
        x = self.drop_path(x) + self.downsample(shortcut)
        return self.act3(x)


class RegNetX(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.stem = ConvNormAct(3, width, 3, 2)
        self.s1 = RegNetBottleneck(width, width * 2, 2)
        self.s2 = RegNetBottleneck(width * 2, width * 4, 2)
        self.head = Head(width * 4)

    def forward(self, x):
        return self.head(self.s2(self.s1(self.stem(x))))


# -- RepVGG (timm byobnet RepVggBlock) ------------------------------------------------------
class RepVggBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        use_ident = cin == cout and stride == 1
        self.identity = nn.BatchNorm2d(cout) if use_ident else None
        self.conv_kxk = ConvNormAct(cin, cout, 3, stride, apply_act=False)
        self.conv_1x1 = ConvNormAct(cin, cout, 1, stride, apply_act=False)
        self.drop_path = DropPath(0.1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        if self.identity is None:
            x = self.conv_1x1(x) + self.conv_kxk(x)
        else:
            identity = self.identity(x)
            x = self.conv_1x1(x) + self.conv_kxk(x)
            x = self.drop_path(x)
            x += identity
        return self.act(x)


class RepVGG(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.stem = RepVggBlock(3, width, 2)
        self.stages = nn.Sequential(
            RepVggBlock(width, width),
            RepVggBlock(width, 2 * width, 2),
            RepVggBlock(2 * width, 2 * width),
        )
        self.head = Head(2 * width)

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))


# -- EfficientNet / MobileNetV3 (timm _efficientnet_blocks) ---------------------------------
class HardSigmoid(nn.Module):
    def forward(self, x):
        return F.hardsigmoid(x)


class DepthwiseSeparableConv(nn.Module):
    def __init__(self, cin, cout, act_layer=nn.SiLU, se_gate=torch.sigmoid, rd=None):
        super().__init__()
        self.conv_dw = nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False)
        self.bn1 = BatchNormAct2d(cin, act_layer=act_layer)
        self.se = SqueezeExcite(cin, rd or max(1, cin // 4), act_layer, se_gate)
        self.conv_pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = BatchNormAct2d(cout, apply_act=False)
        self.has_skip = cin == cout
        self.drop_path = DropPath(0.1)

    def forward(self, x):
        shortcut = x
        x = self.se(self.bn1(self.conv_dw(x)))
        x = self.bn2(self.conv_pw(x))
        if self.has_skip:
            x = self.drop_path(x) + shortcut
        return x


class InvertedResidual(nn.Module):
    """MBConv: 1x1 expansion, depthwise kxk, squeeze-excitation, 1x1 projection."""

    def __init__(self, cin, cout, stride=1, exp=4, act_layer=nn.SiLU, se_gate=torch.sigmoid, k=3):
        super().__init__()
        mid = cin * exp
        self.conv_pw = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = BatchNormAct2d(mid, act_layer=act_layer)
        self.conv_dw = nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False)
        self.bn2 = BatchNormAct2d(mid, act_layer=act_layer)
        self.se = SqueezeExcite(mid, max(1, cin // 4), act_layer, se_gate)
        self.conv_pwl = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = BatchNormAct2d(cout, apply_act=False)
        self.has_skip = cin == cout and stride == 1
        self.drop_path = DropPath(0.1)

    def forward(self, x):
        shortcut = x
        x = self.bn1(self.conv_pw(x))
        x = self.bn2(self.conv_dw(x))
        x = self.se(x)
        x = self.bn3(self.conv_pwl(x))
        if self.has_skip:
            x = self.drop_path(x) + shortcut
        return x


class EfficientNet(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.conv_stem = nn.Conv2d(3, width, 3, 2, 1, bias=False)
        self.bn1 = BatchNormAct2d(width, act_layer=nn.SiLU)
        self.blocks = nn.Sequential(
            DepthwiseSeparableConv(width, width),
            InvertedResidual(width, 2 * width, 2),
            InvertedResidual(2 * width, 2 * width),
        )
        self.conv_head = nn.Conv2d(2 * width, 4 * width, 1, bias=False)
        self.bn2 = BatchNormAct2d(4 * width, act_layer=nn.SiLU)
        self.classifier = nn.Linear(4 * width, 5)

    def forward(self, x):
        x = self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x)))))
        return self.classifier(x.mean((2, 3)))


class MobileNetV3(nn.Module):
    """timm MobileNetV3: hard-swish, SE with a hard-sigmoid gate, and a conv head after the
    global pool (with a bias, no norm)."""

    def __init__(self, width=8):
        super().__init__()
        self.conv_stem = nn.Conv2d(3, width, 3, 2, 1, bias=False)
        self.bn1 = BatchNormAct2d(width, act_layer=nn.Hardswish)
        self.blocks = nn.Sequential(
            DepthwiseSeparableConv(width, width, nn.ReLU, F.hardsigmoid, rd=8),  # timm: //8
            InvertedResidual(width, 2 * width, 2, 3, nn.Hardswish, F.hardsigmoid, k=5),
            InvertedResidual(2 * width, 2 * width, 1, 3, nn.Hardswish, F.hardsigmoid),
        )
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = nn.Conv2d(2 * width, 4 * width, 1, bias=True)
        self.act2 = nn.Hardswish()
        self.classifier = nn.Linear(4 * width, 5)

    def forward(self, x):
        x = self.blocks(self.bn1(self.conv_stem(x)))
        x = self.act2(self.conv_head(self.global_pool(x)))
        return self.classifier(x.flatten(1))


# -- torchvision DenseNet ------------------------------------------------------------------
class DenseLayer(nn.Module):
    def __init__(self, num_input_features, growth_rate, bn_size, drop_rate):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(num_input_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(num_input_features, bn_size * growth_rate, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, 1, 1, bias=False)
        self.drop_rate = float(drop_rate)

    def forward(self, prev_features):
        concated_features = torch.cat(prev_features, 1)
        bottleneck_output = self.conv1(self.relu1(self.norm1(concated_features)))
        new_features = self.conv2(self.relu2(self.norm2(bottleneck_output)))
        if self.drop_rate > 0:
            new_features = F.dropout(new_features, p=self.drop_rate, training=self.training)
        return new_features


class DenseBlock(nn.ModuleDict):
    def __init__(self, num_layers, num_input_features, bn_size, growth_rate, drop_rate):
        super().__init__()
        for i in range(num_layers):
            layer = DenseLayer(
                num_input_features + i * growth_rate, growth_rate, bn_size, drop_rate
            )
            self.add_module(f"denselayer{i + 1}", layer)

    def forward(self, init_features):
        features = [init_features]
        for _, layer in self.items():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    def __init__(self, num_input_features, num_output_features):
        super().__init__()
        self.norm = nn.BatchNorm2d(num_input_features)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(num_input_features, num_output_features, 1, bias=False)
        self.pool = nn.AvgPool2d(2, 2)


class DenseNet(nn.Module):
    def __init__(self, growth_rate=4, block_config=(2, 2), init=8, bn_size=2, drop_rate=0.1):
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("conv0", nn.Conv2d(3, init, 7, 2, 3, bias=False))
        self.features.add_module("norm0", nn.BatchNorm2d(init))
        self.features.add_module("relu0", nn.ReLU(inplace=True))
        self.features.add_module("pool0", nn.MaxPool2d(3, 2, 1))
        num = init
        for i, num_layers in enumerate(block_config):
            block = DenseBlock(num_layers, num, bn_size, growth_rate, drop_rate)
            self.features.add_module(f"denseblock{i + 1}", block)
            num += num_layers * growth_rate
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}", Transition(num, num // 2))
                num //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(num))
        self.classifier = nn.Linear(num, 5)

    def forward(self, x):
        out = F.relu(self.features(x), inplace=True)
        out = torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1)
        return self.classifier(out)


# -- timm ResNetV2 (BiT): pre-activation, GroupNorm + StdConv -------------------------------
class PreActBottleneck(nn.Module):
    def __init__(self, cin, cout, stride=1, groups=4):
        super().__init__()
        mid = cout // 4
        self.downsample = (
            StdConv2d(cin, cout, 1, stride, padding=0) if stride != 1 or cin != cout else None
        )
        self.norm1 = GroupNormAct(cin, groups)
        self.conv1 = StdConv2d(cin, mid, 1)
        self.norm2 = GroupNormAct(mid, groups)
        self.conv2 = StdConv2d(mid, mid, 3, stride)
        self.norm3 = GroupNormAct(mid, groups)
        self.conv3 = StdConv2d(mid, cout, 1)
        self.drop_path = DropPath(0.1)

    def forward(self, x):
        x_preact = self.norm1(x)
        shortcut = x if self.downsample is None else self.downsample(x_preact)
        x = self.conv1(x_preact)
        x = self.conv2(self.norm2(x))
        x = self.conv3(self.norm3(x))
        return self.drop_path(x) + shortcut


class ResNetV2(nn.Module):
    def __init__(self, width=16):
        super().__init__()
        self.stem_conv = StdConv2d(3, width, 7, 2, padding=3)
        self.stem_pool = nn.MaxPool2d(3, 2, 1)
        self.stages = nn.Sequential(
            PreActBottleneck(width, 2 * width), PreActBottleneck(2 * width, 2 * width, 2)
        )
        self.norm = GroupNormAct(2 * width, 4)
        self.head = Head(2 * width)

    def forward(self, x):
        return self.head(self.norm(self.stages(self.stem_pool(self.stem_conv(x)))))


# -- timm NF-ResNet: scaled weight standardization, no normalization layers ----------------
class NormFreeBlock(nn.Module):
    def __init__(self, cin, cout, stride=1, alpha=0.2, beta=1.0):
        super().__init__()
        mid = cout // 2
        self.alpha, self.beta = alpha, beta
        self.downsample = (
            ScaledStdConv2d(cin, cout, 1, stride) if stride != 1 or cin != cout else None
        )
        self.act1 = nn.ReLU()
        self.conv1 = ScaledStdConv2d(cin, mid, 1)
        self.act2 = nn.ReLU()
        self.conv2 = ScaledStdConv2d(mid, mid, 3, stride)
        self.act3 = nn.ReLU()
        self.conv3 = ScaledStdConv2d(mid, cout, 1, gamma=1.0)
        self.drop_path = DropPath(0.1)
        self.skipinit_gain = nn.Parameter(torch.tensor(0.5))

    def forward(self, x):
        out = self.act1(x) * self.beta
        shortcut = x if self.downsample is None else self.downsample(out)
        out = self.conv1(out)
        out = self.conv2(self.act2(out))
        out = self.conv3(self.act3(out))
        out = self.drop_path(out)
        out.mul_(self.skipinit_gain)
        return out * self.alpha + shortcut


class NFResNet(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.stem = ScaledStdConv2d(3, width, 3, 2)
        self.stages = nn.Sequential(
            NormFreeBlock(width, 2 * width), NormFreeBlock(2 * width, 2 * width, 2)
        )
        self.final_conv = ScaledStdConv2d(2 * width, 4 * width, 1)
        self.final_act = nn.ReLU()
        self.head = Head(4 * width)

    def forward(self, x):
        return self.head(self.final_act(self.final_conv(self.stages(self.stem(x)))))


# -- timm ConvNeXt: channels-last LayerNorm, layer scale ------------------------------------
class Mlp(nn.Module):
    def __init__(self, cin, hidden, bias=True):
        super().__init__()
        self.fc1 = nn.Linear(cin, hidden, bias=bias)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(0.0)
        self.fc2 = nn.Linear(hidden, cin, bias=bias)

    def forward(self, x):
        return self.fc2(self.drop1(self.act(self.fc1(x))))


class ConvNeXtBlock(nn.Module):
    def __init__(self, chs, conv_bias=True, ls_init_value=1e-6, drop_path=0.1):
        super().__init__()
        self.conv_dw = nn.Conv2d(chs, chs, 7, padding=3, groups=chs, bias=conv_bias)
        self.norm = nn.LayerNorm(chs, eps=1e-6)
        self.mlp = Mlp(chs, 4 * chs)
        self.gamma = nn.Parameter(ls_init_value * torch.ones(chs))
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        shortcut = x
        x = self.conv_dw(x)
        x = x.permute(0, 2, 3, 1)
        x = self.norm(x)
        x = self.mlp(x)
        x = x.permute(0, 3, 1, 2)
        x = x.mul(self.gamma.reshape(1, -1, 1, 1))
        return self.drop_path(x) + shortcut


class ConvNeXt(nn.Module):
    def __init__(self, width=8, conv_bias=True):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 4, 4, bias=conv_bias), LayerNorm2d(width, eps=1e-6)
        )
        self.stage1 = ConvNeXtBlock(width, conv_bias)
        self.downsample = nn.Sequential(
            LayerNorm2d(width, eps=1e-6), nn.Conv2d(width, 2 * width, 2, 2, bias=conv_bias)
        )
        self.stage2 = ConvNeXtBlock(2 * width, conv_bias)
        self.norm_pre = nn.Identity()
        self.head_norm = nn.LayerNorm(2 * width)
        self.fc = nn.Linear(2 * width, 5)

    def forward(self, x):
        x = self.stage2(self.downsample(self.stage1(self.stem(x))))
        return self.fc(self.head_norm(self.norm_pre(x).mean((2, 3))))


# -- timm VisionTransformer (pre-norm blocks) and MLP-Mixer ----------------------------------
class PatchEmbed(nn.Module):
    def __init__(self, patch=4, cin=3, dim=16):
        super().__init__()
        self.proj = nn.Conv2d(cin, dim, patch, patch)
        self.norm = nn.Identity()

    def forward(self, x):
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class Attention(nn.Module):
    def __init__(self, dim, num_heads=2, qkv_bias=True):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = nn.Identity()
        self.k_norm = nn.Identity()
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        q = q * self.scale
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        x = self.attn_drop(attn) @ v
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class LayerScale(nn.Module):
    def __init__(self, dim, init_values=1e-5):
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class ViTBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim)
        self.ls1 = LayerScale(dim)
        self.drop_path1 = DropPath(0.1)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 2 * dim)
        self.ls2 = LayerScale(dim)
        self.drop_path2 = DropPath(0.1)

    def forward(self, x):
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class ViT(nn.Module):
    def __init__(self, dim=16, depth=2, image=16, patch=4):
        super().__init__()
        self.patch_embed = PatchEmbed(patch, 3, dim)
        tokens = (image // patch) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[ViTBlock(dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 5)

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = self.blocks(x + self.pos_embed)
        return self.head(self.norm(x)[:, 0])


class MixerBlock(nn.Module):
    def __init__(self, dim, seq_len):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp_tokens = Mlp(seq_len, 2 * seq_len)
        self.drop_path = DropPath(0.1)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp_channels = Mlp(dim, 4 * dim)

    def forward(self, x):
        x = x + self.drop_path(self.mlp_tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2))
        return x + self.drop_path(self.mlp_channels(self.norm2(x)))


class MlpMixer(nn.Module):
    def __init__(self, dim=16, depth=2, image=16, patch=4):
        super().__init__()
        self.stem = PatchEmbed(patch, 3, dim)
        self.blocks = nn.Sequential(
            *[MixerBlock(dim, (image // patch) ** 2) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, 5)

    def forward(self, x):
        return self.head(self.norm(self.blocks(self.stem(x))).mean(dim=1))


# -- layers the issue names: transposed convs, dropout before a norm, weight_norm, ... ------
class Layers(nn.Module):
    """A DCGAN-style ConvTranspose2d -> BatchNorm, Dropout between a conv and its norm, an
    InstanceNorm, a channels-last conv -> BN, a depthwise conv -> BN, weight_norm (dim=0 and
    dim=None) and nn.Linear on (N, L, C) tokens -> LayerNorm and -> F.group_norm."""

    def __init__(self, width=8):
        super().__init__()
        wn = torch.nn.utils.parametrizations.weight_norm
        self.up = nn.ConvTranspose2d(3, width, 4, 2, 1, bias=False)
        self.bn_up = nn.BatchNorm2d(width)
        self.conv = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.drop = nn.Dropout2d(0.2)
        self.bn = nn.BatchNorm2d(width)
        self.dw = nn.Conv2d(width, width, 3, 1, 1, groups=width, bias=False)
        self.inorm = nn.InstanceNorm2d(width, affine=True)
        self.wn_filters = wn(nn.Conv2d(width, width, 1, bias=True), dim=0)
        self.wn_whole = wn(nn.Conv2d(width, width, 1, bias=False), dim=None)
        self.tok = nn.Linear(width, 2 * width, bias=False)
        self.ln = nn.LayerNorm(2 * width)
        self.tok2 = nn.Linear(2 * width, 2 * width, bias=False)
        self.head = nn.Linear(2 * width, 5)

    def forward(self, x):
        x = F.relu(self.bn_up(self.up(x)))
        x = F.relu(self.bn(self.drop(self.conv(x))))
        x = F.relu(self.inorm(self.dw(x)))
        x = self.wn_whole(F.relu(self.wn_filters(x)))
        t = x.flatten(2).transpose(1, 2)  # (N, L, C)
        t = F.gelu(self.ln(self.tok(t)))
        t = self.tok2(t).transpose(1, 2)  # (N, C, L): GroupNorm over channels and tokens
        t = F.group_norm(t, 4)
        return self.head(t.mean(-1))


def _vit():
    return ViT()


FAMILIES = {
    "resnet": (lambda: ResNet(BasicBlock, (1, 1)), (4, 3, 32, 32)),
    "resnet-bottleneck": (lambda: ResNet(Bottleneck, (1, 1), width=4), (4, 3, 32, 32)),
    "resnet-groupnorm": (
        lambda: ResNet(BasicBlock, (1, 1), norm_layer=lambda c: nn.GroupNorm(4, c)),
        (4, 3, 32, 32),
    ),
    "regnetx": (RegNetX, (4, 3, 32, 32)),
    "repvgg": (RepVGG, (4, 3, 32, 32)),
    "efficientnet": (EfficientNet, (4, 3, 32, 32)),
    "mobilenetv3": (MobileNetV3, (4, 3, 32, 32)),
    "densenet": (DenseNet, (4, 3, 32, 32)),
    "resnetv2-gn-ws": (ResNetV2, (4, 3, 32, 32)),
    "nf-resnet": (NFResNet, (4, 3, 32, 32)),
    "convnext": (ConvNeXt, (4, 3, 32, 32)),
    "convnext-nobias": (lambda: ConvNeXt(conv_bias=False), (4, 3, 32, 32)),
    "vit": (_vit, (4, 3, 16, 16)),
    "mlp-mixer": (MlpMixer, (4, 3, 16, 16)),
    "layers": (Layers, (4, 3, 8, 8)),
}

#: Blocks that map (N, C, H, W) -> (N, C', H', W'), for composing random networks.
BLOCKS = {
    "basic": lambda c: BasicBlock(c, c),
    "basic-down": lambda c: BasicBlock(c, c, 2, nn.Sequential(nn.Conv2d(c, c, 1, 2, bias=False), nn.BatchNorm2d(c))),
    "regnet": lambda c: RegNetBottleneck(c, c),
    "repvgg": lambda c: RepVggBlock(c, c),
    "mbconv": lambda c: InvertedResidual(c, c),
    "dwsep": lambda c: DepthwiseSeparableConv(c, c),
    "preact": lambda c: PreActBottleneck(c, c, groups=2),
    "nf": lambda c: NormFreeBlock(c, c),
    "convnext": lambda c: ConvNeXtBlock(c, conv_bias=False, ls_init_value=1.0),
    "conv-gn": lambda c: nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.GroupNorm(2, c), nn.ReLU()),
    "conv-ln": lambda c: nn.Sequential(nn.Conv2d(c, c, 1, bias=False), LayerNorm2d(c), nn.GELU()),
    "conv-drop-bn": lambda c: nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.Dropout(0.1), nn.BatchNorm2d(c)),
    "conv-relu": lambda c: nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.ReLU()),
    "dense": lambda c: _Dense(c),
}  # fmt: skip


class _Dense(nn.Module):
    """A dense block and its transition back to ``c`` channels."""

    def __init__(self, c):
        super().__init__()
        self.block = DenseBlock(2, c, 2, 4, 0.0)
        self.transition = Transition(c + 8, c)

    def forward(self, x):
        return F.interpolate(self.transition(self.block(x)), scale_factor=2.0)


class Composed(nn.Module):
    """A stem conv, the given blocks, a head."""

    def __init__(self, names, width=8):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.blocks = nn.Sequential(*[BLOCKS[n](width) for n in names])
        self.head = Head(width)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Generic values for every parameter initialised to a constant (biases, norm scales,
    layer scales, gains, class tokens): symmetries must hold whatever training makes of
    them. Zeros become N(0, 0.3), other constants c become c' = N(1, 0.3)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            first = p.reshape(-1)[0]
            if p.numel() == 1 or bool((p == first).all()):
                noise = 0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype)
                p.copy_(noise if float(first) == 0 else 1 + noise)
    return model


__all__ = ["FAMILIES", "BLOCKS", "Composed", "randomize", "math"]
