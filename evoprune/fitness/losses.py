"""Knowledge-distillation losses: Hinton KD, logit MSE / smooth L1, FitNets features, attention transfer, DML."""
from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from evoprune.config.vocab import FEATURE_KD_LOSSES, KD_LOSSES, LOGIT_KD_LOSSES
from evoprune.config.streams import stream_seed
from evoprune.metrics import is_multilabel, label_loss

DEFAULT_BETA = {"feature": 1.0, "attention": 1000.0}  # FitNets (hint MSE) and Zagoruyko & Komodakis (AT)


def binary_kd(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Multi-label KD: the binary KL between the teacher's and the student's temperature-scaled sigmoid of
    each attribute, summed over attributes and averaged over the batch, times T^2."""
    p = torch.sigmoid(teacher / temperature)
    log_s, log_not_s = F.logsigmoid(student / temperature), F.logsigmoid(-student / temperature)
    log_t, log_not_t = F.logsigmoid(teacher / temperature), F.logsigmoid(-teacher / temperature)
    kl = p * (log_t - log_s) + (1 - p) * (log_not_t - log_not_s)
    return kl.sum(1).mean() * temperature ** 2


def hinton_kd(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
              temperature: float, alpha: float) -> torch.Tensor:
    """Hinton et al. (2015): alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(labels); on
    multi-label targets (N, attributes) the binary KL per attribute (`binary_kd`) and BCE.

    The T^2 factor keeps the soft term's gradient scale independent of the temperature.
    """
    if is_multilabel(labels):
        soft = binary_kd(student, teacher, temperature)
    else:
        soft = F.kl_div(F.log_softmax(student / temperature, dim=1), F.log_softmax(teacher / temperature, dim=1),
                        reduction="batchmean", log_target=True) * temperature ** 2
    if alpha >= 1.0:
        return soft
    return alpha * soft + (1.0 - alpha) * label_loss(student, labels)


def hinton_kd_per_model(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
                        temperature: float, alpha: float) -> torch.Tensor:
    """`hinton_kd` for a population at once: student (P, B, C), teacher (B, C) -> losses (P,)."""
    log_s = F.log_softmax(student / temperature, dim=-1)
    log_t = F.log_softmax(teacher / temperature, dim=-1).unsqueeze(0)
    soft = (log_t.exp() * (log_t - log_s)).sum(-1).mean(-1) * temperature ** 2
    if alpha >= 1.0:
        return soft
    ce = -F.log_softmax(student, dim=-1).gather(-1, labels.view(1, -1, 1).expand(student.shape[0], -1, 1))
    return alpha * soft + (1.0 - alpha) * ce.squeeze(-1).mean(-1)


def logit_kd(kind: str, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
             temperature: float, alpha: float) -> torch.Tensor:
    """A logit KD loss: `hinton`, or `mse` / `smooth_l1` between raw logits (no temperature), each
    blended with cross-entropy on the labels as alpha * soft + (1 - alpha) * CE."""
    if kind == "hinton":
        return hinton_kd(student, teacher, labels, temperature, alpha)
    if kind == "mse":
        soft = F.mse_loss(student, teacher)
    elif kind == "smooth_l1":
        soft = F.smooth_l1_loss(student, teacher)
    else:
        raise ValueError(f"{kind!r} is not a logit KD loss ({', '.join(LOGIT_KD_LOSSES)})")
    if alpha >= 1.0:
        return soft
    return alpha * soft + (1.0 - alpha) * label_loss(student, labels)


def logit_kd_per_model(kind: str, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
                       temperature: float, alpha: float) -> torch.Tensor:
    """`logit_kd` for a population: student (P, B, C), teacher (B, C), labels (B,) -> losses (P,)."""
    if kind == "hinton":
        return hinton_kd_per_model(student, teacher, labels, temperature, alpha)
    diff = student - teacher.unsqueeze(0)
    if kind == "mse":
        soft = diff.pow(2).mean((-1, -2))
    elif kind == "smooth_l1":
        soft = F.smooth_l1_loss(student, teacher.unsqueeze(0).expand_as(student), reduction="none").mean((-1, -2))
    else:
        raise ValueError(f"{kind!r} is not a logit KD loss ({', '.join(LOGIT_KD_LOSSES)})")
    if alpha >= 1.0:
        return soft
    ce = -F.log_softmax(student, dim=-1).gather(-1, labels.view(1, -1, 1).expand(student.shape[0], -1, 1))
    return alpha * soft + (1.0 - alpha) * ce.squeeze(-1).mean(-1)


def mutual_kl(student: torch.Tensor, peer: torch.Tensor) -> torch.Tensor:
    """Deep mutual learning (Zhang et al. 2018): KL(peer || student) at temperature 1; the peer is a target."""
    return F.kl_div(F.log_softmax(student, dim=1), F.log_softmax(peer.detach(), dim=1),
                    reduction="batchmean", log_target=True)


def attention_map(feature: torch.Tensor) -> torch.Tensor:
    """Spatial attention of Zagoruyko & Komodakis (p = 2): (B, C, H, W) -> (B, H*W), the channel mean of
    squared activations, L2-normalised per sample. Independent of the channel count, so a pruned
    student's map compares directly with the teacher's."""
    return F.normalize(feature.float().pow(2).mean(1).flatten(1), dim=1)


# -- feature maps at named layers -------------------------------------------------------------
class FeatureTap:
    """Forward hooks that keep the outputs of named modules of `model` (the last call of each)."""

    def __init__(self, model: nn.Module, layers: Sequence[str]):
        modules = dict(model.named_modules())
        missing = [n for n in layers if n not in modules]
        if missing:
            raise ValueError(f"feature_layers: {', '.join(map(repr, missing))} not modules of the network "
                             f"(e.g. {', '.join(n for n in list(modules)[1:6])})")
        self.layers = list(layers)
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = [modules[n].register_forward_hook(self._hook(n)) for n in self.layers]

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            if not isinstance(output, torch.Tensor) or output.dim() != 4:
                raise ValueError(f"feature_layers: {name!r} does not output a (B, C, H, W) feature map")
            self.outputs[name] = output
        return hook

    def features(self) -> list[torch.Tensor]:
        return [self.outputs[n] for n in self.layers]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


@torch.no_grad()
def default_feature_layers(model: nn.Module, example_input: torch.Tensor, n: int = 3) -> list[str]:
    """The last feature map at each of the network's last `n` spatial resolutions (above 1x1), each named
    by the outermost module that returns it and holds no other chosen map: a ResNet's stages
    (`layers.0`, `layers.1`; torchvision: `layer2`..`layer4`). Modules called more than once (shared
    activations) are skipped. Materialised subnets keep the parent's module names."""
    model = copy.deepcopy(model).cpu().eval()
    calls: list[tuple[str, torch.Tensor]] = []
    count: dict[str, int] = {}
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(m: nn.Module, i: object, out: object, name: str = name) -> None:
            count[name] = count.get(name, 0) + 1
            if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[-1] * out.shape[-2] > 1:
                calls.append((name, out))
        handles.append(module.register_forward_hook(hook))
    model(example_input.cpu())
    for h in handles:
        h.remove()
    last: dict[tuple[int, int], torch.Tensor] = {}
    for _, out in calls:  # completion order: the last tensor at a resolution ends its stage
        last[tuple(out.shape[-2:])] = out
    chosen = list(last.values())[-n:]
    # Who returned each chosen map, innermost first (a block, then its stage, then the whole trunk).
    who = [[name for name, o in calls if o is out and count[name] == 1] for out in chosen]
    names = []
    for i, cands in enumerate(who):
        others = [w[0] for j, w in enumerate(who) if j != i and w]
        # The outermost that holds no other chosen map: the stage (`layers.1`), not the trunk (`layers`).
        ok = [c for c in cands if not any(o.startswith(c + ".") for o in others)]
        if ok:
            names.append(ok[-1])
    return names


def _channels(model: nn.Module, layers: Sequence[str], example_input: torch.Tensor) -> list[int]:
    tap = FeatureTap(model, layers)
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example_input)
        return [f.shape[1] for f in tap.features()]
    finally:
        tap.remove()
        model.train(was)


class KDLoss(nn.Module):
    """The configured KD loss for one student network.

    Logit losses need only (student logits, teacher logits, labels). `feature` and `attention` add
    beta * (sum over `layers` of a feature term) to Hinton KD: FitNets MSE between a trainable 1x1 conv
    adapter of the student's map (pruned width -> the teacher's width) and the teacher's map, or
    beta / 2 * the mean squared difference of the normalised attention maps (as in the AT paper's code).
    A hook on the student records its feature maps during the forward; call `close()` when done. The
    adapters are this module's parameters: they must join the optimiser.
    """

    def __init__(self, kind: str, temperature: float, alpha: float, student: nn.Module,
                 beta: float | None = None, layers: Sequence[str] = (), teacher_channels: Sequence[int] = (),
                 example_input: torch.Tensor | None = None, seed: int = 0):
        super().__init__()
        if kind not in KD_LOSSES:
            raise ValueError(f"unknown KD loss {kind!r}; known: {', '.join(KD_LOSSES)}")
        self.kind, self.temperature, self.alpha = kind, temperature, alpha
        self.beta = DEFAULT_BETA.get(kind, 0.0) if beta is None else beta
        self.layers = list(layers) if kind in FEATURE_KD_LOSSES else []
        self.adapters = nn.ModuleList()
        self.tap: FeatureTap | None = None
        if kind not in FEATURE_KD_LOSSES:
            return
        if not self.layers:
            raise ValueError(f"KD loss {kind!r} needs feature layers")
        if kind == "feature":
            device = next(student.parameters()).device
            widths = _channels(student, self.layers, example_input.to(device))
            gen = torch.Generator().manual_seed(stream_seed(seed, "kd.adapters"))  # seeded: fronts stay reproducible in threads
            for c_in, c_out in zip(widths, teacher_channels):
                conv = nn.Conv2d(c_in, c_out, 1, bias=False)
                with torch.no_grad():
                    conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * (1.0 / c_in) ** 0.5)
                self.adapters.append(conv.to(device))
        self.tap = FeatureTap(student, self.layers)

    def teacher_targets(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """What the feature term compares against: the teacher's maps, or their attention maps."""
        if self.kind == "attention":
            return [attention_map(f) for f in features]
        return [f.float() for f in features]

    def feature_term(self, targets: Sequence[torch.Tensor], part: slice | torch.Tensor | None = None) -> torch.Tensor:
        """beta * the feature / attention term of the student's last forward (rows `part` of it)."""
        feats = self.tap.features()
        if part is not None:
            feats = [f[part] for f in feats]
        if self.kind == "attention":
            terms = [(attention_map(f) - t).pow(2).mean() for f, t in zip(feats, targets)]
            return self.beta / 2 * torch.stack(terms).sum()
        terms = [F.mse_loss(a(f.float()), t) for a, f, t in zip(self.adapters, feats, targets)]
        return self.beta * torch.stack(terms).sum()

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
                targets: Sequence[torch.Tensor] | None = None,
                part: slice | torch.Tensor | None = None) -> torch.Tensor:
        """Loss of the student's last forward; `targets` from `teacher_targets` for feature losses."""
        if self.kind in LOGIT_KD_LOSSES:
            return logit_kd(self.kind, student, teacher, labels, self.temperature, self.alpha)
        base = hinton_kd(student, teacher, labels, self.temperature, self.alpha)
        return base + self.feature_term(targets, part)

    def close(self) -> None:
        if self.tap is not None:
            self.tap.remove()
            self.tap = None


@torch.no_grad()
def teacher_feature_targets(teacher: nn.Module, layers: Sequence[str], kind: str, x: torch.Tensor,
                            batch_size: int = 256) -> list[torch.Tensor]:
    """The teacher's targets for a feature loss on all of `x`, batch by batch, on a private copy of the
    teacher (hooks on a shared teacher would fire for other threads' forwards)."""
    model = copy.deepcopy(teacher).eval()
    tap = FeatureTap(model, layers)
    out: list[list[torch.Tensor]] = [[] for _ in layers]
    try:
        for i in range(0, len(x), batch_size):
            model(x[i:i + batch_size])
            for k, f in enumerate(tap.features()):
                out[k].append(attention_map(f) if kind == "attention" else f.float())
    finally:
        tap.remove()
    return [torch.cat(parts) for parts in out]
