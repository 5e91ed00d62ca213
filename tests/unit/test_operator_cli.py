"""The operator's command line: what it accepts, and a clear error for what it does not."""

from __future__ import annotations

import pytest

from onion_operator.__main__ import parse_args


def test_a_scope_is_required_and_namespaces_repeat() -> None:
    with pytest.raises(SystemExit):
        parse_args([])
    args = parse_args(["-n", "team-a", "--namespace", "team-b"])
    assert args.namespace == ["team-a", "team-b"] and not args.all_namespaces
    assert parse_args(["-A"]).all_namespaces


@pytest.mark.parametrize("namespace", ["team-*", "Team", "team-", "a" * 64, "!team-a"])
def test_namespace_patterns_are_refused(namespace: str, capsys: pytest.CaptureFixture[str]) -> None:
    # The caches are listed namespace by namespace at start: a pattern would list nothing.
    with pytest.raises(SystemExit):
        parse_args(["--namespace", namespace])
    assert "not a namespace name" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags",
    [["--resync-seconds", "0"], ["--workers", "0"], ["--metrics-bind-address", "nowhere"]],
)
def test_bad_tuning_is_refused(flags: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["-A", *flags])
