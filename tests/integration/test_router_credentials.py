"""Endpoint layers with credentials: a hosted OpenAI-compatible API that demands its key (a
TGI-protocol test server with `api_key`), the key read from a file (a mounted Secret) and sent
to that endpoint alone; https with the system's CA bundle or a CA of the layer's own."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import trustme

from onion_lab.waiting import wait_until
from tests.support.fake_tgi import FakeTGI, Script
from tests.support.router_server import RouterServer, router_layer, router_process

# Starts like a Hugging Face token: the hub routes such keys to its own proxy unless the URL is
# explicit, so this also shows that the key goes to the layer's URL and nowhere else.
KEY = "hf_edge-test-key-4242-do-not-leak"
ROTATED = "sk-rotated-key-7777-do-not-leak"
UNSURE = Script(tokens=["Maybe", "?"], logprob=-3.0)


def write_key(path: Path, key: str) -> None:
    """As the kubelet updates a Secret volume: a new file swapped in, never a partial write."""
    fresh = path.with_suffix(".new")
    fresh.write_text(key + "\n")
    os.replace(fresh, path)


@pytest.fixture
def core() -> Iterator[FakeTGI]:
    with FakeTGI(Script(tokens=["core", " answer"], logprob=-0.05), name="core") as server:
        server.by_word["hard"] = UNSURE
        yield server


@pytest.fixture
def hosted() -> Iterator[FakeTGI]:
    with FakeTGI(Script(tokens=["hosted", " answer"]), name="hosted", api_key=KEY) as server:
        yield server


def config(core: FakeTGI, hosted: FakeTGI, key_file: Path, **fields: object) -> dict:
    return {
        "layers": [
            router_layer("core", core.url, escalation={"policy": "confidence", "threshold": -1.0}),
            router_layer(
                "hosted",
                hosted.url,
                model="gpt-4o-mini",
                apiKeyFile=str(key_file),
                headers={"OpenAI-Organization": "org-onion"},
                **fields,
            ),
        ]
    }


def ask(client: openai.OpenAI, text: str, **kwargs: object):  # type: ignore[no-untyped-def]
    return client.chat.completions.with_raw_response.create(
        model="onion", messages=[{"role": "user", "content": text}], **kwargs
    )  # type: ignore[call-overload]


def test_the_key_goes_to_its_endpoint_only_and_never_into_logs_status_or_metrics(
    core: FakeTGI, hosted: FakeTGI, tmp_path: Path
) -> None:
    key_file = tmp_path / "api-key"
    write_key(key_file, KEY)
    run = tmp_path / "router"
    run.mkdir()
    # Debug logging and the access log: the most the router ever writes.
    verbose = ("--log-level", "debug", "--access-log")
    with router_process(config(core, hosted, key_file), workdir=run, args=verbose) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        easy = ask(client, "easy one")
        assert easy.headers["x-onion-layer"] == "core"
        hard = ask(client, "a hard one")
        assert hard.headers["x-onion-path"] == "core,hosted"
        assert hard.parse().choices[0].message.content == "hosted answer"
        streamed = client.chat.completions.create(
            model="onion/hosted", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in streamed) == "hosted answer"
        status = httpx.get(f"{url}/status").text
        metrics = httpx.get(f"{url}/metrics").text
        client.close()
    log = (run / "router.log").read_text()

    # 1. The endpoint got its key (and the served model name and headers) on every request.
    assert hosted.stats.unauthorized == 0 and len(hosted.stats.headers) == 2
    for headers in hosted.stats.headers:
        assert headers["authorization"] == f"Bearer {KEY}"
        assert headers["openai-organization"] == "org-onion"
    assert {r["model"] for r in hosted.stats.requests} == {"gpt-4o-mini"}
    # 2. No other layer saw it, in any header.
    assert len(core.stats.headers) == 2
    for headers in core.stats.headers:
        assert headers["authorization"] == "Bearer EMPTY"
        assert not any(KEY in v for v in headers.values()) and "openai-organization" not in headers
    # 3-4. Nothing the router shows or writes holds it; the log did record the requests.
    assert "hosted" in status and KEY not in status
    assert 'layer="hosted"' in metrics and KEY not in metrics
    assert "POST /v1/chat/completions" in log and KEY not in log


def test_a_rotated_key_is_used_once_the_file_changes_and_a_missing_one_is_a_clear_503(
    core: FakeTGI, hosted: FakeTGI, tmp_path: Path
) -> None:
    key_file = tmp_path / "api-key"
    write_key(key_file, KEY)
    with RouterServer(config(core, hosted, key_file)) as router:
        client = router.openai()
        assert ask(client, "a hard one").headers["x-onion-layer"] == "hosted"
        hosted.api_key = ROTATED
        write_key(key_file, ROTATED)

        def rotated() -> bool:
            try:
                return ask(client, "a hard one").headers["x-onion-layer"] == "hosted"
            except openai.APIStatusError as err:
                assert err.status_code == 502 and "HTTP 401" in err.message
                assert KEY not in err.message and ROTATED not in err.message
                return False

        wait_until(rotated, timeout=5, what="the rotated key in use")
        assert hosted.stats.headers[-1]["authorization"] == f"Bearer {ROTATED}"

        key_file.unlink()
        time.sleep(1.1)  # the file is looked at once a second
        with pytest.raises(openai.APIStatusError) as err:
            ask(client, "a hard one")
        assert err.value.status_code == 503
        assert err.value.code == "upstream_credentials"
        assert str(key_file) in err.value.message and "no usable API key" in err.value.message
        assert err.value.response.headers["retry-after"] == "10"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path]:
    authority = trustme.CA()
    pem = tmp_path_factory.mktemp("ca") / "ca.pem"
    authority.cert_pem.write_to_path(str(pem))
    return authority, pem


@pytest.fixture
def secure(ca: tuple[trustme.CA, Path], tmp_path: Path) -> Iterator[FakeTGI]:
    cert = ca[0].issue_cert("localhost")
    chain, key = tmp_path / "chain.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(chain))
    cert.private_key_pem.write_to_path(str(key))
    with FakeTGI(Script(tokens=["secure"]), name="secure", tls=(str(chain), str(key))) as server:
        yield server


def secure_config(core: FakeTGI, secure: FakeTGI, **fields: object) -> dict:
    return {
        "layers": [router_layer("core", core.url), router_layer("secure", secure.url, **fields)]
    }


def pinned(router: RouterServer) -> str | None:
    answer = router.openai().chat.completions.create(
        model="onion/secure", messages=[{"role": "user", "content": "hi"}]
    )
    return answer.choices[0].message.content


def test_https_with_the_layers_own_ca(core: FakeTGI, secure: FakeTGI, ca: tuple) -> None:
    with RouterServer(secure_config(core, secure, caFile=str(ca[1]))) as router:
        assert pinned(router) == "secure"


def test_https_without_a_trusted_ca_fails_clearly(core: FakeTGI, secure: FakeTGI) -> None:
    with RouterServer(secure_config(core, secure)) as router:
        with pytest.raises(openai.APIStatusError) as err:
            pinned(router)
        assert err.value.status_code == 502 and err.value.code == "upstream_unreachable"
        assert "CERTIFICATE_VERIFY_FAILED" in err.value.message
        assert not secure.stats.requests


def test_https_with_the_system_ca_bundle(
    core: FakeTGI, secure: FakeTGI, ca: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SSL_CERT_FILE is how OpenSSL (and so the router) is pointed at a system bundle; here
    # the bundle is the test CA alone.
    monkeypatch.setenv("SSL_CERT_FILE", str(ca[1]))
    with RouterServer(secure_config(core, secure)) as router:
        assert pinned(router) == "secure"
