"""Parent architecture names: the built-in ones, torchvision's, checks and suggestions (no torch needed
for the built-in names, so reading a config stays fast)."""
from __future__ import annotations

import difflib

from evoprune.config.imports import import_path_problem, is_import_path

BUILTIN_ARCHS = ("simple_cnn", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110")
# torchvision models that are tested to build, trace and prune; any other torchvision classification
# model name is accepted too (it works where torch-pruning can trace it).
TESTED_TORCHVISION = ("resnet18", "resnet34", "resnet50", "googlenet", "mobilenet_v2", "vgg11_bn", "vgg16_bn")
ARCHS = BUILTIN_ARCHS + TESTED_TORCHVISION  # the names listed in messages; see known_archs() for all


def torchvision_archs() -> list[str]:
    """torchvision's classification models (torchvision.models.list_models(module=torchvision.models))."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def is_torchvision(arch: str) -> bool:
    return arch not in BUILTIN_ARCHS and not is_import_path(arch)


def known_archs() -> list[str]:
    return list(BUILTIN_ARCHS) + [a for a in torchvision_archs() if a not in BUILTIN_ARCHS]


def arch_problem(arch: str) -> str | None:
    """None if `arch` names a known architecture, else a message with a "did you mean" suggestion."""
    if arch in BUILTIN_ARCHS:
        return None
    if is_import_path(arch):
        return import_path_problem(arch)
    known = known_archs()
    if arch in known:
        return None
    close = difflib.get_close_matches(arch.lower(), known, n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    return (f"expected one of {', '.join(BUILTIN_ARCHS)} (built in) or a torchvision classification model "
            f"({', '.join(TESTED_TORCHVISION)}, ... {len(known) - len(BUILTIN_ARCHS)} in all: "
            f"torchvision.models.list_models()) or an import path my_pkg.models:build, got {arch!r}{hint}")


def input_channels(arch: str) -> int | None:
    """Channels the architecture needs (3 for torchvision models), or None: any (the data's own)."""
    return 3 if is_torchvision(arch) else None
