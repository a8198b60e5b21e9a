"""Tier 2: the exact WGAN-GP critic step of sequential critics, without double backward.

Layer rules (forward, adjoint, tangent, backward) live in one module per layer family; the
composer reads a critic into rules and :class:`FusedCritic` runs the step. docs/engine.md has
the math.
"""

from fastgp.engine.base import UnsupportedLayerError
from fastgp.engine.fused_critic import PENALTIES, CriticStep, FusedCritic

__all__ = ["PENALTIES", "CriticStep", "FusedCritic", "UnsupportedLayerError"]
