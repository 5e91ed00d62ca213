"""Where a restarted operator's time went: py-spy's collapsed stacks (`bench/scale.py --py-spy`)
of its main thread, summed by what the stack was doing.

    python bench/py_spy_summary.py results/scale-py-spy/restart-3000.txt
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

RATE = 200  # samples a second: bench/scale.py's py-spy --rate

# The first that matches names the sample (a frame anywhere in the stack).
CATEGORIES = [
    ("idle (waiting for the network)", {"EpollSelector.select"}),
    ("lists: JSON parsing", {"Informer.sync+loads"}),
    ("lists: requests, caches", {"Informer.sync"}),
    ("passes (start-up and wakes)", {"run_pass"}),
    ("imports", {"_find_and_load"}),
    ("watch events", {"Informer._watch", "Informer.run"}),
]


def category(frames: set[str]) -> str:
    for name, marks in CATEGORIES:
        for mark in marks:
            if all(part in frames for part in mark.split("+")):
                return name
    return "other (mostly TLS reads of the answers)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stacks", type=Path, nargs="+")
    args = p.parse_args()
    for path in args.stacks:
        seconds: Counter[str] = Counter()
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = {frame.split(" (")[0] for frame in stack.split(";")}
            if not frames & {"BaseEventLoop.run_forever", "<module>"}:
                continue  # not the main thread (the executor's idle workers)
            seconds[category(frames)] += int(count) / RATE
        total = sum(seconds.values())
        print(f"{path.name}: {total:.1f} s sampled on the main thread")
        for name, s in seconds.most_common():
            print(f"  {name}: {s:.2f} s ({100 * s / total:.0f}%)")


if __name__ == "__main__":
    main()
