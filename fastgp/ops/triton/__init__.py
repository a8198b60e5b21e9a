"""Triton kernels (``kernels``) and their launchers (``launchers``) for the fastgp ops.

Imported lazily by the op implementations: ``TRITON_INTERPRET=1`` must be set before the
kernels are decorated for them to run on CPU tensors.
"""
