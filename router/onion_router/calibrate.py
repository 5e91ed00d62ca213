"""`onion-router calibrate --config FILE --prompts FILE.jsonl --target-rate R`: send sample
prompts to each judged layer (as the router would: same instruction, same scoring), print each
layer's score distribution and the threshold that escalates about R of them, and write a snippet
for the Onion spec (or the router config), so a user starts from measured numbers."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson
import yaml

from onion_contract.router_config import ConfigError, RouterConfig, load_config
from onion_router.adaptive import distribution
from onion_router.escalation import Escalator
from onion_router.layers import LayerTracker, StaticLink
from onion_router.metrics import Metrics
from onion_router.protocol.chat import parse_chat
from onion_router.protocol.errors import ProtocolError
from onion_router.protocol.types import ChatRequest
from onion_router.upstream import UpstreamError, upstreams


def read_prompts(path: Path, max_tokens: int) -> list[ChatRequest]:
    """JSONL, one request a line: {"prompt": "..."} or {"messages": [...]} (chat format)."""
    requests = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
            if not isinstance(item, dict):
                raise ProtocolError("not a JSON object")
            messages = item.get("messages") or [{"role": "user", "content": item.get("prompt")}]
            body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0}
            requests.append(parse_chat(body))
        except (orjson.JSONDecodeError, ProtocolError) as err:
            raise ValueError(f"{path}:{number}: {err}") from None
        if not isinstance(requests[-1].messages[-1].get("content"), str):
            raise ValueError(f'{path}:{number}: needs "prompt" (a string) or "messages"')
    if not requests:
        raise ValueError(f"{path} has no prompts")
    return requests


async def measure(config: RouterConfig, requests: list[ChatRequest]) -> dict[str, list[float]]:
    """Each judged layer's scores on the prompts (layers that are never judged are skipped)."""
    scores: dict[str, list[float]] = {}
    async with upstreams(config) as clients:  # each layer's key and CA file, as the router's
        tracker = LayerTracker(config, StaticLink(config.layers))
        escalator = Escalator(config, tracker, clients, Metrics())
        for index, layer in enumerate(config.layers[:-1]):  # the outermost answer always stands
            if not layer.escalation.scored:
                continue
            found = scores.setdefault(layer.name, [])
            for number, request in enumerate(requests, 1):
                _, verdict = await escalator.judge_once(index, request)
                if verdict.score is not None:
                    found.append(verdict.score)
                print(f"  {layer.name}: {number}/{len(requests)} {verdict.reason}", file=sys.stderr)
    return scores


def snippet(config: RouterConfig, summaries: dict[str, dict[str, Any]], rate: float) -> str:
    """YAML for the Onion spec: each judged layer's escalation with the measured threshold."""
    out: dict[str, Any] = {}
    for layer in config.layers:
        if layer.name not in summaries or "threshold" not in summaries[layer.name]:
            continue
        e = layer.escalation
        escalation: dict[str, Any] = {
            "policy": e.policy,
            "threshold": round(float(summaries[layer.name]["threshold"]), 4),
            "targetRate": rate,
        }
        if e.policy == "confidence":
            escalation.update(score=e.score, firstK=e.first_k)
        if layer.name == config.layers[0].name:
            out["core"] = {"escalation": escalation}
        else:
            out.setdefault("layers", []).append({"name": layer.name, "escalation": escalation})
    head = (
        f"# onion-router calibrate: thresholds that escalated {rate:.0%} of the sample prompts.\n"
        "# Merge into the Onion's spec (core / layers[].escalation); the router config takes the\n"
        "# same escalation fields under layers[].escalation. With targetRate the router keeps\n"
        "# adapting from this starting threshold.\n"
    )
    return head + yaml.safe_dump(out, sort_keys=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="onion-router calibrate", description=__doc__)
    parser.add_argument("--config", required=True, help="router config YAML")
    parser.add_argument("--prompts", required=True, type=Path, help="JSONL of sample prompts")
    parser.add_argument("--target-rate", required=True, type=float, help="0 < R < 1")
    parser.add_argument("--max-tokens", type=int, default=256, help="per answer (default 256)")
    parser.add_argument("--out", type=Path, help="write the spec snippet here (default: print)")
    args = parser.parse_args(argv)
    if not 0 < args.target_rate < 1:
        parser.error(f"--target-rate must be between 0 and 1 (exclusive), not {args.target_rate}")
    try:
        config = load_config(args.config)
        requests = read_prompts(args.prompts, args.max_tokens)
    except (ConfigError, ValueError, OSError) as err:
        print(f"onion-router calibrate: {err}", file=sys.stderr)
        return 2
    if not any(t.escalation.scored for t in config.layers[:-1]):
        print(
            "onion-router calibrate: no layer inside the outermost has a scored policy "
            "(confidence or verify); nothing to calibrate",
            file=sys.stderr,
        )
        return 2
    try:
        scores = asyncio.run(measure(config, requests))
    except UpstreamError as err:
        print(f"onion-router calibrate: {err.message}", file=sys.stderr)
        return 1
    summaries = {name: distribution(values, args.target_rate) for name, values in scores.items()}
    print(f"{'layer':<12} {'n':>4} " + " ".join(f"{k:>8}" for k in _COLUMNS) + "  threshold")
    for name, summary in summaries.items():
        cells = " ".join(_cell(summary.get(k)) for k in _COLUMNS)
        print(f"{name:<12} {summary['count']:>4} {cells}  {_cell(summary.get('threshold'))}")
    text = snippet(config, summaries, args.target_rate)
    if args.out:
        args.out.write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    return 0


_COLUMNS = ("min", "p10", "p25", "p50", "p75", "p90", "max")


def _cell(value: object) -> str:
    return f"{value:>8.3f}" if isinstance(value, float | int) else f"{'-':>8}"
