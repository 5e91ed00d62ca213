"""The restart, as a picture: each wake after a `kill -9` restart (when it was sent, how long it
took) and the new operator's CPU, before and after the change, from two `bench/scale.py` JSONs.

    python bench/scale_restart_plot.py results/scale-restart-before.json results/scale.json \\
        --out results/scale-restart.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from onion_lab.paths import RESULTS


def runs_by_size(path: Path) -> dict[int, dict[str, Any]]:
    return {run["onions"]: run["restart"] for run in json.loads(path.read_text())["runs"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path)
    p.add_argument("--out", type=Path, default=RESULTS / "scale-restart.png")
    args = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    before, after = runs_by_size(args.before), runs_by_size(args.after)
    sizes = sorted(set(before) & set(after))
    fig, axes = plt.subplots(2, len(sizes), figsize=(6 * len(sizes), 7), squeeze=False)
    for col, n in enumerate(sizes):
        top, bottom = axes[0][col], axes[1][col]
        for label, restart, style in (("before", before[n], "o--"), ("after", after[n], "s-")):
            wakes = [w for w in restart["wakes"] if w["wake_s"] is not None]
            served = [w["sent_after_start_s"] + w["wake_s"] for w in wakes]
            top.plot(
                [w["sent_after_start_s"] for w in wakes],
                served,
                style,
                markersize=4,
                label=f"{label}: the first (sent at 2 s) "
                + (
                    f"served at {first:.2f} s"
                    if (first := restart["first_wake_served_after_start_s"]) is not None
                    else "not served within its demand (10 s)"
                ),
            )
            t, cores = zip(*restart["cpu_samples"], strict=True)
            (line,) = bottom.plot(t, cores, style, markersize=2, label=label)
            listed = restart.get("caches_listed_after_start_s")
            if listed is not None:  # the log of an operator before this change may not say
                bottom.axvline(listed, linestyle=":", color=line.get_color())
                bottom.annotate(f" {label}: all listed", (listed, 0.3), fontsize=7, rotation=90)
        top.plot([2, 12], [2, 12], ":", color="grey", label="served the moment it is sent")
        top.set(
            title=f"{n:,} Onions: 30 wakes after a kill -9 restart",
            xlabel="wake sent (s after the new operator started)",
            ylabel="layer scaled to 1 (s after the start)",
        )
        top.legend(fontsize=8)
        bottom.set(
            title="the new operator's CPU", xlabel="s after its start", ylabel="cores (0.5 s)"
        )
        bottom.set_xlim(0, 30)
        bottom.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
