"""No test leaves a process behind: the processes of ours that a test session started and that
still run when it ends (the session fails then; see tests/conftest.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

# Command-line fragments of everything the tests start.
OURS = (
    "onion-of-experts/bin/",
    "llama_cpp.server",
    "onion-operator",
    "onion-router",
    "tests.support.",
    "litellm",
)


def ours() -> dict[int, str]:
    """pid -> command line of every running process that looks like one the tests start."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            raw = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        cmd = raw.replace(b"\0", b" ").decode(errors="replace").strip()
        if any(tag in cmd for tag in OURS):
            found[int(proc.name)] = cmd
    return found


def started_since(before: set[int], grace: float = 10.0) -> list[str]:
    """Processes of ours not running at `before` that are still alive after `grace` seconds."""
    deadline = time.monotonic() + grace
    while True:
        left = {pid: cmd for pid, cmd in ours().items() if pid not in before}
        if not left or time.monotonic() > deadline:
            return [f"{pid}: {cmd[:200]}" for pid, cmd in sorted(left.items())]
        time.sleep(0.2)
