"""Stopping a process the lab started, the same way everywhere."""

from __future__ import annotations

import subprocess
from typing import Any


def stop(process: subprocess.Popen[Any], grace: float = 15) -> None:
    """SIGTERM, and SIGKILL if it is still running `grace` seconds later; reaped either way."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
