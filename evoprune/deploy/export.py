"""Export a front member: state_dict + genome + parent reference + metrics; TorchScript / ONNX optionally.

The export reloads from plain data and tensors only: `load_exported(DIR)` builds the parent architecture from
the stored config (no parent weights needed), materialises the genome (the same pruned shapes) and
loads `subnet.pt` with `weights_only=True`. A search from Python (`evoprune.search`) has no config that builds
its parent: `load_exported(DIR, parent=an instance of the user's class)` materialises the genome on it instead.
"""
from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evoprune.atomic import atomic_write, write_json
from evoprune.config import config_from_dict
from evoprune.genome import Genome
from evoprune.data.preprocess import Preprocessing
from evoprune.deploy.metrics import deployment_metrics
from evoprune.parent.train import build_parent
from evoprune.pruning.materialise import materialise
from evoprune.run.reader import Run
from evoprune.run.files import DEFAULT_WEIGHTS

SUBNET, GENOME, EXPORT, METRICS = "subnet.pt", "genome.json", "export.json", "metrics.json"
TORCHSCRIPT, ONNX = "subnet.torchscript.pt", "subnet.onnx"
ONNX_PACKAGES = ("onnx", "onnxscript")


class MissingExtra(RuntimeError):
    """An optional export format needs packages that are not installed."""


def check_onnx_available() -> None:
    """MissingExtra (its message names the pip extra) unless the ONNX exporter's packages are installed."""
    missing = [m for m in ONNX_PACKAGES if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtra(f"--onnx needs {', '.join(missing)}: pip install 'evoprune[onnx]'")


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_exported(directory: str | Path, parent: nn.Module | None = None) -> nn.Module:
    """The exported subnet (eval mode, CPU): parent architecture from the config (or `parent`, an instance of
    the user's class for an export of `evoprune.search`'s run; its weights do not matter), genome, subnet.pt.

    `model.preprocess` turns an image (PIL image or file path) into the model's input, as the training
    data were prepared (export.json's `preprocessing`): `model(model.preprocess("cat.png"))`."""
    d = Path(directory)
    meta = json.loads((d / EXPORT).read_text())
    cfg = config_from_dict(meta["config"])
    genome = Genome.from_json(json.loads((d / GENOME).read_text()))
    shape = tuple(meta["input_shape"])
    if parent is None and meta["parent"].get("given"):
        raise ValueError(f"{d} is a subnet of a {meta['parent']['arch']} searched from Python, which no file can "
                         "rebuild: load_exported(directory, parent=an instance of that class)")
    if parent is None:
        parent = build_parent(cfg.parent, shape, meta["n_classes"])
    model = materialise(copy.deepcopy(parent).cpu().eval(), genome, torch.zeros((1, *shape)))
    state = torch.load(d / SUBNET, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    if meta.get("preprocessing"):
        model.preprocess = Preprocessing.from_json(meta["preprocessing"])
    return model.eval()


def _same(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) if a.shape == b.shape else float("inf")


def export(run: Run, pick: int, out: str | Path, weights: str = DEFAULT_WEIGHTS, torchscript: bool = False,
           onnx: bool = False, metric_runs: int = 20) -> dict[str, Any]:
    """Write front member `pick` with `weights` (see `Run.subnet`) to `out`; returns export.json's content.

    Checks, and records in export.json, the model's accuracy on the validation inputs the search scored
    (for `finetuned`, front.json's figure again); raises RuntimeError if the reloaded model (or the
    TorchScript / ONNX one) does not reproduce the model's outputs.
    """
    if onnx:
        check_onnx_available()
    out = Path(out)
    model = run.subnet(pick, weights).eval()
    val_accuracy = run.val_accuracy(model)
    parent_weights = run.parent_weights
    data = run.task_data()  # the test split here (loaded once with the validation check above)
    out.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "pick": pick, "weights": weights, "genome_key": run.genome(pick).key(),
        "val_accuracy": val_accuracy, "front_val_accuracy": run.front[pick]["accuracy"],
        "input_shape": list(run.task["input_shape"]), "n_classes": run.task["n_classes"],
        "task": run.task.get("task", "single"),
        "class_names": data.class_names, "preprocessing": data.preprocessing.to_json() if data.preprocessing else None,
        "parent": {"run_dir": str(run.dir.resolve()), "weights": str(parent_weights.resolve()),
                   "sha256": sha256(parent_weights),
                   "arch": run.python["model_class"] if run.python else run.config.parent.arch,
                   "given": run.python is not None},
        "config": run.config.to_dict(), "torch": torch.__version__,
        "files": {"state_dict": SUBNET, "genome": GENOME, "metrics": METRICS},
    }
    atomic_write(out / SUBNET, lambda fh: torch.save(model.state_dict(), fh), binary=True)
    write_json(out / GENOME, run.genome(pick).to_json())
    write_json(out / EXPORT, meta)

    # Reload check: the same outputs, bit for bit, on real inputs.
    x = data.test_x[:64]
    with torch.no_grad():
        expected = model(x)
        diff = _same(load_exported(out, run.parent() if run.python else None)(x), expected)
    if diff != 0.0:
        raise RuntimeError(f"the reloaded export differs from the model (max |diff| {diff:.3g})")
    meta["check"] = {"reload_max_abs_diff": diff}
    example = torch.zeros((1, *meta["input_shape"]))
    if torchscript:
        # TorchScript is deprecated in recent torch (its own warnings say so) but still the most widely
        # loadable format (C++ libtorch, mobile); the user asked for it explicitly.
        with warnings.catch_warnings(), torch.no_grad():
            warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=Warning)
            traced = torch.jit.trace(model, example)
            atomic_write(out / TORCHSCRIPT, lambda fh: torch.jit.save(traced, fh), binary=True)
            diff = _same(torch.jit.load(str(out / TORCHSCRIPT))(x), expected)
        if diff > 1e-5:
            raise RuntimeError(f"the TorchScript export differs from the model (max |diff| {diff:.3g})")
        meta["files"]["torchscript"] = TORCHSCRIPT
        meta["check"]["torchscript_max_abs_diff"] = diff
    if onnx:
        meta["files"]["onnx"] = ONNX
        meta["check"]["onnx_max_abs_diff"] = _export_onnx(model, example, x, expected, out / ONNX)
    metrics = deployment_metrics(model, data.test_x, data.test_y, data.n_classes, runs=metric_runs)
    write_json(out / METRICS, {"split": "test", "weights": weights, **metrics})
    write_json(out / EXPORT, meta)
    return meta


def _export_onnx(model: nn.Module, example: torch.Tensor, x: torch.Tensor, expected: torch.Tensor,
                 path: Path) -> float | None:
    """ONNX with a dynamic batch dimension; checked with onnxruntime when it is installed (else None)."""
    # A batch of 2 to trace: the dynamo exporter specialises a dimension of size 1.
    torch.onnx.export(model, (example.expand(2, *example.shape[1:]).contiguous(),), str(path), input_names=["input"],
                      output_names=["logits"], verbose=False, dynamic_shapes=({0: torch.export.Dim("batch")},))
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    diff = _same(got, expected)
    if diff > 1e-4:
        raise RuntimeError(f"the ONNX export differs from the model (max |diff| {diff:.3g})")
    return diff
