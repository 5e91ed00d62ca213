"""The bargain's pure parts: the mix and the draw of questions, the routes a policy gives, the
Onion a run stands for (its time constants compressed), the figures, the goal's reading, the
live replay's timeline and router config, and the simulator's early wakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from onion_contract.spec import parse_spec
from onion_lab import bargain, bargain_report, bargain_spec, wake_sim
from onion_lab.bargain import Answer, EscalationPolicy
from onion_lab.bargain_live import Timeline, local_config
from onion_lab.bargain_report import Served
from onion_lab.evaluation import Cut
from onion_operator.constants import KWOK_READY_DELAY_ANNOTATION

WEIGHTS = {"core": 1.0, "mid": 1.0, "big": 4.0}


def test_the_mix_is_normalised_and_a_bad_one_is_refused() -> None:
    assert bargain.parse_mix("gsm8k:2,boolq:2") == {"gsm8k": 0.5, "boolq": 0.5}
    for bad in ("gsm8k", "gsm8k:0", "gsm8k:-1,boolq:2", ":1"):
        with pytest.raises(ValueError):
            bargain.parse_mix(bad)


def test_questions_are_drawn_by_the_mix_with_a_fixed_seed() -> None:
    questions = {"a": ["a/1", "a/2"], "b": ["b/1"]}
    first = bargain.assign(400, questions, {"a": 0.75, "b": 0.25}, seed=3)
    assert first == bargain.assign(400, questions, {"a": 0.75, "b": 0.25}, seed=3)
    share = sum(d == "a" for d, _ in first) / len(first)
    assert 0.68 < share < 0.82
    with pytest.raises(ValueError, match="no test questions"):
        bargain.assign(1, questions, {"c": 1.0}, seed=0)


def answer(correct: bool, score: float, seconds: float = 10.0, tokens: int = 100) -> Answer:
    scores = {"min": score, "firstK": score}
    return Answer(correct, {"answer": seconds, "min": seconds}, scores, tokens, 1.5)


ANSWERS = {
    ("d", "easy", "core"): answer(True, -0.1),
    ("d", "easy", "mid"): answer(True, -0.1),
    ("d", "easy", "big"): answer(True, -0.1),
    ("d", "hard", "core"): answer(False, -3.0),
    ("d", "hard", "mid"): answer(False, -2.5),
    ("d", "hard", "big"): answer(True, -0.2),
}
FIXED = EscalationPolicy(
    "min/min threshold",
    "fixed",
    {"core": "min", "mid": "min"},
    cuts={"core": Cut(-1.0, 0.0), "mid": Cut(-1.0, 0.0)},
)


def test_a_fixed_threshold_escalates_low_scores_and_wakes_early_on_uncertain_first_tokens() -> None:
    easy, hard = bargain.routes(FIXED, [("d", "easy"), ("d", "hard")], ANSWERS)
    assert easy.answered == "core" and easy.correct and easy.wakes == ()
    assert [v[0] for v in hard.visits] == ["core", "mid", "big"] and hard.correct
    # the router's first-token wake: mid after the core's first tokens, big after mid's
    assert hard.wakes == (("mid", 1.5), ("big", 10.0 + 1.5))
    (big,) = bargain.routes(EscalationPolicy("always big", "big"), [("d", "hard")], ANSWERS)
    assert big.visits == (("big", 10.0),)


def test_an_early_wake_is_recorded_only_while_the_layer_is_not_ready() -> None:
    spec = parse_spec("t", bargain_spec.onion_body(FIXED, bargain_spec.IDLE["idleTimeout 5m"]))
    cold = {"mid": 60.0, "big": 215.0}
    late = wake_sim.run(spec, [wake_sim.Trip(0.0, (("core", 30.0), ("mid", 10.0)))], cold, 2000)
    trip = wake_sim.Trip(0.0, (("core", 30.0), ("mid", 10.0)), wakes=(("mid", 1.0),))
    early = wake_sim.run(spec, [trip], cold, 2000)
    assert late.waits[0] == pytest.approx(60.0, abs=1.0)
    assert early.waits[0] == pytest.approx(31.0, abs=1.0)  # the wake began at 1 s
    # Once mid is awake, an early wake renews nothing (the router only wakes a sleeping layer).
    awake = wake_sim.run(
        spec, [trip, wake_sim.Trip(100.0, (("mid", 1.0),), wakes=(("mid", 0),))], cold, 2000
    )
    assert awake.layers["mid"].wakes == 1


def test_the_onion_of_a_run_has_its_time_constants_divided_by_the_compression() -> None:
    policy = EscalationPolicy(
        "learned targetRate",
        "targetRate",
        {"core": "learned", "mid": "verify"},
        0.3,
        True,
        {"core": Cut(0.4, 0.0), "mid": Cut(0.7, 0.0)},
    )
    body = bargain_spec.onion_body(policy, bargain_spec.IDLE["adaptive"], 10, wake_cut=0.45)
    mid, big = body["layers"]
    assert mid["idleTimeout"] == "30000ms" and mid["adaptive"]["coldStartCost"] == "6000ms"
    assert mid["podAnnotations"][KWOK_READY_DELAY_ANNOTATION] == "6000ms"
    assert big["podAnnotations"][KWOK_READY_DELAY_ANNOTATION] == "21500ms"
    core = body["core"]["escalation"]
    assert core["policy"] == "learned" and core["targetRate"] == 0.3
    assert core["earlyWake"]["probability"] == 0.45
    assert mid["escalation"] == {
        "policy": "verify",
        "threshold": 0.7,
        "targetRate": 0.3,
        "window": 500,
        "minSamples": 50,
    }
    assert "escalation" not in big
    spec = parse_spec("bargain", body)  # the contract accepts it as the operator will
    assert [layer.idle_timeout for layer in spec.managed_layers] == [30.0, 30.0]
    assert bargain_spec.gpus(body) == WEIGHTS


BIG = {"correct": [True, True, True, False], "accuracy": 0.75}


def test_figures_count_gpu_time_waits_and_escalations_against_always_big() -> None:
    served = [
        Served(True, ("core",), False, 0.0),
        Served(True, ("core", "mid"), True, 60.0),
        Served(False, ("core", "mid", "big"), True, 215.0),
        Served(False, ("core",), False, 0.0),
    ]
    awake = {"mid": 500.0, "big": 250.0}
    row = bargain_report.figures("p", served, awake, 1000.0, WEIGHTS, BIG, "live")
    assert row["accuracy"] == 0.5 and row["accuracyShare"] == pytest.approx(0.5 / 0.75, abs=1e-4)
    assert row["gpuShare"] == pytest.approx((1000 + 500 + 4 * 250) / 4000)
    assert row["gpuShareCoreOnDevice"] == pytest.approx((500 + 4 * 250) / 4000)
    assert row["waitedShare"] == 0.5 and row["escalationRate"] == {"mid": 0.5, "big": 0.25}
    assert row["addedLatencyP99Seconds"] == 215.0 and row["source"] == "live"
    assert len(row["accuracyCi"]) == 2 and row["accuracyCi"][0] <= 0.5 <= row["accuracyCi"][1]
    big = bargain_report.baseline("always big", BIG["correct"], "big", 1000.0, WEIGHTS)
    core = bargain_report.baseline(
        "always core", [True, False, False, False], "core", 1000.0, WEIGHTS, BIG["correct"]
    )
    assert big["gpuShare"] == 1.0 and core["gpuShare"] == 0.25
    assert core["gpuShareCoreOnDevice"] == 0.0
    assert core["accuracyShare"] == pytest.approx(0.25 / 0.75, abs=1e-4)


def test_the_best_point_is_the_one_nearest_the_goal_with_its_shortfall_on_each_axis() -> None:
    rows = [
        {"name": "a", "accuracyShare": 0.99, "gpuShare": 0.9, "waitedShare": 0.0},
        {"name": "b", "accuracyShare": 0.90, "gpuShare": 0.3, "waitedShare": 0.06},
    ]
    for r in rows:
        r["source"] = "simulated"
    best = bargain_report.best(rows)
    assert best is not None and best["name"] == "b" and not best["goalMet"]
    assert best["shortfall"] == {"accuracyShare": 0.05, "gpuShare": 0.05, "waitedShare": 0.01}
    assert bargain_report.within_budget(rows, "gpuShare") is None
    met = {"name": "c", "accuracyShare": 0.96, "gpuShare": 0.2, "waitedShare": 0.0}
    assert bargain_report.best([*rows, {**met, "source": "live"}])["goalMet"]  # type: ignore[index]


def test_the_distance_is_live_minus_simulated() -> None:
    sim = {
        "accuracy": 0.5,
        "gpuShare": 0.4,
        "waitedShare": 0.02,
        "escalationRate": {"mid": 0.3, "big": 0.1},
    }
    live = {
        "accuracy": 0.5,
        "gpuShare": 0.45,
        "waitedShare": 0.03,
        "escalationRate": {"mid": 0.32, "big": 0.1},
    }
    gap = bargain_report.distance(sim, live)
    assert gap["gpuShare"] == 0.05 and gap["waitedShare"] == 0.01 and gap["accuracy"] == 0.0
    assert gap["escalationRate"] == {"mid": 0.02, "big": 0.0}


def test_the_timeline_gives_awake_time_and_wakes_within_the_window() -> None:
    t = Timeline()
    for when, n in ((0.0, 0), (10.0, 1), (10.5, 1), (30.0, 0), (50.0, 1)):
        t.set("mid", when, n)
    assert t.awake("mid", 0.0, 60.0) == pytest.approx(30.0)  # 10-30 and 50-60
    assert t.awake("mid", 20.0, 55.0) == pytest.approx(15.0)
    assert t.wakes("mid") == 2 and t.replicas("mid") == 1 and t.replicas("big") == 0


def test_the_router_config_is_the_operators_pointed_at_this_machine() -> None:
    rendered = {
        "kubernetes": {"enabled": True, "namespace": "ns", "onion": "bargain"},
        "tiers": [
            {
                "name": "core",
                "url": "http://bargain-core:80",
                "escalation": {
                    "policy": "learned",
                    "model": {"path": "/etc/onion/learned/bargain-learned-core/model.json"},
                },
            },
            {"name": "mid", "url": "http://bargain-mid:80"},
        ],
    }
    urls = {"core": "http://127.0.0.1:1/v1", "mid": "http://127.0.0.1:2/v1"}
    config = local_config(rendered, urls, Path("/models"))
    assert [t["url"] for t in config["tiers"]] == list(urls.values())
    assert config["tiers"][0]["escalation"]["model"]["path"] == "/models/core.json"
    assert config["heartbeatSeconds"] <= 0.1 and config["streamBufferTokens"] >= 10_000
    assert rendered["tiers"][0]["url"] == "http://bargain-core:80"  # the input is untouched
    layered = local_config({"layers": rendered["tiers"]}, urls, None)  # the newer spelling
    assert [t["url"] for t in layered["layers"]] == list(urls.values())


def test_the_interval_resamples_questions_so_repeats_do_not_narrow_it() -> None:
    correct = [i % 10 < 5 for i in range(100)]  # half right
    big = [True] * 100
    distinct = bargain_report.accuracy_figures(correct, big, [str(i) for i in range(100)])
    repeated = bargain_report.accuracy_figures(correct, big, [str(i % 10) for i in range(100)])
    assert distinct["accuracy"] == repeated["accuracy"] == 0.5
    assert repeated["questions"] == 10 and distinct["questions"] == 100
    low_d, high_d = distinct["accuracyCi"]
    low_r, high_r = repeated["accuracyCi"]
    assert high_r - low_r > 2 * (high_d - low_d)  # ten questions, not a hundred
    assert distinct["distinguishableFromBig"] and repeated["accuracyMinusBigCi"][1] < 0


def test_the_baselines_intervals_resample_questions_too() -> None:
    correct = [i % 10 < 5 for i in range(100)]
    keys = [str(i % 10) for i in range(100)]
    big = bargain_report.baseline("always big", correct, "big", 1000.0, WEIGHTS, None, keys)
    assert big["questions"] == 10 and big["requests"] == 100
