"""The config's sections as frozen dataclasses: every field's type, default, range and doc (the defaults are the embedded default run)."""
from __future__ import annotations

import dataclasses
import reprlib
from dataclasses import dataclass, field
from typing import Any, Literal

from evoprune.config.vocab import CRITERIA, CROSSOVERS, KD_LOSSES


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""

    def __init__(self, key: str, message: str):
        key = key if key.isprintable() else short(key)  # a key from user input may hold newlines
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


INT_MAX = 2**31 - 1  # every integer setting is capped here (seeds and sizes reach numpy/torch)

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60
_repr.maxlist = _repr.maxdict = _repr.maxtuple = _repr.maxset = 4
_repr.maxlevel = 2


def short(value: Any) -> str:
    """A bounded, one-line repr for messages (safe on huge, deep or self-referencing values)."""
    try:
        text = _repr.repr(value)
    except Exception:  # an exotic value whose repr fails must not hide the real error
        text = f"<{type(value).__name__}>"
    return " ".join(text.split())


def _f(default: Any, *, lo: float | None = None, hi: float | None = None,
       lo_open: bool = False, hi_open: bool = False, doc: str = "") -> Any:
    """A config field with an optional numeric range; `doc` feeds the README reference."""
    meta = {"lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open, "doc": doc}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DataConfig:
    name: Literal["digits", "cifar10", "cifar100", "mnist", "fashion_mnist", "imagefolder", "attributes",
                  "python"] = _f(
        "digits", doc=('dataset: `digits` (ships with scikit-learn), `cifar10`, `cifar100`, `mnist`, '
                       '`fashion_mnist` (torchvision), `imagefolder`, `attributes` (multi-label images in '
                       'CelebA\'s layout), `python` (your own, from `data.factory`; see '
                       '[Parents and data](#parents-and-data))'))
    task: Literal["single", "multilabel"] = _f("single", doc=('`single`: one class per image (softmax, '
                                                             'cross-entropy); `multilabel`: several binary '
                                                             'attributes per image (sigmoid, binary cross-entropy, '
                                                             'binary KD; `attributes` data, or a `data.factory` '
                                                             'giving 0/1 label rows)'))
    attributes: str | None = _f(None, doc=('`data.name: attributes`: the attribute file in CelebA\'s layout (a '
                                           'header of names, then a file name and +-1 per attribute per line; '
                                           'null: `list_attr_celeba.txt` in `data.root`)'))
    partition: str | None = _f(None, doc=('`data.name: attributes`: a file of `name split` lines, split 0/1/2 = '
                                          'train/val/test (null: `list_eval_partition.txt` in `data.root` if there, '
                                          'else seeded random splits)'))
    factory: str | None = _f(None, doc=('`data.name: python`: import path `my_pkg.data:make` of a callable returning '
                                        '(train, val, test), each a Dataset of (input tensor, class index) items or '
                                        'an (x, y) pair of tensors, used as given (no splitting, resizing or '
                                        'normalising)'))
    root: str | None = _f(None, doc=('dataset directory (null: `./data` for the torchvision datasets; required '
                                     'for `imagefolder`)'))
    download: bool = _f(True, doc='download a missing torchvision dataset into `data.root`')
    image_size: int | None = _f(None, lo=1, doc=('resize images to this square size (null: native; e.g. `32` for'
                                                 ' digits with a CIFAR or torchvision parent)'))
    augment: Literal["auto", "none", "crop", "flip", "crop_flip"] = _f(
        "auto", doc=('parent-training augmentation: `none`, `crop` (random crop, zero padding of size/8), `flip`'
                     ' (horizontal), `crop_flip`; `auto`: none for digits, crop for mnist, crop_flip otherwise'))
    max_train_samples: int = _f(0, lo=0, doc=('cap on the training split, a stratified seeded subset (0: all); '
                                              'datasets are held in memory'))
    max_eval_samples: int = _f(0, lo=0, doc='cap on the validation and on the test split each (0: all)')
    in_memory: bool | None = _f(None, doc=('`imagefolder`: decode every image once and hold the splits as tensors '
                                           '(true), or decode each image when it is used (false; normalisation '
                                           'statistics from 1,000 train images); null: held when they fit in 2 GiB'))
    workers: int = _f(2, lo=0, doc=('DataLoader processes that read a Dataset\'s items for parent training and final '
                                    'distillation (`data.factory`\'s and `evoprune.search`\'s Datasets, which are read '
                                    'when used, not held in memory; 0: in the main process)'))
    val_fraction: float = _f(0.2, lo=0.01, hi=1, hi_open=True,
                             doc=('share of the data held out for validation (selection); carved from train '
                                  'where the dataset has its own test split'))
    test_fraction: float = _f(0.2, lo=0.01, hi=1, hi_open=True,
                              doc=('share held out for the final test report only (unused where the dataset has '
                                   'its own test split)'))
    split_seed: int | None = _f(None, lo=0, hi=INT_MAX, doc=('seed of the train/val/test split and of the caps '
                                                             '(null: `seed`); a reused parent must share it'))


@dataclass(frozen=True)
class ParentConfig:
    arch: str = _f("simple_cnn", doc=('parent architecture: `simple_cnn`, `resnet20`/`32`/`44`/`56`/`110` '
                                      '(CIFAR-style), or any torchvision classification model, e.g. `resnet18`, '
                                      '`resnet34`, `resnet50`, `googlenet`, `mobilenet_v2`, `vgg11_bn`, '
                                      '`vgg16_bn`, or your own: an import path `my_pkg.models:build` of a callable '
                                      'returning the nn.Module (keyword arguments from `parent.kwargs`)'))
    kwargs: dict[str, Any] | None = _f(None, doc='keyword arguments of an import-path `parent.arch` (a mapping)')
    width: int | None = _f(None, lo=4, doc='base channel width of the built-in architectures (null: standard)')
    pretrained: Literal["none", "imagenet"] = _f("none", doc=('`imagenet`: start a torchvision parent from its '
                                                              "ImageNet weights (torchvision's DEFAULT)"))
    weights: str | None = _f(None, doc=('state_dict file to load instead of training (read with '
                                        "`weights_only=True`), e.g. a `train-parent` directory's `parent.pt`; "
                                        'its split is checked (see [Parents and data](#parents-and-data))'))
    trust_split: bool = _f(False, doc=("`parent.weights` without evoprune's `parent.json` beside it: you state "
                                       "that this parent never saw this run's validation or test images"))
    frozen_epochs: int | None = _f(None, lo=0, doc=('epochs training only the new head, backbone frozen, before '
                                                    'the full fine-tune (null: 3 if pretrained, else 0)'))
    epochs: int = _f(40, lo=1, doc=('most full fine-tune (or from-scratch training) epochs when the parent is '
                                    'trained here (the cosine schedule spans them)'))
    patience: int = _f(5, lo=0, doc=('stop training when validation accuracy has not improved for this many '
                                     "epochs, keeping the best epoch's weights (0: train all epochs)"))
    lr: float = _f(0.05, lo=0, lo_open=True, doc=('parent training learning rate (SGD, Nesterov, cosine '
                                                  'schedule; both phases)'))
    batch_size: int = _f(64, lo=1, doc='parent training batch size')


@dataclass(frozen=True)
class SpaceConfig:
    min_keep: float = _f(0.1, lo=0, hi=1, lo_open=True, doc="floor: least share of a group's channels kept")
    min_channels: int = _f(2, lo=1, doc='floor: least channels kept in any group')
    round_to: int = _f(1, lo=1, doc='kept channel counts are multiples of this (or the full width)')
    ignore: tuple[str, ...] = _f((), doc=('modules left unpruned, by name in the parent (e.g. `[features.0, '
                                          'layer4]`; every layer inside a named container): layers torch-pruning '
                                          'cannot prune, or that should stay whole'))


@dataclass(frozen=True)
class PopulationConfig:
    criteria: tuple[str, ...] = _f(CRITERIA, doc=('torch-pruning importance criteria used for the initial '
                                                  'population and mutation'))
    ratio_min: float = _f(0.1, lo=0, hi=1, hi_open=True, doc=('least pruning ratio (share of channels removed) '
                                                              'drawn'))
    ratio_max: float = _f(0.95, lo=0, hi=1, hi_open=True, doc='largest pruning ratio drawn')
    jitter: float = _f(0.1, lo=0, hi=0.5, doc='per-group spread around the drawn ratio')
    uniform: float = _f(0.0, lo=0, hi=1, doc=("share of the initial population seeded with torch-pruning's uniform "
                                              'subnets: one ratio for every group (no jitter), ratios evenly over '
                                              '[ratio_min, ratio_max], criteria in turn'))


@dataclass(frozen=True)
class SearchConfig:
    mode: Literal["pareto", "scalar"] = _f("pareto", doc=('`pareto`: NSGA-II; `scalar`: accuracy - lambda*size, '
                                                          'tournament GA'))
    population: int = _f(16, lo=2, doc='individuals kept each generation (mu)')
    offspring: int = _f(16, lo=1, doc='children made each generation (lambda)')
    generations: int = _f(12, lo=0, doc='most generations after the initial population')
    max_evaluations: int = _f(0, lo=0, doc='stop after this many fitness evaluations (0: no limit)')
    patience: int = _f(2, lo=0, doc=('stop early when the last this many generations together raised the '
                                     'hypervolume (scalar mode: the best scalar fitness) by less than '
                                     '`search.min_gain` (0: never)'))
    min_gain: float = _f(0.002, lo=0, doc=('least gain over `search.patience` generations that keeps the search '
                                           'going (the hypervolume is in [0, 1])'))
    size_metric: Literal["params", "macs"] = _f("params", doc='size objective: `params` or `macs`')
    crossover: Literal[CROSSOVERS] = _f("uniform", doc=('layer-swap crossover over groups: `uniform`, '
                                                        '`one_point`, `two_point`'))
    cx_prob: float = _f(0.7, lo=0, hi=1, doc='probability a child comes from crossover')
    mut_prob: float = _f(0.5, lo=0, hi=1, doc='probability a child is mutated')
    mut_groups: float = _f(0.25, lo=0, hi=1, lo_open=True, doc='share of groups a mutation touches')
    scalar_lambda: float = _f(0.3, lo=0, doc='size penalty in scalar mode')
    tournament_size: int = _f(3, lo=2, doc='tournament size in scalar mode')


@dataclass(frozen=True)
class FitnessConfig:
    steps: int = _f(20, lo=0, doc='KD fine-tune steps per individual (0: no fine-tune)')
    batch_size: int = _f(64, lo=1, doc='fine-tune batch size')
    optimizer: Literal["sgd", "adam", "adamw"] = _f("sgd", doc='fine-tune optimiser: `sgd`, `adam`, `adamw`')
    lr: float = _f(0.05, lo=0, lo_open=True, doc='fine-tune learning rate')
    momentum: float = _f(0.9, lo=0, hi=1, hi_open=True, doc='SGD momentum')
    weight_decay: float = _f(0.0, lo=0, doc='fine-tune weight decay')
    grad_clip: float = _f(0.0, lo=0, doc='clip the gradient norm at this value (0: no clipping)')
    adaptive_bn: int = _f(10, lo=0, doc=('recalibrate BatchNorm statistics on this many train batches before '
                                         'scoring (0: off)'))
    regression_check: bool = _f(True, doc=('also score each subnet before its fine-tune (after adaptive BN) and mark'
                                           ' a fine-tune that ends below it `regressed` (costs one more '
                                           'recalibration and scoring)'))
    temperature: float = _f(4.0, lo=0, lo_open=True, doc='KD softmax temperature')
    alpha: float = _f(0.9, lo=0, hi=1, doc='weight of the soft (teacher) term; 1 - alpha on the labels')
    kd: Literal[KD_LOSSES] = _f("hinton", doc=('KD loss: `hinton`, `mse`, `smooth_l1`, `feature`, `attention` '
                                               '(see [KD losses](#kd-losses)); `feature` / `attention` run on '
                                               'the sequential evaluator'))
    beta: float | None = _f(None, lo=0, doc=('weight of the feature / attention term (null: 1 for `feature`, '
                                             '1000 for `attention`)'))
    feature_layers: tuple[str, ...] = _f((), doc=('module names whose outputs `feature` / `attention` match, '
                                                  'e.g. `[layers.0, layers.1]` (empty: the stages, see KD '
                                                  'losses)'))
    finetune_samples: int = _f(1024, lo=1, doc='size of the fixed fine-tune subset of train')
    multilabel_score: Literal["accuracy", "map"] = _f("accuracy", doc=('`data.task: multilabel`: the fitness '
                                                                       'scores the mean attribute accuracy, or the '
                                                                       'mean average precision over attributes'))
    val_samples: int = _f(0, lo=0, doc=('validation samples scored (0: the whole split; a Dataset read on demand: '
                                         '5,000 of it, seeded)'))
    device: Literal["cpu", "cuda", "auto"] = _f("auto", doc='where fitness runs (`auto`: CUDA when available)')
    precision: Literal["fp32", "bf16", "fp16"] = _f("fp32", doc=('fine-tune autocast precision: `fp32`, `bf16`, '
                                                                 '`fp16` (grad scaler on CUDA)'))
    channels_last: bool | Literal["auto"] = _f(
        "auto", doc=('channels_last memory format for the fine-tune and scoring: `true`, `false`, or `auto` '
                     '(off: on CPUs torch corrupts memory in it, on GPUs it is unmeasured; `true` on a CPU first'
                     ' runs a crash probe in a child process)'))


@dataclass(frozen=True)
class EvaluatorConfig:
    kind: Literal["auto", "batched", "sequential"] = _f(
        "auto", doc='`sequential`, `batched` or `auto` (see Evaluators)')
    chunk: int = _f(0, lo=0, doc='individuals per batched step (0: the whole population); halved on CUDA OOM')
    threads: int = _f(0, lo=0, hi=256, doc=('sequential: individuals fine-tuned at once on a CPU, one torch '
                                            'thread each (0: one per CPU core plus one on CPU, 1 on CUDA)'))
    pool: Literal["auto", "processes", "threads"] = _f(
        "auto", doc=('sequential on a CPU: run those individuals in forked `processes` (free of the GIL) or in '
                     '`threads`; `auto`: processes on Linux, threads elsewhere. Code that calls one `Fitness` '
                     'from several threads at once gets threads automatically'))
    backend: Literal["local", "ray"] = _f(
        "local", doc=('`local`: evaluate in this process; `ray`: on Ray actors (see [Scaling out with '
                      'Ray](#scaling-out-with-ray); `pip install evoprune[ray]`)'))
    address: str | None = _f(None, doc=('ray: the cluster to join, `auto` or an address (null: start a local Ray'
                                        ' instance)'))
    workers: int = _f(0, lo=0, hi=4096, doc=('ray: number of worker actors (0: one per CPU, or per GPU share '
                                             'when `gpus_per_worker` > 0)'))
    gpus_per_worker: float = _f(0.0, lo=0, hi=64, doc=('ray: GPUs per worker; a share below 1 packs several '
                                                       'workers on one GPU (0.25: four); 0: CPU workers'))


@dataclass(frozen=True)
class DistillConfig:
    """The final, long KD fine-tune of a chosen front member (`evoprune distill`)."""

    epochs: int = _f(15, lo=1, doc='final distillation: epochs over the train split')
    lr: float = _f(0.05, lo=0, lo_open=True, doc=('initial learning rate (SGD, Nesterov momentum 0.9, cosine '
                                                  'schedule to 0)'))
    batch_size: int = _f(64, lo=1, doc='batch size (per student)')
    weight_decay: float = _f(5e-4, lo=0, doc='weight decay')
    kd: Literal[KD_LOSSES] = _f("hinton", doc='KD loss, any `fitness.kd` value')
    temperature: float = _f(4.0, lo=0, lo_open=True, doc='KD softmax temperature')
    alpha: float = _f(0.9, lo=0, hi=1, doc='weight of the soft (teacher) term; 1 - alpha on the labels')
    beta: float | None = _f(None, lo=0, doc=("feature / attention weight (null: `fitness.beta`, then the loss's "
                                             'default)'))
    feature_layers: tuple[str, ...] = _f((), doc=('layers for `feature` / `attention` (empty: '
                                                  '`fitness.feature_layers`, then the stages)'))
    dml: bool = _f(False, doc=('deep mutual learning: a second student (`--pick2`, or a copy of `--pick`) trains'
                               ' alongside'))
    student: str | None = _f(None, doc=('`distill --student`: an architecture distilled from the parent instead of a '
                                        'front member (a built-in or torchvision name, or an import path)'))
    student_width: int | None = _f(None, lo=1, doc='the student\'s `parent.width` (built-in architectures)')
    student_kwargs: dict[str, Any] | None = _f(None, doc='keyword arguments of an import-path student (a mapping)')
    student_pretrained: Literal["none", "imagenet"] = _f("none", doc='`imagenet`: a torchvision student starts '
                                                                     'from its ImageNet weights')
    baseline: bool = _f(True, doc=('`--student`: also train the same student on the labels alone (same recipe, '
                                   'epochs and seed), to show what the teacher adds'))
    layer_map: dict[str, str] | None = _f(None, doc=('`--student` with `feature` / `attention` KD: {student layer: '
                                                     'teacher layer} (null: each network\'s last 3 stages, in order)'))
    augment: Literal["auto", "none", "crop", "flip", "crop_flip"] = _f(
        "auto", doc=('`none`, `crop` (random crop, zero padding 1/8 of the side), `flip` (horizontal), '
                     '`crop_flip`; `auto`: `none` below 16 px, else as `data.augment` resolves it (crop for '
                     'MNIST-like digits, crop_flip for natural images)'))


@dataclass(frozen=True)
class Config:
    seed: int = _f(0, lo=0, hi=INT_MAX, doc='one seed for everything')
    data: DataConfig = field(default_factory=DataConfig)
    parent: ParentConfig = field(default_factory=ParentConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    population: PopulationConfig = field(default_factory=PopulationConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    fitness: FitnessConfig = field(default_factory=FitnessConfig)
    evaluator: EvaluatorConfig = field(default_factory=EvaluatorConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (tuples as lists), as YAML and JSON hold it."""
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


