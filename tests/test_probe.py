"""Before any training, a model torch-pruning cannot prune is one line naming the layers and the way out
(space.ignore), and space.ignore leaves those layers whole in every subnet."""
from __future__ import annotations

import pytest
import torch
import torch_pruning as tp
from conftest import TINY, run_cli
from torch import nn

from evoprune import Fitness, load_config
from evoprune.pruning.probe import prune_problem


class Shift(nn.Module):
    """A user's own layer: a per-channel buffer torch-pruning does not know, so it is never pruned."""

    def __init__(self, c: int):
        super().__init__()
        self.register_buffer("shift", torch.zeros(1, c, 1, 1))

    def forward(self, x):
        return x + self.shift


class WithShift(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), Shift(16), nn.ReLU())
        self.c = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.c(self.b(self.a(x))).mean((2, 3)))


X = torch.randn(2, 1, 8, 8)


def test_an_unsupported_layer_is_named_with_the_way_out():
    problem = prune_problem(WithShift(), X, load_config().space)
    assert "b.0, b.1, c.0" in problem and "space.ignore: [b.0]" in problem and "must match" in problem
    assert prune_problem(WithShift(), X, load_config(overrides=["space.ignore=[b.0]"]).space) is None
    assert "did you mean b?" in prune_problem(WithShift(), X, load_config(overrides=["space.ignore=[bb]"]).space)


def test_a_model_torch_pruning_cannot_trace_says_so_in_one_line():
    torchvision = pytest.importorskip("torchvision")
    problem = prune_problem(torchvision.models.shufflenet_v2_x0_5(num_classes=10), torch.zeros(1, 3, 32, 32),
                            load_config().space)
    assert problem.startswith("torch-pruning cannot trace this model") and "\n" not in problem


def test_ignored_layers_stay_whole_in_every_subnet():
    digits = torch.randn(300, 1, 8, 8), torch.arange(300) % 10
    with pytest.raises(ValueError, match=r"space.ignore: \[b.0\]"):
        Fitness.from_model(WithShift(), digits, digits)
    cfg = load_config(overrides=["space.ignore=[b.0]", "fitness.steps=2", "fitness.finetune_samples=64",
                                 "fitness.val_samples=64", "evaluator.kind=sequential"])
    fitness = Fitness.from_model(WithShift(), digits, digits, cfg)
    assert "b.0" not in fitness.space.names and fitness.space.names
    [obj] = fitness([fitness.space.uniform(0.3)])
    subnet = fitness.subnet(fitness.space.uniform(0.3))
    assert subnet.b[0].out_channels == 16 and subnet.a[0].out_channels < 8 and obj.size_ratio < 1


def test_the_cli_stops_before_training_with_one_line(tmp_path):
    code, out, err = run_cli(["search", "--out", str(tmp_path / "r"), "--quiet", *[f"--set={o}" for o in TINY],
                              "--set=space.ignore=[stemm]"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "did you mean stem" in err
    assert not (tmp_path / "r" / "parent.pt").exists()  # nothing was trained


def test_ignore_names_a_container_of_layers():
    assert prune_problem(WithShift(), X, load_config(overrides=["space.ignore=[b]"]).space) is None


class ShiftPruner(tp.pruner.BasePruningFunc):
    """What a user writes for their own layer: how to remove channels from its buffer."""

    def prune_out_channels(self, layer: Shift, idxs):
        keep = [i for i in range(layer.shift.shape[1]) if i not in set(idxs)]
        layer.shift = layer.shift[:, keep].contiguous()
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: Shift) -> int:
        return layer.shift.shape[1]

    get_in_channels = get_out_channels


def test_a_customized_pruner_makes_a_users_layer_prunable():
    from evoprune.pruning import use_custom_layers

    digits = torch.randn(300, 1, 8, 8), torch.arange(300) % 10
    cfg_sets = ["fitness.steps=2", "fitness.finetune_samples=64", "fitness.val_samples=64", "evaluator.kind=sequential"]
    cfg = load_config(overrides=cfg_sets)
    try:
        fitness = Fitness.from_model(WithShift(), digits, digits, cfg, customized_pruners={Shift: ShiftPruner()})
        assert "b.0" in fitness.space.names
        genome = fitness.space.uniform(0.5)
        subnet = fitness.subnet(genome)
        assert subnet.b[2].shift.shape[1] == subnet.b[0].out_channels == len(genome["b.0"]) < 16
        [obj] = fitness([genome])
        assert obj.valid and obj.size_ratio < 1
        with pytest.raises(TypeError, match="BasePruningFunc"):
            Fitness.from_model(WithShift(), digits, digits, cfg, customized_pruners={Shift: object()})
        with pytest.raises(ValueError, match="not a parameter of the model"):
            Fitness.from_model(WithShift(), digits, digits, cfg, unwrapped_parameters={"nope": 0})
        from evoprune.pruning.groups import CUSTOM

        Fitness.from_model(WithShift(), digits, digits, cfg, customized_pruners={Shift: ShiftPruner()})
        Fitness.from_model(WithShift(), digits, digits, load_config(overrides=cfg_sets + ["space.ignore=[b.0]"]))
        assert not CUSTOM  # a later call without hooks clears an earlier call's
    finally:
        use_custom_layers(nn.Module())  # this process's graphs go back to torch-pruning's own layers
