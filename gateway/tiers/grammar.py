"""GBNF grammars for the local tier, built with llama-cpp-python's JSON-schema converter.

Only schemas whose every constraint the converter turns into grammar are accepted: a keyword it would silently
ignore (a numeric `minimum`, `oneOf`'s exclusivity, `minLength` next to `pattern`, ...) could let the model emit
JSON that does not validate, so such a schema raises `UnsupportedSchema` naming the keyword and where it is.
"""

from __future__ import annotations

import json
from typing import Any

from llama_cpp.llama_grammar import SchemaConverter

from gateway.tiers.tool_probe import TOOL_CALL_OPEN

__all__ = ["TOOL_CALL_OPEN", "TOOL_CALL_CLOSE"]
TOOL_CALL_CLOSE = "</tool_call>"

_ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly",
     "writeOnly", "nullable", "$defs", "definitions"}
)
_STRING_FORMATS = frozenset({"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"})
_PRIMITIVE_TYPES = frozenset({"string", "number", "integer", "boolean", "null", "object", "array"})


class UnsupportedSchema(ValueError):
    """A JSON schema the local tier cannot enforce by grammar."""


def _branch_keywords(node: dict[str, Any]) -> frozenset[str]:
    """The keywords the converter enforces for `node` (mirrors the order of `SchemaConverter.visit`)."""
    kind = node.get("type")
    if "$ref" in node:
        return frozenset({"$ref"})
    if "anyOf" in node:
        return frozenset({"anyOf"})
    if isinstance(kind, list):
        return frozenset({"type"})
    if "const" in node:
        return frozenset({"const", "type"})
    if "enum" in node:
        return frozenset({"enum", "type"})
    if kind in (None, "object") and ("properties" in node or "additionalProperties" in node):
        return frozenset({"type", "properties", "required", "additionalProperties"})
    if kind in (None, "array") and ("items" in node or "prefixItems" in node):
        return frozenset({"type", "items", "minItems", "maxItems"} if "items" in node else {"type", "prefixItems"})
    if kind in (None, "string") and "pattern" in node:
        return frozenset({"type", "pattern"})
    if kind in (None, "string") and node.get("format") in _STRING_FORMATS:
        return frozenset({"type", "format"})
    if kind == "string" and ("minLength" in node or "maxLength" in node):
        return frozenset({"type", "minLength", "maxLength"})
    return frozenset({"type"})


def check_supported(node: Any, where: str = "$") -> None:
    """Raise `UnsupportedSchema` unless the converter enforces every constraint of the schema `node`."""
    if isinstance(node, bool) or not isinstance(node, dict):
        raise UnsupportedSchema(f"{where}: a schema must be a JSON object")
    kind = node.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind is not None else []
    for k in kinds:
        if k not in _PRIMITIVE_TYPES:
            raise UnsupportedSchema(f"{where}: unknown type {k!r}")
    enforced = _branch_keywords(node)
    for keyword in node:
        if keyword not in enforced and keyword not in _ANNOTATIONS:
            raise UnsupportedSchema(f"{where}: keyword {keyword!r} is not supported here by the local model")
    ref = node.get("$ref")
    if ref is not None and not (isinstance(ref, str) and ref.startswith("#/")):
        raise UnsupportedSchema(f"{where}: only local $refs ('#/...') are supported")
    for defs in ("$defs", "definitions"):
        for name, sub in (node.get(defs) or {}).items():
            check_supported(sub, f"{where}.{defs}.{name}")
    if "properties" in enforced:
        properties = node.get("properties") or {}
        missing = set(node.get("required") or ()) - set(properties)
        if missing:
            raise UnsupportedSchema(f"{where}: required properties {sorted(missing)} are not in 'properties'")
        for name, sub in properties.items():
            check_supported(sub, f"{where}.properties.{name}")
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            check_supported(extra, f"{where}.additionalProperties")
    for i, sub in enumerate(node.get("anyOf") or ()):
        check_supported(sub, f"{where}.anyOf[{i}]")
    if "items" in enforced and isinstance(node.get("items"), dict):
        check_supported(node["items"], f"{where}.items")
    for i, sub in enumerate(node.get("prefixItems") or ()):
        check_supported(sub, f"{where}.prefixItems[{i}]")


def _converter() -> SchemaConverter:
    return SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)


def _visit(converter: SchemaConverter, schema: dict[str, Any], name: str) -> str:
    """Add the rules for `schema` under `name`; the converter's own errors become `UnsupportedSchema`."""
    try:
        resolved = converter.resolve_refs(schema, name or "root")
        return converter.visit(resolved, name)
    except (AssertionError, KeyError, ValueError, TypeError, RecursionError) as exc:
        raise UnsupportedSchema(f"the local model cannot compile this schema: {exc}") from None


def json_object_grammar() -> str:
    """Any JSON object (`response_format: {"type": "json_object"}`)."""
    converter = _converter()
    converter.visit({"type": "object"}, "")
    return converter.format_grammar()


def schema_grammar(schema: dict[str, Any]) -> str:
    """JSON that validates against `schema`."""
    check_supported(schema)
    converter = _converter()
    _visit(converter, schema, "")
    return converter.format_grammar()


def _prefixed_refs(schema: Any, prefix: str) -> Any:
    """`schema` with its `$defs`/`definitions` names (and the local `$ref`s to them) prefixed, so the definitions
    of different functions cannot collide in one grammar."""
    if isinstance(schema, list):
        return [_prefixed_refs(s, prefix) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("$defs", "definitions") and isinstance(value, dict):
            out[key] = {f"{prefix}{name}": _prefixed_refs(sub, prefix) for name, sub in value.items()}
        elif key == "$ref" and isinstance(value, str) and value.startswith("#/"):
            head, _, name = value.rpartition("/")
            out[key] = f"{head}/{prefix}{name}"
        else:
            out[key] = _prefixed_refs(value, prefix)
    return out


def parameters_schema(function: dict[str, Any]) -> dict[str, Any]:
    """A function's parameter schema (an empty object when it declares none)."""
    params = function.get("parameters")
    return params if isinstance(params, dict) and params else {"type": "object", "properties": {}}


def tool_calls_grammar(functions: list[dict[str, Any]], *, parallel: bool) -> tuple[str, str]:
    """Grammars for Qwen-style tool calls (`<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`) to
    `functions`: (the whole output is calls; the output after an opening `<tool_call>`)."""
    converter = _converter()
    alternatives = []
    for i, function in enumerate(functions):
        schema = parameters_schema(function)
        check_supported(schema, f"tools[{i}].function.parameters")
        args_rule = _visit(converter, _prefixed_refs(schema, f"fn{i}-"), f"fn{i}-arguments")
        head = json.dumps('{"name": ' + json.dumps(function["name"]) + ', "arguments": ')
        alternatives.append(converter._add_rule(f"fn{i}-call", f'{head} {args_rule} "}}"'))
    converter._add_rule("tool-call", " | ".join(alternatives))
    call = f'"\\n" tool-call "\\n{TOOL_CALL_CLOSE}"'
    more = f' ("\\n{TOOL_CALL_OPEN}" {call})*' if parallel else ""
    converter._add_rule("tool-calls-rest", call + more)
    rules = converter.format_grammar()
    return rules + f'\nroot ::= "{TOOL_CALL_OPEN}" tool-calls-rest', rules + "\nroot ::= tool-calls-rest"


def grammar_compiles(vocab: Any, gbnf: str) -> bool:
    """Whether llama.cpp accepts `gbnf` (a grammar it rejects must never reach a sampler chain)."""
    import llama_cpp

    sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), b"root")
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True
