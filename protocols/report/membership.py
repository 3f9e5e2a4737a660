"""How much a released model leaks about its training rows: a membership-inference attack.

The loss-threshold attack of Yeom, Giacomelli, Fredrikson & Jha 2018 ("Privacy Risk in
Machine Learning: Analyzing the Connection to Overfitting", CSF), their adversary A_1:
guess "member" when the model's loss on a row is at most the model's average training
loss. Its membership advantage is TPR - FPR: the share of training rows (members) it
flags minus the share of held-out rows (non-members) it flags. 0: the model's losses say
nothing about membership; the generalization gap bounds it for this attack.
"""

from __future__ import annotations

import numpy as np
import torch


def logistic_losses(weights: list[float] | np.ndarray, x: torch.Tensor, y: torch.Tensor
                    ) -> np.ndarray:
    """Cross-entropy of a logistic model [w..., b] on each row (x: rows x k, y: 0/1)."""
    w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
    logits = x.double() @ w[:-1] + w[-1]
    labels = y.double().reshape(-1)
    return torch.nn.functional.binary_cross_entropy_with_logits(
        logits, labels, reduction="none").numpy()


def advantage(members: np.ndarray, non_members: np.ndarray) -> dict[str, float]:
    """Yeom et al.'s threshold attack at tau = the mean member loss: TPR, FPR, advantage."""
    tau = float(np.mean(members))
    tpr = float(np.mean(members <= tau))
    fpr = float(np.mean(non_members <= tau))
    return {"threshold": tau, "tpr": tpr, "fpr": fpr, "advantage": tpr - fpr}
