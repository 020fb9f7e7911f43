"""`evoprune.search(model, train, val)`: the documented Python front door on a user's own class and data, its
run directory read back in this process and in another one, exported, resumed; clear errors where it cannot go on."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import run_cli
from torch import nn
from torch.utils.data import TensorDataset

import evoprune
from evoprune.deploy.export import export, load_exported
from evoprune.run.files import PARENT_WEIGHTS, PYTHON_INPUTS

SETS = ["fitness.steps=3", "fitness.batch_size=32", "fitness.finetune_samples=128", "fitness.val_samples=96",
        "search.population=4", "search.offspring=4", "search.patience=0", "evaluator.kind=sequential",
        "evaluator.workers=1"]

USER_MODULE = textwrap.dedent('''
    import torch
    from sklearn.datasets import load_digits
    from torch import nn
    from torch.utils.data import TensorDataset

    class Hooked(nn.Module):
        """A user's own class: a residual add, a named head, not one of evoprune's architectures."""
        def __init__(self, classes=10):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU())
            self.body = nn.Sequential(nn.Conv2d(12, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU())
            self.widen = nn.Sequential(nn.Conv2d(12, 24, 3, stride=2, padding=1), nn.BatchNorm2d(24), nn.ReLU())
            self.decide = nn.Linear(24, classes)

        def forward(self, x):
            h = self.stem(x)
            h = h + self.body(h)
            return self.decide(self.widen(h).mean((2, 3)))

    def splits():
        d = load_digits()
        x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
        y = torch.tensor(d.target)
        return TensorDataset(x[:1200], y[:1200]), (x[1200:1500], y[1200:1500]), TensorDataset(x[1500:], y[1500:])

    def trained():
        torch.manual_seed(0)
        model, (train, _, _) = Hooked(), splits()
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        x, y = train.tensors
        for _ in range(60):
            rows = torch.randint(0, len(y), (64,))
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[rows]), y[rows]).backward()
            opt.step()
        return model.eval()
''')


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """The user's module (importable, so its class pickles by reference), their trained model and data."""
    root = tmp_path_factory.mktemp("user")
    (root / "mymodels.py").write_text(USER_MODULE)
    sys.path.insert(0, str(root))
    try:
        import mymodels

        yield root, mymodels, mymodels.trained(), mymodels.splits()
    finally:
        sys.path.remove(str(root))


@pytest.fixture(scope="module")
def searched(user, tmp_path_factory):
    _, _, model, (train, val, test) = user
    before = copy.deepcopy(model.state_dict())
    out = tmp_path_factory.mktemp("runs") / "mine"
    run = evoprune.search(model, train, val, test=test, overrides=SETS + ["search.generations=2"], out=out,
                          progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # never trained or moved
    return run


def test_search_writes_a_run_whose_front_is_non_dominated_and_smaller(searched):
    front = searched.front
    assert front and all(m["size_ratio"] < 1.0 or m["accuracy"] > 0 for m in front)
    for a in front:
        assert not any(b["accuracy"] >= a["accuracy"] and b["size_ratio"] <= a["size_ratio"] and b is not a
                       and (b["accuracy"], b["size_ratio"]) != (a["accuracy"], a["size_ratio"]) for b in front)
    given = json.loads((searched.dir / PYTHON_INPUTS).read_text())
    assert given["model_class"] == "mymodels.Hooked" and given["test_given"]
    assert (searched.dir / PARENT_WEIGHTS).is_file()  # the weights, never the class: nothing is pickled
    for name in ("front.json", "evaluations.csv", "history.csv", "pareto.png", "checkpoint.json"):
        assert (searched.dir / name).is_file(), name


def test_the_run_rebuilds_and_exports_what_the_front_said(user, searched, tmp_path):
    k = len(searched.front) - 1
    model = searched.subnet(k)
    assert sum(p.numel() for p in model.parameters()) == searched.front[k]["n_params"]
    assert searched.val_accuracy(model) == pytest.approx(searched.front[k]["accuracy"], abs=1e-9)
    meta = export(searched, k, tmp_path / "exp")
    assert meta["val_accuracy"] == pytest.approx(searched.front[k]["accuracy"], abs=1e-9)
    assert meta["preprocessing"] is None and meta["n_classes"] == 10
    with pytest.raises(ValueError, match="parent=an instance"):
        load_exported(tmp_path / "exp")
    reloaded = load_exported(tmp_path / "exp", parent=user[1].Hooked())  # any instance: the weights are the export's
    x = searched.task_data().test_x[:8]
    with torch.no_grad():
        assert torch.equal(reloaded(x), model(x))


def test_another_process_reloads_the_run_with_an_untrained_instance_and_the_data_given_again(user, searched):
    root, *_ = user
    script = textwrap.dedent(f'''
        import sys
        sys.path.insert(0, {str(root)!r})
        import evoprune, mymodels
        train, val, test = mymodels.splits()
        run = evoprune.load_run({str(searched.dir)!r}, model=mymodels.Hooked(), train=train, val=val, test=test)
        k = len(run.front) - 1
        print(type(run.parent()).__name__, run.val_accuracy(run.subnet(k)) == run.front[k]["accuracy"])
    ''')
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["Hooked", "True"]


def test_the_cli_says_in_one_line_that_the_data_are_in_python(searched, tmp_path):
    code, out, err = run_cli(["export", str(searched.dir), "--pick", "0", "--out", str(tmp_path / "e")])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "evoprune.load_run(run_dir, train=..., val=..." in err
    code, out, err = run_cli(["report", str(searched.dir)])  # reading the files needs no data
    assert code == 0


def test_resume_continues_to_the_same_front_as_an_uninterrupted_search(user, searched, tmp_path):
    _, _, model, (train, val, test) = user
    part = evoprune.search(model, train, val, overrides=SETS + ["search.generations=1"], out=tmp_path / "r",
                           progress=False)
    assert part.dir == tmp_path / "r"
    whole = evoprune.search(model, train, val, overrides=SETS + ["search.generations=2"], out=tmp_path / "r",
                            resume=True, progress=False)
    assert [m["key"] for m in whole.front] == [m["key"] for m in searched.front]
    assert [m["accuracy"] for m in whole.front] == [m["accuracy"] for m in searched.front]
    with pytest.raises(FileExistsError, match="resume=True"):
        evoprune.search(model, train, val, overrides=SETS, out=tmp_path / "r", progress=False)
    with pytest.raises(ValueError, match="fitness.steps"):
        evoprune.search(model, train, val, overrides=SETS + ["fitness.steps=4"], out=tmp_path / "r", resume=True,
                        progress=False)


def test_a_class_defined_in_a_function_reloads_from_an_instance_given_again(user, tmp_path):
    _, mymodels, model, (train, val, _) = user

    class Local(nn.Module):  # defined in a function: no file could name it, the user gives an instance
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    evoprune.search(Local(copy.deepcopy(model)), train, val, overrides=SETS + ["search.generations=1"],
                    out=tmp_path / "l", progress=False)
    with pytest.raises(ValueError, match="model=..."):
        evoprune.load_run(tmp_path / "l", train=train, val=val).parent()
    run = evoprune.load_run(tmp_path / "l", model=Local(mymodels.Hooked()), train=train, val=val)  # untrained
    assert run.val_accuracy(run.subnet(0)) == pytest.approx(run.front[0]["accuracy"], abs=1e-9)


def test_load_run_refuses_python_objects_for_a_cli_run(tiny_run):
    with pytest.raises(ValueError, match="evoprune.search"):
        evoprune.load_run(tiny_run, train=(torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long)))


def test_bad_input_is_one_clear_error(user, tmp_path):
    _, _, model, (train, val, _) = user
    with pytest.raises(TypeError, match="expected a torch.nn.Module"):
        evoprune.search("resnet18", train, val, out=tmp_path / "x", progress=False)
    with pytest.raises(TypeError, match="expected a torch Dataset"):
        evoprune.search(model, 42, val, out=tmp_path / "x", progress=False)
    with pytest.raises(TypeError, match=r"train\[.\] is int, expected an \(input, label\) pair"):
        evoprune.search(model, [1, 2, 3], val, out=tmp_path / "x", progress=False)
    with pytest.raises(evoprune.ConfigError):
        evoprune.search(model, train, val, overrides=["search.population=-1"], out=tmp_path / "x", progress=False)


def test_distill_trains_a_front_member_on_the_given_data(searched):
    from evoprune.config import apply_overrides, config_from_dict
    from evoprune.deploy import run_distill

    cfg = config_from_dict(apply_overrides(searched.config.to_dict(), ["distill.epochs=1"]))
    res = run_distill(searched, cfg, 0)
    assert res["test"]["n_samples"] == len(searched.given.test) and 0.0 <= res["test_accuracy"] <= 1.0
    model = searched.subnet(0, "distilled")  # its weights load into front member 0's pruned shapes
    assert sum(p.numel() for p in model.parameters()) == searched.front[0]["n_params"] == res["test"]["n_params"]
