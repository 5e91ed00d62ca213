"""The bargain's live replay on a tiny slice: a dozen requests of the trace, each a bank
question, through the real operator and router on the real API server (kwok cold starts), the
layers served by the bank replay engine (a test double of the model), 20 times faster than the
trace. Loose, causal checks against the simulator on the same slice, not timings."""

from __future__ import annotations

import pytest

from onion_lab import bank, bargain, bargain_live, bargain_run
from onion_lab.cluster import Cluster
from onion_lab.paths import REPO

pytestmark = pytest.mark.cluster

TRACE = REPO.parent / "shared" / "data" / "azure-llm-inference-2023-conv.csv"
FIELDS = (
    "name",
    "accuracy",
    "accuracyCi",
    "accuracyShare",
    "gpuShare",
    "waitedShare",
    "addedLatencyP50Seconds",
    "addedLatencyP99Seconds",
    "source",
)


@pytest.mark.skipif(not TRACE.exists(), reason=f"no trace at {TRACE}")
def test_a_tiny_live_slice_agrees_with_the_simulator_on_what_it_decides(cluster: Cluster) -> None:
    setup = bargain_run.prepare(
        TRACE, 20, bargain.parse_mix("gsm8k:0.5,boolq:0.5"), rates=(0.6,), with_learned=False
    ).slice(12)
    policy = next(p for p in setup.policies if p.mode == "fixed")  # deterministic decisions
    out = bargain_live.replay(
        setup, [(policy.name, "idleTimeout 1m")], 20.0, bank.BANK, cluster=cluster
    )
    (live,) = out["rows"]
    (compared,) = out["compared"]
    for key in FIELDS:
        assert live.get(key) is not None, key
    assert live["source"] == "live" and len(live["accuracyCi"]) == 2
    problems = live["problems"]
    assert problems["errors"] == problems["textDiffers"] == 0, problems  # the bank's answers
    sim = compared["simulatedCompressed"]
    # A fixed threshold on the same recorded scores decides the same: the same layers answer.
    assert live["accuracy"] == sim["accuracy"]
    assert live["escalationRate"] == sim["escalationRate"]
    for layer, rate in live["escalationRate"].items():
        if rate:  # a layer that was asked was woken, was awake, and someone waited for it
            assert live["wakes"][layer] >= 1 and live["awakeSeconds"][layer] > 0
    if sim["waitedShare"]:
        assert live["waitedShare"] > 0
    assert 0 < live["gpuShare"] <= 1.25
