"""Run the Triton kernels on CPU tensors: the interpreter must be on before they are decorated."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
