"""Knowledge-distillation losses."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def hinton_kd(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
              temperature: float, alpha: float) -> torch.Tensor:
    """Hinton et al. (2015): alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(labels).

    The T^2 factor keeps the soft term's gradient scale independent of the temperature.
    """
    soft = F.kl_div(F.log_softmax(student / temperature, dim=1), F.log_softmax(teacher / temperature, dim=1),
                    reduction="batchmean", log_target=True) * temperature ** 2
    if alpha >= 1.0:
        return soft
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(student, labels)


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
