"""Prune: genome -> structurally pruned copy of the parent; the parent itself is never touched."""
from __future__ import annotations

import copy
import random

import pytest
import torch

from evoprune import load_config
from evoprune.pruning.importance import build_space
from evoprune.metrics import count_params
from evoprune.parent.models import build_model
from evoprune.pruning.draw import pruned_genome
from evoprune.pruning.materialise import materialise

X = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_state(model, snapshot):
    state = model.state_dict()
    assert list(state) == list(snapshot)
    for k, v in snapshot.items():
        assert state[k].shape == v.shape, k
        assert torch.equal(state[k], v), k


def test_parent_unchanged_after_materialise(tiny_fitness):
    parent, space = tiny_fitness.parent, tiny_fitness.space
    before, n_before = _snapshot(parent), count_params(parent)
    flags = {n: p.requires_grad for n, p in parent.named_parameters()}
    training = parent.training
    with torch.no_grad():
        out_before = parent(X)
    rng = random.Random(0)
    for _ in range(5):
        g = pruned_genome(space, rng.choice(space.criteria), rng.uniform(0.2, 0.8), 0.2, rng)
        sub = materialise(parent, g, tiny_fitness.example_input)
        assert sub is not parent
        # training the subnet does not leak into the parent either
        sub.train()
        sub(X).sum().backward()
        with torch.no_grad():
            for p in sub.parameters():
                p.add_(1.0)
    _assert_same_state(parent, before)
    assert count_params(parent) == n_before
    assert {n: p.requires_grad for n, p in parent.named_parameters()} == flags
    assert parent.training == training
    with torch.no_grad():
        assert torch.equal(parent(X), out_before)
    # the space still fits the parent: full genome = the parent's size
    assert count_params(tiny_fitness.subnet(space.full())) == n_before


@pytest.mark.parametrize("keep", [0.9, 0.5, 0.25, 0.01])
def test_pruned_model_is_smaller_and_works(keep, tiny_fitness):
    space = tiny_fitness.space
    g = space.uniform(keep=keep)
    sub = tiny_fitness.subnet(g)
    assert count_params(sub) < tiny_fitness.parent_n_params
    sub.eval()
    with torch.no_grad():
        out = sub(X)
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    # the root layer of every group really has the kept number of output channels
    modules = dict(sub.named_modules())
    for name, kept in g.items():
        assert modules[name].weight.shape[0] == len(kept)


def test_fewer_channels_fewer_params(tiny_fitness):
    """Removing channels from any one group strictly shrinks the model."""
    space = tiny_fitness.space
    full = space.full()
    sizes = {}
    for s in space.groups:
        g = full.with_group(s.name, space.top_k(s.name, s.floor, "l1"))
        sizes[s.name] = count_params(tiny_fitness.subnet(g))
        assert sizes[s.name] < tiny_fitness.parent_n_params
    # and size is monotone in the kept count within a group
    s = space.group("layers.1.0.conv1")
    counts = [count_params(tiny_fitness.subnet(full.with_group(s.name, range(k))))
              for k in range(s.floor, s.n_channels + 1)]
    assert counts == sorted(counts) and len(set(counts)) == len(counts)
    assert counts[-1] == tiny_fitness.parent_n_params


def test_kept_channels_keep_their_parent_weights(tiny_fitness):
    """Kept indices are in the parent's coordinates for every group: weights are sliced, not renumbered."""
    parent, space = tiny_fitness.parent, tiny_fitness.space
    rng = random.Random(3)
    g = pruned_genome(space, "random", 0.5, 0.2, rng)
    sub = tiny_fitness.subnet(g)
    stem, b1, s2 = list(g["stem.0"]), list(g["layers.0.0.conv1"]), list(g["layers.1.0.conv1"])
    res, b2 = list(g["layers.1.0.conv2"]), list(g["layers.1.1.conv1"])
    P, S = dict(parent.named_parameters()), dict(sub.named_parameters())
    expect = {
        "stem.0.weight": P["stem.0.weight"][stem],
        "stem.1.weight": P["stem.1.weight"][stem],
        "layers.0.0.conv1.weight": P["layers.0.0.conv1.weight"][b1][:, stem],
        "layers.0.0.conv2.weight": P["layers.0.0.conv2.weight"][stem][:, b1],
        "layers.1.0.conv1.weight": P["layers.1.0.conv1.weight"][s2][:, stem],
        "layers.1.0.conv2.weight": P["layers.1.0.conv2.weight"][res][:, s2],
        "layers.1.0.shortcut.0.weight": P["layers.1.0.shortcut.0.weight"][res][:, stem],
        "layers.1.1.conv1.weight": P["layers.1.1.conv1.weight"][b2][:, res],
        "layers.1.1.conv2.weight": P["layers.1.1.conv2.weight"][res][:, b2],
        "fc.weight": P["fc.weight"][:, res],
        "fc.bias": P["fc.bias"],
    }
    for name, w in expect.items():
        assert torch.equal(S[name], w), name
    bufs = dict(sub.named_buffers())
    assert torch.equal(bufs["layers.1.1.bn1.running_mean"], dict(parent.named_buffers())["layers.1.1.bn1.running_mean"][b2])


def test_full_genome_gives_the_parent(tiny_fitness):
    space = tiny_fitness.space
    sub = tiny_fitness.subnet(space.full())
    assert count_params(sub) == tiny_fitness.parent_n_params == count_params(tiny_fitness.parent)
    _assert_same_state(sub, _snapshot(tiny_fitness.parent))
    sub.eval()
    with torch.no_grad():
        assert torch.equal(sub(X), tiny_fitness.parent(X))


def test_fitness_n_params_matches_the_subnet(tiny_fitness):
    space = tiny_fitness.space
    rng = random.Random(11)
    genomes = [space.full(), space.uniform(keep=0.3)] + \
              [pruned_genome(space, rng.choice(space.criteria), rng.uniform(0.1, 0.85), 0.1, rng) for _ in range(2)]
    objs = tiny_fitness(genomes)
    for g, o in zip(genomes, objs):
        sub = tiny_fitness.subnet(g)
        assert o.n_params == sum(p.numel() for p in sub.parameters())
        assert o.params_ratio == pytest.approx(o.n_params / tiny_fitness.parent_n_params)
    assert objs[0].n_params == tiny_fitness.parent_n_params
    assert objs[0].size_ratio == 1.0


def test_materialise_rejects_mismatched_genomes(tiny_fitness):
    parent, space, x = tiny_fitness.parent, tiny_fitness.space, tiny_fitness.example_input
    full = space.full().to_json()
    from evoprune import Genome

    # a group the genome leaves out (space.ignore) keeps all its channels; one the parent lacks is refused
    whole = materialise(parent, Genome({k: v for k, v in full.items() if k != "stem.0"}), x)
    assert whole.stem[0].out_channels == parent.stem[0].out_channels
    with pytest.raises(ValueError, match="are not groups of the parent"):
        materialise(parent, Genome({**full, "fc": [0]}), x)
    with pytest.raises(ValueError, match="at least one channel"):
        materialise(parent, Genome({**full, "stem.0": []}), x)
    # fitness.subnet validates against the space first (floors, indices)
    with pytest.raises(ValueError):
        tiny_fitness.subnet(space.full().with_group("stem.0", [0]))


# -- transfer learning: a parent with frozen layers --------------------------------------------

def _frozen_pair():
    cfg = load_config()
    torch.manual_seed(0)
    model = build_model("simple_cnn", 10, 1, 8).eval()
    frozen = copy.deepcopy(model)
    for name, p in frozen.named_parameters():
        if not name.startswith(("fc", "layers.1.1")):  # a frozen backbone, trainable last block + head
            p.requires_grad_(False)
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    example = torch.zeros(1, 1, 8, 8)
    spaces = [build_space(m, example, cfg.space, ["l1", "taylor", "bn_scale"], x, y) for m in (model, frozen)]
    return model, frozen, spaces, example


def test_frozen_parent_same_groups_and_pruning():
    model, frozen, (space, fspace), example = _frozen_pair()
    flags = {n: p.requires_grad for n, p in frozen.named_parameters()}
    assert [(g.name, g.n_channels, g.floor, g.modules) for g in fspace.groups] == \
           [(g.name, g.n_channels, g.floor, g.modules) for g in space.groups]
    assert fspace.rankings == space.rankings  # taylor too: gradients are taken despite freezing
    # tracing left the frozen flags as they were
    assert {n: p.requires_grad for n, p in frozen.named_parameters()} == flags
    before = _snapshot(frozen)
    rng = random.Random(0)
    for _ in range(3):
        g = pruned_genome(space, "l1", rng.uniform(0.2, 0.8), 0.2, rng)
        sub, fsub = materialise(model, g, example), materialise(frozen, g, example)
        assert count_params(fsub) == count_params(sub) < count_params(model)
        _assert_same_state(fsub, _snapshot(sub))
        fsub.eval()
        with torch.no_grad():
            assert fsub(X).shape == (2, 10)
    _assert_same_state(frozen, before)
    assert {n: p.requires_grad for n, p in frozen.named_parameters()} == flags


def test_frozen_parent_subnet_keeps_frozen_flags():
    model, frozen, (space, _), example = _frozen_pair()
    flags = {n: p.requires_grad for n, p in frozen.named_parameters()}
    # a genome that prunes the frozen backbone's groups
    sub = materialise(frozen, space.uniform(keep=0.5), example)
    assert {n: p.requires_grad for n, p in sub.named_parameters()} == flags


@pytest.mark.parametrize("arch", ["simple_cnn", "resnet20"])
def test_counting_macs_on_a_scratch_subnet_agrees_with_torch_prunings_counter(arch):
    from evoprune.metrics import count_macs

    channels = 1 if arch == "simple_cnn" else 3
    parent = build_model(arch, 10, channels, 4).eval()
    x = torch.randn(1, channels, 8, 8)
    space = build_space(parent, x, load_config().space, ["l1"], torch.randn(8, channels, 8, 8), torch.arange(8))
    for ratio in (0.3, 0.7):
        subnet = materialise(parent, space.uniform(ratio), x)
        expected = count_macs(subnet, x)  # torch-pruning's counter, on its own deep copy
        assert count_macs(subnet, x, scratch=True) == expected < count_macs(parent, x)
