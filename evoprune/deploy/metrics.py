"""Deployment metrics of a model: accuracy figures, size, measured latency and peak inference memory.

Keys of `deployment_metrics` (README: "Final distillation, export and deployment metrics"):
top1, top5 (n_classes >= 5), precision_macro, recall_macro, f1_macro (sklearn, zero_division=0),
n_samples, n_params, macs, state_dict_bytes, latency_ms {device: {"batch_1": ms, "batch_N": ms}}
(median over `runs` timed forwards after `warmup` untimed ones, torch.inference_mode, eval mode,
torch's current thread count), and memory {device: {...}}: on CUDA `peak_allocated_bytes`, the
CUDA allocator's max allocated during one forward at the larger batch minus what was allocated
before it (activations and workspace, not weights); on CPU `activation_bytes`, the bytes of every
module output in that forward (what an executor that frees nothing holds: an upper bound of the
activation memory, deterministic), and `rss_growth_bytes`, the process's resident-set growth
sampled every 0.2 ms during that forward after returning freed heap to the OS (a measurement; the
allocator's reuse makes it noisy and a lower bound for tiny models).
"""
from __future__ import annotations

import ctypes
import io
import os
import statistics
import threading
import time
from typing import Any

import torch
from torch import nn

from evoprune.atomic import write_json
from evoprune.metrics import count_macs, count_params, is_multilabel, logits_of, mean_average_precision, top1
from evoprune.run.files import DEFAULT_WEIGHTS, METRICS_JSON


def classification_metrics(logits: torch.Tensor, y: torch.Tensor, n_classes: int) -> dict[str, Any]:
    """top-1, top-5 (n_classes >= 5) and macro precision / recall / F1 of logits (N, C) against y (N,); for
    multi-label y (N, attributes): top1 = mean attribute accuracy, each attribute's accuracy, macro precision /
    recall / F1 over attributes and mAP."""
    from sklearn.metrics import precision_recall_fscore_support

    y = y.cpu()
    if is_multilabel(y):  # per attribute: present where the logit is above 0
        pred, truth = (logits > 0).numpy(), (y > 0.5).numpy()
        p, r, f, _ = precision_recall_fscore_support(truth, pred, average="macro", zero_division=0)
        return {"top1": top1(logits, y), "attribute_accuracy": [float(v) for v in (pred == truth).mean(0)],
                "precision_macro": float(p), "recall_macro": float(r), "f1_macro": float(f),
                "map": mean_average_precision(logits, y)}
    pred = logits.argmax(1)
    out = {"top1": float((pred == y).float().mean())}
    if n_classes >= 5:
        top5 = logits.topk(5, dim=1).indices
        out["top5"] = float((top5 == y.unsqueeze(1)).any(1).float().mean())
    p, r, f, _ = precision_recall_fscore_support(y.numpy(), pred.numpy(), labels=list(range(n_classes)),
                                                 average="macro", zero_division=0)
    out.update(precision_macro=float(p), recall_macro=float(r), f1_macro=float(f))
    return out


def state_dict_bytes(model: nn.Module) -> int:
    """Size of the model's state_dict as `torch.save` writes it (the file a user ships)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def latency_ms(model: nn.Module, x: torch.Tensor, runs: int = 20, warmup: int = 5) -> float:
    """Median wall time of one forward on `x` (on the model's device), in milliseconds."""
    device = x.device
    for _ in range(warmup):
        model(x)
    _sync(device)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model(x)
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


@torch.inference_mode()
def activation_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of every module output (leaf modules) in one forward on `x`."""
    total = [0]

    def hook(m: nn.Module, i: object, out: object) -> None:
        if isinstance(out, torch.Tensor):
            total[0] += out.numel() * out.element_size()
    handles = [m.register_forward_hook(hook) for m in model.modules() if not any(True for _ in m.children())]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return total[0] + x.numel() * x.element_size()


def _rss() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except OSError:
        return 0


try:
    _PAGE = os.sysconf("SC_PAGE_SIZE")
    _LIBC = ctypes.CDLL("libc.so.6")
except (OSError, ValueError, AttributeError):
    _PAGE, _LIBC = 4096, None


@torch.inference_mode()
def rss_growth_bytes(model: nn.Module, x: torch.Tensor, repeats: int = 3) -> int:
    """Largest resident-set growth over the RSS before a forward, sampled while it runs (CPU, Linux)."""
    best = 0
    for _ in range(repeats):
        if _LIBC is not None:
            _LIBC.malloc_trim(0)  # freed heap back to the OS, so that a forward's allocations show up
        base, peak, done = _rss(), [0], threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _rss())
                time.sleep(0.0002)
        t = threading.Thread(target=sample, daemon=True)
        t.start()
        model(x)
        done.set()
        t.join()
        best = max(best, peak[0] - base, _rss() - base)
    return max(0, best)


@torch.inference_mode()
def cuda_peak_bytes(model: nn.Module, x: torch.Tensor) -> int:
    torch.cuda.synchronize(x.device)
    torch.cuda.reset_peak_memory_stats(x.device)
    before = torch.cuda.memory_allocated(x.device)
    model(x)
    torch.cuda.synchronize(x.device)
    return int(torch.cuda.max_memory_allocated(x.device) - before)


def speed_and_memory(model: nn.Module, input_shape: tuple[int, ...], batch: int = 64, runs: int = 20,
                     warmup: int = 5, devices: list[str] | None = None) -> dict[str, Any]:
    """Latency at batch 1 and `batch`, and peak inference memory, on CPU and (when present) CUDA."""
    if devices is None:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    lat: dict[str, Any] = {}
    mem: dict[str, Any] = {}
    for name in devices:
        device = torch.device(name)
        m = model.to(device).eval()
        xs = {b: torch.randn((b, *input_shape), generator=torch.Generator().manual_seed(b)).to(device)
              for b in sorted({1, batch})}
        lat[name] = {f"batch_{b}": latency_ms(m, x, runs, warmup) for b, x in xs.items()}
        big = xs[max(xs)]
        if device.type == "cuda":
            mem[name] = {"peak_allocated_bytes": cuda_peak_bytes(m, big), "batch": max(xs)}
        else:
            mem[name] = {"activation_bytes": activation_bytes(m, big), "rss_growth_bytes": rss_growth_bytes(m, big),
                         "batch": max(xs)}
    model.to("cpu")
    return {"latency_ms": lat, "memory": mem, "threads": torch.get_num_threads()}


def deployment_metrics(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n_classes: int, batch: int = 64,
                       runs: int = 20, warmup: int = 5, devices: list[str] | None = None) -> dict[str, Any]:
    """All deployment metrics of `model` on the labelled set (x, y); the model ends on the CPU in eval mode."""
    model = model.cpu().eval()
    out: dict[str, Any] = classification_metrics(logits_of(model, x), y, n_classes)
    example = torch.zeros((1, *x.shape[1:]))
    out.update(n_samples=len(y), n_params=count_params(model), macs=count_macs(model, example),
               state_dict_bytes=state_dict_bytes(model))
    out.update(speed_and_memory(model, tuple(x.shape[1:]), batch, runs, warmup, devices))
    return out


def front_metrics(run_dir: Any, picks: list[int] | None = None, runs: int = 20,
                  weights: str = DEFAULT_WEIGHTS) -> dict[str, Any]:
    """`report --metrics`: deployment metrics on the test split of the parent and of front members
    (`picks`, default all), each with `weights` (see `Run.subnet`; default: the fine-tune the search ran,
    whose validation accuracy front.json shows). Written to RUN_DIR/metrics.json. `run_dir`: a run directory, or
    a Run (one of `evoprune.search`'s, which holds the data given to it)."""
    from evoprune.run.reader import load_run  # the run's parent and data: torch-pruning only when asked

    run = load_run(run_dir) if isinstance(run_dir, (str, os.PathLike)) else run_dir  # a path, or a Run
    data = run.task_data()  # the test split: the configured data's, or the data given to evoprune.search
    picks = list(range(len(run.front))) if picks is None else picks
    doc: dict[str, Any] = {"split": "test", "weights": weights,
                           "parent": deployment_metrics(run.parent(), data.test_x, data.test_y, data.n_classes,
                                                        runs=runs), "front": []}
    for k in picks:
        model = run.subnet(k, weights)
        m = deployment_metrics(model, data.test_x, data.test_y, data.n_classes, runs=runs)
        doc["front"].append({"pick": k, "weights": weights, "val_accuracy": run.val_accuracy(model),
                             "front_val_accuracy": run.front[k]["accuracy"], **m})
    write_json(run.dir / METRICS_JSON, doc)
    return doc


def metrics_table(doc: dict[str, Any]) -> str:
    """One line per model: test top-1 / top-5 / macro F1, size, latency (CPU) and memory."""
    head = f"{'#':>3}  {'top1':>6}  {'top5':>6}  {'F1':>6}  {'params':>9}  {'MACs':>11}  {'KiB':>7}  " \
           f"{'ms@1':>7}  {'ms@N':>7}  {'act MiB':>7}  weights"
    lines = [head, "-" * len(head)]
    rows = [("P", doc["parent"], "parent")] + [(str(m["pick"]), m, m["weights"]) for m in doc["front"]]
    for name, m, w in rows:
        lat = m["latency_ms"]["cpu"]
        big = max(lat, key=lambda k: int(k.split("_")[1]))
        lines.append(f"{name:>3}  {m['top1']:6.4f}  {m.get('top5', float('nan')):6.4f}  {m['f1_macro']:6.4f}  "
                     f"{m['n_params']:9,d}  {m['macs']:11,d}  {m['state_dict_bytes'] / 1024:7.1f}  "
                     f"{lat['batch_1']:7.3f}  {lat[big]:7.3f}  {m['memory']['cpu']['activation_bytes'] / 2**20:7.2f}  {w}")
    lines.append(f"test split; latency: median ms per forward on CPU at batch 1 and {big.split('_')[1]} "
                 f"({doc['parent']['threads']} threads); act = activation bytes of one forward at the larger batch")
    return "\n".join(lines)
