"""Critic building blocks that keep a critic a plain ``nn.Sequential`` of known layers."""

from __future__ import annotations

import torch
from torch import nn


class Residual(nn.Module):
    """``y = shortcut(x) + body(x)``; the shortcut is the identity when not given.

    Written as a module (not a ``forward`` with a ``+``) so that a critic made of residual blocks
    stays a sequence of layers whose structure can be read without running it.
    """

    def __init__(self, body: nn.Module, shortcut: nn.Module | None = None) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut if shortcut is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.body(x)
