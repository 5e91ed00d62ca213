"""escalation.targetRate: the threshold that holds an escalation rate, on replayed score streams."""

from __future__ import annotations

import random

import pytest

from onion_contract.router_config import ConfigError, Escalation, parse_config
from onion_router.adaptive import Threshold, distribution, quantile
from onion_router.policies import judge

# A replayed stream is judged as the router judges it: escalate when score < live threshold.
# The stated tolerance: after convergence, the escalation rate over 1,500 answers is within
# 0.03 of the target (binomial noise alone is 0.013 at 0.5); over one 400-answer window, 0.06.
TOLERANCE = 0.03
WINDOW_TOLERANCE = 0.06


def replay(threshold: Threshold, escalation: Escalation, scores: list[float]) -> list[bool]:
    escalated = []
    for score in scores:
        verdict = judge(escalation, "", [], threshold=threshold.value, score=score)
        threshold.observe(score, not verdict.accept)
        escalated.append(not verdict.accept)
    return escalated


def adaptive(rate: float, **extra: object) -> Escalation:
    return Escalation(
        policy="verify", threshold=0.5, target_rate=rate, window=400, min_samples=50, **extra
    )


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5])
def test_a_replayed_stream_converges_to_the_target_rate(rate: float) -> None:
    rng = random.Random(7)
    escalation = adaptive(rate)
    threshold = Threshold(escalation)
    scores = [rng.betavariate(5, 2) for _ in range(3000)]
    escalated = replay(threshold, escalation, scores)
    recent = escalated[-1500:]
    assert abs(sum(recent) / len(recent) - rate) <= TOLERANCE
    live = threshold.live()
    assert live.adapting and live.samples == 400
    assert live.escalation_rate is not None
    assert abs(live.escalation_rate - rate) <= WINDOW_TOLERANCE


def test_until_min_samples_the_configured_threshold_holds() -> None:
    escalation = adaptive(0.2)
    threshold = Threshold(escalation)
    replay(threshold, escalation, [0.9] * 49)
    assert threshold.value == 0.5 and not threshold.live().adapting
    replay(threshold, escalation, [0.9])
    assert threshold.live().adapting


def test_a_shift_in_the_score_distribution_is_followed() -> None:
    rng = random.Random(11)
    escalation = adaptive(0.2)
    threshold = Threshold(escalation)
    replay(threshold, escalation, [rng.gauss(0.8, 0.05) for _ in range(1000)])
    before = threshold.value
    # The traffic gets harder: every score drops by 0.3. A fixed threshold would now escalate
    # almost everything; the adaptive one moves down and holds the rate.
    escalated = replay(threshold, escalation, [rng.gauss(0.5, 0.05) for _ in range(1000)])
    assert threshold.value < before - 0.25
    assert abs(sum(escalated[-500:]) / 500 - 0.2) <= WINDOW_TOLERANCE
    # During the shift it escalated more, for at most about one window.
    assert sum(escalated[:400]) / 400 > 0.2


def test_replicas_on_their_own_traffic_end_near_the_same_threshold() -> None:
    escalation = adaptive(0.3)
    replicas = [Threshold(escalation) for _ in range(3)]
    for seed, replica in enumerate(replicas):
        rng = random.Random(100 + seed)  # each replica sees different requests, same traffic
        replay(replica, escalation, [rng.gauss(-1.0, 0.4) for _ in range(2000)])
    values = [r.value for r in replicas]
    assert max(values) - min(values) < 0.1  # 0.25 standard deviations of the scores
    assert all(abs(v - (-1.0 - 0.524 * 0.4)) < 0.1 for v in values)  # the true 30% quantile


def test_bounds_clip_the_adapted_threshold() -> None:
    escalation = adaptive(0.5, min_threshold=0.2, max_threshold=0.4)
    threshold = Threshold(escalation)
    replay(threshold, escalation, [0.9] * 100)
    assert threshold.value == 0.4
    replay(threshold, escalation, [0.01] * 400)
    assert threshold.value == 0.2


def test_a_fixed_threshold_never_moves_but_reports_its_rate() -> None:
    escalation = Escalation(policy="confidence", threshold=-1.0)
    threshold = Threshold(escalation)
    for score in (-2.0, -0.5, -0.1, -3.0):
        threshold.observe(score, score < -1.0)
    live = threshold.live()
    assert live.threshold == -1.0 and not live.adapting
    assert live.escalation_rate == 0.5


def test_quantile_cuts_between_scores() -> None:
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.01) == 1.0  # none strictly below
    summary = distribution([0.1 * i for i in range(10)], 0.3)
    assert summary["count"] == 10 and summary["escalated"] == pytest.approx(0.3)
    assert summary["min"] == 0.0 and summary["max"] == pytest.approx(0.9)


@pytest.mark.parametrize(
    ("escalation", "message"),
    [
        (
            {"policy": "self", "targetRate": 0.2},
            "targetRate needs policy confidence, verify or learned",
        ),
        ({"policy": "confidence", "targetRate": 1.0}, "targetRate"),
        ({"policy": "confidence", "targetRate": 0}, "targetRate"),
        ({"policy": "verify", "window": 10, "minSamples": 20}, r"minSamples \(20\) exceeds window"),
        (
            {"policy": "verify", "minThreshold": 0.5, "maxThreshold": 0.1},
            r"minThreshold \(0.5\) is above maxThreshold",
        ),
    ],
)
def test_bad_adaptive_settings_are_rejected(escalation: dict, message: str) -> None:
    layers = [{"name": "core", "url": "http://x", "model": "m", "escalation": escalation}]
    with pytest.raises(ConfigError, match=message):
        parse_config({"layers": [*layers, {"name": "big", "url": "http://y", "model": "n"}]})


def replay_with_ties(
    threshold: Threshold, escalation: Escalation, scores: list[float]
) -> list[bool]:
    """As the router judges: below the live cut, or on it with the coin for the tie share."""
    escalated = []
    for score in scores:
        verdict = judge(
            escalation,
            "",
            [],
            threshold=threshold.value,
            score=score,
            tie_share=threshold.tie_share,
            draw=threshold.draw(),
        )
        threshold.observe(score, not verdict.accept)
        escalated.append(not verdict.accept)
    return escalated


@pytest.mark.parametrize("tied", [0.4, 0.6])
def test_the_target_holds_when_scores_tie_at_the_cut(tied: float) -> None:
    # 40% (or 60%) of the scores are one value, the lowest, where a 20% cut falls (a probe that
    # often answers the same, short answers with equal logprobs): a plain quantile escalated
    # none of them, 0% against a target of 20%.
    rng = random.Random(5)
    escalation = adaptive(0.2)
    threshold = Threshold(escalation)
    scores = [0.3 if rng.random() < tied else rng.uniform(0.35, 1.0) for _ in range(3000)]
    escalated = replay_with_ties(threshold, escalation, scores)
    recent = escalated[-1500:]
    assert abs(sum(recent) / len(recent) - 0.2) <= 0.05
    assert threshold.value == 0.3 and 0 < threshold.tie_share < 1
    plain = replay(Threshold(escalation), escalation, scores)  # the old rule: ties never split
    assert sum(plain[-1500:]) / 1500 < 0.05


def test_without_a_tie_at_the_cut_nothing_is_left_to_chance() -> None:
    escalation = Escalation(policy="verify", target_rate=0.25, window=4, min_samples=4)
    threshold = Threshold(escalation)
    replay_with_ties(threshold, escalation, [0.1, 0.2, 0.3, 0.4])
    assert threshold.value == pytest.approx(0.15) and threshold.tie_share == 0


def test_a_published_cut_seeds_a_new_replica_until_it_has_its_own_scores() -> None:
    from onion_router.thresholds import decode, encode

    escalation = adaptive(0.2)
    threshold = Threshold(escalation)
    threshold.seed(0.42, 0.3)
    assert (threshold.value, threshold.tie_share) == (0.42, 0.3)
    assert decode(encode(threshold)) == (0.42, 0.3)
    for bad in ("", "{", '{"threshold": "x"}', '{"threshold": 1, "tieShare": 2}', "[]"):
        assert decode(bad) is None
    fixed = Threshold(Escalation(policy="verify", threshold=0.5))
    fixed.seed(0.1)  # a fixed threshold is not seeded
    assert fixed.value == 0.5
