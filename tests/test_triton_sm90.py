"""Every Triton kernel compiles for an H100 (sm_90, through Triton's bundled ptxas), no GPU needed.

The rest of the suite runs the kernels in Triton's interpreter, which never compiles them; this
runs the real compiler in a subprocess with the interpreter off and a fresh kernel cache.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from backends import AVAILABLE

pytestmark = pytest.mark.skipif("triton" not in AVAILABLE, reason="triton is not installed")


def test_kernels_compile_for_sm90(tmp_path):
    environment = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    environment |= {"TRITON_CACHE_DIR": str(tmp_path), "TRITON_DEFAULT_FP_FUSION": "1"}
    script = Path(__file__).with_name("triton_compile_sm90.py")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            env=environment, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if "sm_90 cubin" in line]
    kernels = int(result.stdout.split("kernels: ")[1].split()[0])
    assert kernels >= 7 and len(lines) == 2 * kernels, result.stdout  # 16/32-bit and fp64
