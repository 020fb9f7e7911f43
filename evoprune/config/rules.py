"""The config's rules across fields, checked when it is loaded, before any work (none needs data)."""
from __future__ import annotations

from evoprune.config.schema import Config, ConfigError, EvaluatorConfig, short
from evoprune.config.vocab import CRITERIA


def check_rules(cfg: Config) -> None:
    """Raise ConfigError naming the key when fields disagree with each other."""
    pop = cfg.population
    if pop.ratio_min > pop.ratio_max:
        raise ConfigError("population.ratio_min",
                          f"expected <= population.ratio_max ({pop.ratio_max}), got {pop.ratio_min}")
    if not pop.criteria:
        raise ConfigError("population.criteria", "expected at least one criterion")
    for i, c in enumerate(pop.criteria):
        if c not in CRITERIA:
            raise ConfigError(f"population.criteria[{i}]", f"expected one of {', '.join(CRITERIA)}, got {short(c)}")
    if cfg.data.val_fraction + cfg.data.test_fraction >= 0.9:
        raise ConfigError("data.test_fraction", "expected data.val_fraction + data.test_fraction < 0.9")
    _check_parent_and_data(cfg)
    check_ray_share(cfg.evaluator, cfg.fitness.device)


def _check_parent_and_data(cfg: Config) -> None:
    """parent.arch against the known names (with a suggestion); settings that only fit some archs."""
    from evoprune.config.archs import BUILTIN_ARCHS, arch_problem
    from evoprune.config.imports import import_path_problem, is_import_path

    problem = arch_problem(cfg.parent.arch)
    if problem:
        raise ConfigError("parent.arch", problem)
    builtin = cfg.parent.arch in BUILTIN_ARCHS
    own_arch = is_import_path(cfg.parent.arch)
    if (builtin or own_arch) and cfg.parent.pretrained != "none":
        raise ConfigError("parent.pretrained", f"ImageNet weights exist for torchvision architectures only, "
                                               f"not for {cfg.parent.arch}; use none")
    if not builtin and cfg.parent.width is not None:
        raise ConfigError("parent.width", f"applies to the built-in architectures only, not to {cfg.parent.arch}; "
                                          f"use null")
    if cfg.parent.kwargs is not None and not own_arch:
        raise ConfigError("parent.kwargs", f"applies to an import-path parent.arch (my_pkg.models:build) only, not to "
                                           f"{cfg.parent.arch}; use null")
    if cfg.data.name == "python":
        if not cfg.data.factory:
            raise ConfigError("data.factory", "required for data.name=python (an import path like my_pkg.data:make)")
        problem = import_path_problem(cfg.data.factory)
        if problem:
            raise ConfigError("data.factory", problem)
    elif cfg.data.factory is not None:
        raise ConfigError("data.factory", f"applies to data.name=python only, not to {cfg.data.name}; use null")
    if cfg.data.name in ("imagefolder", "attributes") and not cfg.data.root:
        raise ConfigError("data.root", f"required for data.name={cfg.data.name} (a directory of images)")
    multilabel_data = cfg.data.name == "attributes"
    if multilabel_data and cfg.data.task != "multilabel":
        raise ConfigError("data.task", "data.name=attributes holds several binary attributes per image: set "
                                       "data.task=multilabel")
    if cfg.data.task == "multilabel" and cfg.data.name not in ("attributes", "python"):
        raise ConfigError("data.task", f"multilabel needs data.name=attributes or python, not {cfg.data.name}")
    for key in ("attributes", "partition"):
        if getattr(cfg.data, key) is not None and not multilabel_data:
            raise ConfigError(f"data.{key}", f"applies to data.name=attributes only, not to {cfg.data.name}; "
                                             "use null")


def check_ray_share(ecfg: EvaluatorConfig, device: str) -> None:
    """Ray workers' GPU share against `fitness.device`: checked when a config loads (before the parent is
    trained, not after) and again by the Ray evaluator (for configs built in code)."""
    if ecfg.backend != "ray":
        return
    gpus = ecfg.gpus_per_worker
    if gpus > 1 and gpus != int(gpus):
        raise ConfigError("evaluator.gpus_per_worker", f"expected a share below 1 or a whole number, got {gpus}")
    if device == "cuda" and gpus == 0:
        raise ConfigError("evaluator.gpus_per_worker", "fitness.device is 'cuda' but Ray workers get no GPU "
                                                       "(set evaluator.gpus_per_worker > 0)")
    if device == "cpu" and gpus > 0:
        raise ConfigError("evaluator.gpus_per_worker", "workers would hold GPUs that fitness.device 'cpu' "
                                                       "never uses (set it to 0, or fitness.device to auto)")
