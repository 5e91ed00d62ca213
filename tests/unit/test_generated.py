"""`make generate`: the CRD, the chart's copy and the RBAC rules are generated from the contract,
and a stale generated file fails CI (`make lint` runs the same check)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from onion_contract.generate import CHART, CRD_FILE, generated, main, stale
from onion_contract.rbac import DISCOVERY_RULES, OPERATOR_RULES

REPO = Path(__file__).resolve().parents[2]


def test_every_generated_file_is_up_to_date() -> None:
    diffs = stale(REPO)
    assert not diffs, "generated files are out of date; run `make generate`:\n" + "".join(diffs)


def test_a_hand_edited_crd_fails_the_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for path in generated():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / path, tmp_path / path)
    assert main(["--root", str(tmp_path), "--check"]) == 0
    crd = tmp_path / CHART / "crds" / CRD_FILE
    crd.write_text(crd.read_text().replace("maxItems: 16", "maxItems: 17", 1))
    assert main(["--root", str(tmp_path), "--check"]) == 1
    diff = capsys.readouterr().out.splitlines()
    assert any(line.startswith("-") and "maxItems: 17" in line for line in diff)
    assert any(line.startswith("+") and "maxItems: 16" in line for line in diff)
    assert main(["--root", str(tmp_path)]) == 0  # make generate repairs it
    assert stale(tmp_path) == []


def test_the_chart_and_the_reference_rbac_grant_the_same_rules() -> None:
    reference = list(yaml.safe_load_all((REPO / "operator" / "rbac.yaml").read_text()))
    as_yaml = [
        {"apiGroups": list(r.api_groups), "resources": list(r.resources), "verbs": list(r.verbs)}
        for r in OPERATOR_RULES
    ]
    assert reference[0]["rules"] == as_yaml
    assert [r["resources"] for r in reference[1]["rules"]] == [
        list(r.resources) for r in DISCOVERY_RULES
    ]
    template = (REPO / CHART / "templates" / "_rbac_rules.tpl").read_text()
    chart_rules = template.split('define "onion.rules" -}}\n', 1)[1].split("{{- end -}}", 1)[0]
    assert yaml.safe_load(chart_rules) == as_yaml
