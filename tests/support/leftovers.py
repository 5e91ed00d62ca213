"""Fail if a test run left one of our processes behind (`make test` runs this after pytest)."""

from __future__ import annotations

import os
import sys
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


def leftovers(ignore: str | None = None) -> list[str]:
    found = []
    me = os.getpid()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(tag in cmd for tag in OURS) and not (ignore and ignore in cmd):
            found.append(f"{proc.name}: {cmd.strip()[:200]}")
    return found


def main() -> int:
    # A cluster the user started with `make cluster-up` is theirs, not a leftover.
    user_cluster = os.environ.get(
        "ONION_CLUSTER_DIR", f"/dev/shm/onion-local-cluster-{os.getuid()}"
    )
    left = leftovers(ignore=user_cluster)
    if left:
        print("processes left running after the tests:\n  " + "\n  ".join(left), file=sys.stderr)
        return 1
    print("no processes left running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
