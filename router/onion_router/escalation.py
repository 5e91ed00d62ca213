"""The escalation loop: ask a tier, judge its answer by that tier's policy, go one tier out
when it is rejected; wake and hold tiers on the way. Non-streaming and streaming."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, replace
from typing import Any

from onion_contract.router_config import RouterConfig, Tier
from onion_router.adaptive import Live, Threshold
from onion_router.layers import READY, Layers
from onion_router.metrics import Metrics
from onion_router.policies import (
    Verdict,
    asked_for_help,
    escalation_tool,
    fallback_tier,
    for_request,
    judge,
    judge_prefix,
    looks_uncertain,
    own_tool,
    p_yes,
    resolve_model,
    self_instruction,
    start_tier,
    strip_sentinel,
    verify_messages,
)
from onion_router.protocol.calls import CallFilter, call_json, merged_calls, without_calls
from onion_router.protocol.errors import ProtocolError
from onion_router.protocol.types import Answer, Call, ChatRequest, Chunk, Holding, Meta
from onion_router.retries import retry_delay
from onion_router.upstream import Upstream, UpstreamError, UpstreamStream

log = logging.getLogger("onion_router.escalation")
# Policy verify: alternatives asked for the verification's one token, to find "yes" and "no".
VERIFY_TOP_LOGPROBS = 10


@dataclass(frozen=True)
class Plan:
    start: int
    pinned: bool


@dataclass(frozen=True)
class Answering:
    """Stream event: this tier's answer stands; its chunks follow."""

    meta: Meta


StreamEvent = Holding | Answering | Chunk


@dataclass(frozen=True)
class Outcome:
    answer: Answer
    meta: Meta


class Escalator:
    def __init__(
        self, config: RouterConfig, layers: Layers, upstreams: dict[str, Upstream], metrics: Metrics
    ) -> None:
        self.config = config
        self.tiers = config.tiers
        self.layers = layers
        self.upstreams = upstreams
        self.metrics = metrics
        # Each judged layer's threshold: fixed, or adapting to its scores (targetRate).
        self.thresholds = {t.name: Threshold(t.escalation) for t in config.tiers}
        for tier in config.tiers:
            if tier.escalation.scored:
                metrics.live(tier.name, self.thresholds[tier.name].live())

    # --- planning --------------------------------------------------------------------------

    def plan(self, request: ChatRequest) -> Plan:
        choice = resolve_model(request.model, [t.name for t in self.tiers])
        if not choice.known:
            names = ", ".join(["onion", *(f"onion/{t.name}" for t in self.tiers)])
            raise ProtocolError(
                f"model {request.model!r} does not exist; use one of: {names}",
                status=404,
                param="model",
                code="model_not_found",
            )
        if choice.pinned is not None:
            return Plan(self.config.index(choice.pinned), pinned=True)
        return Plan(start_tier(self.tiers, request.prompt), pinned=False)

    def _tier(self, index: int, request: ChatRequest) -> Tier:
        """Tier `index` with the escalation policy that judges this request."""
        tier = self.tiers[index]
        escalation = for_request(tier.escalation, request.tool_names)
        if escalation is tier.escalation:
            return tier
        return tier.model_copy(update={"escalation": escalation})

    def _judges(self, plan: Plan, index: int, tier: Tier) -> bool:
        policy = tier.escalation.policy
        return not plan.pinned and index < len(self.tiers) - 1 and policy != "none"

    def _prepare(self, tier: Tier, request: ChatRequest, judged: bool) -> ChatRequest:
        # A layer whose answer is not judged (pinned, outermost, degraded) must not be told
        # it may ask for help: nobody would answer.
        if not judged:
            return request
        tool = escalation_tool(tier.escalation)
        if tool is not None:
            request = request.with_tool(tool)
        instruction = self_instruction(tier.escalation)
        return request.with_system(instruction) if instruction else request

    def _next_sleeping(self, index: int) -> Tier | None:
        """The next tier out if it is managed and not awake (early wake is worth it)."""
        if index + 1 >= len(self.tiers):
            return None
        nxt = self.tiers[index + 1]
        return nxt if nxt.managed and self.layers.phase(nxt.name) != READY else None

    def _fallback_from(self, index: int) -> int | None:
        """With `whileWaking: fallback`, the tier to answer instead of a sleeping one."""
        if self.config.while_waking != "fallback" or self.layers.phase(self.tiers[index].name) == (
            READY
        ):
            return None
        self.layers.demand(self.tiers[index].name)  # it still wakes, for the next requests
        return fallback_tier(self.layers.awake(), index)

    def _retry_delay(self, tier: Tier, err: UpstreamError, started: float) -> float | None:
        """How long to wait before asking a tier that said "not now" again (None: give up).
        A managed tier's wake timeout is spent waking it, so only the others are retried."""
        if tier.managed:
            return None
        waited = time.monotonic() - started
        return retry_delay(err.status, err.retry_after, waited, tier.wake_timeout_seconds)

    def _record(self, tier: Tier, verdict: Verdict, escalated_to: str | None) -> None:
        self.metrics.judged(tier.name, verdict.accept, escalated_to)
        if tier.escalation.scored:
            threshold = self.thresholds[tier.name]
            threshold.observe(verdict.score, not verdict.accept)
            self.metrics.live(tier.name, threshold.live())

    def live(self) -> dict[str, Live]:
        """The live threshold and escalation rate of every layer whose policy scores answers."""
        return {t.name: self.thresholds[t.name].live() for t in self.tiers if t.escalation.scored}

    def _limit(self, tier: Tier) -> float:
        return self.thresholds[tier.name].value

    async def _verify(self, tier: Tier, request: ChatRequest, answer: str) -> float | None:
        """Policy verify: ask the layer whether its own answer is correct; P(yes) is the score.
        One more call to the same model server: a prefill of question and answer, one token."""
        if tier.escalation.policy != "verify":
            return None
        check = ChatRequest(
            kind="chat",
            model=request.model,
            messages=tuple(verify_messages(tier.escalation, request.prompt, answer)),
            params={"max_tokens": 1, "temperature": 0},
            stream=False,
            logprobs=True,
            top_logprobs=VERIFY_TOP_LOGPROBS,
            request_id=request.request_id,
        )
        started = time.perf_counter()
        try:
            verdict = await self.upstreams[tier.name].complete(check, logprobs=True)
        except UpstreamError as err:  # the answer itself came: keep it rather than fail
            log.warning("verifying layer %s's answer failed: %s", tier.name, err.message)
            return None
        finally:
            self.metrics.verified(tier.name, time.perf_counter() - started)
        return p_yes(verdict.tokens[0].top) if verdict.tokens else None

    # --- non-streaming ---------------------------------------------------------------------

    async def complete(self, request: ChatRequest, plan: Plan) -> Outcome:
        path: list[str] = []
        index = plan.start
        rejected: Outcome | None = None
        degraded = False
        while True:
            fallback = self._fallback_from(index)
            if fallback is not None:
                if rejected is not None:
                    return replace(rejected, meta=replace(rejected.meta, degraded=True))
                index, degraded = fallback, True
            tier = self._tier(index, request)
            judged = not degraded and self._judges(plan, index, tier)
            try:
                async with self.layers.admit(tier.name) as admission:
                    while not await admission.wait():
                        pass  # timer wake-ups can come a hair early; wait() raises at the deadline
                    path.append(tier.name)
                    prepared = self._prepare(tier, request, judged)
                    started = time.monotonic()
                    while True:
                        try:
                            answer = await self._ask(tier, index, prepared, judged)
                            break
                        except UpstreamError as err:
                            delay = self._retry_delay(tier, err, started)
                            if delay is None:
                                raise
                            await asyncio.sleep(delay)
                    # Policy verify: still admitted, so the layer counts as in use.
                    score = await self._verify(tier, request, answer.text) if judged else None
            except UpstreamError:
                if rejected is not None and self.config.while_waking == "fallback":
                    return replace(rejected, meta=replace(rejected.meta, degraded=True))
                raise
            names = [c.name for c in answer.calls if c.name]
            logprobs = [t.logprob for t in answer.tokens]
            verdict = judge(
                tier.escalation,
                answer.text,
                logprobs,
                names,
                threshold=self._limit(tier),
                score=score,
            )
            answer.text = strip_sentinel(tier.escalation, answer.text)
            tool = own_tool(tier.escalation) if judged else None
            if tool is not None:
                answer = without_calls(answer, tool)
            meta = Meta(tier.name, tuple(path), degraded).within(answer.raw.get("onion"))
            outcome = Outcome(answer, meta)
            if not judged:
                return outcome
            if verdict.accept:
                self._record(tier, verdict, None)
                return outcome
            self._record(tier, verdict, self.tiers[index + 1].name)
            rejected, index = outcome, index + 1

    async def judge_once(self, index: int, request: ChatRequest) -> tuple[Answer, Verdict]:
        """Ask tier `index` and judge its answer by its policy and configured threshold, as the
        router would, without escalating or recording anything (`onion-router calibrate`)."""
        tier = self._tier(index, request)
        logprobs = tier.escalation.policy == "confidence"
        answer = await self.upstreams[tier.name].complete(
            self._prepare(tier, request, judged=True), logprobs=logprobs
        )
        names = [c.name for c in answer.calls if c.name]
        score = await self._verify(tier, request, answer.text)
        lps = [t.logprob for t in answer.tokens]
        return answer, judge(tier.escalation, answer.text, lps, names, score=score)

    async def _ask(self, tier: Tier, index: int, prepared: ChatRequest, judged: bool) -> Answer:
        upstream = self.upstreams[tier.name]
        # Logprobs only for an answer that is judged: parsing them is the costliest part of it.
        logprobs = judged and tier.escalation.policy == "confidence"
        if not judged or tier.escalation.policy == "none" or self._next_sleeping(index) is None:
            return await upstream.complete(prepared, logprobs=logprobs)
        # The next tier sleeps: stream internally so its wake can start on the first tokens.
        stream = await upstream.open_stream(prepared, logprobs=logprobs)
        async with contextlib.aclosing(stream):
            return await self._collect(tier, index, stream)

    async def _collect(self, tier: Tier, index: int, stream: UpstreamStream) -> Answer:
        text, tokens, finish, usage, first = "", [], None, None, None
        pieces: list[Call] = []
        woke = False
        async for chunk in stream:
            first = first or chunk.raw
            text += chunk.text
            tokens.extend(chunk.tokens)
            pieces.extend(chunk.calls)
            finish = chunk.finish_reason or finish
            usage = chunk.usage or usage
            if not woke:
                names = [c.name for c in pieces if c.name]
                woke = self._early_wake(tier, index, text, [t.logprob for t in tokens], names)
        calls = merged_calls(pieces)
        # As the model server would answer: content null when there are only tool calls.
        message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
        if calls:
            message["tool_calls"] = [call_json(c) for c in calls]
        raw = {
            "id": (first or {}).get("id"),
            "object": "chat.completion",
            "created": (first or {}).get("created") or int(time.time()),
            "model": (first or {}).get("model"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage,
        }
        return Answer(text, tokens, finish, usage, raw, calls)

    def _early_wake(
        self, tier: Tier, index: int, text: str, logprobs: list[float], calls: list[str]
    ) -> bool:
        nxt = self._next_sleeping(index)
        limit = self._limit(tier)
        if nxt is None or not looks_uncertain(tier.escalation, text, logprobs, calls, limit):
            return False
        self.metrics.early_wake(nxt.name)
        self.layers.demand(nxt.name)
        return True

    # --- streaming -------------------------------------------------------------------------

    async def stream(self, request: ChatRequest, plan: Plan) -> AsyncGenerator[StreamEvent]:
        """Events for one streaming answer; buffers each judged tier's first tokens to decide."""
        path: list[str] = []
        index = plan.start
        degraded = False
        heartbeat = self.config.heartbeat_seconds
        while True:
            fallback = self._fallback_from(index)
            if fallback is not None:
                index, degraded = fallback, True
            tier = self._tier(index, request)
            async with self.layers.admit(tier.name) as admission:
                while not await admission.wait(heartbeat):
                    yield Holding(tier.name, admission.phase, admission.waited, admission.timeout)
                path.append(tier.name)
                judges = self._judges(plan, index, tier) and not degraded
                opened: list[UpstreamStream] = []
                async for held in self._open_stream(tier, request, judges, opened):
                    yield held
                upstream = opened[0]
                async with contextlib.aclosing(upstream):
                    buffered, verdict = await self._buffer(tier, index, request, upstream, judges)
                    if verdict is not None and not verdict.accept:
                        nxt = self.tiers[index + 1]
                        if self._fallback_from(index + 1) is None:
                            self._record(tier, verdict, nxt.name)
                            index += 1
                            continue
                        degraded = True  # the outer tier sleeps: keep this answer, marked
                    elif verdict is not None:
                        self._record(tier, verdict, None)
                    async with contextlib.aclosing(upstream.items()) as items:
                        if not buffered:  # the first chunk names the layer if it is an Onion
                            async for item in items:
                                if isinstance(item, Holding):
                                    yield item  # an Onion router holding the request
                                    continue
                                buffered = [item]
                                break
                        remote = buffered[0].raw.get("onion") if buffered else None
                        yield Answering(Meta(tier.name, tuple(path), degraded).within(remote))
                        clean = self._cleaner(tier, judges)
                        for chunk in buffered:
                            yield clean(chunk)
                        async for item in items:
                            yield item if isinstance(item, Holding) else clean(item)
                    return

    async def _open_stream(
        self, tier: Tier, request: ChatRequest, judges: bool, opened: list[UpstreamStream]
    ) -> AsyncGenerator[Holding]:
        """Open the tier's stream into `opened`; while a tier that said "not now" is waited for,
        yields a Holding every heartbeat so the client hears from the router meanwhile."""
        prepared = self._prepare(tier, request, judges)
        started = time.monotonic()
        while True:
            try:
                opened.append(
                    await self.upstreams[tier.name].open_stream(
                        prepared, logprobs=judges and tier.escalation.policy == "confidence"
                    )
                )
                return
            except UpstreamError as err:
                delay = self._retry_delay(tier, err, started)
                if delay is None:
                    raise
                phase = f"HTTP {err.status}, retrying"
            until = time.monotonic() + delay
            while (left := until - time.monotonic()) > 0:
                waited = time.monotonic() - started
                yield Holding(tier.name, phase, waited, tier.wake_timeout_seconds)
                await asyncio.sleep(min(left, self.config.heartbeat_seconds))

    async def _buffer(
        self, tier: Tier, index: int, request: ChatRequest, upstream: UpstreamStream, judges: bool
    ) -> tuple[list[Chunk], Verdict | None]:
        """Read first tokens until the tier's policy can decide (or the answer ends); policy
        verify reads the whole answer."""
        if not judges:
            return [], None
        buffered: list[Chunk] = []
        text, count = "", 0
        logprobs: list[float] = []
        calls: list[str] = []
        woke = False
        async for chunk in upstream:
            buffered.append(chunk)
            text += chunk.text
            logprobs.extend(t.logprob for t in chunk.tokens)
            calls.extend(c.name for c in chunk.calls if c.name)
            count += len(chunk.tokens) or (1 if chunk.text else 0)
            if not woke:
                woke = self._early_wake(tier, index, text, logprobs, calls)
            # A request for help decides at once; anything else after enough tokens.
            asked = asked_for_help(tier.escalation, text, calls)
            if asked or count >= self.config.stream_buffer_tokens:
                verdict = judge_prefix(
                    tier.escalation,
                    text,
                    logprobs,
                    done=False,
                    calls=calls,
                    threshold=self._limit(tier),
                )
                if verdict is not None:
                    return buffered, verdict
        score = await self._verify(tier, request, text)
        return buffered, judge(
            tier.escalation, text, logprobs, calls, threshold=self._limit(tier), score=score
        )

    @staticmethod
    def _cleaner(tier: Tier, judged: bool) -> Callable[[Chunk], Chunk]:
        """Removes from a stream what the client must never see: the router's own tool calls
        (offered only when judged), or the sentinel."""
        tool = own_tool(tier.escalation) if judged else None
        if tool is not None:
            return CallFilter(tool).chunk
        sentinel = tier.escalation.sentinel if tier.escalation.policy == "self" else None

        def clean(chunk: Chunk) -> Chunk:
            if sentinel is not None and sentinel in chunk.text:
                return replace(chunk, text=chunk.text.replace(sentinel, ""))
            return chunk

        return clean


__all__ = ["Answering", "Escalator", "Holding", "Outcome", "Plan", "StreamEvent", "UpstreamError"]
