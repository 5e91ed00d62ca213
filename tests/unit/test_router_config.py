"""The router config file the operator renders: parsing, defaults and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from onion_contract.router_config import ConfigError, load_config, parse_config

RENDERED = """
listen: {host: 0.0.0.0, port: 8080}
kubernetes: {enabled: true, namespace: demo, onion: assistant}
whileWaking: wait
maxQueuePerLayer: 64
streamBufferTokens: 16
heartbeatSeconds: 5
maxRequestBytes: 1048576
auth: {keysFile: /etc/onion/auth/keys}
layers:
  - name: core
    url: http://assistant-core.demo.svc:80
    model: smollm2
    engine: tgi
    managed: false
    lease: null
    wakeTimeoutSeconds: 0
    escalation:
      {policy: confidence, threshold: -0.8, score: mean, firstK: 8, sentinel: "[[ESCALATE]]"}
    rules: []
  - name: mid
    url: http://assistant-mid.demo.svc:80/
    model: qwen
    engine: vllm
    managed: true
    lease: assistant-mid-demand
    wakeTimeoutSeconds: 600
    escalation: {policy: self}
    rules: [{regex: "(?i)prove|theorem"}, {keywords: [sql, database]}, {minPromptTokens: 2000}]
"""


def test_the_operator_rendering_parses(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(RENDERED)
    config = load_config(path)
    assert config.kubernetes.enabled and config.kubernetes.onion == "assistant"
    assert config.auth is not None and config.auth.keys_file == "/etc/onion/auth/keys"
    core, mid = config.layers
    assert core.escalation.first_k == 8 and core.lease is None
    assert mid.url == "http://assistant-mid.demo.svc:80"  # trailing slash dropped
    assert mid.escalation.sentinel == "[[ESCALATE]]"
    assert mid.rules[1].keywords == ("sql", "database")
    assert config.index("mid") == 1 and config.layer("nope") is None


def _with(**changes: object) -> dict[str, object]:
    data: dict[str, object] = yaml.safe_load(RENDERED)
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_with(layers=[]), "layers"),
        (_with(whileWaking="maybe"), "whileWaking"),
        (_with(maxQueuePerLayr=3), "maxQueuePerLayr"),
        (_with(kubernetes={"enabled": True}), "kubernetes.namespace"),
        (_with(layers=[{"name": "core", "url": "ftp://x", "model": "m"}]), "http://"),
        (_with(layers=[{"name": "a", "url": "http://x", "model": "m", "managed": True}]), "lease"),
        (_with(layers=[{"name": "a", "url": "http://x", "model": "m"}] * 2), "repeated: a"),
        (_with(layers=[{"name": "a", "url": "http://x", "model": "m", "rules": [{}]}]), "exactly"),
        (
            _with(
                layers=[{"name": "a", "url": "http://x", "model": "m", "rules": [{"regex": "("}]}]
            ),
            "does not compile",
        ),
    ],
)
def test_errors_name_the_field(data: object, message: str) -> None:
    with pytest.raises(ConfigError, match="invalid router config") as err:
        parse_config(data)
    assert message in str(err.value)


def test_self_policy_tool_call() -> None:
    data = _with()
    data["layers"][1]["escalation"] = {
        "policy": "self",
        "via": "toolCall",
        "toolName": "ask_expert",
    }
    escalation = parse_config(data).layers[1].escalation
    assert (escalation.via, escalation.tool_name) == ("toolCall", "ask_expert")
    default = parse_config(_with()).layers[1].escalation
    assert (default.via, default.tool_name) == ("sentinel", "escalate")
    for bad, field in (({"via": "smoke"}, "via"), ({"toolName": "no spaces"}, "toolName")):
        data["layers"][1]["escalation"] = {"policy": "self", **bad}
        with pytest.raises(ConfigError, match=field):
            parse_config(data)


def test_static_defaults() -> None:
    config = parse_config({"layers": [{"name": "core", "url": "http://127.0.0.1:1", "model": "m"}]})
    assert not config.kubernetes.enabled and config.while_waking == "wait"
    assert config.layers[0].escalation.policy == "none"


def test_unreadable_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("layers: [")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_cli_rejects_a_bad_config_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from onion_router.__main__ import main

    path = tmp_path / "router.yaml"
    path.write_text("layers: []\n")
    assert main(["--config", str(path)]) == 2
    assert "invalid router config: layers" in capsys.readouterr().err


def test_the_edge_example_is_a_static_router_over_a_cluster_onion() -> None:
    path = Path(__file__).resolve().parents[2] / "examples" / "edge" / "router.yaml"
    config = load_config(path)
    core, cluster = config.layers
    assert not config.kubernetes.enabled and core.engine == "llamacpp"
    assert (cluster.model, cluster.managed, cluster.wake_timeout_seconds) == ("onion", False, 600)
    assert cluster.api_key_file and cluster.url.startswith("https://")


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"Authorization": "Bearer x"}, "is set by the router itself"),
        ({"Host": "x"}, "is set by the router itself"),
        ({"Bad Name": "x"}, "is not a valid HTTP header name"),
        ({"X-Ok": "two\nlines"}, "must be one line of ASCII"),
    ],
)
def test_layer_headers_are_checked(headers: dict[str, str], message: str) -> None:
    data = _with()
    data["layers"][1]["headers"] = headers  # type: ignore[index]
    with pytest.raises(ConfigError, match=message):
        parse_config(data)
