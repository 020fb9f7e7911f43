"""`evoprune export`: state_dict + genome + parent reference round-trips; TorchScript; ONNX (optional); report --metrics."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from evoprune import load_run
from evoprune.deploy.export import load_exported, sha256
from conftest import TINY, run_cli


def _cli(argv: list) -> tuple[int, str, str]:
    return run_cli(argv)


def _inputs(run) -> torch.Tensor:
    shape = json.loads((run / "task.json").read_text())["input_shape"]
    return torch.randn((32, *shape), generator=torch.Generator().manual_seed(0))


def test_export_round_trip_is_identical(tiny_run, tmp_path):
    out = tmp_path / "exp"
    rc, stdout, err = _cli(["export", tiny_run, "--pick", 1, "--out", out, "--runs", 1])
    assert rc == 0, err
    for name in ("subnet.pt", "genome.json", "export.json", "metrics.json"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "export.json").read_text())
    assert meta["parent"]["sha256"] == sha256(tiny_run / "parent.pt")
    assert meta["pick"] == 1 and meta["check"]["reload_max_abs_diff"] == 0.0
    run = load_run(tiny_run)
    assert json.loads((out / "genome.json").read_text()) == run.front[1]["genome"]
    x = _inputs(tiny_run)
    with torch.no_grad():
        assert torch.equal(load_exported(out)(x), run.subnet(1)(x))
    reloaded = load_exported(out)
    assert sum(p.numel() for p in reloaded.parameters()) == run.front[1]["n_params"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["n_params"] == run.front[1]["n_params"]
    assert meta["weights"] == metrics["weights"] == "finetuned"


@pytest.mark.parametrize("pick", [0, -1])
def test_the_exported_model_scores_what_the_front_said(tiny_run, tmp_path, pick):
    """Default weights: the fine-tune the search ran, so the front's validation accuracy, exactly (the
    tiny run evaluated sequentially on a CPU)."""
    run = load_run(tiny_run)
    k = pick % len(run.front)
    out = tmp_path / "exp"
    rc, stdout, err = _cli(["export", tiny_run, "--pick", k, "--out", out, "--runs", 1])
    assert rc == 0, err
    meta = json.loads((out / "export.json").read_text())
    front_acc = run.front[k]["accuracy"]
    assert meta["val_accuracy"] == meta["front_val_accuracy"] == front_acc
    assert run.val_accuracy(load_exported(out)) == front_acc  # measured again on the reloaded export
    assert run.val_accuracy(run.subnet(k)) == front_acc and run.val_accuracy(run.subnet(k, "finetuned")) == front_acc
    pruned, tuned = run.subnet(k, "pruned").state_dict(), load_exported(out).state_dict()
    assert any(not torch.equal(pruned[n], tuned[n]) for n in tuned)  # the weights before the fine-tune differ


def test_report_metrics_use_and_name_the_front_weights(tiny_run):
    rc, stdout, err = _cli(["report", tiny_run, "--metrics", "--pick", 0, "--runs", 1])
    assert rc == 0, err
    doc = json.loads((tiny_run / "metrics.json").read_text())
    assert doc["weights"] == "finetuned" and doc["front"][0]["weights"] == "finetuned"
    assert doc["front"][0]["val_accuracy"] == doc["front"][0]["front_val_accuracy"]
    assert (tiny_run / "metrics.png").is_file() and "finetuned" in stdout
    rc, stdout, err = _cli(["report", tiny_run, "--metrics", "--pick", 0, "--runs", 1, "--weights", "pruned"])
    assert rc == 0 and json.loads((tiny_run / "metrics.json").read_text())["front"][0]["weights"] == "pruned"


@pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated")
def test_export_of_distilled_weights_and_torchscript(tiny_run, tmp_path):
    assert _cli(["distill", tiny_run, "--pick", 0, "--quiet", "--runs", 1, "--set", "distill.epochs=1"])[0] == 0
    out = tmp_path / "exp"
    rc, stdout, err = _cli(["export", tiny_run, "--pick", 0, "--out", out, "--distilled", "--torchscript",
                            "--runs", 1])
    assert rc == 0, err
    assert "deprecated" not in err  # TorchScript's own deprecation notices are not the user's problem
    run = load_run(tiny_run)
    model = run.subnet(0, "pruned")
    model.load_state_dict(torch.load(tiny_run / "distill-0" / "model.pt", weights_only=True))
    x = _inputs(tiny_run)
    with torch.no_grad():
        expected = model.eval()(x)
        assert torch.equal(load_exported(out)(x), expected)
        scripted = torch.jit.load(str(out / "subnet.torchscript.pt"))
        assert torch.allclose(scripted(x), expected, atol=1e-6)
    assert json.loads((out / "export.json").read_text())["weights"] == "distilled"
    assert torch.equal(run.subnet(0, "distilled")(x), expected)


def test_export_bad_input_exits_2(tiny_run, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("mine")
    n = len(json.loads((tiny_run / "front.json").read_text())["front"])
    for argv, needle in [(["--pick", n, "--out", tmp_path / "a"], f"--pick {n}"),
                         (["--pick", n - 1, "--out", tmp_path / "b", "--distilled"], "distill"),
                         (["--pick", 0, "--out", tmp_path / "full"], "not empty")]:
        rc, out, err = _cli(["export", tiny_run, *argv])
        assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert (tmp_path / "full" / "x.txt").read_text() == "mine" and not (tmp_path / "a").exists()


def test_onnx_without_its_packages_names_the_extra(tiny_run, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("onnx") else real(name, *a))
    rc, out, err = _cli(["export", tiny_run, "--pick", 0, "--out", tmp_path / "o", "--onnx"])
    assert rc == 2 and "pip install 'evoprune[onnx]'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_onnx_export(tiny_run, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    out = tmp_path / "o"
    rc, stdout, err = _cli(["export", tiny_run, "--pick", 0, "--out", out, "--onnx", "--runs", 1])
    assert rc == 0, err
    assert (out / "subnet.onnx").is_file()
    meta = json.loads((out / "export.json").read_text())
    if importlib.util.find_spec("onnxruntime") is not None:
        assert meta["check"]["onnx_max_abs_diff"] <= 1e-4


def test_report_metrics(tiny_run):
    rc, out, err = _cli(["report", tiny_run, "--metrics", "--pick", 0, "--runs", 2])
    assert rc == 0, err
    doc = json.loads((tiny_run / "metrics.json").read_text())
    assert doc["split"] == "test" and [m["pick"] for m in doc["front"]] == [0]
    parent, member = doc["parent"], doc["front"][0]
    assert member["n_params"] < parent["n_params"] and member["macs"] < parent["macs"]
    assert member["state_dict_bytes"] < parent["state_dict_bytes"]
    assert member["weights"] == "finetuned"
    assert "top1" in out and "parent" in out
    assert _cli(["report", tiny_run, "--metrics", "--pick", 500])[0] == 2


def test_distilled_weights_of_another_genome_are_refused(tiny_run, tmp_path):
    import shutil

    rc, _, err = run_cli(["distill", tiny_run, "--pick", 0, "--quiet", "--runs", 2, "--set", "distill.epochs=1"])
    assert rc == 0, err
    metrics = tiny_run / "distill-0" / "metrics.json"
    saved = metrics.read_text()
    try:
        doc = json.loads(saved)
        doc["genome_key"] = "0" * 16  # as if the front had changed since the distillation
        metrics.write_text(json.dumps(doc))
        rc, _, err = run_cli(["export", tiny_run, "--pick", 0, "--out", tmp_path / "x", "--distilled"])
        assert rc == 2 and "distill it again" in err and not (tmp_path / "x").exists()
    finally:
        metrics.write_text(saved)
        shutil.rmtree(tmp_path / "x", ignore_errors=True)


def test_a_batched_search_is_reproduced_within_the_documented_tolerance(tmp_path):
    """The batched form fine-tunes masked individuals side by side; the export re-runs the fine-tune
    sequentially, so rounding may move a few validation images (README: within 0.02)."""
    rc, _, err = run_cli(["search", "--out", tmp_path / "run", "--quiet", "--set", "evaluator.kind=batched",
                          *[f"--set={o}" for o in TINY]])
    assert rc == 0, err
    run = load_run(tmp_path / "run")
    assert run.task["evaluator"]["kind"] == "batched", run.task["evaluator"]
    for k in range(len(run.front)):
        assert abs(run.val_accuracy(run.subnet(k)) - run.front[k]["accuracy"]) <= 0.02
