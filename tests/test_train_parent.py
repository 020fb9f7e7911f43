"""Transfer learning: the frozen-backbone head phase, `train-parent` writing parent.pt / parent.json,
and searches reusing that parent (by --out, or by parent.weights)."""
from __future__ import annotations

import json
from urllib.error import URLError

import torch
import torchvision
from conftest import run_cli

import evoprune.parent.train
from evoprune import load_config, load_run
from evoprune.data.task import load_data
from evoprune.parent.models import build_model, classifier_of
from evoprune.parent.train import frozen_epochs, train_epochs, train_parent

TINY_PARENT = ["parent.width=4", "parent.epochs=1", "data.max_train_samples=120", "data.max_eval_samples=60"]
TINY_SEARCH = ["search.population=4", "search.offspring=4", "search.generations=1", "fitness.steps=2",
               "fitness.batch_size=16", "fitness.finetune_samples=32", "population.criteria=[l1,random]",
               "evaluator.kind=sequential"]


def _cli(*argv) -> tuple[int, str, str]:
    return run_cli(list(argv))


def _sets(items):
    return [arg for item in items for arg in ("--set", item)]


def test_head_phase_trains_only_the_head_and_keeps_batchnorm_statistics():
    data = load_data(load_config(overrides=TINY_PARENT).data, seed=0)
    torch.manual_seed(0)
    model = build_model("simple_cnn", 10, 1, 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    head = list(classifier_of(model).parameters())
    for p in model.parameters():
        p.requires_grad_(any(p is h for h in head))
    train_epochs(model, head, data, 1, 0.05, 32, torch.Generator().manual_seed(0), torch.device("cpu"), "head",
            False, head_only=True)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"fc.weight", "fc.bias"}  # nor any BatchNorm running statistic


def test_train_parent_runs_both_phases_and_leaves_everything_trainable():
    data = load_data(load_config(overrides=TINY_PARENT).data, seed=0)
    torch.manual_seed(0)
    model = build_model("simple_cnn", 10, 1, 4)
    before = model.stem[0].weight.clone()
    train_parent(model, data, epochs=1, lr=0.05, batch_size=32, seed=0, progress=False, frozen_epochs=1)
    assert all(p.requires_grad for p in model.parameters()) and not model.training
    assert not torch.equal(before, model.stem[0].weight)


def test_frozen_epochs_default_depends_on_pretrained():
    assert frozen_epochs(load_config()) == 0
    assert frozen_epochs(load_config(overrides=["parent.arch=resnet18", "parent.pretrained=imagenet"])) == 3
    assert frozen_epochs(load_config(overrides=["parent.frozen_epochs=2"])) == 2


def test_train_parent_command_then_search_reuses_the_parent(tmp_path):
    out = tmp_path / "parent"
    rc, stdout, err = _cli("train-parent", "--out", out, "--quiet", *_sets(TINY_PARENT))
    assert rc == 0, err
    assert "val acc" in stdout and sorted(p.name for p in out.iterdir()) == ["parent.json", "parent.pt"]
    meta = json.loads((out / "parent.json").read_text())
    assert meta["source"] == "trained" and 0.0 <= meta["val_accuracy"] <= 1.0 and meta["arch"] == "simple_cnn"
    weights = (out / "parent.pt").read_bytes()

    rc, stdout, _ = _cli("train-parent", "--out", out, "--quiet", *_sets(TINY_PARENT))  # same settings
    assert rc == 0 and "(cached)" in stdout and (out / "parent.pt").read_bytes() == weights

    rc, _, err = _cli("train-parent", "--out", out, "--quiet", *_sets(TINY_PARENT + ["parent.lr=0.01"]))
    assert rc == 2 and "other settings (lr: 0.05 there, 0.01 now)" in err and "--force" in err

    rc, _, err = _cli("search", "--out", out, "--quiet", *_sets(TINY_PARENT + TINY_SEARCH + ["seed=1"]))
    assert rc == 2 and "other settings (seed" in err  # a search never silently replaces a trained parent

    rc, stdout, err = _cli("search", "--out", out, "--quiet", *_sets(TINY_PARENT + TINY_SEARCH))
    assert rc == 0, err
    assert "(cached)" in stdout and (out / "parent.pt").read_bytes() == weights
    assert load_run(out).subnet(0)(torch.zeros(1, 1, 8, 8)).shape == (1, 10)

    other = tmp_path / "other"  # or by path, from any run directory
    rc, stdout, err = _cli("search", "--out", other, "--quiet", *_sets(TINY_PARENT + TINY_SEARCH),
                           "--set", f"parent.weights={out / 'parent.pt'}")
    assert rc == 0, err
    assert f"({out / 'parent.pt'})" in stdout


def test_train_parent_refuses_a_non_empty_directory_and_needless_work(tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    rc, _, err = _cli("train-parent", "--out", busy, "--quiet", *_sets(TINY_PARENT))
    assert rc == 2 and "not empty" in err and sorted(p.name for p in busy.iterdir()) == ["notes.txt"]
    rc, _, err = _cli("train-parent", "--out", tmp_path / "p", "--set", "parent.weights=x.pt")
    assert rc == 2 and "nothing to train" in err
    rc, _, err = _cli("train-parent", "--quiet")
    assert rc == 2 and "--out" in err


def test_train_parent_pretrained_offline_is_one_line_exit_2(tmp_path, monkeypatch):
    def refuse(url, *args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", refuse)
    rc, _, err = _cli("train-parent", "--out", tmp_path / "p", "--quiet", "--set", "parent.arch=resnet18",
                      "--set", "parent.pretrained=imagenet", "--set", "data.image_size=16",
                      *_sets(TINY_PARENT[1:]))
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "resnet18-f37072fd.pth" in lines[0] and "checkpoints" in lines[0]
    assert not (tmp_path / "p").exists()


def test_pretrained_parent_is_transfer_learned_from_the_cached_imagenet_weights(tmp_path, monkeypatch):
    torch.manual_seed(2)
    imagenet = torchvision.models.mobilenet_v2(weights=None).state_dict()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(imagenet, tmp_path / "hub" / "checkpoints" / "mobilenet_v2-7ebf99e0.pth")
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    started = {}

    def spy(model, *args, **kwargs):
        started["stem"] = model.features[0][0].weight.detach().clone()
        started["frozen_epochs"] = kwargs["frozen_epochs"]
        return real(model, *args, **kwargs)

    real = evoprune.parent.train.train_parent
    monkeypatch.setattr(evoprune.parent.train, "train_parent", spy)
    out = tmp_path / "p"
    rc, stdout, err = _cli("train-parent", "--out", out, "--quiet", "--set", "parent.arch=mobilenet_v2",
                           "--set", "parent.pretrained=imagenet", "--set", "parent.frozen_epochs=1",
                           "--set", "data.image_size=16", *_sets(TINY_PARENT[1:]))
    assert rc == 0, err
    meta = json.loads((out / "parent.json").read_text())
    assert meta["pretrained"] == "imagenet" and meta["frozen_epochs"] == 1
    state = torch.load(out / "parent.pt", weights_only=True)
    assert state["classifier.1.weight"].shape == (10, 1280)
    assert torch.equal(started["stem"], imagenet["features.0.0.weight"]) and started["frozen_epochs"] == 1


def test_early_stopping_keeps_the_best_epoch_and_stops_after_patience(monkeypatch):
    data = load_data(load_config(overrides=TINY_PARENT).data, seed=0)
    scores = iter([0.5, 0.9, 0.8, 0.7, 0.95])  # validation accuracy after each epoch
    snapshots = []

    def fake_accuracy(model, x, y):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scores)

    monkeypatch.setattr(evoprune.parent.train, "accuracy", fake_accuracy)
    torch.manual_seed(0)
    model = build_model("simple_cnn", 10, 1, 4)
    model, trained = train_parent(model, data, epochs=10, lr=0.05, batch_size=32, seed=0, progress=False,
                                  patience=2)
    assert trained == 4  # epoch 2 was the best; epochs 3 and 4 did not improve on it
    best = snapshots[1]
    assert all(torch.equal(v, best[k]) for k, v in model.state_dict().items())


def test_the_cached_parent_records_the_epochs_it_trained(tmp_path):
    rc, _, err = _cli("train-parent", "--out", tmp_path / "p", "--quiet", *_sets(TINY_PARENT + ["parent.epochs=2"]))
    assert rc == 0, err
    meta = json.loads((tmp_path / "p" / "parent.json").read_text())
    assert 1 <= meta["epochs_trained"] <= 2 and meta["patience"] == 5


def test_a_parent_trained_on_another_split_is_refused(tmp_path):
    """Seed 1 splits the data differently: much of its validation and test split was seed 0's training data."""
    out = tmp_path / "p"
    assert _cli("train-parent", "--out", out, "--quiet", *_sets(TINY_PARENT))[0] == 0
    weights = f"parent.weights={out / 'parent.pt'}"
    rc, _, err = _cli("search", "--out", tmp_path / "r", "--quiet", *_sets(TINY_PARENT + TINY_SEARCH + [weights,
                                                                                                         "seed=1"]))
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "another split of the data" in err and "split_seed: 0 there, 1 now" in err and "data.split_seed=0" in err
    assert not (tmp_path / "r").exists()
    for extra in (["data.val_fraction=0.3"], ["data.max_train_samples=100"]):
        rc, _, err = _cli("search", "--out", tmp_path / "r", "--quiet", *_sets(TINY_PARENT + TINY_SEARCH + [weights]
                                                                               + extra))
        assert rc == 2 and extra[0].split("=")[0].split(".")[1] in err, err
    # the same split under another search seed is fine
    rc, _, err = _cli("search", "--out", tmp_path / "r", "--quiet",
                      *_sets(TINY_PARENT + TINY_SEARCH + [weights, "seed=1", "data.split_seed=0"]))
    assert rc == 0, err
