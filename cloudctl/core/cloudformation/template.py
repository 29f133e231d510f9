"""CloudFormation templates: loading (JSON or YAML with short forms), validation (what ValidateTemplate
rejects before anything is made), binding to parameter values, and the dependency layers the engine
creates concurrently. Pure: the engine supplies resource values through a `Resolver`."""
from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import field
from typing import Any

import yaml

from ...slim import dataclass
from .intrinsics import (
    CONDITION_FUNCTIONS,
    NO_VALUE,
    PSEUDO,
    Pseudo,
    Refs,
    Resolver,
    Scope,
    TemplateError,
    condition,
    evaluate,
    function_of,
    scan,
    text,
)

__all__ = ["TemplateError", "Pseudo", "Resolver", "ParameterDef", "ResourceDef", "OutputDef", "Output",
           "Template", "Bound", "load", "MAX_BODY"]

MAX_BODY = 51_200
"""TemplateBody's limit in bytes (TemplateURL allows 1 MB; the API layer checks that one)."""

VERSIONS = ("2010-09-09",)
SECTIONS = frozenset({"AWSTemplateFormatVersion", "Description", "Metadata", "Parameters", "Mappings",
                      "Conditions", "Resources", "Outputs"})
RESOURCE_KEYS = frozenset({"Type", "Properties", "DependsOn", "Condition", "DeletionPolicy", "UpdateReplacePolicy",
                           "Metadata", "CreationPolicy", "UpdatePolicy"})
MAX_RESOURCES = 500
MAX_DEPTH = 64
"""Deeper documents are refused so that the recursive walkers stay far from Python's recursion limit."""
SHORT_FORMS = ("Ref", "Sub", "GetAtt", "Join", "Base64", "Select", "Split", "GetAZs", "FindInMap", "If",
               "Equals", "And", "Or", "Not", "ImportValue", "Condition")

# --- loading -------------------------------------------------------------------------------------


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe YAML (libyaml's parser when present: ~10x faster on a 51 KB body) with CloudFormation's
    tags; no timestamps, so `2010-09-09` stays the string it is. Aliases are refused after loading
    (`_walk`): CloudFormation has none, and nested aliases would expand into a document too large
    to walk."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in rs if tag != "tag:yaml.org,2002:timestamp"]
    for ch, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def _short(name: str) -> Any:
    key = name if name in ("Ref", "Condition") else "Fn::" + name

    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        value: Any
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            if name == "GetAtt":
                value = value.split(".", 1) if "." in value else [value]
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        return {key: value}
    return construct


for _name in SHORT_FORMS:
    _Loader.add_constructor("!" + _name, _short(_name))


def load(body: str, max_bytes: int = MAX_BODY) -> dict[str, Any]:
    """Parse a template into a mapping with intrinsics in their long forms. A TemplateBody may have
    51,200 bytes; the engine passes TemplateURL's own limit as `max_bytes`."""
    if len(body.encode()) > max_bytes:
        field = "templateBody" if max_bytes == MAX_BODY else "template"
        raise TemplateError(f"1 validation error detected: Value at '{field}' failed to satisfy constraint: "
                            f"Member must have length less than or equal to {max_bytes}")
    try:
        doc = _parse(body)
    except RecursionError:
        raise TemplateError(f"Template format error: the template nests deeper than {MAX_DEPTH} levels") from None
    if not isinstance(doc, dict):
        raise TemplateError("Template format error: not a JSON or YAML mapping")
    _walk(doc, MAX_DEPTH, set())
    return doc


def _parse(body: str) -> Any:
    if body.lstrip().startswith("{"):
        try:
            doc = json.loads(body)
        except json.JSONDecodeError as e:
            try:  # YAML flow style also starts with "{"
                doc = yaml.load(body, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
            except yaml.YAMLError:
                raise TemplateError(f"Template format error: JSON not well-formed. (line {e.lineno}, "
                                    f"column {e.colno})") from None
    else:
        try:
            doc = yaml.load(body, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
        except yaml.MarkedYAMLError as e:
            if "nesting depth" in (e.problem or ""):  # libyaml's own limit
                raise RecursionError from None
            mark = e.problem_mark
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            raise TemplateError(f"Template format error: YAML not well-formed.{where}") from None
        except yaml.YAMLError:
            raise TemplateError("Template format error: YAML not well-formed.") from None
    return doc


def _walk(node: Any, room: int, seen: set[int]) -> None:
    """Refuse documents nesting deeper than MAX_DEPTH (the walkers that follow recurse; this one stops
    at the limit) or sharing a mapping or list (a YAML alias: parsed once, walked once per use)."""
    if isinstance(node, dict | list):
        if room <= 0:
            raise TemplateError(f"Template format error: the template nests deeper than {MAX_DEPTH} levels")
        if id(node) in seen:
            raise TemplateError("Template format error: YAML aliases are not supported")
        seen.add(id(node))
        for v in node.values() if isinstance(node, dict) else node:
            _walk(v, room - 1, seen)


# --- definitions ---------------------------------------------------------------------------------

_AWS_TYPES = {
    "AWS::EC2::KeyPair::KeyName": re.compile(r"^.{1,255}$", re.S),
    "AWS::EC2::Image::Id": re.compile(r"^[ae]mi-[0-9a-f]{8,17}$"),
    "AWS::EC2::SecurityGroup::Id": re.compile(r"^sg-[0-9a-f]{8,17}$"),
    "AWS::EC2::Subnet::Id": re.compile(r"^subnet-[0-9a-f]{8,17}$"),
    "AWS::EC2::AvailabilityZone::Name": re.compile(r"^[a-z0-9-]{1,64}$"),
}
PARAMETER_TYPES = frozenset({"String", "Number", "List<Number>", "CommaDelimitedList", *_AWS_TYPES,
                             *(f"List<{t}>" for t in _AWS_TYPES if t != "AWS::EC2::KeyPair::KeyName")})


def _number(value: str) -> float | None:
    try:
        n = float(value)
    except ValueError:
        return None
    return n if math.isfinite(n) else None


@dataclass(frozen=True)
class ParameterDef:
    """One template parameter with its constraints. `validate` turns a given string into the value Ref
    gives: a string, or a list of strings for list types."""

    name: str
    type: str
    default: str | None = None
    allowed_values: tuple[str, ...] = ()
    allowed_pattern: str | None = None
    min_length: int | None = None
    max_length: int | None = None
    min_value: float | None = None
    max_value: float | None = None
    no_echo: bool = False
    description: str | None = None
    constraint_description: str | None = None

    @property
    def is_list(self) -> bool:
        return self.type.startswith("List<") or self.type == "CommaDelimitedList"

    @property
    def item_type(self) -> str:
        return self.type[5:-1] if self.type.startswith("List<") else "String"

    def validate(self, value: str) -> str | list[str]:
        if not self.is_list:
            self._check(value, self.type)
            return value
        items = [v.strip() for v in value.split(",")] if value != "" else []
        for item in items:
            self._check(item, self.item_type)
        return items

    def _fail(self, detail: str) -> TemplateError:
        if self.constraint_description:
            return TemplateError(f"Parameter '{self.name}' failed to satisfy constraint: "
                                 f"{self.constraint_description}")
        return TemplateError(f"Parameter '{self.name}' {detail}")

    def _check(self, value: str, kind: str) -> None:
        if kind == "Number":
            n = _number(value)
            if n is None:
                raise TemplateError(f"Parameter '{self.name}' must be a number.")
            if self.min_value is not None and n < self.min_value:
                raise self._fail(f"must be a number not less than {self.min_value:g}")
            if self.max_value is not None and n > self.max_value:
                raise self._fail(f"must be a number not greater than {self.max_value:g}")
        elif kind in _AWS_TYPES and not _AWS_TYPES[kind].match(value):
            # Existence is the engine's check; a malformed id cannot exist, so say what AWS says then.
            raise TemplateError(f"Parameter validation failed: parameter value {value} for parameter name "
                                f"{self.name} does not exist.")
        if self.allowed_values and value not in self.allowed_values:
            raise TemplateError(f"Parameter '{self.name}' must be one of AllowedValues")
        if self.allowed_pattern is not None and re.fullmatch(self.allowed_pattern, value) is None:
            raise self._fail(f"must match pattern {self.allowed_pattern}")
        if self.min_length is not None and len(value) < self.min_length:
            raise self._fail(f"must contain at least {self.min_length} characters")
        if self.max_length is not None and len(value) > self.max_length:
            raise self._fail(f"must contain at most {self.max_length} characters")


@dataclass(frozen=True)
class ResourceDef:
    """One resource as written: its properties stay raw until the engine resolves them."""

    logical_id: str
    type: str
    properties: dict[str, Any] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    condition: str | None = None
    deletion_policy: str = "Delete"
    metadata: dict[str, Any] | None = None
    creation_policy: dict[str, Any] | None = None
    update_policy: dict[str, Any] | None = None


@dataclass(frozen=True)
class OutputDef:
    key: str
    value: Any
    description: str | None = None
    export_name: Any = None
    condition: str | None = None


@dataclass(frozen=True)
class Output:
    """A resolved output, as DescribeStacks shows it."""

    key: str
    value: str
    description: str | None
    export_name: str | None


# --- parsing -------------------------------------------------------------------------------------

_ALNUM = re.compile(r"^[A-Za-z0-9]+$")


def _mapping(doc: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key) or {}
    if not isinstance(value, dict):
        raise TemplateError(f"Template format error: {key} must be a JSON or YAML mapping")
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else text(value)


def _opt_num(name: str, key: str, value: Any, kind: type = float) -> Any:
    if value is None:
        return None
    try:
        return kind(text(value))
    except (TemplateError, ValueError):
        raise TemplateError(f"Template format error: Parameter '{name}' {key} must be a number") from None


def _parameter(name: str, spec: Any) -> ParameterDef:
    if not _ALNUM.match(name):
        raise TemplateError(f"Template format error: Parameter name {name} is non alphanumeric.")
    if not isinstance(spec, dict) or "Type" not in spec:
        raise TemplateError(f"Template format error: Every Parameters object must contain a Type member "
                            f"({name}).")
    kind = spec["Type"]
    if kind not in PARAMETER_TYPES:
        raise TemplateError(f"Template format error: Unrecognized parameter type: {kind}")
    allowed = spec.get("AllowedValues") or []
    if not isinstance(allowed, list):
        raise TemplateError(f"Template format error: Parameter '{name}' AllowedValues must be a list")
    p = ParameterDef(
        name=name, type=kind, default=_opt_str(spec.get("Default")),
        allowed_values=tuple(text(v) for v in allowed), allowed_pattern=_opt_str(spec.get("AllowedPattern")),
        min_length=_opt_num(name, "MinLength", spec.get("MinLength"), int),
        max_length=_opt_num(name, "MaxLength", spec.get("MaxLength"), int),
        min_value=_opt_num(name, "MinValue", spec.get("MinValue")),
        max_value=_opt_num(name, "MaxValue", spec.get("MaxValue")),
        no_echo=text(spec.get("NoEcho", False)).lower() == "true", description=_opt_str(spec.get("Description")),
        constraint_description=_opt_str(spec.get("ConstraintDescription")))
    if p.allowed_pattern is not None:
        try:
            re.compile(p.allowed_pattern)
        except re.error:
            raise TemplateError(f"Template format error: Parameter '{name}' AllowedPattern is not a valid "
                                "regular expression") from None
    return p


def _resource(logical: str, spec: Any) -> ResourceDef:
    if not _ALNUM.match(logical):
        raise TemplateError(f"Template format error: Resource name {logical} is non alphanumeric.")
    if not isinstance(spec, dict) or not isinstance(spec.get("Type"), str):
        raise TemplateError(f"Template format error: [/Resources/{logical}] Every Resources object must "
                            "contain a Type member.")
    for key in spec:
        if key not in RESOURCE_KEYS:
            raise TemplateError(f"Template format error: [/Resources/{logical}] Invalid template resource "
                                f"property '{key}'")
    props = spec.get("Properties") or {}
    if not isinstance(props, dict):
        raise TemplateError(f"Template format error: [/Resources/{logical}/Properties] Properties must be a "
                            "JSON or YAML mapping")
    deps = spec.get("DependsOn") or []
    deps = [deps] if isinstance(deps, str) else deps
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise TemplateError(f"Template format error: [/Resources/{logical}/DependsOn] DependsOn must be a "
                            "string or a list of strings")
    policy = spec.get("DeletionPolicy", "Delete")
    if policy not in ("Delete", "Retain", "Snapshot"):
        raise TemplateError(f"Template format error: [/Resources/{logical}/DeletionPolicy] Unrecognized "
                            f"DeletionPolicy {policy} for resource {logical}")
    cond = spec.get("Condition")
    if cond is not None and not isinstance(cond, str):
        raise TemplateError(f"Template format error: [/Resources/{logical}/Condition] Condition must be a string")
    meta, creation, update = (spec.get(k) for k in ("Metadata", "CreationPolicy", "UpdatePolicy"))
    for key, value in (("Metadata", meta), ("CreationPolicy", creation), ("UpdatePolicy", update)):
        if value is not None and not isinstance(value, dict):
            raise TemplateError(f"Template format error: [/Resources/{logical}/{key}] {key} must be a JSON or "
                                "YAML mapping")
    return ResourceDef(logical_id=logical, type=spec["Type"], properties=props, depends_on=tuple(deps),
                       condition=cond, deletion_policy=policy, metadata=meta, creation_policy=creation,
                       update_policy=update)


def _output(key: str, spec: Any) -> OutputDef:
    if not isinstance(spec, dict) or "Value" not in spec:
        raise TemplateError(f"Template format error: Every Outputs member must contain a Value object ({key})")
    export = spec.get("Export")
    if export is not None and (not isinstance(export, dict) or "Name" not in export):
        raise TemplateError(f"Template format error: Output {key} is malformed. The Export member must contain "
                            "a Name")
    return OutputDef(key=key, value=spec["Value"], description=_opt_str(spec.get("Description")),
                     export_name=export["Name"] if export else None, condition=spec.get("Condition"))


def _unresolved(names: Collection[str], block: str) -> TemplateError:
    return TemplateError(f"Template format error: Unresolved resource dependencies [{', '.join(sorted(names))}] "
                         f"in the {block} block of the template")


def _layers(nodes: list[str], deps: Mapping[str, Collection[str]]) -> list[list[str]]:
    """Kahn's layering in template order; a cycle is AWS's 'Circular dependency' error naming the
    resources on cycles (not those merely downstream of one)."""
    done: set[str] = set()
    layers: list[list[str]] = []
    left = list(nodes)
    while left:
        layer = [n for n in left if all(d in done for d in deps[n])]
        if not layer:
            stuck = set(left)
            while True:  # drop nodes nothing left depends on: they only hang off a cycle
                needed = {d for n in stuck for d in deps[n]}
                keep = stuck & needed
                if keep == stuck:
                    break
                stuck = keep
            raise TemplateError(f"Circular dependency between resources: [{', '.join(sorted(stuck))}]")
        layers.append(layer)
        done.update(layer)
        left = [n for n in left if n not in done]
    return layers


@dataclass(frozen=True)
class Template:
    """A validated template. `body` is the loaded document (GetTemplate returns the original text,
    which the engine keeps)."""

    body: dict[str, Any]
    version: str | None
    description: str | None
    parameters: dict[str, ParameterDef]
    mappings: dict[str, Any]
    conditions: dict[str, Any]
    resources: dict[str, ResourceDef]
    outputs: dict[str, OutputDef]

    @property
    def resource_types(self) -> list[str]:
        """Distinct resource types in template order (GetTemplateSummary's ResourceTypes)."""
        return list(dict.fromkeys(r.type for r in self.resources.values()))

    @classmethod
    def parse(cls, body: str, supported_types: Collection[str], max_bytes: int = MAX_BODY) -> Template:
        """Load and validate. `supported_types` may map each type to its Fn::GetAtt attribute names:
        then an attribute a type lacks fails validation too, as on AWS."""
        return cls.from_document(load(body, max_bytes), supported_types)

    @classmethod
    def from_document(cls, doc: dict[str, Any], supported_types: Collection[str]) -> Template:
        extra = sorted(k for k in doc if k not in SECTIONS)
        if "Transform" in extra:
            raise TemplateError("Template format error: Transform (macros, AWS::Serverless) is not supported")
        if "Rules" in extra:
            raise TemplateError("Template format error: Rules are not supported")
        if extra:
            raise TemplateError(f"Template format error: Invalid template property or properties "
                                f"[{', '.join(extra)}]")
        version = doc.get("AWSTemplateFormatVersion")
        if version is not None and text(version) not in VERSIONS:
            raise TemplateError(f"Template format error: '{version}' is not a supported AWSTemplateFormatVersion "
                                "value")
        description = doc.get("Description")
        if description is not None and not isinstance(description, str):
            raise TemplateError("Template format error: 'Description' must be a string")
        res_specs = _mapping(doc, "Resources")
        if not res_specs:
            raise TemplateError("Template format error: At least one Resources member must be defined.")
        if len(res_specs) > MAX_RESOURCES:
            raise TemplateError(f"Template format error: Number of resources, {len(res_specs)}, is greater than "
                                f"maximum allowed, {MAX_RESOURCES}")
        params = {k: _parameter(k, v) for k, v in _mapping(doc, "Parameters").items()}
        resources = {k: _resource(k, v) for k, v in res_specs.items()}
        outputs = {k: _output(k, v) for k, v in _mapping(doc, "Outputs").items()}
        clash = sorted(set(params) & set(resources))
        if clash:
            raise TemplateError(f"Template format error: Duplicate logical ids in Parameters and Resources: "
                                f"[{', '.join(clash)}]")
        unknown = [t for t in dict.fromkeys(r.type for r in resources.values()) if t not in supported_types]
        if unknown:
            raise TemplateError(f"Template format error: Unrecognized resource types: [{', '.join(unknown)}]")
        t = cls(body=doc, version=_opt_str(version), description=description, parameters=params,
                mappings=_mapping(doc, "Mappings"), conditions=_mapping(doc, "Conditions"),
                resources=resources, outputs=outputs)
        t._check_references(supported_types if isinstance(supported_types, Mapping) else None)
        return t

    def _check_references(self, attributes: Mapping[str, Collection[str]] | None) -> None:
        names = set(self.parameters) | PSEUDO
        conds: set[str] = set()
        cond_graph: dict[str, set[str]] = {}
        for name, expr in self.conditions.items():
            is_ref = isinstance(expr, dict) and len(expr) == 1 and isinstance(expr.get("Condition"), str)
            fn = function_of(expr)
            if not is_ref and (fn is None or fn[0] not in CONDITION_FUNCTIONS):
                raise TemplateError(f"Template format error: Condition {name} can only be a boolean operation "
                                    "(Fn::Equals, Fn::And, Fn::Or, Fn::Not or Condition) on parameters and other "
                                    "conditions")
            refs = scan({"Fn::Not": [expr]})
            cond_graph[name] = refs.conditions
            bad = refs.logical - names
            if bad:
                raise TemplateError(f"Template format error: Unresolved dependencies [{', '.join(sorted(bad))}]. "
                                    "Cannot reference resources in the Conditions block of the template")
            conds |= refs.conditions
        graph: dict[str, set[str]] = {}
        logical = set(self.resources)
        for r in self.resources.values():
            refs = scan([r.properties, r.metadata])
            bad = (refs.names - names - logical) | (refs.attrs - logical) | (set(r.depends_on) - logical)
            if bad:
                raise _unresolved(bad, "Resources")
            conds |= refs.conditions | ({r.condition} if r.condition else set())
            graph[r.logical_id] = (refs.logical & logical) | set(r.depends_on)
            self._check_attributes(refs, attributes)
        for o in self.outputs.values():
            refs = scan([o.value, o.export_name])
            bad = (refs.names - names - logical) | (refs.attrs - logical)
            if bad:
                raise _unresolved(bad, "Outputs")
            self._check_attributes(refs, attributes)
            conds |= refs.conditions | ({o.condition} if o.condition else set())
        missing = conds - set(self.conditions)
        if missing:
            raise TemplateError(f"Template format error: Unresolved condition dependencies "
                                f"[{', '.join(sorted(missing))}]")
        try:
            _layers(list(self.conditions), cond_graph)
        except TemplateError as e:
            raise TemplateError("Template format error: " + str(e).replace("resources", "conditions")) from None
        _layers(list(self.resources), graph)

    def _check_attributes(self, refs: Refs, attributes: Mapping[str, Collection[str]] | None) -> None:
        if attributes is None:
            return
        for logical, attribute in sorted(refs.attributes):
            if attribute not in attributes[self.resources[logical].type]:
                raise TemplateError(f"Template error: resource {logical} does not support attribute type "
                                    f"{attribute} in Fn::GetAtt")

    def bind(self, values: Mapping[str, str], pseudo: Pseudo) -> Bound:
        """Check the given parameter values against the template and evaluate its Conditions."""
        unknown = sorted(k for k in values if k not in self.parameters)
        if unknown:
            raise TemplateError(f"Parameters: [{', '.join(unknown)}] do not exist in the template")
        missing = [k for k, p in self.parameters.items() if k not in values and p.default is None]
        if missing:
            raise TemplateError(f"Parameters: [{', '.join(missing)}] must have values")
        raw = {k: values[k] if k in values else p.default for k, p in self.parameters.items()}
        resolved = {k: self.parameters[k].validate(v) for k, v in raw.items() if v is not None}
        return Bound(self, resolved, {k: v for k, v in raw.items() if v is not None}, pseudo)


class Bound:
    """A template with parameter values and conditions fixed: what one stack operation works from."""

    def __init__(self, template: Template, parameters: dict[str, Any], given: dict[str, str], pseudo: Pseudo):
        self.template = template
        self.parameters = parameters
        self.pseudo = pseudo
        self._given = given
        self.conditions: dict[str, bool] = {}
        self.resources: tuple[str, ...] = ()  # none while Conditions are evaluated: they may not reference any
        evaluating: set[str] = set()

        def cond(name: str) -> bool:
            if name in self.conditions:
                return self.conditions[name]
            if name not in template.conditions:
                raise TemplateError(f"Template format error: Unresolved condition dependencies [{name}]")
            if name in evaluating:
                raise TemplateError(f"Template error: circular condition dependency involving {name}")
            evaluating.add(name)
            self.conditions[name] = condition(template.conditions[name], self._scope(block="Conditions", cond=cond))
            evaluating.discard(name)
            return self.conditions[name]

        for name in template.conditions:
            cond(name)
        self.resources = tuple(
            r.logical_id for r in template.resources.values() if r.condition is None or self.conditions[r.condition])
        active = set(self.resources)
        inactive_ids = set(template.resources) - active
        self._deps: dict[str, frozenset[str]] = {}
        for logical in self.resources:
            r = template.resources[logical]
            refs = scan([r.properties, r.metadata], taken=self.conditions.__getitem__)
            inactive = (refs.logical | set(r.depends_on)) & inactive_ids
            if inactive:
                raise _unresolved(inactive, "Resources")
            self._deps[logical] = frozenset((refs.logical & active) | set(r.depends_on))
        for o in template.outputs.values():
            if o.condition is None or self.conditions[o.condition]:
                inactive = scan([o.value, o.export_name], taken=self.conditions.__getitem__).logical & inactive_ids
                if inactive:
                    raise _unresolved(inactive, "Outputs")

    def _scope(self, resolver: Resolver | None = None, block: str = "Resources", cond: Any = None) -> Scope:
        return Scope(parameters=self.parameters, pseudo=self.pseudo, mappings=self.template.mappings,
                     condition=cond or self.conditions.__getitem__, resources=self.resources,
                     resolver=resolver, block=block)

    def shown_parameters(self) -> dict[str, str]:
        """Parameter values as DescribeStacks shows them: NoEcho ones masked."""
        return {k: "****" if self.template.parameters[k].no_echo else v for k, v in self._given.items()}

    def deps(self, logical: str) -> frozenset[str]:
        """Active resources `logical` needs created first (Ref, GetAtt, Sub, DependsOn)."""
        return self._deps[logical]

    def levels(self) -> list[list[str]]:
        """Creation layers: every resource's dependencies are in earlier layers. Delete in reverse."""
        return _layers(list(self.resources), self._deps)

    def properties(self, logical: str, resolver: Resolver) -> dict[str, Any]:
        """A resource's properties with every intrinsic resolved and AWS::NoValue keys removed."""
        out = evaluate(self.template.resources[logical].properties, self._scope(resolver))
        return out if out is not NO_VALUE else {}

    def metadata(self, logical: str, resolver: Resolver) -> dict[str, Any] | None:
        """A resource's Metadata resolved like its properties (cfn-init reads it from the stack)."""
        meta = self.template.resources[logical].metadata
        return None if meta is None else evaluate(meta, self._scope(resolver))

    def outputs(self, resolver: Resolver) -> list[Output]:
        """The stack's outputs whose Condition holds, resolved (list values joined with commas)."""
        result = []
        scope = self._scope(resolver, block="Outputs")
        for o in self.template.outputs.values():
            if o.condition is not None and not self.conditions[o.condition]:
                continue
            value = evaluate(o.value, scope)
            value = ",".join(text(v) for v in value) if isinstance(value, list) else text(value)
            export = None if o.export_name is None else text(evaluate(o.export_name, scope))
            result.append(Output(key=o.key, value=value, description=o.description, export_name=export))
        return result
