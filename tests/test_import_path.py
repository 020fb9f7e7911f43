"""The CLI takes a user's own model (`parent.arch: pkg.mod:build`, `parent.kwargs`) and data (`data.name: python`,
`data.factory`) by import path; what cannot be imported or returns the wrong thing is one line and exit 2."""
from __future__ import annotations

import json
import textwrap

import pytest
from conftest import TINY, run_cli

from evoprune import ConfigError, load_config, load_run

MODELS = textwrap.dedent('''
    import torch
    from torch import nn

    class TwoStage(nn.Module):
        """Not one of evoprune's architectures: a user's class with its own head."""
        def __init__(self, width=8, classes=10, channels=1):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                          nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
                                          nn.BatchNorm2d(2 * width), nn.ReLU())
            self.head = nn.Linear(2 * width, classes)

        def forward(self, x):
            return self.head(self.features(x).mean((2, 3)))

    def build(width=8, classes=10):
        return TwoStage(width, classes)

    def not_a_model():
        return "resnet18"

    def needs_depth(depth):
        return TwoStage()
''')
DATA = textwrap.dedent('''
    import torch
    from sklearn.datasets import load_digits
    from torch.utils.data import TensorDataset

    def make():
        d = load_digits()
        x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
        y = torch.tensor(d.target)
        return TensorDataset(x[:1200], y[:1200]), (x[1200:1500], y[1200:1500]), TensorDataset(x[1500:], y[1500:])

    def two_splits():
        return make()[:2]
''')


@pytest.fixture
def user_code(tmp_path, monkeypatch):
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(MODELS)
    (pkg / "data.py").write_text(DATA)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def sets(*items: str) -> list[str]:
    return [f"--set={o}" for o in [*TINY, *items] if not o.startswith("parent.width")]


def test_own_model_and_data_by_import_path_search_and_reload(user_code, tmp_path):
    out = tmp_path / "run"
    rc, _, err = run_cli(["search", "--out", out, "--quiet",
                          *sets("parent.arch=userpkg.models:build", "parent.kwargs.width=6",
                                "data.name=python", "data.factory=userpkg.data:make")])
    assert rc == 0, err
    run = load_run(out)
    assert run.config.parent.kwargs == {"width": 6} and run.task["n_classes"] == 10
    parent = run.parent()
    assert type(parent).__name__ == "TwoStage" and parent.head.in_features == 12  # kwargs reached the builder
    model = run.subnet(0)
    assert sum(p.numel() for p in model.parameters()) <= sum(p.numel() for p in parent.parameters())
    front = json.loads((out / "front.json").read_text())["front"]
    assert abs(run.val_accuracy(model) - front[0]["accuracy"]) < 1e-6  # the user's splits, loaded again


@pytest.mark.parametrize("items, message", [
    (["parent.arch=nosuchpkg.models:build"], "parent.arch: cannot import nosuchpkg.models (ModuleNotFoundError"),
    (["parent.arch=userpkg.models:nothing"], "parent.arch: userpkg.models has no nothing"),
    (["parent.arch=userpkg.models:not_a_model"], "returned a str, not a torch.nn.Module"),
    (["parent.arch=userpkg.models:needs_depth"], "needs_depth(**{}) failed: TypeError"),
    (["parent.arch=userpkg.models:build", "parent.kwargs.classes=3"], "must return class logits of shape (batch, 10)"),
    (["parent.arch=userpkg.models build"], "parent.arch: expected"),
    (["parent.kwargs.width=6"], "parent.kwargs: applies to an import-path parent.arch"),
    (["data.name=python"], "data.factory: required for data.name=python"),
    (["data.name=python", "data.factory=userpkg.data:two_splits"], "returned tuple, expected (train, val, test)"),
    (["data.factory=userpkg.data:make"], "data.factory: applies to data.name=python only"),
])
def test_what_cannot_be_used_is_one_line_and_exit_2(user_code, tmp_path, items, message):
    rc, _, err = run_cli(["search", "--out", tmp_path / "run", "--quiet", *sets(*items)])
    assert rc == 2 and message in err and err.count("\n") == 1, err


def test_kwargs_is_a_mapping_of_argument_names():
    cfg = load_config(overrides=["parent.arch=a.b:c", "parent.kwargs={width: 4, name: x}"])
    assert cfg.parent.kwargs == {"width": 4, "name": "x"}
    for bad in ("[1, 2]", "{1: 2}", "{'not a name': 2}"):
        with pytest.raises(ConfigError, match="parent.kwargs: expected a mapping"):
            load_config(overrides=["parent.arch=a.b:c", f"parent.kwargs={bad}"])
