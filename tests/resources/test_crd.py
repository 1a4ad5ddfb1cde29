"""The CRDs and docs are generated from the models and follow the apiserver's rules."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from plait import API_GROUP, API_VERSION
from plait.resources import KINDS, PlaitModel
from plait.resources.crd import (
    SchemaError,
    check_structural,
    crd_filename,
    crds_command,
    generate_crd,
    generate_docs,
    model_schema,
    render_crd,
)
from tests.resources.helpers import ROOT

# Short names of built-in kinds (kubectl api-resources on Kubernetes 1.31), plus those of
# widely installed CRDs (Argo Workflows, Tekton, cert-manager) that users would trip over.
BUILTIN_SHORT_NAMES = {
    "cs", "cm", "ep", "ev", "limits", "ns", "no", "pvc", "pv", "po", "rc", "quota", "sa", "svc",
    "crd", "crds", "ds", "deploy", "rs", "sts", "hpa", "cj", "csr", "ing", "netpol", "pdb", "pc",
    "sc", "ingclass", "vac", "wf", "wftmpl", "cwf", "cwft", "cronwf", "wfeb", "wfts", "pr", "tr",
    "cert", "certs", "cr", "crs", "ci",
}  # fmt: skip

PROTECTED_SCHEMA_KEYS = {"$ref", "anyOf", "oneOf", "allOf", "title", "$defs", "const"}


def _schema(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _walk(node: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found += _walk(value)
    elif isinstance(node, list):
        for value in node:
            found += _walk(value)
    return found


@pytest.mark.parametrize("info", KINDS, ids=lambda k: k.kind)
def test_committed_crd_matches_models(info: Any) -> None:
    path = ROOT / "crds" / crd_filename(info)
    assert path.read_text() == render_crd(info), "crds/ is stale: run `plait crds`"


def test_committed_docs_match_models() -> None:
    assert (ROOT / "docs" / "resources.md").read_text() == generate_docs(), (
        "docs/resources.md is stale: run `plait crds`"
    )


def test_one_crd_file_per_kind() -> None:
    files = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    assert files == sorted(f"{k.plural}.{API_GROUP}.yaml" for k in KINDS)
    assert "workflowdefinitions.plait.dev.yaml" in files


@pytest.mark.parametrize("info", KINDS, ids=lambda k: k.kind)
def test_schema_is_structural_and_bounded(info: Any) -> None:
    root = _schema(generate_crd(info))
    for part in ("spec", "status"):
        assert check_structural(root["properties"][part], f".{part}") == []
    for node in _walk(root):
        assert not PROTECTED_SCHEMA_KEYS & set(node), node
        assert node.get("additionalProperties") is not False


@pytest.mark.parametrize("info", KINDS, ids=lambda k: k.kind)
def test_crd_names_and_conventions(info: Any) -> None:
    crd = generate_crd(info)
    names = crd["spec"]["names"]
    assert crd["metadata"]["name"] == f"{info.plural}.{API_GROUP}"
    assert crd["spec"]["scope"] == "Namespaced"
    assert names["categories"] == ["plait"]
    assert names["shortNames"]
    assert not set(names["shortNames"]) & BUILTIN_SHORT_NAMES
    [version] = crd["spec"]["versions"]
    assert version["name"] == API_VERSION
    assert version["subresources"] == {"status": {}}
    condition = _schema(crd)["properties"]["status"]["properties"]["conditions"]
    assert condition["x-kubernetes-list-type"] == "map"
    assert set(condition["items"]["properties"]) == {
        "type", "status", "reason", "message", "lastTransitionTime", "observedGeneration",
    }  # fmt: skip


def test_short_names_are_unique_across_kinds() -> None:
    every = [s for k in KINDS for s in k.short_names]
    assert len(every) == len(set(every))


@pytest.mark.parametrize("info", KINDS, ids=lambda k: k.kind)
def test_printer_columns_point_at_fields(info: Any) -> None:
    crd = generate_crd(info)
    root = _schema(crd)
    for column in crd["spec"]["versions"][0]["additionalPrinterColumns"]:
        path = column["jsonPath"]
        if path.startswith(".metadata."):
            continue
        node = root
        for part in re.sub(r"\[\?\(.*?\)\]", "[]", path).strip(".").split("."):
            if part.endswith("[]"):
                node = node["properties"][part[:-2]]["items"]
            else:
                assert part in node.get("properties", {}), f"{path}: no field {part}"
                node = node["properties"][part]


def test_workflow_instance_columns() -> None:
    info = next(k for k in KINDS if k.kind == "WorkflowInstance")
    names = [c.name.upper() for c in info.printer_columns]
    assert names == ["DEFINITION", "PHASE", "PROGRESS", "AGE", "DURATION"]


def test_cross_field_rules_are_in_the_crds() -> None:
    rules = {
        k.kind: [n["rule"] for n in _walk(_schema(generate_crd(k))) if "rule" in n] for k in KINDS
    }
    assert any("has(self.waitForEvent)" in r for r in rules["WorkflowDefinition"])
    assert any("has(self.eventType) != has(self.schedule)" in r for r in rules["EventTrigger"])
    assert any("oldSelf" in r for r in rules["WorkflowInstance"])
    tasks = _schema(generate_crd(KINDS[0]))["properties"]["spec"]["properties"]["tasks"]
    assert tasks["maxItems"] == 5000
    assert tasks["x-kubernetes-list-type"] == "map"
    assert tasks["x-kubernetes-list-map-keys"] == ["name"]


def test_map_key_patterns_become_cel_rules() -> None:
    inputs = model_schema(KINDS[0].spec)["properties"]["tasks"]["items"]["properties"]["inputs"]
    [rule] = inputs["x-kubernetes-validations"]
    assert rule["rule"].startswith("self.all(k, ")
    assert "patternProperties" not in inputs
    assert "propertyNames" not in inputs


def test_free_form_fields_preserve_unknown_fields_only_where_intended() -> None:
    preserved = sorted(
        f"{k.kind}{path}" for k in KINDS for path in _preserving_paths(_schema(generate_crd(k)), "")
    )
    assert preserved == [
        "EventDefinition.spec.schema",
        "Integration.spec.settings",
        "TaskDefinition.spec.inputs[].default",
        "WorkflowDefinition.spec.onExit.forEach.items[]",
        "WorkflowDefinition.spec.parameters[].default",
        "WorkflowDefinition.spec.tasks[].forEach.items[]",
        "WorkflowInstance.spec.arguments",
        "WorkflowTest.spec.cases[].arguments",
        "WorkflowTest.spec.cases[].events[].data",
        "WorkflowTest.spec.cases[].expect.outputs",
        "WorkflowTest.spec.cases[].trigger.event.data",
    ]


def _preserving_paths(node: dict[str, Any], path: str) -> list[str]:
    found = [path] if node.get("x-kubernetes-preserve-unknown-fields") else []
    for name, child in node.get("properties", {}).items():
        found += _preserving_paths(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        found += _preserving_paths(node["items"], path + "[]")
    return found


def test_unions_without_a_structural_form_are_refused() -> None:
    class Bad(PlaitModel):
        value: int | list[str]
        """Either."""

    with pytest.raises(SchemaError, match="no structural form"):
        model_schema(Bad)


def test_values_without_a_type_are_refused() -> None:
    class Bad(PlaitModel):
        value: Any
        """Anything, but not marked as free-form."""

    with pytest.raises(SchemaError, match="preserve-unknown-fields"):
        model_schema(Bad)


def test_structural_check_finds_missing_bounds() -> None:
    problems = check_structural(
        {
            "description": "x",
            "type": "object",
            "properties": {
                "names": {"description": "n", "type": "array", "items": {"type": "string"}},
                "free": {"type": "object", "anyOf": []},
            },
        }
    )
    assert ".names: array without maxItems" in problems
    assert ".names[]: string without maxLength" in problems
    assert ".free: no description" in problems
    assert ".free: anyOf is not allowed in a structural schema" in problems


def test_cli_check_reports_stale_files_and_write_fixes_them(tmp_path: Path) -> None:
    runner = CliRunner()
    out, docs = tmp_path / "crds", tmp_path / "resources.md"
    args = ["--output-dir", str(out), "--docs", str(docs)]
    result = runner.invoke(crds_command, [*args, "--check"])
    assert result.exit_code == 1
    assert "out of date" in result.output
    assert runner.invoke(crds_command, args).exit_code == 0
    assert len(list(out.glob("*.yaml"))) == len(KINDS)
    assert runner.invoke(crds_command, [*args, "--check"]).exit_code == 0
    target = out / crd_filename(KINDS[0])
    target.write_text(target.read_text().replace("maxItems: 5000", "maxItems: 10"))
    (out / f"old.{API_GROUP}.yaml").write_text("stale")
    result = runner.invoke(crds_command, [*args, "--check"])
    assert result.exit_code == 1
    assert re.search(r"^-\s+maxItems: 10$", result.output, re.M)
    assert re.search(r"^\+\s+maxItems: 5000$", result.output, re.M)
    assert "no kind produces this file" in result.output
    runner.invoke(crds_command, args)
    assert not (out / f"old.{API_GROUP}.yaml").exists()
    assert yaml.safe_load(target.read_text())["kind"] == "CustomResourceDefinition"
