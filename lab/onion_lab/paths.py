"""Where the checkout and the cache outside it are."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("ONION_CACHE_DIR", Path.home() / ".cache" / "onion-of-experts"))
RESULTS = REPO / "results"
DATA = REPO.parent / "shared" / "data"  # real request traces, beside the checkout
HACK = REPO / "hack"  # the shell scripts that build and fetch what the cache holds
