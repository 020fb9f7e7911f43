"""Fitness.from_model: a user's own classifier class and data (Datasets or tensors), through the documented API."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from evoprune import Fitness, load_config
from evoprune.evolve import Search

CFG = ["fitness.steps=3", "fitness.batch_size=32", "fitness.finetune_samples=128", "fitness.val_samples=96",
       "search.population=4", "search.offspring=4", "search.generations=1", "search.patience=0"]


class GateNet(nn.Module):
    """A user's own model: not one of evoprune's architectures, with a residual add and a named head."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(12, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU())
        self.widen = nn.Sequential(nn.Conv2d(12, 24, 3, stride=2, padding=1), nn.BatchNorm2d(24), nn.ReLU())
        self.decide = nn.Linear(24, classes)

    def forward(self, x):
        h = self.stem(x)
        h = h + self.body(h)
        return self.decide(self.widen(h).mean((2, 3)))


@pytest.fixture(scope="module")
def digits():
    """Digits 8x8 as (x, y) tensors: train and val."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target)
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


@pytest.fixture(scope="module")
def trained(digits):
    torch.manual_seed(0)
    model = GateNet()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    (x, y), _ = digits
    for step in range(60):
        rows = torch.randint(0, len(y), (64,))
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[rows]), y[rows]).backward()
        opt.step()
    return model.eval()


class Generated(Dataset):
    """A Dataset far longer than memory would hold as tensors: items made on demand, reads counted."""

    def __init__(self, length: int, source):
        self.length, (self.x, self.y), self.reads = length, source, 0

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        self.reads += 1
        return self.x[i % len(self.x)], int(self.y[i % len(self.y)])


def test_own_model_class_and_tensors_give_a_working_fitness_and_search(trained, digits):
    train, val = digits
    before = copy.deepcopy(trained.state_dict())
    fitness = Fitness.from_model(trained, train, val, load_config(overrides=CFG))
    assert fitness.parent_meta["class"].endswith("GateNet") and fitness.data.n_classes == 10
    assert fitness.parent_accuracy > 0.5  # the user's trained model, scored on their validation rows
    [half] = fitness([fitness.space.uniform(0.5)])
    assert half.size_ratio < 0.6 and 0.0 <= half.accuracy <= 1.0 and half.valid
    state = Search(fitness, progress=False, log=lambda line: None).run()
    front = [r.objectives for r in state.front()]
    assert front and all(o.size_ratio <= 1.0 for o in front)
    # the user's model is neither trained, changed nor moved
    assert all(torch.equal(before[k], v) for k, v in trained.state_dict().items()) and not trained.training


def test_datasets_are_read_only_at_the_staged_rows(trained, digits):
    train, val = digits
    big = Generated(1_000_000, train)
    fitness = Fitness.from_model(trained, big, TensorDataset(*val), load_config(overrides=CFG))
    assert big.reads == 256  # max(fitness.finetune_samples, the 256 calibration rows), not a million
    assert len(fitness.task.val_y) == 96 and len(fitness.task.ft_y) == 128
    again = Fitness.from_model(trained, Generated(1_000_000, train), TensorDataset(*val), load_config(overrides=CFG))
    assert torch.equal(again.task.ft_x, fitness.task.ft_x)  # the staged rows are seeded


@pytest.mark.parametrize("bad, message", [
    (lambda t, v: (iter(t), v), "train is tuple_iterator, expected a torch Dataset"),
    (lambda t, v: ([1, 2, 3], v), r"train\[0\] is int, expected an \(input, label\) pair"),
    (lambda t, v: ((t[0], t[1][:5]), v), "x has 1400 rows but y has 5"),
    (lambda t, v: (TensorDataset(t[0], t[1].float()), v), "label(s)? (is|are)"),
    (lambda t, v: ([(x.numpy(), 0) for x in t[0][:300]], v), "expected a tensor"),
    (lambda t, v: (t, (v[0][:, :, :4], v[1])), "but val inputs"),
])
def test_bad_data_is_one_clear_error(trained, digits, bad, message):
    train, val = bad(*digits)
    with pytest.raises((TypeError, ValueError), match=message) as err:
        Fitness.from_model(trained, train, val, load_config(overrides=CFG))
    assert "\n" not in str(err.value)


def test_a_model_that_is_not_a_classifier_is_refused(digits):
    train, val = digits
    with pytest.raises(ValueError, match=r"class logits of shape \(batch, classes\)"):
        Fitness.from_model(nn.Conv2d(1, 4, 3), train, val, load_config(overrides=CFG))
    with pytest.raises(ValueError, match="3 outputs but the data have labels up to 9"):
        Fitness.from_model(GateNet(classes=3), train, val, load_config(overrides=CFG))
    with pytest.raises(ValueError, match=r"model failed on a batch of train inputs of shape \(2, 1, 8, 8\): RuntimeError"):
        Fitness.from_model(nn.Sequential(nn.Flatten(), nn.Linear(3, 10)), train, val, load_config(overrides=CFG))
    with pytest.raises(TypeError, match="expected a torch.nn.Module"):
        Fitness.from_model("resnet18", train, val)
