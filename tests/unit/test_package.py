"""What importing the core does to the process."""

from __future__ import annotations

import os
import subprocess
import sys

# How many threads numpy's bundled OpenBLAS (the scipy-openblas build numpy's wheels ship) will use.
PROBE = """
import ctypes, glob, os
import mnemo, numpy
library = glob.glob(os.path.join(os.path.dirname(numpy.__file__), "..", "numpy.libs", "libscipy_openblas*"))[0]
print(ctypes.CDLL(library).scipy_openblas_get_num_threads64_())
"""


def openblas_threads(**env: str) -> int:
    base = {key: value for key, value in os.environ.items() if key != "OPENBLAS_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", PROBE], env=base | env, capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_numpy_products_run_on_one_thread_unless_the_operator_says_otherwise() -> None:
    assert openblas_threads() == 1
    assert openblas_threads(OPENBLAS_NUM_THREADS="2") == 2
