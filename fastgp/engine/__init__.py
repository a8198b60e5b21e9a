"""Tier 2: the exact WGAN-GP critic step, without double backward, of critics as written.

Layer rules (forward, adjoint, tangent, backward) live in one module per layer family
(``layers.py`` maps a module to its rule, ``tensor_ops.py`` holds the ops between layers);
``trace.py`` reads a critic's ``forward`` into a graph of rules (``graph.py``) and
:class:`FusedCritic` runs the step. docs/engine.md has the math.
"""

from fastgp.engine.base import UnsupportedLayerError
from fastgp.engine.fused_critic import PENALTIES, CriticStep, FusedCritic

__all__ = ["PENALTIES", "CriticStep", "FusedCritic", "UnsupportedLayerError"]
