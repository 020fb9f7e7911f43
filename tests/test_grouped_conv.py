"""Grouped convolutions: the space keeps whole conv-group positions, so every genome materialises."""
from __future__ import annotations

import copy
import math
import random

import pytest
import torch
from torch import nn

from evoprune import Genome, SearchSpace, load_config
from evoprune.config import CRITERIA
from evoprune.evolve.population import initial_population
from evoprune.evolve.variation import CROSSOVERS, crossover, mutate
from evoprune.metrics import count_params
from evoprune.pruning.draw import keep_by_criterion, pruned_genome
from evoprune.pruning.groups import build_graph, prunable_groups
from evoprune.pruning.importance import build_space
from evoprune.pruning.materialise import materialise
from evoprune.pruning.space import GroupSpec, group_floor

CONV_LINEAR = (nn.modules.conv._ConvNd, nn.Linear)


def _cbr(cin: int, cout: int, groups: int = 1) -> nn.Sequential:
    """Conv, BatchNorm, ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())


class GroupedNet(nn.Module):
    """A grouped conv (G = 4) between ordinary convs."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(_cbr(3, 16), _cbr(16, 16, groups=4), _cbr(16, 8))
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


class DepthwiseNet(nn.Module):
    """A depthwise conv (pruned in/out together, no period) and a channel-multiplier conv (G = in)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(_cbr(3, 16), _cbr(16, 16, groups=16), _cbr(16, 8), _cbr(8, 16, groups=8))
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


class MixedNet(nn.Module):
    """Grouped convs with G = 2 and G = 3 read one group and write another (added): both get G = 6."""

    def __init__(self):
        super().__init__()
        self.stem = _cbr(3, 12)
        self.a, self.b = _cbr(12, 24, groups=2), _cbr(12, 24, groups=3)
        self.c = _cbr(24, 8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = self.stem(x)
        return self.fc(self.c(self.a(x) + self.b(x)).mean((2, 3)))


NETS = {"grouped": (GroupedNet, {"features.0.0": 4, "features.1.0": 4, "features.2.0": 1}),
        "depthwise": (DepthwiseNet, {"features.0.0": 1, "features.2.0": 8, "features.3.0": 8}),
        "mixed": (MixedNet, {"stem.0": 6, "a.0": 6, "c.0": 1})}


def _randomise_bn(model: nn.Module, seed: int) -> None:
    """Non-trivial BatchNorm statistics and affine parameters, so the equivalence check means something."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


def _setup(net: str):
    """(parent in eval mode, its space over every criterion, an input batch)."""
    torch.manual_seed(0)
    parent = NETS[net][0]().eval()
    _randomise_bn(parent, 1)
    x = torch.randn(4, 3, 8, 8)
    space = build_space(parent, x[:1], load_config().space, list(CRITERIA), torch.randn(16, 3, 8, 8),
                        torch.randint(0, 10, (16,)))
    return parent, space, x


@pytest.fixture(scope="module", params=list(NETS))
def net(request):
    return request.param, *_setup(request.param)


def _removed_inputs(parent: nn.Module, genome: Genome, x: torch.Tensor) -> dict[str, list[int]]:
    """For each conv/linear whose inputs a group prunes: the input channels the genome removes."""
    model = copy.deepcopy(parent)
    graph = build_graph(model, x[:1])
    names = {m: n for n, m in model.named_modules()}
    removed: dict[str, set[int]] = {}
    for name, group in prunable_groups(model, graph):
        kept = set(genome[name])
        for item in group:
            module = item.dep.target.module
            if isinstance(module, CONV_LINEAR) and graph.is_in_channel_pruning_fn(item.dep.handler):
                gone = {i for i, root in zip(item.idxs, item.root_idxs) if root not in kept}
                removed.setdefault(names[module], set()).update(gone)
    return {n: sorted(r) for n, r in removed.items() if r}


def _zeroed_output(parent: nn.Module, removed: dict[str, list[int]], x: torch.Tensor) -> torch.Tensor:
    """The parent's output with the removed channels zeroed where the next layers read them."""
    def zero(idx):
        def hook(_module, args):
            inp = args[0].clone()
            inp[:, idx] = 0
            return (inp,)
        return hook

    modules = dict(parent.named_modules())
    handles = [modules[n].register_forward_pre_hook(zero(idx)) for n, idx in removed.items()]
    try:
        with torch.no_grad():
            return parent(x)
    finally:
        for h in handles:
            h.remove()


def _genomes(space: SearchSpace, n_per_criterion: int, seed: int) -> list[Genome]:
    """Random genomes for every criterion, then mutants and crossover children of them."""
    rng = random.Random(seed)
    drawn = [pruned_genome(space, crit, rng.uniform(0.1, 0.9), 0.2, rng)
             for crit in CRITERIA for _ in range(n_per_criterion)]
    mutants = [mutate(g, space, rng, rng.uniform(0.2, 1.0), list(CRITERIA)) for g in drawn]
    children = [c for _ in range(len(drawn) // 2)
                for c in crossover(rng.choice(drawn), rng.choice(mutants), space, rng.choice(CROSSOVERS), rng)]
    return drawn + mutants + children


def _check_subnet(parent: nn.Module, space: SearchSpace, genome: Genome, x: torch.Tensor, n_classes: int) -> None:
    """The genome is legal, materialises, runs, is smaller, and computes the parent with the removed
    channels zeroed (eval mode)."""
    space.validate(genome)
    sub = materialise(parent, genome, x[:1]).eval()
    with torch.no_grad():
        out = sub(x)
    assert out.shape == (len(x), n_classes)
    assert torch.isfinite(out).all()
    if genome != space.full():
        assert count_params(sub) < count_params(parent)
    torch.testing.assert_close(out, _zeroed_output(parent, _removed_inputs(parent, genome, x), x),
                               rtol=1e-4, atol=1e-5)


# -- the space -----------------------------------------------------------------------------------

def test_channel_groups_found(net):
    name, parent, space, _ = net
    expected = NETS[name][1]
    assert {n: space.group(n).channel_groups for n in expected} == expected
    for g in space.groups:
        assert g.floor % g.step == 0 or g.floor == g.n_channels
        for crit in space.criteria:  # rankings list whole positions, most important first
            rank = space.ranking(crit, g.name)
            assert sorted(rank) == list(range(g.n_channels))
            assert rank == g.copies(g.positions(rank))


def test_depthwise_and_channel_multiplier():
    _, space, _ = _setup("depthwise")
    # the depthwise conv is coupled with the stem (one group, no period); the channel-multiplier
    # conv (8 -> 16, groups 8) needs all 8 positions of its input: that group cannot shrink
    stem = space.group("features.0.0")
    assert "features.1.0" in stem.modules and stem.channel_groups == 1
    assert space.group("features.2.0").floor == 8
    assert [c for c in range(17) if space.group("features.3.0").legal(c)] == [8, 16]


@pytest.mark.parametrize("n,round_to,groups,min_keep,expected", [
    (24, 1, 6, 0.1, [6, 12, 18, 24]), (24, 4, 6, 0.1, [12, 24]), (36, 8, 4, 0.1, [8, 16, 24, 32, 36]),
    (16, 1, 4, 0.5, [8, 12, 16]), (16, 1, 16, 0.1, [16]),
])
def test_legal_counts_are_multiples_of_the_lcm_step(n, round_to, groups, min_keep, expected):
    g = GroupSpec("g", n, group_floor(n, min_keep, 2, round_to, groups), round_to, channel_groups=groups)
    assert g.step == math.lcm(round_to, groups) and g.period == n // groups
    legal = [c for c in range(n + 1) if g.legal(c)]
    assert legal == expected and g.floor == legal[0]
    for count in range(-2, n + 5):
        assert g.nearest_legal(count) == min(legal, key=lambda c: (abs(c - count), -c))


def test_channel_groups_must_divide_the_width():
    with pytest.raises(ValueError, match="divisor"):
        GroupSpec("g", 10, 2, 1, channel_groups=4)


def test_validate_rejects_non_periodic_sets(net):
    name, _, space, _ = net
    g = next(g for g in space.groups if g.channel_groups > 1 and g.period > 1)
    k = g.step * max(1, g.floor // g.step)
    space.validate(space.full().with_group(g.name, g.copies(range(k // g.channel_groups))))
    with pytest.raises(ValueError, match="same kept positions"):
        space.validate(space.full().with_group(g.name, range(k)))  # a legal count, not periodic


def test_repair_gives_periodic_sets_of_the_nearest_legal_count(net):
    _, _, space, _ = net
    rng = random.Random(0)
    for _ in range(300):
        kept = {g.name: rng.sample(range(g.n_channels + 2), rng.randint(0, g.n_channels)) for g in space.groups}
        crit = rng.choice(space.criteria + [None])
        repaired = space.repair(kept, crit)
        space.validate(repaired)
        assert space.repair(repaired, crit) == repaired
        for g in space.groups:
            valid = {i for i in kept[g.name] if 0 <= i < g.n_channels}
            assert len(repaired[g.name]) == g.nearest_legal(len(valid))


def test_repair_prefers_positions_with_most_copies_kept(net):
    name, _, space, _ = net
    g = next(g for g in space.groups if g.channel_groups > 1 and g.period > 1)
    rank = space.ranking("l1", g.name)
    worst = g.positions(rank)[-1]
    # every copy of the least important position but one, plus one copy of the most important
    kept = g.copies([worst])[1:] + [rank[0]]
    repaired = space.repair(space.full().with_group(g.name, kept), "l1")[g.name]
    count = g.nearest_legal(len(kept))
    extra = [p for p in g.positions(rank) if p != worst][: count // g.channel_groups - 1]
    assert set(repaired) == set(g.copies([worst, *extra]))


def test_random_draws_whole_positions(net):
    _, _, space, _ = net
    rng = random.Random(0)
    for g in space.groups:
        legal = [c for c in range(g.n_channels + 1) if g.legal(c)]
        for _ in range(20):
            k = rng.choice(legal)
            kept = keep_by_criterion(space, g.name, k, "random", rng)
            assert len(kept) == k and g.periodic(kept)


def test_keep_ratios_and_uniform_are_legal(net):
    _, _, space, _ = net
    for keep in (0.01, 0.1, 0.3, 0.5, 0.77, 1.0):
        for crit in space.criteria:
            space.validate(space.uniform(keep, crit))
    rng = random.Random(0)
    for _ in range(50):
        space.validate(space.from_keep_ratios([rng.uniform(0.01, 1.0) for _ in space.groups]))
    pop_cfg = load_config(overrides=["population.uniform=0.5"]).population
    for genome, _ in initial_population(space, pop_cfg, 16, rng):
        space.validate(genome)


def test_mutation_moves_whole_steps(net):
    _, _, space, _ = net
    rng = random.Random(1)
    for _ in range(200):
        parent = pruned_genome(space, rng.choice(list(CRITERIA)), rng.uniform(0.0, 0.9), 0.2, rng)
        child = mutate(parent, space, rng, 0.5, list(CRITERIA))
        space.validate(child)
        for g in space.groups:
            assert (len(child[g.name]) - len(parent[g.name])) % g.step == 0 or g.n_channels in (
                len(child[g.name]), len(parent[g.name]))


# -- materialising -------------------------------------------------------------------------------

def test_zeroed_parent_check_catches_non_periodic_sets():
    """The check has teeth: torch-pruning materialises a legal-count, non-periodic set of a grouped
    conv's inputs without complaint, but the subnet computes something else."""
    parent, space, x = _setup("grouped")
    genome = space.full().with_group("features.0.0", range(8))  # blocks 0 and 1 only
    with pytest.raises(ValueError, match="same kept positions"):
        space.validate(genome)
    sub = materialise(parent, genome, x[:1]).eval()
    with torch.no_grad():
        out = sub(x)
    assert out.shape == (len(x), 10)
    assert not torch.allclose(out, _zeroed_output(parent, _removed_inputs(parent, genome, x), x), atol=1e-3)


def test_every_genome_materialises_and_computes_the_zeroed_parent(net):
    """Drawn (50 per criterion, 'random' included), mutated and crossed genomes: all legal, all prune."""
    _, parent, space, x = net
    genomes = _genomes(space, 50, seed=0)
    for g in genomes:
        space.validate(g)
    distinct = list(dict.fromkeys(genomes))
    assert len(distinct) > 50
    for g in distinct:
        _check_subnet(parent, space, g, x, 10)


def test_old_space_json_without_channel_groups_loads(net):
    _, _, space, _ = net
    obj = space.to_json()
    assert any("channel_groups" in g for g in obj["groups"])  # written where it matters
    assert SearchSpace.from_json(obj).groups == space.groups
    old = {"groups": [{"name": "stem.0", "n_channels": 8, "floor": 2, "round_to": 1, "modules": ["stem.0", "fc"]}],
           "rankings": {"l1": {"stem.0": [3, 1, 0, 2, 4, 5, 7, 6]}}}
    back = SearchSpace.from_json(old)
    assert back.group("stem.0").channel_groups == 1 and back.group("stem.0").step == 1
    assert back.to_json() == old  # ordinary groups are written exactly as before
    back.validate(back.uniform(0.5))


# -- torchvision ---------------------------------------------------------------------------------

TORCHVISION = ["resnext50_32x4d", "regnet_x_400mf", "regnet_y_400mf", "mobilenet_v3_small", "efficientnet_b0"]


@pytest.mark.slow
@pytest.mark.parametrize("arch", TORCHVISION)
def test_torchvision_grouped_models(arch):
    """A space, then 10 random genomes per criterion: legal, materialised, forwarded at 32x32 and equal
    to the zeroed parent (about 15-35 s each on one CPU thread)."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    parent = getattr(torchvision.models, arch)(weights=None, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    space = build_space(parent, x[:1], load_config().space, list(CRITERIA), torch.randn(4, 3, 32, 32),
                        torch.randint(0, 10, (4,)))
    if arch.startswith(("resnext", "regnet")):
        assert any(g.channel_groups > 1 for g in space.groups)
    rng = random.Random(0)
    for crit in CRITERIA:
        for _ in range(10):
            genome = pruned_genome(space, crit, rng.uniform(0.1, 0.9), 0.2, rng)
            _check_subnet(parent, space, genome, x, 10)


class GroupNormNet(nn.Module):
    """GroupNorm(4 groups) after a conv: torch-pruning keeps num_groups, so kept channels must be periodic."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(16, 12, 3, padding=1), nn.GroupNorm(3, 12), nn.ReLU())
        self.fc = nn.Linear(12, 10)

    def forward(self, x):
        return self.fc(self.b(self.a(x)).mean((2, 3)))


def test_group_norm_groups_make_kept_channels_periodic():
    torch.manual_seed(0)
    parent = GroupNormNet().eval()
    x = torch.randn(4, 3, 8, 8)
    space = build_space(parent, x[:1], load_config().space, ["l1", "random"], torch.randn(16, 3, 8, 8),
                        torch.randint(0, 10, (16,)))
    assert [space.group(n).channel_groups for n in space.names] == [4, 3]
    for genome in _genomes(space, 20, seed=3):
        space.validate(genome)
        out = materialise(parent, genome, x[:1])(x)
        assert out.shape == (4, 10) and torch.isfinite(out).all()
