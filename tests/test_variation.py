"""Variation: layer-swap crossover, mutation and the initial population always give valid genomes."""
from __future__ import annotations

import random

import pytest
import torch

from evoprune import load_config
from evoprune.config import CRITERIA
from evoprune.pruning.importance import build_space
from evoprune.parent.models import build_model
from evoprune.evolve.population import initial_population
from evoprune.pruning.draw import pruned_genome
from evoprune.evolve.variation import CROSSOVERS, crossover, mutate

SEEDS = range(200)


@pytest.fixture(scope="module")
def space4():
    """The space of an untrained width-8 simple_cnn with round_to=4, every criterion ranked."""
    cfg = load_config(overrides=["space.round_to=4"])
    torch.manual_seed(0)
    model = build_model("simple_cnn", 10, 1, 8).eval()
    return build_space(model, torch.zeros(1, 1, 8, 8), cfg.space, list(CRITERIA),
                       torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,)))


@pytest.fixture(params=["round_to_1", "round_to_4"])
def space(request, tiny_fitness, space4):
    return tiny_fitness.space if request.param == "round_to_1" else space4


def _parent(space, rng: random.Random):
    return pruned_genome(space, rng.choice(list(CRITERIA)), rng.uniform(0.0, 0.9), 0.2, rng)


def _distinct_parents(space, rng: random.Random):
    """Two valid genomes that differ in every group, so a child's source per group is unambiguous."""
    while True:
        a, b = _parent(space, rng), _parent(space, rng)
        if all(a[n] != b[n] for n in space.names):
            return a, b


def _sources(child, a, b, names) -> str:
    """'A'/'B' per group: which parent the child's group was taken from."""
    out = ""
    for n in names:
        assert child[n] in (a[n], b[n]), f"group {n} comes from neither parent"
        out += "A" if child[n] == a[n] else "B"
    return out


@pytest.mark.parametrize("kind", CROSSOVERS)
def test_crossover_children_are_valid(kind, space):
    for seed in SEEDS:
        rng = random.Random(seed)
        a, b = _parent(space, rng), _parent(space, rng)
        for child in crossover(a, b, space, kind, rng):
            space.validate(child)


@pytest.mark.parametrize("kind", CROSSOVERS)
def test_crossover_is_a_layer_swap(kind, space):
    """Every group of a child is that group of one parent; the two children are complementary."""
    for seed in SEEDS:
        rng = random.Random(seed)
        a, b = _parent(space, rng), _parent(space, rng)
        c1, c2 = crossover(a, b, space, kind, rng)
        for n in space.names:
            assert c1[n] in (a[n], b[n])
            assert c2[n] in (a[n], b[n])
            assert sorted([c1[n], c2[n]]) == sorted([a[n], b[n]])


def test_one_point_takes_two_contiguous_runs(space):
    n = len(space.names)
    cuts = set()
    for seed in SEEDS:
        rng = random.Random(seed)
        a, b = _distinct_parents(space, rng)
        c1, c2 = crossover(a, b, space, "one_point", rng)
        s1 = _sources(c1, a, b, space.names)
        assert s1 == "A" * s1.count("A") + "B" * s1.count("B"), s1
        assert 1 <= s1.count("A") <= n - 1  # the cut is inside: each parent gives at least one group
        assert _sources(c2, a, b, space.names) == s1.translate(str.maketrans("AB", "BA"))
        cuts.add(s1.count("A"))
    assert cuts == set(range(1, n))  # every cut point occurs


def test_two_point_swaps_one_contiguous_segment(space):
    n = len(space.names)
    segments = set()
    for seed in SEEDS:
        rng = random.Random(seed)
        a, b = _distinct_parents(space, rng)
        c1, c2 = crossover(a, b, space, "two_point", rng)
        s1 = _sources(c1, a, b, space.names)
        i, j = s1.find("B"), s1.rfind("B") + 1
        assert i >= 0, "two-point crossover swapped nothing"
        assert s1 == "A" * i + "B" * (j - i) + "A" * (n - j), s1
        assert _sources(c2, a, b, space.names) == s1.translate(str.maketrans("AB", "BA"))
        segments.add((i, j))
    assert len(segments) >= n  # many different segments occur


def test_uniform_crossover_mixes_groups_freely(space):
    patterns = set()
    for seed in SEEDS:
        rng = random.Random(seed)
        a, b = _distinct_parents(space, rng)
        c1, _ = crossover(a, b, space, "uniform", rng)
        patterns.add(_sources(c1, a, b, space.names))
    # non-contiguous patterns occur too (e.g. ABAB...), and most of the 2^n patterns are seen
    assert any("ABA" in p and "BAB" in p for p in patterns)
    assert len(patterns) >= 2 ** len(space.names) // 2


def test_crossover_of_identical_parents_returns_them(space):
    g = space.uniform(keep=0.5)
    for kind in CROSSOVERS:
        assert crossover(g, g, space, kind, random.Random(0)) == (g, g)


def test_unknown_crossover_kind(space):
    g = space.full()
    with pytest.raises(ValueError, match="unknown crossover"):
        crossover(g, g, space, "three_point", random.Random(0))


@pytest.mark.parametrize("criteria", [list(CRITERIA), ["random"], ["l1", "taylor"]])
@pytest.mark.parametrize("share", [1e-9, 0.25, 1.0])
def test_mutate_gives_valid_genomes(criteria, share, space):
    changed = 0
    for seed in SEEDS:
        rng = random.Random(seed)
        g = _parent(space, rng)
        child = mutate(g, space, rng, share, criteria)
        space.validate(child)
        changed += child != g
    assert changed >= len(SEEDS) // 2  # mutation usually changes the genome


def test_mutate_at_the_floors_and_at_full_width(space):
    floors = space.uniform(keep=1e-6)
    for seed in SEEDS:
        rng = random.Random(seed)
        for g in (floors, space.full()):
            child = mutate(g, space, rng, 1.0, list(CRITERIA))
            space.validate(child)
            assert all(len(child[s.name]) >= s.floor for s in space.groups)


def test_mutate_with_tiny_share_touches_one_group(space):
    for seed in SEEDS:
        rng = random.Random(seed)
        g = _parent(space, rng)
        child = mutate(g, space, rng, 1e-9, ["l1", "random"])
        assert sum(child[n] != g[n] for n in space.names) <= 1


def test_mutate_does_not_change_its_input(space):
    g = space.uniform(keep=0.5)
    before = g.to_json()
    for seed in range(20):
        mutate(g, space, random.Random(seed), 1.0, list(CRITERIA))
    assert g.to_json() == before


def test_variation_is_reproducible(space):
    def run(seed):
        rng = random.Random(seed)
        a, b = _parent(space, rng), _parent(space, rng)
        kids = crossover(a, b, space, "two_point", rng)
        return [k.key() for k in kids] + [mutate(kids[0], space, rng, 0.25, list(CRITERIA)).key()]

    assert run(7) == run(7)


# -- the initial population --------------------------------------------------------------------

def test_initial_population_distinct_valid_spread(tiny_fitness, space4):
    pop_cfg = tiny_fitness.cfg.population
    assert pop_cfg.criteria == CRITERIA
    for space in (tiny_fitness.space, space4):
        for seed in range(5):
            pop = initial_population(space, pop_cfg, 14, random.Random(seed))
            assert len(pop) == 14
            genomes = [g for g, _ in pop]
            assert len({g.key() for g in genomes}) == len(genomes)
            assert len(set(genomes)) == len(genomes)
            for g in genomes:
                space.validate(g)
            # every configured criterion is an origin
            assert {origin for _, origin in pop} == set(pop_cfg.criteria)
            # sizes span small to large subnets
            ratios = [space.keep_ratio(g) for g in genomes]
            assert min(ratios) < 0.4 and max(ratios) > 0.7, ratios
            assert len({round(r, 3) for r in ratios}) >= 7


def test_initial_population_criteria_take_turns(tiny_fitness):
    space = tiny_fitness.space
    for criteria in (["l1"], ["l2", "random"], ["taylor", "fpgm", "bn_scale"]):
        pop_cfg = load_config(overrides=[f"population.criteria={criteria}"]).population
        pop = initial_population(space, pop_cfg, 12, random.Random(0))
        assert len(pop) == 12
        assert [o for _, o in pop] == [criteria[i % len(criteria)] for i in range(12)]
        for g, origin in pop:
            space.validate(g)
            if origin != "random":  # a criterion keeps its most important channels
                for s in space.groups:
                    assert g[s.name] == space.top_k(s.name, len(g[s.name]), origin)


def test_initial_population_ratio_range(tiny_fitness):
    space = tiny_fitness.space
    narrow = load_config(overrides=["population.ratio_min=0.5", "population.ratio_max=0.5",
                                    "population.jitter=0.0", "population.criteria=[random]"]).population
    pop = initial_population(space, narrow, 10, random.Random(0))
    for g, _ in pop:  # every group pruned by exactly half
        assert g.widths() == {s.name: s.n_channels // 2 for s in space.groups}


def test_initial_population_reproducible(tiny_fitness):
    space, pop_cfg = tiny_fitness.space, tiny_fitness.cfg.population
    a = initial_population(space, pop_cfg, 10, random.Random(3))
    b = initial_population(space, pop_cfg, 10, random.Random(3))
    assert [(g.key(), o) for g, o in a] == [(g.key(), o) for g, o in b]


def test_initial_population_in_a_tiny_space_returns_fewer_distinct():
    """A space with few possible genomes gives fewer individuals rather than duplicates."""
    from evoprune.pruning.space import GroupSpec, SearchSpace

    space = SearchSpace([GroupSpec("a", 2, 1, 1), GroupSpec("b", 2, 2, 1)], {"l1": {"a": [0, 1], "b": [1, 0]}})
    pop_cfg = load_config(overrides=["population.criteria=[l1]"]).population
    pop = initial_population(space, pop_cfg, 6, random.Random(0))
    keys = [g.key() for g, _ in pop]
    assert 1 <= len(pop) <= 2 and len(set(keys)) == len(keys)
    for g, _ in pop:
        space.validate(g)


def test_uniform_seeds_open_the_initial_population(space):
    cfg = load_config(overrides=["population.uniform=0.5"]).population
    pop = initial_population(space, cfg, 16, random.Random(0))
    assert len({g.key() for g, _ in pop}) == len(pop) == 16
    uniform = {}  # torch-pruning's uniform sweep, ratios evenly spaced, criteria in turn (duplicates once)
    for i in range(8):
        criterion = cfg.criteria[i % len(cfg.criteria)]
        genome = space.uniform(1.0 - (cfg.ratio_min + (cfg.ratio_max - cfg.ratio_min) * (i + 0.5) / 8), criterion)
        uniform.setdefault(genome.key(), (genome, criterion))
    assert pop[:len(uniform)] == list(uniform.values()) and len(uniform) >= 6
    without = load_config(overrides=["population.uniform=0"]).population
    assert initial_population(space, without, 16, random.Random(0)) == initial_population(
        space, load_config().population, 16, random.Random(0))  # the default draws as before
