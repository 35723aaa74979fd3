"""Where benchmarks find the optional reference data (never needed by tests)."""

from __future__ import annotations

import os
from pathlib import Path


def shared_data(relative: str) -> Path | None:
    """``$EDGEGAN_DATA/relative`` or ``../shared/data/relative`` if it exists, else None."""
    for base in (os.environ.get("EDGEGAN_DATA"), "../shared/data"):
        if base and (Path(base) / relative).exists():
            return Path(base) / relative
    return None
