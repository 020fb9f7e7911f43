"""Parent architectures by name: a small residual CNN and CIFAR-style ResNets."""
from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """3x3-3x3 residual block; a 1x1 projection shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """Stem conv, stages of BasicBlocks, global average pool, linear classifier `fc`."""

    def __init__(self, stages: list[tuple[int, int, int]], n_classes: int, in_channels: int, stem: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU())
        layers, c_in = [], stem
        for c_out, n_blocks, stride in stages:
            blocks = []
            for i in range(n_blocks):
                blocks.append(BasicBlock(c_in, c_out, stride if i == 0 else 1))
                c_in = c_out
            layers.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


def simple_cnn(n_classes: int, in_channels: int, width: int = 32) -> ResNet:
    """A small residual CNN for tiny images (the embedded default's parent)."""
    return ResNet([(width, 1, 1), (2 * width, 2, 2)], n_classes, in_channels, stem=width)


def cifar_resnet(depth: int, n_classes: int, in_channels: int, width: int = 16) -> ResNet:
    """CIFAR-style ResNet (He et al. 2016): depth = 6n + 2, widths w, 2w, 4w."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    return ResNet([(width, n, 1), (2 * width, n, 2), (4 * width, n, 2)], n_classes, in_channels, stem=width)


ARCHS = ("simple_cnn", "resnet20")


def build_model(arch: str, n_classes: int, in_channels: int, width: int | None = None) -> nn.Module:
    """Instantiate a parent architecture with a fresh head for `n_classes` (width None: its standard)."""
    if arch == "simple_cnn":
        return simple_cnn(n_classes, in_channels, width or 32)
    if arch == "resnet20":
        return cifar_resnet(20, n_classes, in_channels, width or 16)
    raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")


def classifier_of(model: nn.Module) -> nn.Module:
    """The output layer whose outputs (classes) must never be pruned: the last Linear."""
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    if last is None:
        raise ValueError("model has no nn.Linear classifier")
    return last
