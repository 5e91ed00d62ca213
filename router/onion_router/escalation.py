"""The escalation loop: ask a layer, judge what it said by that layer's policy, go one layer out
when it is rejected; wake and hold layers on the way. One loop serves both paths: a complete
answer takes the decided reply whole, a stream sends its first chunks and then the rest."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Coroutine
from dataclasses import dataclass, field
from typing import Any

from onion_contract.router_config import RouterConfig, RouterLayer
from onion_router.adaptive import Live, Threshold
from onion_router.decisions import Decision, DecisionLog, record
from onion_router.layers import READY, LayerTracker
from onion_router.learned import answer_features
from onion_router.metrics import Metrics
from onion_router.policies import (
    Verdict,
    asked_for_help,
    escalation_tool,
    fallback_layer,
    for_request,
    judge,
    judge_prefix,
    looks_uncertain,
    p_yes,
    resolve_model,
    self_instruction,
    start_layer,
    verify_messages,
)
from onion_router.protocol.errors import ProtocolError
from onion_router.protocol.types import Answer, ChatRequest, Chunk, Holding, Meta
from onion_router.replies import Decided, Heard, Reply
from onion_router.retries import retry_delay
from onion_router.scoring import TOP_ALTERNATIVES, PromptFeatures, Scoring, answer_score
from onion_router.upstream import Upstream, UpstreamError, UpstreamStream

log = logging.getLogger("onion_router.escalation")
# Policy verify: alternatives asked for the verification's one token, to find "yes" and "no".
VERIFY_TOP_LOGPROBS = 10


@dataclass(frozen=True)
class Route:
    """Where a request starts: the layer's index, and whether it is pinned there (a rule or
    the model name chose it, so its answer is not judged)."""

    start: int
    pinned: bool


@dataclass(frozen=True)
class Answering:
    """Stream event: this layer's answer stands; its chunks follow."""

    meta: Meta


StreamEvent = Holding | Answering | Chunk


@dataclass(frozen=True)
class Answered:
    """A whole answer that stands, with what the response says about it."""

    answer: Answer
    meta: Meta


@dataclass
class Trail:
    """What one request's escalation gathers on the way: its prompt features (the embedding
    computed once) and each judged layer's decision, for the decision log."""

    prompt: PromptFeatures
    decisions: list[Decision] = field(default_factory=list)
    features: dict[str, float] = field(default_factory=dict)  # the last judged answer's


class Escalator:
    def __init__(
        self,
        config: RouterConfig,
        tracker: LayerTracker,
        upstreams: dict[str, Upstream],
        metrics: Metrics,
        scoring: Scoring | None = None,
        decisions: DecisionLog | None = None,
    ) -> None:
        self.config = config
        self.layers = config.layers
        self.tracker = tracker
        self.upstreams = upstreams
        self.metrics = metrics
        self.decisions = decisions
        # The learned models (and the embedder they need), loaded once; a bad file stops here.
        self.scoring = scoring or Scoring(config, log_features=decisions is not None)
        self._background: set[asyncio.Task[None]] = set()
        # Each judged layer's threshold: fixed, or adapting to its scores (targetRate).
        self.thresholds = {t.name: Threshold(t.escalation) for t in config.layers}
        for layer in config.layers:
            if layer.escalation.scored:
                metrics.live(layer.name, self.thresholds[layer.name].live())

    def route(self, request: ChatRequest) -> Route:
        choice = resolve_model(request.model, [t.name for t in self.layers])
        if not choice.known:
            names = ", ".join(["onion", *(f"onion/{t.name}" for t in self.layers)])
            raise ProtocolError(
                f"model {request.model!r} does not exist; use one of: {names}",
                status=404,
                param="model",
                code="model_not_found",
            )
        if choice.pinned is not None:
            return Route(self.config.index(choice.pinned), pinned=True)
        return Route(start_layer(self.layers, request.prompt), pinned=False)

    def live(self) -> dict[str, Live]:
        """The live threshold and escalation rate of every layer whose policy scores answers."""
        return {t.name: self.thresholds[t.name].live() for t in self.layers if t.escalation.scored}

    # --- the two paths ---------------------------------------------------------------------

    async def complete(self, request: ChatRequest, route: Route) -> Answered:
        async with contextlib.aclosing(self._escalate(request, route, streaming=False)) as steps:
            async for step in steps:
                if isinstance(step, Decided):
                    answer = step.answer()
                    return Answered(answer, step.meta.within(answer.raw.get("onion")))
        raise AssertionError("the escalation loop ends in a decision or an error")

    async def stream(self, request: ChatRequest, route: Route) -> AsyncGenerator[StreamEvent]:
        """Events for one streaming answer: Holding while a layer is waited for, Answering once
        one stands, then its chunks."""
        async with contextlib.aclosing(self._escalate(request, route, streaming=True)) as steps:
            async for step in steps:
                if isinstance(step, Holding):
                    yield step
                    continue
                assert step.reply.stream is not None
                buffered = step.reply.heard.chunks
                async with contextlib.aclosing(step.reply.stream.items()) as items:
                    if not buffered:  # the first chunk names the layer if it is an Onion
                        async for item in items:
                            if isinstance(item, Holding):
                                yield item  # an Onion router holding the request
                                continue
                            buffered = [item]
                            break
                    remote = buffered[0].raw.get("onion") if buffered else None
                    yield Answering(step.meta.within(remote))
                    clean = step.cleaner()
                    for chunk in buffered:
                        yield clean(chunk)
                    async for item in items:
                        yield item if isinstance(item, Holding) else clean(item)
                return

    async def judge_once(self, index: int, request: ChatRequest) -> tuple[Answer, Verdict]:
        """Ask layer `index` and judge its answer by its policy and configured threshold, as the
        router would, without escalating or recording anything (`onion-router calibrate`)."""
        layer = self._layer(index, request)
        logprobs, top = self._wants_logprobs(layer, judged=True)
        answer = await self.upstreams[layer.name].complete(
            self._prepare(layer, request, judged=True), logprobs=logprobs, top=top
        )
        reply = Reply(Heard.of(answer), done=True, answer=answer)
        trail = Trail(self.scoring.start(request.prompt))
        return answer, await self._judge(layer, request, reply, trail, live=False)

    # --- the loop --------------------------------------------------------------------------

    async def _escalate(
        self, request: ChatRequest, route: Route, *, streaming: bool
    ) -> AsyncGenerator[Holding | Decided]:
        """Holding while a layer wakes or asked to come back later, then the reply that stands
        (written to the decision log). The decided reply's layer stays admitted (in use) until
        this generator is closed."""
        trail = Trail(self.scoring.start(request.prompt))
        try:
            steps = self._steps(request, route, trail, streaming=streaming)
            async with contextlib.aclosing(steps):
                async for step in steps:
                    if isinstance(step, Decided) and self.decisions is not None:
                        self._log(request, trail, step)
                    yield step
        finally:
            trail.prompt.cancel()

    def _log(self, request: ChatRequest, trail: Trail, decided: Decided) -> None:
        assert self.decisions is not None
        prompt = request.prompt if self.decisions.prompts else None
        entry = record(
            request.request_id or "",
            decided.meta.layer,
            decided.meta.path,
            trail.decisions,
            prompt,
            time.time(),
        )
        self.decisions.write(entry)

    async def _steps(
        self, request: ChatRequest, route: Route, trail: Trail, *, streaming: bool
    ) -> AsyncGenerator[Holding | Decided]:
        path: list[str] = []
        index = route.start
        degraded = False
        # A rejected answer heard whole: it stands if the next layer fails (whileWaking fallback).
        kept: Decided | None = None
        while True:
            fallback = self._fallback_from(index)
            if fallback is not None:
                if kept is not None:
                    yield kept.degraded()
                    return
                index, degraded = fallback, True
            layer = self._layer(index, request)
            judged = not degraded and self._judges(route, index, layer)
            if judged:
                self._early_wake_by_prompt(layer, index, trail)
            try:
                async with self.tracker.admit(layer.name) as admission:
                    while not await admission.wait(self.config.heartbeat_seconds):
                        yield Holding(
                            layer.name, admission.phase, admission.waited, admission.timeout
                        )
                    path.append(layer.name)
                    reply: Reply | None = None
                    async for step in self._ask(layer, index, request, judged, streaming):
                        if isinstance(step, Holding):
                            yield step
                        else:
                            reply = step
                    assert reply is not None
                    async with contextlib.aclosing(reply):
                        meta = Meta(layer.name, tuple(path), degraded)
                        decided = Decided(reply, layer, judged, meta)
                        # Policy verify asks again while the layer is admitted (in use).
                        verdict = (
                            await self._judge(layer, request, reply, trail, live=True)
                            if judged
                            else None
                        )
                        if verdict is None or verdict.accept:
                            if verdict is not None:
                                self._record(layer, verdict, None, trail)
                            yield decided
                            return
                        if self._fallback_from(index + 1) is not None:
                            # The next layer sleeps: this stands.
                            self._record(layer, verdict, None, trail)
                            yield decided.degraded()
                            return
                        self._record(layer, verdict, self.layers[index + 1].name, trail)
                        kept = decided if reply.done else None
            except UpstreamError:
                if kept is not None and self.config.while_waking == "fallback":
                    yield kept.degraded()
                    return
                raise
            index += 1

    async def _ask(
        self, layer: RouterLayer, index: int, request: ChatRequest, judged: bool, streaming: bool
    ) -> AsyncGenerator[Holding | Reply]:
        """The layer's reply; while a layer that said "not now" (429/503 with Retry-After) is
        waited for, a Holding every heartbeat so that a streaming client hears from us."""
        prepared = self._prepare(layer, request, judged)
        started = time.monotonic()
        while True:
            try:
                yield await self._reply(layer, index, prepared, judged, streaming)
                return
            except UpstreamError as err:
                delay = self._retry_delay(layer, err, started)
                if delay is None:
                    raise
                phase = f"HTTP {err.status}, retrying"
            until = time.monotonic() + delay
            while (left := until - time.monotonic()) > 0:
                waited = time.monotonic() - started
                yield Holding(layer.name, phase, waited, layer.wake_timeout_seconds)
                await asyncio.sleep(min(left, self.config.heartbeat_seconds))

    async def _reply(
        self, layer: RouterLayer, index: int, prepared: ChatRequest, judged: bool, streaming: bool
    ) -> Reply:
        upstream = self.upstreams[layer.name]
        logprobs, top = self._wants_logprobs(layer, judged)
        # A complete answer is streamed internally only to wake the next layer early (it sleeps).
        early = judged and self._next_sleeping(index) is not None
        if not streaming and not early:
            answer = await upstream.complete(prepared, logprobs=logprobs, top=top)
            return Reply(Heard.of(answer), done=True, answer=answer)
        stream = await upstream.open_stream(prepared, logprobs=logprobs, top=top)
        try:
            reply = await self._hear(layer, index, stream, judged, whole=not streaming)
        except BaseException:
            await stream.aclose()
            raise
        if not streaming:
            await stream.aclose()
            reply.answer = reply.heard.answer()
        return reply

    async def _hear(
        self, layer: RouterLayer, index: int, stream: UpstreamStream, judged: bool, *, whole: bool
    ) -> Reply:
        """Read the layer's stream until its policy can decide (or to its end when `whole`, or
        for policy verify), waking the next layer early on uncertain first tokens. A stream that
        is not judged is not read here: it goes straight through."""
        heard = Heard()
        if not judged:
            return Reply(heard, done=False, stream=stream)
        woke = False
        async for chunk in stream:
            heard.add(chunk)
            if not woke:
                woke = self._early_wake(layer, index, heard)
            if whole:
                continue
            # A request for help decides at once; anything else after enough tokens.
            asked = asked_for_help(layer.escalation, heard.text, heard.calls)
            if asked or heard.count >= self.config.stream_buffer_tokens:
                live = self.thresholds[layer.name]
                verdict = judge_prefix(
                    layer.escalation,
                    heard.text,
                    heard.logprobs,
                    done=False,
                    calls=heard.calls,
                    threshold=live.value,
                    tie_share=live.tie_share,
                    draw=live.draw(),
                )
                if verdict is not None:
                    return Reply(heard, done=False, stream=stream, verdict=verdict)
        return Reply(heard, done=True, stream=stream)

    # --- the steps' parts ------------------------------------------------------------------

    def _layer(self, index: int, request: ChatRequest) -> RouterLayer:
        """RouterLayer `index` with the escalation policy that judges this request."""
        layer = self.layers[index]
        escalation = for_request(layer.escalation, request.tool_names)
        if escalation is layer.escalation:
            return layer
        return layer.model_copy(update={"escalation": escalation})

    def _wants_logprobs(self, layer: RouterLayer, judged: bool) -> tuple[bool, int]:
        """Whether to ask the layer for token logprobs, and for how many alternatives: only for
        an answer that is judged (parsing them is the costliest part of it), by a policy that
        reads them, or for the decision log's features."""
        policy = layer.escalation.policy
        if not judged:
            return False, 0
        wants_top = policy == "learned" or self.decisions is not None
        return policy in (
            "confidence",
            "learned",
        ) or wants_top, TOP_ALTERNATIVES if wants_top else 0

    def _early_wake_by_prompt(self, layer: RouterLayer, index: int, trail: Trail) -> None:
        """earlyWake: if the layer's prompt model says its answer will likely be escalated, wake
        the next layer now, while this one answers (decided off the hot path, as soon as the
        prompt's embedding is ready)."""
        models = self.scoring.of(layer.name)
        nxt = self._next_sleeping(index)
        if models.prompt is None or nxt is None:
            return
        model = models.prompt

        async def decide() -> None:
            p = model.probability(await trail.prompt.features())
            if p >= models.wake_probability:
                self.metrics.early_wake(nxt.name)
                self.tracker.demand(nxt.name)

        self._spawn(decide())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._background.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.warning("early wake failed: %s", t.exception())

        task.add_done_callback(done)

    def _judges(self, route: Route, index: int, layer: RouterLayer) -> bool:
        policy = layer.escalation.policy
        return not route.pinned and index < len(self.layers) - 1 and policy != "none"

    def _prepare(self, layer: RouterLayer, request: ChatRequest, judged: bool) -> ChatRequest:
        # A layer whose answer is not judged (pinned, outermost, degraded) must not be told
        # it may ask for help: nobody would answer.
        if not judged:
            return request
        tool = escalation_tool(layer.escalation)
        if tool is not None:
            request = request.with_tool(tool)
        instruction = self_instruction(layer.escalation)
        return request.with_system(instruction) if instruction else request

    def _next_sleeping(self, index: int) -> RouterLayer | None:
        """The next layer out if it is managed and not awake (early wake is worth it)."""
        if index + 1 >= len(self.layers):
            return None
        nxt = self.layers[index + 1]
        return nxt if nxt.managed and self.tracker.phase(nxt.name) != READY else None

    def _fallback_from(self, index: int) -> int | None:
        """With `whileWaking: fallback`, the layer to answer instead of a sleeping one."""
        if self.config.while_waking != "fallback" or self.tracker.phase(
            self.layers[index].name
        ) == (READY):
            return None
        self.tracker.demand(self.layers[index].name)  # it still wakes, for the next requests
        return fallback_layer(self.tracker.awake(), index)

    def _retry_delay(self, layer: RouterLayer, err: UpstreamError, started: float) -> float | None:
        """How long to wait before asking a layer that said "not now" again (None: give up).
        A managed layer's wake timeout is spent waking it, so only the others are retried."""
        if layer.managed:
            return None
        waited = time.monotonic() - started
        return retry_delay(err.status, err.retry_after, waited, layer.wake_timeout_seconds)

    def _early_wake(self, layer: RouterLayer, index: int, heard: Heard) -> bool:
        nxt = self._next_sleeping(index)
        if nxt is None or not looks_uncertain(
            layer.escalation,
            heard.text,
            heard.logprobs,
            heard.calls,
            self.thresholds[layer.name].value,
        ):
            return False
        self.metrics.early_wake(nxt.name)
        self.tracker.demand(nxt.name)
        return True

    async def _judge(
        self, layer: RouterLayer, request: ChatRequest, reply: Reply, trail: Trail, *, live: bool
    ) -> Verdict:
        """The layer's verdict on its reply: decided on the first chunks, or on the whole
        answer (for policy verify after asking the layer about it; for policy learned by its
        model); `live`: by the live threshold (targetRate), else by the configured one."""
        if reply.verdict is not None:
            return reply.verdict
        heard = reply.heard
        models = self.scoring.of(layer.name)
        needs_verify = layer.escalation.policy == "verify" or (
            models.answer is not None and models.answer.uses_verify
        )
        score = await self._verify(layer, request, heard.text) if needs_verify else None
        top = [t.top for t in heard.tokens]
        features: dict[str, float] = {}
        if models.answer is not None:
            prompt = await trail.prompt.features()
            score, features = answer_score(
                models.answer, heard.logprobs, top, heard.finish_reason, score, prompt
            )
        elif self.decisions is not None:
            features = answer_features(heard.logprobs, top, heard.finish_reason, score)
            features.update(await trail.prompt.features())
        threshold = self.thresholds[layer.name]
        verdict = judge(
            layer.escalation,
            heard.text,
            heard.logprobs,
            heard.calls,
            threshold=threshold.value if live else None,
            score=score,
            tie_share=threshold.tie_share if live else 0.0,
            draw=threshold.draw(),
        )
        trail.features = features
        return verdict

    async def _verify(self, layer: RouterLayer, request: ChatRequest, answer: str) -> float | None:
        """Policy verify (or a learned model that reads it): ask the layer whether its own
        answer is correct; P(yes) is the score. One more call to the same model server: a
        prefill of question and answer, one token."""
        check = ChatRequest(
            kind="chat",
            model=request.model,
            messages=tuple(verify_messages(layer.escalation, request.prompt, answer)),
            params={"max_tokens": 1, "temperature": 0},
            stream=False,
            logprobs=True,
            top_logprobs=VERIFY_TOP_LOGPROBS,
            request_id=request.request_id,
        )
        started = time.perf_counter()
        try:
            verdict = await self.upstreams[layer.name].complete(check, logprobs=True)
        except UpstreamError as err:  # the answer itself came: keep it rather than fail
            log.warning("verifying layer %s's answer failed: %s", layer.name, err.message)
            return None
        finally:
            self.metrics.verified(layer.name, time.perf_counter() - started)
        return p_yes(verdict.tokens[0].top) if verdict.tokens else None

    def _record(
        self, layer: RouterLayer, verdict: Verdict, escalated_to: str | None, trail: Trail
    ) -> None:
        self.metrics.judged(layer.name, verdict.accept, escalated_to)
        threshold = self.thresholds[layer.name]
        if layer.escalation.scored:
            threshold.observe(verdict.score, not verdict.accept)
            self.metrics.live(layer.name, threshold.live())
        trail.decisions.append(
            Decision(
                layer.name,
                layer.escalation.policy,
                verdict.score,
                threshold.value if layer.escalation.scored else None,
                escalated_to is not None,
                trail.features,
            )
        )


__all__ = ["Answered", "Answering", "Escalator", "Holding", "Route", "StreamEvent", "UpstreamError"]
