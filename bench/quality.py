#!/usr/bin/env python3
"""`make bench-quality`: the onion's bargain from the answer bank (results/bank/).

    bench/quality.py analyse [--out results]     # every figure from the bank, in minutes
    bench/quality.py record [--sizes gsm8k=250,humaneval=164,boolq=400] [--workers 2]
    bench/quality.py grade --dataset humaneval|gsm8k|boolq --id ID --answer FILE

`analyse` re-grades every answer strictly, scores it by every policy (the learned ones trained
on the train split, out of fold there), and writes results/quality.json, quality.md and
quality.png: headline figures on the test split only, with 95% intervals and p-values.

`record` asks the real model ladder (llama-server; SmolLM2-135M, Qwen2.5-Coder 0.5B and 1.5B)
every question not yet in the bank, once per layer, with token logprobs and the `verify` and
`self` probes; it resumes where it stopped. `grade` grades one answer with the bank's strict
grader and prints pass or fail. These are tiny CPU models: they show the mechanism and the
method, not what large models reach.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import signal as signals
import sys
import tempfile
import time
from pathlib import Path

from onion_lab import bank, llamaserver, quality, quality_report, recorder
from onion_lab.datasets import DATASETS
from onion_lab.paths import RESULTS

DEFAULT_SIZES = {"gsm8k": 250, "humaneval": 164, "boolq": 400}


def say(msg: str) -> None:
    print(f"[bench-quality {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sizes(text: str | None) -> dict[str, int]:
    """`gsm8k=250,boolq=400`: questions per dataset (the first N in the dataset's order)."""
    if not text:
        return dict(DEFAULT_SIZES)
    out = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        if name.strip() not in DATASETS or not value.strip().isdigit():
            raise SystemExit(
                f"bad --sizes entry {part!r}: want NAME=N with NAME in {sorted(DATASETS)}"
            )
        out[name.strip()] = int(value)
    return out


def record(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    try:
        models = recorder.ladder_models()
        llamaserver.binary()
    except llamaserver.EngineMissing as err:
        print(f"bench-quality: {err}", file=sys.stderr)
        return 2
    adopted = bank.adopt_partials(args.bank)
    if adopted:
        say(f"closed {adopted} shard(s) a stopped recording left open")
    have = {row["key"] for row in bank.rows(args.bank)}
    jobs = recorder.pending(recorder.interleaved(sizes(args.sizes)), models, have)
    say(f"{len(have)} rows in the bank; {len(jobs)} questions to record, {args.workers} worker(s)")
    if not jobs:
        return 0
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    recorder.manifest(models, None, args.bank)  # what this recording asks with, from its start

    def stop(signum: int, _frame: object) -> None:  # unwind, so every server is stopped
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signals.SIGTERM, signals.SIGHUP, signals.SIGINT):
        signals.signal(sig, stop)
    with (
        tempfile.TemporaryDirectory(prefix="bank-") as logs,
        tqdm(total=len(jobs), unit="q", smoothing=0.05, mininterval=5, file=sys.stdout) as bar,
    ):
        work = recorder.Recorder(args.bank, models, args.workers, Path(logs))

        def done(job: recorder.Job) -> None:
            bar.set_postfix_str(job.item.id, refresh=False)
            bar.update(1)

        try:
            work.run(jobs, have, done)
            outcome = "finished"
        except KeyboardInterrupt:
            work.stop.set()
            outcome = "stopped"
        finally:
            recorded = bar.n
            recorder.manifest(
                models,
                {
                    "started": started,
                    "ended": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "questions": recorded,
                    "workers": args.workers,
                    "outcome": outcome,
                },
                args.bank,
            )
    say(f"{outcome}: {recorded} questions recorded")
    return 0


def grade(args: argparse.Namespace) -> int:
    dataset = DATASETS[args.dataset]
    try:
        item = dataset.item(args.id)
    except KeyError as err:
        print(f"bench-quality: {err.args[0]}", file=sys.stderr)
        return 2
    result = dataset.grade(item, Path(args.answer).read_text())
    print("pass" if result.correct else "fail")
    if args.verbose:
        print(f"lenient: {'pass' if result.lenient else 'fail'}; {result.detail}", file=sys.stderr)
    return 0


def analyse(args: argparse.Namespace) -> int:
    if not (args.bank / "manifest.json").exists():
        print(
            f"bench-quality: no bank at {args.bank} (record one: bench/quality.py record)",
            file=sys.stderr,
        )
        return 2
    # The plot comes last: say what is missing before minutes of analysis, not after them.
    if importlib.util.find_spec("matplotlib") is None:
        print(
            "bench-quality: needs matplotlib for quality.png (make bench-quality installs it): "
            "pip install matplotlib",
            file=sys.stderr,
        )
        return 2
    started = time.perf_counter()
    embed, embedder = quality_report.embedder()
    say(f"analysing {args.bank} (prompt embedding: {embedder['runtime'] if embedder else 'none'})")
    summary, models = quality.report(args.bank, embed, embedder)
    summary["wallSeconds"] = round(time.perf_counter() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    # The learned policies' models, as the router loads them (trained on the train split).
    learned = args.out / "learned"
    learned.mkdir(exist_ok=True)
    for name, model in models.items():
        (learned / f"{name}.json").write_text(json.dumps(model.to_json(), indent=1) + "\n")
    summary["learnedModelFiles"] = sorted(f"learned/{name}.json" for name in models)
    (args.out / "quality.json").write_text(json.dumps(summary, indent=1) + "\n")
    (args.out / "quality.md").write_text(quality_report.markdown(summary))
    quality_report.plot(summary, args.out / "quality.png")
    say(f"wrote {args.out}/quality.json, quality.md, quality.png in {summary['wallSeconds']:.0f}s")
    print(quality_report.markdown(summary))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/quality.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bank", type=Path, default=bank.BANK)
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser("analyse", help="every figure from the bank (the default job)")
    report.add_argument("--out", type=Path, default=RESULTS)
    report.set_defaults(run=analyse)
    rec = commands.add_parser("record", help="ask the ladder what the bank lacks (resumable)")
    rec.add_argument("--sizes", help="NAME=N,...: questions per dataset (default %(default)s)")
    rec.add_argument("--workers", type=int, default=2, help="ladders side by side (one per core)")
    rec.set_defaults(run=record)
    one = commands.add_parser("grade", help="grade one answer strictly: prints pass or fail")
    one.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    one.add_argument("--id", required=True, help="as in the bank: gsm8k/12, boolq/7, HumanEval/0")
    one.add_argument("--answer", required=True, help="a file holding the answer's text")
    one.add_argument("-v", "--verbose", action="store_true", help="say why, on stderr")
    one.set_defaults(run=grade)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
