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


def cross_entropy_losses(scores: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Cross-entropy of class scores (rows x K) on each row's class index y."""
    return torch.nn.functional.cross_entropy(scores.double(), y.reshape(-1).long(),
                                             reduction="none").numpy()


def advantage(members: np.ndarray, non_members: np.ndarray) -> dict[str, float]:
    """Yeom et al.'s threshold attack at tau = the mean member loss: TPR, FPR, advantage;
    and beside it the best advantage any loss threshold reaches on these rows (an attacker
    who could tune tau on them: an optimistic bound of this attack family)."""
    members, non_members = np.asarray(members), np.asarray(non_members)
    tau = float(np.mean(members))
    slack = 1e-12 * max(1.0, abs(tau))  # equal losses stay equal to their mean
    tpr = float(np.mean(members <= tau + slack))
    fpr = float(np.mean(non_members <= tau + slack))
    return {"threshold": tau, "tpr": tpr, "fpr": fpr, "advantage": tpr - fpr,
            "best_advantage": best_advantage(members, non_members)}


def best_advantage(members: np.ndarray, non_members: np.ndarray) -> float:
    """max over thresholds tau of TPR(tau) - FPR(tau) (0 for tau below every loss)."""
    taus = np.unique(np.concatenate([members, non_members]))
    tpr = np.searchsorted(np.sort(members), taus, side="right") / len(members)
    fpr = np.searchsorted(np.sort(non_members), taus, side="right") / len(non_members)
    return float(max(0.0, (tpr - fpr).max()))
