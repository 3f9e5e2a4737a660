"""The organizations' network for loan default: 20 joined columns (8 bank, 6 insurer,
6 retailer, each scaled to [0, 1]), two classes.

Every organization receives this file with consortium-mlp.toml; its sha256 is part of the
manifest, so all train the same architecture on the columns the private set intersection
joined.
"""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """20-16-2: one hidden layer of 16 ReLU units, a score per class."""

    def __init__(self, inputs: int = 20, hidden: int = 16, classes: int = 2) -> None:
        super().__init__()
        self.fc1 = nn.Linear(inputs, hidden)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(x)))
