"""Looking for text in the files Mnemo keeps on disk (erasure tests)."""

from __future__ import annotations

import os
from pathlib import Path


def files_holding(directory: Path, text: str) -> list[str]:
    """Files under ``directory`` whose bytes contain ``text``, relative to it. Files that vanish
    while it looks (a store swapping a rebuilt shard in) are skipped; sockets are not files."""
    needle, found = text.encode(), []
    for root, _, names in os.walk(directory):
        for name in names:
            path = Path(root) / name
            try:
                if path.is_file() and needle in path.read_bytes():
                    found.append(str(path.relative_to(directory)))
            except OSError:
                continue
    return sorted(found)
