"""Mnemo's memory core: shared by the gateway and the worker, importing neither."""

import os

# numpy's bundled OpenBLAS runs a product on a thread per core, and those threads spin for a while
# after each one: the dense cache's product for a user holding 20,000 memories took 0.8 ms with two
# threads but 3.6 ms of CPU, against 1.5 ms and 1.4 ms of CPU with one. On the 2-vCPU machines Mnemo
# runs on, the spinning takes the CPU from the embedder's threads. Effective only before numpy is
# imported, hence here; an operator's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
