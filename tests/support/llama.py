"""llama.cpp's `llama-server` with a real small model on loopback, for tests (onion_lab.llamaserver
does the work; the demo and the quality benchmarks use it too)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from onion_lab import llamaserver


def require_engine(*models: str) -> None:
    """Skip the module with the reason when llama-server or a model is not installed."""
    try:
        llamaserver.binary()
        for name in models:
            llamaserver.model(name)
    except llamaserver.EngineMissing as err:
        pytest.skip(f"{err} (run `make engine`)", allow_module_level=True)


@contextmanager
def llama_server(model: str, alias: str, log: Path, ctx: int = 2048) -> Iterator[str]:
    """A running llama-server for `model` (an onion_lab.models name) served as `alias`; its URL."""
    with llamaserver.serve(model, alias, log, ctx) as url:
        yield url
