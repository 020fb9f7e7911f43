"""SearchSpace: groups of the parent in layer order, floors, round_to, validation, repair, JSON."""
from __future__ import annotations

import json
import math
import random

import pytest
import torch

from evoprune import Genome, SearchSpace, load_config
from evoprune.pruning.importance import build_space
from evoprune.parent.models import build_model
from evoprune.pruning.space import GroupSpec, group_floor

# simple_cnn(width=8): stem (8), block 1 conv1 (8), stage 2 conv1 (16), stage 2 residual (16), block 2 conv1 (16)
EXPECTED_GROUPS = [("stem.0", 8), ("layers.0.0.conv1", 8), ("layers.1.0.conv1", 16),
                   ("layers.1.0.conv2", 16), ("layers.1.1.conv1", 16)]


def _space(round_to: int = 1, criteria=("l1", "l2", "taylor"), **space_overrides) -> SearchSpace:
    """The search space of an untrained width-8 simple_cnn (fast: no training)."""
    overrides = [f"space.round_to={round_to}"] + [f"space.{k}={v}" for k, v in space_overrides.items()]
    cfg = load_config(overrides=overrides)
    torch.manual_seed(0)
    model = build_model("simple_cnn", 10, 1, 8).eval()
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    return build_space(model, torch.zeros(1, 1, 8, 8), cfg.space, list(criteria), x, y)


@pytest.fixture(scope="module")
def space4() -> SearchSpace:
    return _space(round_to=4)


def _random_kept(space: SearchSpace, rng: random.Random) -> dict[str, list[int]]:
    """Any kept sets: counts from 0 to the full width, some out-of-range indices thrown in."""
    kept = {}
    for g in space.groups:
        k = rng.randint(0, g.n_channels)
        idx = rng.sample(range(g.n_channels), k)
        if rng.random() < 0.2:
            idx.append(g.n_channels + rng.randint(0, 3))
        kept[g.name] = idx
    return kept


# -- groups ------------------------------------------------------------------------------------

def test_groups_in_layer_order_with_channel_counts(tiny_fitness):
    space = tiny_fitness.space
    assert [(g.name, g.n_channels) for g in space.groups] == EXPECTED_GROUPS
    assert space.names == [n for n, _ in EXPECTED_GROUPS]
    # layer order = the parent's module definition order
    position = {n: i for i, (n, _) in enumerate(tiny_fitness.parent.named_modules())}
    assert [position[n] for n in space.names] == sorted(position[n] for n in space.names)
    # each group's root module really has that many output channels in the parent
    modules = dict(tiny_fitness.parent.named_modules())
    for g in space.groups:
        assert modules[g.name].weight.shape[0] == g.n_channels
        assert g.name in g.modules


def test_classifier_outputs_are_not_a_group(tiny_fitness):
    space = tiny_fitness.space
    assert "fc" not in space.names
    # fc's *inputs* are pruned with the residual group feeding it, its outputs (classes) never
    residual = space.group("layers.1.0.conv2")
    assert "fc" in residual.modules
    assert all(g.n_channels != 10 for g in space.groups)
    sub = tiny_fitness.subnet(space.uniform(keep=0.25))
    assert sub.fc.out_features == 10


def test_rankings_are_permutations_for_every_criterion(tiny_fitness):
    space = tiny_fitness.space
    configured = tiny_fitness.cfg.population.criteria
    assert set(space.criteria) == set(configured) - {"random"}
    for crit in space.criteria:
        for g in space.groups:
            assert sorted(space.ranking(crit, g.name)) == list(range(g.n_channels))


def test_same_groups_for_any_round_to(space4, tiny_fitness):
    assert [(g.name, g.n_channels) for g in space4.groups] == EXPECTED_GROUPS
    assert [g.modules for g in space4.groups] == [g.modules for g in tiny_fitness.space.groups]


# -- floors and legal counts -------------------------------------------------------------------

def test_floors_follow_config(tiny_fitness, space4):
    cfg = tiny_fitness.cfg.space
    for g in tiny_fitness.space.groups:
        assert g.floor == min(g.n_channels, max(cfg.min_channels, math.ceil(cfg.min_keep * g.n_channels)))
        assert g.legal(g.floor) and not g.legal(g.floor - 1)
    for g in space4.groups:
        assert g.round_to == 4
        assert g.floor == 4
        assert g.legal(g.floor)
    big = _space(min_keep=0.5, min_channels=3)
    assert [g.floor for g in big.groups] == [4, 4, 8, 8, 8]


@pytest.mark.parametrize("n,min_keep,min_channels,round_to,expected", [
    (16, 0.1, 2, 1, 2), (16, 0.1, 2, 4, 4), (16, 0.5, 2, 4, 8), (10, 0.5, 2, 4, 8),
    (3, 0.1, 2, 4, 3), (16, 0.9, 2, 8, 16), (8, 0.1, 5, 1, 5),
])
def test_group_floor(n, min_keep, min_channels, round_to, expected):
    floor = group_floor(n, min_keep, min_channels, round_to)
    assert floor == expected
    assert GroupSpec("g", n, floor, round_to).legal(floor)


def test_nearest_legal_is_the_closest_legal_count():
    """Brute force over many group shapes: closest legal count, ties to the larger one."""
    for n in range(1, 33):
        for round_to in (1, 2, 3, 4, 8):
            for min_channels in (1, 2, 5):
                g = GroupSpec("g", n, group_floor(n, 0.1, min_channels, round_to), round_to)
                legal = [c for c in range(n + 1) if g.legal(c)]
                assert legal and min(legal) == g.floor and max(legal) == n
                for count in range(-2, n + 5):
                    got = g.nearest_legal(count)
                    assert got in legal
                    assert got == min(legal, key=lambda c: (abs(c - count), -c)), (n, round_to, count)


def test_legal_counts_with_round_to_4(space4):
    g = space4.group("layers.1.0.conv1")  # 16 channels
    assert [c for c in range(17) if g.legal(c)] == [4, 8, 12, 16]
    assert g.nearest_legal(1) == 4
    assert g.nearest_legal(5) == 4
    assert g.nearest_legal(6) == 8  # tie goes to the larger count
    assert g.nearest_legal(15) == 16
    assert g.nearest_legal(99) == 16


# -- uniform -----------------------------------------------------------------------------------

@pytest.mark.parametrize("keep", [0.01, 0.1, 0.25, 0.3, 0.5, 0.66, 0.9, 1.0])
def test_uniform_respects_floors_and_round_to(keep, tiny_fitness, space4):
    for space in (tiny_fitness.space, space4):
        g = space.uniform(keep=keep)
        space.validate(g)
        for spec in space.groups:
            k = len(g[spec.name])
            assert k >= spec.floor
            assert k % spec.round_to == 0 or k == spec.n_channels
            assert k == spec.nearest_legal(max(1, round(keep * spec.n_channels)))


def test_uniform_keeps_the_most_important_channels(tiny_fitness):
    space = tiny_fitness.space
    for crit in space.criteria:
        g = space.uniform(keep=0.5, criterion=crit)
        for spec in space.groups:
            k = len(g[spec.name])
            assert set(g[spec.name]) == set(space.ranking(crit, spec.name)[:k])


def test_uniform_extremes(tiny_fitness):
    space = tiny_fitness.space
    assert space.uniform(keep=1.0) == space.full()
    assert all(len(space.uniform(keep=0.001)[g.name]) == g.floor for g in space.groups)
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError):
            space.uniform(keep=bad)


# -- repair ------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["round_to_1", "round_to_4"])
def test_repair_always_gives_valid_genomes(which, tiny_fitness, space4):
    space = tiny_fitness.space if which == "round_to_1" else space4
    rng = random.Random(0)
    for _ in range(300):
        kept = _random_kept(space, rng)
        g = space.repair(kept, criterion=rng.choice(space.criteria + [None]))
        space.validate(g)
        for spec in space.groups:
            k = len(g[spec.name])
            assert k % spec.round_to == 0 or k == spec.n_channels
            assert k >= spec.floor
            valid_before = {i for i in kept[spec.name] if 0 <= i < spec.n_channels}
            assert k == spec.nearest_legal(len(valid_before))
            # repair adds or drops channels, never both
            assert set(g[spec.name]) <= valid_before or set(g[spec.name]) >= valid_before


def test_repair_changes_nothing_on_valid_genomes(tiny_fitness, space4):
    rng = random.Random(1)
    for space in (tiny_fitness.space, space4):
        for _ in range(100):
            g = space.repair(_random_kept(space, rng))
            assert space.repair(g) == g
            assert space.repair(g.to_json()) == g


def test_repair_adds_and_drops_along_the_ranking(space4):
    spec = space4.group("layers.1.0.conv1")
    rank = space4.ranking("l1", spec.name)
    full = space4.full()
    # 6 channels -> 8: the two most important missing channels are added
    kept = full.with_group(spec.name, rank[:4] + rank[10:12])
    repaired = space4.repair(kept, "l1")
    assert set(repaired[spec.name]) == set(rank[:4] + rank[10:12] + rank[4:6])
    # 5 channels -> 4: the least important one is dropped
    kept = full.with_group(spec.name, rank[:5])
    assert set(space4.repair(kept, "l1")[spec.name]) == set(rank[:4])
    # 1 channel -> the floor
    kept = full.with_group(spec.name, [rank[-1]])
    assert set(space4.repair(kept, "l1")[spec.name]) == {rank[-1], *rank[:3]}


def test_repair_fills_missing_groups_and_rejects_unknown(space4):
    g = space4.repair({"stem.0": [0, 1, 2, 3]})
    assert g["stem.0"] == (0, 1, 2, 3)
    assert all(g[n] == space4.full()[n] for n in space4.names[1:])
    with pytest.raises(ValueError, match="unknown"):
        space4.repair({**space4.full().to_json(), "fc": [0, 1]})


# -- validate ----------------------------------------------------------------------------------

def test_validate_accepts_full_and_uniform(tiny_fitness, space4):
    for space in (tiny_fitness.space, space4):
        space.validate(space.full())
        space.validate(space.uniform(keep=0.4))


def test_validate_rejects_unknown_and_missing_groups(tiny_fitness):
    space = tiny_fitness.space
    full = space.full().to_json()
    with pytest.raises(ValueError, match="unknown groups: \\['fc'\\]"):
        space.validate(Genome({**full, "fc": [0, 1]}))
    missing = {k: v for k, v in full.items() if k != "stem.0"}
    with pytest.raises(ValueError, match="missing groups: \\['stem.0'\\]"):
        space.validate(Genome(missing))
    with pytest.raises(ValueError):
        space.validate(Genome({}))


@pytest.mark.parametrize("kept", [[0, 1, 8], [-1, 0, 1], [0, 1, 100]])
def test_validate_rejects_out_of_range_indices(kept, tiny_fitness):
    space = tiny_fitness.space
    with pytest.raises(ValueError, match="stem.0"):
        space.validate(space.full().with_group("stem.0", kept))


def test_validate_rejects_duplicate_indices(tiny_fitness):
    space = tiny_fitness.space
    with pytest.raises(ValueError, match="distinct"):
        space.validate(space.full().with_group("stem.0", [0, 1, 1, 2]))


def test_validate_rejects_illegal_counts(tiny_fitness, space4):
    with pytest.raises(ValueError, match="floor"):
        tiny_fitness.space.validate(tiny_fitness.space.full().with_group("stem.0", [3]))
    with pytest.raises(ValueError):
        tiny_fitness.space.validate(tiny_fitness.space.full().with_group("stem.0", []))
    for count in (1, 2, 3, 5, 6, 7, 9, 15):  # not multiples of 4 (and not the full 16)
        with pytest.raises(ValueError, match="round_to 4"):
            space4.validate(space4.full().with_group("layers.1.0.conv1", range(count)))
    for count in (4, 8, 12, 16):
        space4.validate(space4.full().with_group("layers.1.0.conv1", range(count)))


# -- JSON --------------------------------------------------------------------------------------

def test_space_json_round_trip(tiny_fitness, space4):
    for space in (tiny_fitness.space, space4):
        back = SearchSpace.from_json(json.loads(json.dumps(space.to_json())))
        assert back.groups == space.groups
        assert back.rankings == space.rankings
        assert back.names == space.names and back.criteria == space.criteria
        assert back.full() == space.full()
        assert back.uniform(keep=0.5) == space.uniform(keep=0.5)
        rng = random.Random(2)
        for _ in range(20):
            kept = _random_kept(space, rng)
            assert back.repair(kept) == space.repair(kept)
        with pytest.raises(ValueError):
            back.validate(back.full().with_group(back.names[0], [0]))


def test_every_configurable_criterion_has_an_implementation():
    from evoprune.config import CRITERIA
    from evoprune.pruning.importance import SCORERS

    assert set(SCORERS) | {"random"} == set(CRITERIA)  # 'random' draws fresh permutations instead
