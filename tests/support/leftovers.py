"""No test leaves a process behind: the processes of ours that a test session started and that
still run when it ends (the session fails then; see tests/conftest.py).

A session marks itself with `ONION_TEST_SESSION` in the environment, which every process it
starts inherits, so two test sessions on one machine never count each other's processes."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

# Command-line fragments of everything the tests start.
OURS = (
    "onion-of-experts/bin/",
    "llama_cpp.server",
    "llama-server",
    "onion-operator",
    "onion-router",
    "tests.support.",
    "litellm",
)
SESSION_VAR = "ONION_TEST_SESSION"


def mark_session() -> str:
    """Tag this process (and so every process it starts) as one test session's."""
    session = os.environ.setdefault(SESSION_VAR, uuid.uuid4().hex)
    return session


def _session_of(proc: Path) -> str | None:
    try:
        environ = (proc / "environ").read_bytes()
    except OSError:
        return None
    prefix = f"{SESSION_VAR}=".encode()
    for entry in environ.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix) :].decode(errors="replace")
    return None


def ours(session: str | None = None) -> dict[int, str]:
    """pid -> command line of every running process that looks like one the tests start: only
    those of test session `session` (default: this process's session, once marked)."""
    session = session or os.environ.get(SESSION_VAR)
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            raw = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        cmd = raw.replace(b"\0", b" ").decode(errors="replace").strip()
        if not any(tag in cmd for tag in OURS):
            continue
        if session is not None and _session_of(proc) != session:
            continue
        found[int(proc.name)] = cmd
    return found


def started_since(before: set[int], session: str | None = None, grace: float = 10.0) -> list[str]:
    """Processes of ours not running at `before` that are still alive after `grace` seconds."""
    deadline = time.monotonic() + grace
    while True:
        left = {pid: cmd for pid, cmd in ours(session).items() if pid not in before}
        if not left or time.monotonic() > deadline:
            return [f"{pid}: {cmd[:200]}" for pid, cmd in sorted(left.items())]
        time.sleep(0.2)
