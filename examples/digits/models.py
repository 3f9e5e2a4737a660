"""The banks' models for 8x8 digit images (64 pixel columns scaled to [0, 1], 10 classes).

Every bank receives this file with the consortium file; its sha256 is part of
the manifest, so all train the same architecture. After the run, the bank
that receives the model loads it with

    model = MLP(); model.load_state_dict(torch.load("model.pt"))
"""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """64-32-10: one hidden layer of 32 ReLU units."""

    def __init__(self, inputs: int = 64, hidden: int = 32, classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(inputs, hidden)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(x)))


class CNN(nn.Module):
    """conv 3x3 (8 channels) + BatchNorm + ReLU + 2x2 max-pool, then a linear layer."""

    def __init__(self, channels: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(channels * 4 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(self.relu(self.bn(self.conv(x.view(-1, 1, 8, 8)))))
        return self.fc(torch.flatten(h, 1))
