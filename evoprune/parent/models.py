"""Parent architectures by name: built-in CNNs, CIFAR-style ResNets and torchvision models (new head)."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evoprune.config import ConfigError
from evoprune.config.archs import BUILTIN_ARCHS, arch_problem, torchvision_archs
from evoprune.config.imports import call, is_import_path


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


# Builder arguments: the auxiliary heads of the Inception nets are off (one output, prunable like the
# rest) and so is their ImageNet input re-normalisation (the data are normalised here, per dataset).
_TV_KWARGS = {"googlenet": {"aux_logits": False, "transform_input": False},
              "inception_v3": {"aux_logits": False, "transform_input": False}}




class WeightsUnavailable(FileNotFoundError):
    """Pretrained weights could not be fetched (offline); the message says where to put the file."""


def _output_layer_name(model: nn.Module) -> str:
    """The output layer's name: the last nn.Linear, or for a fully convolutional classifier (SqueezeNet)
    the last convolution."""
    linear = conv = ""
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear):
            linear = n
        elif isinstance(m, nn.modules.conv._ConvNd):
            conv = n
    if not (linear or conv):
        raise ValueError(f"{type(model).__name__} has no nn.Linear or convolution as its output layer")
    return linear or conv


def replace_classifier(model: nn.Module, n_classes: int) -> nn.Module:
    """Swap the output layer (the last nn.Linear; else the last convolution) for a fresh one with
    `n_classes` outputs."""
    name = _output_layer_name(model)
    old = model.get_submodule(name)
    owner_name, _, attr = name.rpartition(".")
    if isinstance(old, nn.Linear):
        head: nn.Module = nn.Linear(old.in_features, n_classes, bias=old.bias is not None)
    else:
        head = type(old)(old.in_channels, n_classes, old.kernel_size, old.stride, old.padding, old.dilation,
                         bias=old.bias is not None)
    setattr(model.get_submodule(owner_name) if owner_name else model, attr, head)
    return head


def _weights_help(arch: str, exc: BaseException) -> str:
    import torchvision

    url = torchvision.models.get_model_weights(arch).DEFAULT.url
    target = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    return (f"parent.pretrained=imagenet: cannot get the ImageNet weights of {arch} "
            f"({exc.__class__.__name__}: {' '.join(str(exc).split())[:160]}). If this machine is offline, "
            f"download {url} elsewhere and put it at {target} (torch.hub's cache, read without a download), "
            f"or load a state_dict of your own with parent.weights=PATH, or train from scratch with "
            f"parent.pretrained=none")


def torchvision_model(arch: str, n_classes: int, pretrained: bool = False) -> nn.Module:
    """A torchvision classification model, ImageNet weights if `pretrained`, head for `n_classes`."""
    import torchvision

    kwargs = dict(_TV_KWARGS.get(arch, {}))
    if arch in ("googlenet", "inception_v3") and not pretrained:
        kwargs["init_weights"] = True  # torchvision's own init (and no warning about its default)
    weights = torchvision.models.get_model_weights(arch).DEFAULT if pretrained else None
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
            model = torchvision.models.get_model(arch, weights=weights, **kwargs)
    except (OSError, RuntimeError) as exc:  # URLError / HTTPError / timeouts are OSErrors; bad hash: RuntimeError
        if not pretrained:
            raise
        raise WeightsUnavailable(_weights_help(arch, exc)) from exc
    replace_classifier(model, n_classes)
    return model


def build_model(arch: str, n_classes: int, in_channels: int, width: int | None = None,
                pretrained: bool = False, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Instantiate a parent architecture with a fresh head for `n_classes` (width None: its standard).

    Built-in architectures take any number of input channels; torchvision models take 3 (grayscale
    data are repeated to 3 channels by the data loader, see data.load_data). `pretrained` loads the
    torchvision ImageNet weights (DEFAULT) before the head is replaced. An import path
    (`my_pkg.models:build`) is called with `kwargs` and must return an nn.Module: the user's own,
    head included (its outputs are checked against `n_classes` by the parent's first forward).
    """
    if is_import_path(arch):
        model = call(arch, "parent.arch", kwargs)
        if not isinstance(model, nn.Module):
            raise ConfigError("parent.arch", f"{arch} returned a {type(model).__name__}, not a torch.nn.Module")
        return model
    if arch == "simple_cnn":
        return simple_cnn(n_classes, in_channels, width or 32)
    if arch in BUILTIN_ARCHS:
        return cifar_resnet(int(arch[len("resnet"):]), n_classes, in_channels, width or 16)
    if arch not in torchvision_archs():
        raise ValueError(arch_problem(arch))
    if in_channels != 3:
        raise ValueError(f"{arch} (torchvision) takes 3-channel input, got {in_channels} channels; "
                         f"load the data with channels=3 (grayscale is repeated)")
    if width is not None:
        raise ValueError(f"parent.width applies to the built-in architectures only, not to {arch}")
    return torchvision_model(arch, n_classes, pretrained)


def classifier_of(model: nn.Module) -> nn.Module:
    """The output layer whose outputs (classes) must never be pruned: the last Linear, else (a fully
    convolutional classifier) the last convolution."""
    return model.get_submodule(_output_layer_name(model))
