"""CloudFormation's intrinsic functions: a static scan (shape errors and references, found when the
template is validated, as AWS does) and an evaluator (values, found when a stack is created).

Pure and synchronous: resource values come from a `Resolver` the engine supplies, so the same code
serves ValidateTemplate (no resolver), condition evaluation and property resolution."""
from __future__ import annotations

import base64
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import field
from typing import Any, Protocol

from ...slim import dataclass


class TemplateError(Exception):
    """A template or parameter problem; the message is what CloudFormation's ValidationError says."""


class _NoValue:
    """`Ref AWS::NoValue`: removes the enclosing key or list item (a sentinel, never a real value)."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE: Any = _NoValue()

PSEUDO = frozenset({"AWS::Region", "AWS::AccountId", "AWS::StackName", "AWS::StackId", "AWS::NoValue",
                    "AWS::Partition", "AWS::URLSuffix", "AWS::NotificationARNs"})
CONDITION_FUNCTIONS = frozenset({"Fn::Equals", "Fn::And", "Fn::Or", "Fn::Not"})
FUNCTIONS = frozenset({"Ref", "Fn::GetAtt", "Fn::Join", "Fn::Sub", "Fn::Base64", "Fn::Select", "Fn::Split",
                       "Fn::GetAZs", "Fn::FindInMap", "Fn::If", "Fn::ImportValue"}) | CONDITION_FUNCTIONS


class Resolver(Protocol):
    """What only the engine knows: created resources' physical ids and attributes, and other stacks'
    exports."""

    def ref(self, logical: str) -> str: ...

    def get_att(self, logical: str, attribute: str) -> Any: ...

    def import_value(self, name: str) -> str: ...


@dataclass(frozen=True)
class Pseudo:
    """The stack's pseudo-parameters (what `Ref AWS::Region` etc. give)."""

    region: str
    account_id: str
    stack_name: str
    stack_id: str
    partition: str = "aws"
    url_suffix: str = "amazonaws.com"
    azs: tuple[str, ...] = ()
    notification_arns: tuple[str, ...] = ()

    def value(self, name: str) -> Any:
        return {"AWS::Region": self.region, "AWS::AccountId": self.account_id, "AWS::StackName": self.stack_name,
                "AWS::StackId": self.stack_id, "AWS::NoValue": NO_VALUE, "AWS::Partition": self.partition,
                "AWS::URLSuffix": self.url_suffix, "AWS::NotificationARNs": list(self.notification_arns)}[name]


def function_of(node: Any) -> tuple[str, Any] | None:
    """(name, argument) when `node` is an intrinsic call: a one-key mapping `Ref` or `Fn::*`."""
    if isinstance(node, dict) and len(node) == 1:
        (key, arg), = node.items()
        if key == "Ref" or (isinstance(key, str) and key.startswith("Fn::")):
            return key, arg
    return None


_SUB_VAR = re.compile(r"\$\{([^}]*)\}")


def sub_parts(text: str) -> list[str | tuple[str]]:
    """Split a Fn::Sub string into literals and `(variable,)` tuples; `${!X}` is the literal `${X}`."""
    parts: list[str | tuple[str]] = []
    pos = 0
    for m in _SUB_VAR.finditer(text):
        if m.start() > pos:
            parts.append(text[pos:m.start()])
        inner = m.group(1)
        if inner.startswith("!"):
            parts.append("${" + inner[1:] + "}")
        else:
            parts.append((inner.strip(),))
        pos = m.end()
    if pos < len(text):
        parts.append(text[pos:])
    return parts


_ERR = {
    "Ref": "Template format error: Every Ref object must have a single String value.",
    "Fn::GetAtt": "Template error: every Fn::GetAtt object requires two non-empty parameters",
    "Fn::Join": "Template error: every Fn::Join object requires two parameters, (1) a string delimiter and (2) "
                "a list of strings to be joined or a function that returns a list of strings (such as Fn::GetAZs) "
                "to be joined.",
    "Fn::Sub": "Template error: One or more Fn::Sub intrinsic functions don't specify expected arguments. Specify "
               "a string as first argument, and an optional second argument to specify a mapping of values to "
               "replace in the string",
    "Fn::Base64": "Template error: every Fn::Base64 object requires a string parameter",
    "Fn::Select": "Template error: Fn::Select requires a list argument with two elements: an integer index and a "
                  "list",
    "Fn::Split": "Template error: every Fn::Split object requires two parameters, (1) a string delimiter and (2) "
                 "a string to be split or a function that returns a string to be split.",
    "Fn::GetAZs": "Template error: every Fn::GetAZs object requires a string parameter (a region name or \"\")",
    "Fn::FindInMap": "Template error: every Fn::FindInMap object requires three parameters, the map name, map key "
                     "and the attribute for return value",
    "Fn::If": "Template error: Fn::If requires a list argument with three elements",
    "Fn::Equals": "Template error: every Fn::Equals object requires a list of 2 string parameters.",
    "Fn::And": "Template error: every Fn::And object requires a list of at least 2 and at most 10 boolean "
               "parameters.",
    "Fn::Or": "Template error: every Fn::Or object requires a list of at least 2 and at most 10 boolean "
              "parameters.",
    "Fn::Not": "Template error: every Fn::Not object requires a list of 1 boolean parameters.",
    "Fn::ImportValue": "Template error: every Fn::ImportValue object requires a string parameter",
}


def _is_list(arg: Any, n: int) -> bool:
    return isinstance(arg, list) and len(arg) == n


@dataclass
class Refs:
    """Names an expression mentions: `names` via Ref and plain `${X}`, `attrs` the logical ids of GetAtt
    and `${X.Y}` (`attributes` the (logical id, attribute) pairs written literally), `conditions` via
    Fn::If / Condition."""

    names: set[str] = field(default_factory=set)
    attrs: set[str] = field(default_factory=set)
    attributes: set[tuple[str, str]] = field(default_factory=set)
    conditions: set[str] = field(default_factory=set)

    @property
    def logical(self) -> set[str]:
        return self.names | self.attrs


def scan(node: Any, taken: Callable[[str], bool] | None = None, refs: Refs | None = None) -> Refs:
    """Check every intrinsic's shape and collect what it references. With `taken` (a condition's
    value), only the chosen Fn::If branch is walked: what a stack actually depends on."""
    refs = refs if refs is not None else Refs()
    fn = function_of(node)
    if fn is None:
        if isinstance(node, dict):
            for v in node.values():
                scan(v, taken, refs)
        elif isinstance(node, list):
            for v in node:
                scan(v, taken, refs)
        return refs
    name, arg = fn
    if name not in FUNCTIONS:
        raise TemplateError(f"Template format error: Unrecognized intrinsic function {name}"
                            if name != "Fn::Transform" else "Template format error: Fn::Transform is not supported")
    bad = TemplateError(_ERR[name])
    if name == "Ref":
        if not isinstance(arg, str) or not arg:
            raise bad
        refs.names.add(arg)
    elif name == "Fn::GetAtt":
        if isinstance(arg, str) and "." in arg:
            arg = arg.split(".", 1)
        if not _is_list(arg, 2) or not isinstance(arg[0], str) or not arg[0] or not arg[1]:
            raise bad
        if isinstance(arg[1], str):
            refs.attributes.add((arg[0], arg[1]))
        else:
            scan(arg[1], taken, refs)
        refs.attrs.add(arg[0])
    elif name == "Fn::Sub":
        local: Collection[str] = ()
        if isinstance(arg, list):
            if len(arg) != 2 or not isinstance(arg[0], str) or not isinstance(arg[1], dict):
                raise bad
            text, local = arg[0], arg[1]
            for v in arg[1].values():
                scan(v, taken, refs)
        elif isinstance(arg, str):
            text = arg
        else:
            raise bad
        for part in sub_parts(text):
            if isinstance(part, tuple) and part[0] not in local:
                var = part[0]
                if not var:
                    raise bad
                if "." in var:
                    logical, attribute = var.split(".", 1)
                    refs.attrs.add(logical)
                    refs.attributes.add((logical, attribute))
                else:
                    refs.names.add(var)
    elif name == "Fn::If":
        if not _is_list(arg, 3) or not isinstance(arg[0], str):
            raise bad
        refs.conditions.add(arg[0])
        if taken is None:
            scan(arg[1], taken, refs)
            scan(arg[2], taken, refs)
        else:
            scan(arg[1] if taken(arg[0]) else arg[2], taken, refs)
    elif name in ("Fn::And", "Fn::Or", "Fn::Not"):
        lo, hi = (1, 1) if name == "Fn::Not" else (2, 10)
        if not isinstance(arg, list) or not lo <= len(arg) <= hi:
            raise bad
        for c in arg:
            if isinstance(c, dict) and len(c) == 1 and isinstance(c.get("Condition"), str):
                refs.conditions.add(c["Condition"])
            elif (f := function_of(c)) is not None and f[0] in CONDITION_FUNCTIONS:
                scan(c, taken, refs)
            else:
                raise bad
    else:
        shapes: dict[str, Callable[[Any], bool]] = {
            "Fn::Join": lambda a: _is_list(a, 2) and isinstance(a[0], str),
            "Fn::Select": lambda a: _is_list(a, 2),
            "Fn::Split": lambda a: _is_list(a, 2) and isinstance(a[0], str),
            "Fn::FindInMap": lambda a: _is_list(a, 3),
            "Fn::Equals": lambda a: _is_list(a, 2),
            "Fn::Base64": lambda a: not isinstance(a, list | dict) or function_of(a) is not None,
            "Fn::GetAZs": lambda a: isinstance(a, str) or function_of(a) is not None,
            "Fn::ImportValue": lambda a: isinstance(a, str) or function_of(a) is not None,
        }
        if not shapes[name](arg):
            raise bad
        scan(arg, taken, refs)
    return refs


def text(value: Any) -> str:
    """A scalar as CloudFormation stringifies it (booleans lower-case); lists are not strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise TemplateError(f"Template error: expected a string, got {type(value).__name__} {value!r}")


@dataclass
class Scope:
    """What names mean where an expression is evaluated. `resources` are the stack's active logical ids;
    `resolver` is None where resources may not be referenced (Conditions, ValidateTemplate)."""

    parameters: Mapping[str, Any]
    pseudo: Pseudo
    mappings: Mapping[str, Any]
    condition: Callable[[str], bool]
    resources: Collection[str] = ()
    resolver: Resolver | None = None
    block: str = "Resources"

    def _unresolved(self, name: str) -> TemplateError:
        if self.block == "Conditions":
            return TemplateError(f"Template format error: Unresolved dependencies [{name}]. Cannot reference "
                                 "resources in the Conditions block of the template")
        return TemplateError(f"Template format error: Unresolved resource dependencies [{name}] in the "
                             f"{self.block} block of the template")

    def _resolver(self, name: str) -> Resolver:
        if name not in self.resources or self.resolver is None:
            raise self._unresolved(name)
        return self.resolver

    def ref(self, name: str) -> Any:
        if name in self.parameters:
            return self.parameters[name]
        if name in PSEUDO:
            return self.pseudo.value(name)
        return self._resolver(name).ref(name)

    def get_att(self, logical: str, attribute: str) -> Any:
        return self._resolver(logical).get_att(logical, attribute)


def evaluate(node: Any, scope: Scope) -> Any:
    """The value of a (shape-checked) expression; may be NO_VALUE, which containers drop."""
    fn = function_of(node)
    if fn is None:
        if isinstance(node, dict):
            out = {k: evaluate(v, scope) for k, v in node.items()}
            return {k: v for k, v in out.items() if v is not NO_VALUE}
        if isinstance(node, list):
            return [v for v in (evaluate(x, scope) for x in node) if v is not NO_VALUE]
        return node
    name, arg = fn
    if name in CONDITION_FUNCTIONS:
        if scope.block != "Conditions":
            raise TemplateError(f"Template error: {name} can only be used in the Conditions block or inside "
                                "another condition function")
        return condition(node, scope)
    return _EVAL[name](arg, scope)


def _string(value: Any, fn: str) -> str:
    if isinstance(value, list | dict) or value is NO_VALUE:
        raise TemplateError(_ERR[fn])
    return text(value)


def _strings(value: Any, fn: str) -> list[str]:
    if not isinstance(value, list):
        raise TemplateError(_ERR[fn])
    return [_string(v, fn) for v in value]


def _ref(arg: str, scope: Scope) -> Any:
    return scope.ref(arg)


def _get_att(arg: Any, scope: Scope) -> Any:
    logical, attribute = arg.split(".", 1) if isinstance(arg, str) else arg
    return scope.get_att(logical, _string(evaluate(attribute, scope), "Fn::GetAtt"))


def _join(arg: list[Any], scope: Scope) -> str:
    return arg[0].join(_strings(evaluate(arg[1], scope), "Fn::Join"))


def _sub(arg: Any, scope: Scope) -> str:
    template, variables = (arg[0], arg[1]) if isinstance(arg, list) else (arg, {})
    out: list[str] = []
    for part in sub_parts(template):
        if isinstance(part, str):
            out.append(part)
            continue
        var = part[0]
        if var in variables:
            value = evaluate(variables[var], scope)
        elif "." in var and var not in scope.parameters:
            value = scope.get_att(*var.split(".", 1))
        else:
            value = scope.ref(var)
        if isinstance(value, list | dict) or value is NO_VALUE:
            raise TemplateError(f"Template error: variable {var} in Fn::Sub expression does not resolve to a string")
        out.append(text(value))
    return "".join(out)


def _base64(arg: Any, scope: Scope) -> str:
    return base64.b64encode(_string(evaluate(arg, scope), "Fn::Base64").encode()).decode()


def _select(arg: list[Any], scope: Scope) -> Any:
    index, items = evaluate(arg[0], scope), evaluate(arg[1], scope)
    try:
        i = int(text(index))
    except (TemplateError, ValueError):
        raise TemplateError(_ERR["Fn::Select"]) from None
    if not isinstance(items, list):
        raise TemplateError(_ERR["Fn::Select"])
    if not 0 <= i < len(items):
        raise TemplateError(f"Template error: Fn::Select cannot select nonexistent value at index {i}")
    return items[i]


def _split(arg: list[Any], scope: Scope) -> list[str]:
    return _string(evaluate(arg[1], scope), "Fn::Split").split(arg[0]) if arg[0] else \
        [_string(evaluate(arg[1], scope), "Fn::Split")]


def _get_azs(arg: Any, scope: Scope) -> list[str]:
    """This cloud has one region: its zones for "" or that region, none for any other region."""
    region = _string(evaluate(arg, scope), "Fn::GetAZs")
    return list(scope.pseudo.azs) if region in ("", scope.pseudo.region) else []


def _find_in_map(arg: list[Any], scope: Scope) -> Any:
    keys = [_string(evaluate(a, scope), "Fn::FindInMap") for a in arg]
    node: Any = scope.mappings
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            raise TemplateError(f"Template error: Unable to get mapping for {'::'.join(keys)}")
        node = node[k]
    return node


def _if(arg: list[Any], scope: Scope) -> Any:
    return evaluate(arg[1] if scope.condition(arg[0]) else arg[2], scope)


def _import_value(arg: Any, scope: Scope) -> str:
    name = _string(evaluate(arg, scope), "Fn::ImportValue")
    if scope.resolver is None:
        raise TemplateError(f"Template error: Fn::ImportValue {name} cannot be resolved here")
    return scope.resolver.import_value(name)


_EVAL: dict[str, Callable[[Any, Scope], Any]] = {
    "Ref": _ref, "Fn::GetAtt": _get_att, "Fn::Join": _join, "Fn::Sub": _sub, "Fn::Base64": _base64,
    "Fn::Select": _select, "Fn::Split": _split, "Fn::GetAZs": _get_azs, "Fn::FindInMap": _find_in_map,
    "Fn::If": _if, "Fn::ImportValue": _import_value,
}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, list | dict) or isinstance(b, list | dict):
        return a == b
    return text(a) == text(b)


def condition(node: Any, scope: Scope) -> bool:
    """A condition expression's truth: Fn::Equals/And/Or/Not or `{"Condition": name}`."""
    if isinstance(node, dict) and len(node) == 1 and isinstance(node.get("Condition"), str):
        return scope.condition(node["Condition"])
    fn = function_of(node)
    if fn is None or fn[0] not in CONDITION_FUNCTIONS:
        raise TemplateError("Template format error: Conditions can only be boolean operations on parameters "
                            "and other conditions")
    name, arg = fn
    if name == "Fn::Equals":
        return _same(evaluate(arg[0], scope), evaluate(arg[1], scope))
    if name == "Fn::Not":
        return not condition(arg[0], scope)
    if name == "Fn::And":
        return all(condition(c, scope) for c in arg)
    return any(condition(c, scope) for c in arg)
