"""The hand-written CRD and the pydantic models describe the same resource.

operator/idmsync/controller/models.py is the source of truth: every level of the CRD's spec
and status schemas must have the models' (alias) field names, both ways, compatible types,
the same required fields, defaults, enums, patterns and bounds. The Helm chart ships a
byte-identical copy, and every sample in manifests/samples is a valid spec for the models.
"""

from __future__ import annotations

import enum
import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
import pytest
import yaml
from pydantic import BaseModel, JsonValue, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from idmsync.controller import models
from idmsync.controller.models import SyncTokenResetSpec, SyncTokenResetStatus
from idmsync.engine.naming import SOURCE_PATTERN, STAGE_ID_PATTERN

REPO = Path(__file__).resolve().parents[2]
CRD_PATH = REPO / "manifests" / "crd" / "synctokenresets.idmsync.dev.yaml"
CHART_CRDS = REPO / "charts" / "idmsync" / "crds"
PEERING_PATH = REPO / "manifests" / "peering" / "kopf-peerings.yaml"
SAMPLES = REPO / "manifests" / "samples"

#: Enums only the models enforce: the API server refuses null for an enum field, even a
#: nullable one, and the operator writes null for these before they are known.
MODEL_ONLY_ENUMS = {"status.stages[].result"}

#: Patterns the models enforce in a model validator rather than on a Field: CRD path -> regex.
VALIDATOR_PATTERNS = {
    "spec.stages.sources[]": SOURCE_PATTERN,
    "spec.stages.ids[]": STAGE_ID_PATTERN,
}


def _crd() -> dict[str, Any]:
    document = yaml.safe_load(CRD_PATH.read_text())
    assert isinstance(document, dict)
    return document


def _version_schema() -> dict[str, Any]:
    (version,) = _crd()["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    assert isinstance(schema, dict)
    return schema


# --------------------------------------------------------------------------- the walk


@dataclass
class Shape:
    """What a model annotation means in OpenAPI terms."""

    kind: str  # object | string | integer | boolean | array | int-or-string | any
    optional: bool = False
    model: type[BaseModel] | None = None
    item: Shape | None = None
    enum: tuple[str, ...] | None = None


def _shape(annotation: Any) -> Shape:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        optional = len(members) != len(get_args(annotation))
        if sorted(members, key=repr) == sorted([int, str], key=repr):
            return Shape("int-or-string", optional=optional)
        (member,) = members
        inner = _shape(member)
        inner.optional = optional
        return inner
    if origin is Literal:
        values = get_args(annotation)
        assert all(isinstance(v, str) for v in values), annotation
        return Shape("string", enum=values)
    if origin is list:
        (item,) = get_args(annotation)
        return Shape("array", item=_shape(item))
    if origin is dict:
        key, value = get_args(annotation)
        assert key is str, annotation
        return Shape("map", item=_shape(value))
    if annotation is Any or annotation is JsonValue:
        return Shape("any", optional=True)
    if isinstance(annotation, type) and issubclass(annotation, enum.StrEnum):
        return Shape("string", enum=tuple(member.value for member in annotation))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return Shape("object", model=annotation)
    simple = {str: "string", bool: "boolean", int: "integer"}
    assert annotation in simple, f"no OpenAPI mapping for {annotation!r}"
    return Shape(simple[annotation])


def _field_constraints(field: FieldInfo) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in field.metadata:
        if isinstance(item, annotated_types.MaxLen):
            found["max_length"] = item.max_length
        elif isinstance(item, annotated_types.Ge):
            found["minimum"] = item.ge
        elif isinstance(item, annotated_types.Le):
            found["maximum"] = item.le
        elif getattr(item, "pattern", None) is not None:
            found["pattern"] = item.pattern
    return found


def _fields(model: type[BaseModel]) -> dict[str, FieldInfo]:
    return {(field.alias or name): field for name, field in model.model_fields.items()}


def _check_type(path: str, shape: Shape, node: dict[str, Any]) -> None:
    if shape.kind == "int-or-string":
        assert node.get("x-kubernetes-int-or-string") is True, f"{path}: not int-or-string"
        assert "type" not in node, f"{path}: int-or-string must not have a type"
    elif shape.kind == "map":
        # a string-keyed map: an object whose values all have the item's type
        assert node.get("type") == "object", f"{path}: a map must be an object"
        assert shape.item is not None
        assert node.get("additionalProperties", {}).get("type") == shape.item.kind, path
        assert "properties" not in node, f"{path}: a map has no fixed properties"
    elif shape.kind == "any":
        assert node.get("x-kubernetes-preserve-unknown-fields") is True, f"{path}: not free-form"
        assert "type" not in node, f"{path}: a free-form value must not have a type"
    else:
        assert node.get("type") == shape.kind, f"{path}: {node.get('type')} != {shape.kind}"
        assert "x-kubernetes-int-or-string" not in node, path
    if shape.enum is not None and path in MODEL_ONLY_ENUMS:
        assert shape.optional, f"{path}: only a nullable enum may be left to the model"
        assert "enum" not in node, f"{path}: a nullable enum rejects null in the API server"
    elif shape.enum is not None:
        assert node.get("enum") == list(shape.enum), f"{path}: enum differs from the Literal"
    else:
        assert "enum" not in node, f"{path}: enum in the CRD but not in the model"


def _check_default(path: str, field: FieldInfo, shape: Shape, node: dict[str, Any]) -> None:
    if field.is_required():
        assert "default" not in node, f"{path}: required in the model, defaulted in the CRD"
        return
    if field.default_factory is not None:
        expected: Any = field.default_factory()  # type: ignore[call-arg]
    else:
        assert field.default is not PydanticUndefined
        expected = field.default
    if expected is None:
        assert "default" not in node, f"{path}: the model has no default (None)"
        return
    if isinstance(expected, enum.StrEnum):
        expected = expected.value
    assert "default" in node, f"{path}: the model defaults to {expected!r}, the CRD has none"
    actual = node["default"]
    if isinstance(expected, BaseModel):
        # A default object is filled in by the nested defaults, as the model's factory is.
        assert actual == {}, f"{path}: a default object must be {{}} (nested defaults apply)"
        assert shape.model is not None
        assert shape.model.model_validate(actual) == expected, path
    else:
        assert actual == expected, f"{path}: default {actual!r} != model default {expected!r}"
        assert type(actual) is type(expected), f"{path}: default type {type(actual)}"


def _check_constraints(path: str, field: FieldInfo, shape: Shape, node: dict[str, Any]) -> None:
    wanted = _field_constraints(field)
    if "pattern" in wanted:
        assert node.get("pattern") == wanted["pattern"], f"{path}: pattern differs"
    if "max_length" in wanted:
        key = "maxItems" if shape.kind == "array" else "maxLength"
        assert node.get(key) == wanted["max_length"], f"{path}: {key} differs"
    for bound in ("minimum", "maximum"):
        if bound in wanted:
            assert node.get(bound) == wanted[bound], f"{path}: {bound} differs"
        else:
            assert bound not in node, f"{path}: {bound} in the CRD but not in the model"


def _walk(model: type[BaseModel], node: dict[str, Any], path: str, *, status: bool) -> list[str]:
    """Compare one object level and recurse; returns the paths visited."""
    assert node.get("type") == "object", f"{path}: not an object"
    fields = _fields(model)
    properties: dict[str, Any] = node.get("properties", {})
    assert set(properties) == set(fields), (
        f"{path}: CRD-only {sorted(set(properties) - set(fields))}, "
        f"model-only {sorted(set(fields) - set(properties))}"
    )
    required = {alias for alias, field in fields.items() if field.is_required()}
    assert set(node.get("required", [])) == required, f"{path}: required fields differ"
    visited = [path]
    for alias, field in fields.items():
        child_path = f"{path}.{alias}"
        child = properties[alias]
        shape = _shape(field.annotation)
        _check_type(child_path, shape, child)
        _check_default(child_path, field, shape, child)
        _check_constraints(child_path, field, shape, child)
        if status:
            # The operator may write None (a PUT of model_dump()): optional means nullable.
            assert child.get("nullable", False) is shape.optional, f"{child_path}: nullable"
        else:
            # In spec, absent is the only "None": no nulls to reason about in CEL rules.
            assert "nullable" not in child, f"{child_path}: spec fields are not nullable"
        if shape.kind == "object":
            assert shape.model is not None
            visited += _walk(shape.model, child, child_path, status=status)
        elif shape.kind == "array":
            assert shape.item is not None
            item_node = child["items"]
            item_path = f"{child_path}[]"
            _check_type(item_path, shape.item, item_node)
            visited.append(item_path)
            if shape.item.kind == "object":
                assert shape.item.model is not None
                visited += _walk(shape.item.model, item_node, item_path, status=status)
            elif item_path in VALIDATOR_PATTERNS:
                assert item_node.get("pattern") == VALIDATOR_PATTERNS[item_path], item_path
    return visited


def _all_nodes(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for name, child in node.get("properties", {}).items():
            found += _all_nodes(child, f"{path}.{name}" if path else name)
        if "items" in node:
            found += _all_nodes(node["items"], f"{path}[]")
    return found


# --------------------------------------------------------------------------- tests


def test_spec_schema_matches_the_spec_model() -> None:
    spec = _version_schema()["properties"]["spec"]
    visited = _walk(SyncTokenResetSpec, spec, "spec", status=False)
    # The walk reached every model of the spec, not just the top level.
    assert {"spec.target.service", "spec.auth.clientCredentials.secretRef"} <= set(visited)
    assert "spec.stages.sources[]" in visited


def test_status_schema_matches_the_status_model() -> None:
    status = _version_schema()["properties"]["status"]
    visited = _walk(SyncTokenResetStatus, status, "status", status=True)
    assert {"status.stages[].liveSync", "status.conditions[]", "status.server"} <= set(visited)


def test_every_pattern_in_the_crd_comes_from_the_models() -> None:
    spec_fields: dict[str, set[str]] = {}

    def collect(model: type[BaseModel], path: str) -> None:
        for alias, field in _fields(model).items():
            pattern = _field_constraints(field).get("pattern")
            if pattern:
                spec_fields.setdefault(f"{path}.{alias}", set()).add(pattern)
            shape = _shape(field.annotation)
            if shape.model is not None:
                collect(shape.model, f"{path}.{alias}")

    collect(SyncTokenResetSpec, "spec")
    for path, pattern in VALIDATOR_PATTERNS.items():
        spec_fields.setdefault(path, set()).add(pattern)
    crd_patterns = {
        path: node["pattern"] for path, node in _all_nodes(_version_schema()) if "pattern" in node
    }
    assert crd_patterns, "the CRD has no patterns at all"
    for path, pattern in crd_patterns.items():
        assert pattern in spec_fields.get(path, set()), f"{path}: {pattern} is not the model's"
    assert set(spec_fields) == set(crd_patterns), "a model pattern is missing from the CRD"


def _cel_literal(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def test_cel_matches_rules_repeat_the_openapi_pattern_exactly() -> None:
    """Where a CEL rule re-states a pattern (for a clearer message) it is the same regex."""
    checked = 0
    for path, node in _all_nodes(_version_schema()):
        for rule in node.get("x-kubernetes-validations", []):
            for literal in re.findall(r"self\.matches\('((?:[^'\\]|\\.)*)'\)", rule["rule"]):
                regex = _cel_literal(literal)
                if regex.startswith("^") and "pattern" in node:
                    assert regex == node["pattern"], f"{path}: CEL regex != pattern"
                    checked += 1
    assert checked >= 3


def test_every_cel_rule_has_a_message() -> None:
    rules = [
        (path, rule)
        for path, node in _all_nodes(_version_schema())
        for rule in node.get("x-kubernetes-validations", [])
    ]
    assert len(rules) >= 10
    for path, rule in rules:
        assert set(rule) == {"rule", "message"}, path
        assert rule["message"].strip(), path


def test_strings_and_lists_in_spec_are_bounded_for_cel_cost() -> None:
    spec = _version_schema()["properties"]["spec"]
    for path, node in _all_nodes(spec, "spec"):
        if node.get("type") == "string" and "enum" not in node:
            assert "maxLength" in node, f"{path}: unbounded string"
        if node.get("type") == "array":
            assert "maxItems" in node, f"{path}: unbounded list"


def test_crd_names_columns_and_subresources() -> None:
    crd = _crd()
    assert crd["metadata"]["name"] == f"{models.PLURAL}.{models.GROUP}"
    spec = crd["spec"]
    assert spec["group"] == models.GROUP
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": models.KIND,
        "listKind": f"{models.KIND}List",
        "plural": models.PLURAL,
        "singular": "synctokenreset",
        "shortNames": ["tokenreset"],
        "categories": ["idmsync"],
    }
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == (models.VERSION, True, True)
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Phase": ".status.phase",
        "Target": ".status.target",
        "Stages": ".status.stageSummary",
        "Ready": '.status.conditions[?(@.type=="Ready")].reason',
        "Age": ".metadata.creationTimestamp",
    }
    rules = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"]
    immutable = [r for r in rules if r["rule"] == "self == oldSelf"]
    assert len(immutable) == 1
    assert models.RERUN_ANNOTATION in immutable[0]["message"]


@pytest.mark.parametrize(
    ("manifest", "copy"),
    [
        (CRD_PATH, CHART_CRDS / CRD_PATH.name),
        (PEERING_PATH, CHART_CRDS / PEERING_PATH.name),
    ],
    ids=["synctokenresets", "kopf-peerings"],
)
def test_chart_ships_byte_identical_crds(manifest: Path, copy: Path) -> None:
    assert copy.is_file(), f"{copy} missing: run `make chart-crds`"
    assert copy.read_bytes() == manifest.read_bytes(), f"{copy} drifted: run `make chart-crds`"


def test_chart_ships_no_other_crds() -> None:
    assert sorted(p.name for p in CHART_CRDS.iterdir()) == sorted(
        [CRD_PATH.name, PEERING_PATH.name]
    )


def _samples() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(SAMPLES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and document.get("kind") == models.KIND:
                found.append((f"{path.name}:{document['metadata']['name']}", document))
    return found


SAMPLE_DOCUMENTS = _samples()


def test_samples_cover_the_documented_cases() -> None:
    specs = [spec for _, spec in ((n, d["spec"]) for n, d in SAMPLE_DOCUMENTS)]
    assert any("service" in s["target"] and "adminSecretRef" in s["auth"] for s in specs)
    assert any("url" in s["target"] and "bearerTokenSecretRef" in s["auth"] for s in specs)
    assert any("tenantSecretRef" in s["target"] and "auth" not in s for s in specs)
    assert any(s.get("action") == "Set" and "token" in s for s in specs)
    assert any(s.get("dryRun") is True for s in specs)


@pytest.mark.parametrize(
    "document", [d for _, d in SAMPLE_DOCUMENTS], ids=[n for n, _ in SAMPLE_DOCUMENTS]
)
def test_sample_is_a_valid_spec(document: dict[str, Any]) -> None:
    assert document["apiVersion"] == f"{models.GROUP}/{models.VERSION}"
    SyncTokenResetSpec.model_validate(document["spec"])


def test_models_reject_what_the_walk_relies_on() -> None:
    """The walk assumes extra fields are forbidden, as the API server prunes them."""
    sample = SAMPLE_DOCUMENTS[0][1]["spec"]
    with pytest.raises(ValidationError):
        SyncTokenResetSpec.model_validate({**sample, "unknownField": 1})


def _undescribed(schema: dict[str, Any], path: str) -> list[str]:
    """Every property under ``schema`` (through items and maps) without a description."""
    missing = []
    for name, sub in (schema.get("properties") or {}).items():
        where = f"{path}.{name}" if path else name
        if not str(sub.get("description") or "").strip():
            missing.append(where)
        missing += _undescribed(sub, where)
    if isinstance(schema.get("items"), dict):
        missing += _undescribed(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        missing += _undescribed(schema["additionalProperties"], f"{path}{{}}")
    return missing


def test_every_field_has_a_description() -> None:
    """``kubectl explain synctokenreset.<field>`` never says ``<no description>``.

    ``metadata`` excepted: the API server forbids anything there but name and generateName
    rules, and explains it as ObjectMeta."""
    assert _undescribed(_version_schema(), "") == ["metadata"]


def test_the_description_walk_finds_a_field_without_one() -> None:
    schema = {
        "properties": {
            "spec": {
                "description": "described",
                "properties": {
                    "list": {"description": "d", "items": {"properties": {"bare": {}}}},
                    "map": {
                        "description": "d",
                        "additionalProperties": {"properties": {"blank": {"description": " "}}},
                    },
                },
            },
            "status": {},
        }
    }
    assert _undescribed(schema, "") == ["spec.list[].bare", "spec.map{}.blank", "status"]
