"""A strict subset of Go's text/template with the Helm functions the chart in deploy/helm/bff uses.

There is no helm binary in the package registries this project may use, so the chart tests render the chart with
this interpreter. It is stricter than Helm, never looser: an unknown function, a field of a nil value, printing a
map or a list, or comparing values of different kinds is an error here (Helm would print ``map[...]`` or
``<no value>``), so whatever renders here renders the same under Helm. Semantics follow the text/template package
documentation: trim markers, pipelines (the previous result is the last argument), ``if``/``else if``/``with``/
``range`` with variables scoped to their block, ``define``/``include``, truth of empty values.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml


class TemplateError(Exception):
    """The template does not parse, or its execution fails (as ``helm template`` would, or stricter)."""


# -- lexing ----------------------------------------------------------------------------------------------------------

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_TOKEN = re.compile(
    r"""\s*(?:
    (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<decl>:=)
  | (?P<assign>=)
  | (?P<pipe>\|)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
  | (?P<variable>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)


@dataclass
class _Token:
    kind: str
    text: str


def _tokens(source: str) -> list[_Token]:
    out: list[_Token] = []
    position = 0
    source = source.rstrip()
    while position < len(source):
        match = _TOKEN.match(source, position)
        if match is None or match.end() == position:
            raise TemplateError(f"cannot parse {source[position:]!r} in {{{{ {source} }}}}")
        kind = match.lastgroup
        assert kind is not None
        out.append(_Token(kind, match.group(kind)))
        position = match.end()
    return out


# -- parse tree ------------------------------------------------------------------------------------------------------


@dataclass
class _Pipeline:
    declared: list[str]
    commands: list[list[Any]]  # each operand: _Token or a nested _Pipeline
    assign: bool = False


@dataclass
class _Text:
    text: str


@dataclass
class _Output:
    pipeline: _Pipeline


@dataclass
class _Block:
    kind: str  # if, with, range
    pipeline: _Pipeline
    body: list[Any] = field(default_factory=list)
    otherwise: list[Any] = field(default_factory=list)


def _parse_pipeline(tokens: list[_Token]) -> _Pipeline:
    declared: list[str] = []
    assign = False
    for i, token in enumerate(tokens):
        if token.kind in ("decl", "assign"):
            names = [t for t in tokens[:i] if t.kind != "comma"]
            if not names or any(t.kind != "variable" for t in names):
                raise TemplateError(f"bad declaration: {' '.join(t.text for t in tokens)}")
            declared = [t.text for t in names]
            assign = token.kind == "assign"
            tokens = tokens[i + 1 :]
            break
    pipeline, rest = _commands(tokens)
    if rest:
        raise TemplateError(f"unexpected {rest[0].text!r}")
    pipeline.declared, pipeline.assign = declared, assign
    return pipeline


def _commands(tokens: list[_Token]) -> tuple[_Pipeline, list[_Token]]:
    commands: list[list[Any]] = [[]]
    while tokens:
        token, tokens = tokens[0], tokens[1:]
        if token.kind == "pipe":
            commands.append([])
        elif token.kind == "lparen":
            inner, tokens = _commands(tokens)
            if not tokens or tokens[0].kind != "rparen":
                raise TemplateError("unclosed (")
            tokens = tokens[1:]
            commands[-1].append(inner)
        elif token.kind == "rparen":
            return _Pipeline([], commands), [token, *tokens]
        else:
            commands[-1].append(token)
    if any(not c for c in commands):
        raise TemplateError("empty command in a pipeline")
    return _Pipeline([], commands), []


def parse(source: str, name: str = "template") -> dict[str, list[Any]]:
    """Parse one file: its own body under ``name`` and every ``define`` in it under the defined name."""
    pieces: list[Any] = []
    position = 0
    for match in _ACTION.finditer(source):
        text = source[position : match.start()]
        if match.group(1):
            text = text.rstrip()
        pieces.append(_Text(text))
        pieces.append((match.group(2).strip(), bool(match.group(3))))
        position = match.end()
    pieces.append(_Text(source[position:]))
    # A right trim marker trims the text that follows the action.
    for i, piece in enumerate(pieces):
        if isinstance(piece, tuple) and piece[1] and i + 1 < len(pieces):
            pieces[i + 1] = _Text(pieces[i + 1].text.lstrip())

    templates: dict[str, list[Any]] = {}
    # Frames: (kind, block or define name, the node list being filled). "else if" replaces its if's frame by the
    # nested if's, so the chain's one "end" closes it.
    stack: list[tuple[str, Any, list[Any]]] = [("root", name, [])]
    for piece in pieces:
        if isinstance(piece, _Text):
            if piece.text:
                stack[-1][2].append(piece)
            continue
        action = piece[0]
        if action.startswith("/*"):
            if not action.endswith("*/"):
                raise TemplateError(f"{name}: unclosed comment")
            continue
        keyword, _, rest = action.partition(" ")
        rest = rest.strip()
        if keyword in ("if", "with", "range"):
            block = _Block(keyword, _parse_pipeline(_tokens(rest)))
            stack[-1][2].append(block)
            stack.append(("block", block, block.body))
        elif keyword == "else":
            kind, block, _nodes = stack.pop()
            if kind != "block":
                raise TemplateError(f"{name}: else outside if/with/range, or a second else")
            if rest.startswith("if ") and block.kind == "if":
                nested = _Block("if", _parse_pipeline(_tokens(rest[3:])))
                block.otherwise.append(nested)
                stack.append(("block", nested, nested.body))
            elif rest:
                raise TemplateError(f"{name}: else {rest!r} is not supported")
            else:
                stack.append(("else", block, block.otherwise))
        elif keyword == "end":
            kind, block, nodes = stack.pop()
            if kind == "root":
                raise TemplateError(f"{name}: end without a block")
            if kind == "define":
                templates[block] = nodes
        elif keyword == "define":
            tokens = _tokens(rest)
            if len(tokens) != 1 or tokens[0].kind != "string" or len(stack) != 1:
                raise TemplateError(f"{name}: define needs a name, at the top level")
            stack.append(("define", json.loads(tokens[0].text), []))
        elif keyword in ("template", "block", "break", "continue"):
            raise TemplateError(f"{name}: {keyword} is not supported (use include)")
        else:
            stack[-1][2].append(_Output(_parse_pipeline(_tokens(action))))
    if len(stack) != 1:
        raise TemplateError(f"{name}: unclosed {stack[-1][0]}")
    templates[name] = stack[0][2]
    return templates


# -- execution -------------------------------------------------------------------------------------------------------


def truth(value: Any) -> bool:
    """text/template's truth: false, 0, nil and empty strings, maps and lists are false."""
    return bool(value)


def _go_string(value: Any) -> str:
    """How a value prints: refused for nil, maps and lists (Helm would print ``<no value>`` or ``map[...]``)."""
    if value is None:
        raise TemplateError("printing a missing value (Helm prints nothing: a key is probably misspelt)")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict | list):
        raise TemplateError(f"printing a {type(value).__name__} (use toYaml or toJson): {value!r}")
    return str(value)


def _to_yaml(value: Any) -> str:
    if value is None:
        return "null"
    return yaml.safe_dump(value, default_flow_style=False, sort_keys=True).rstrip("\n").removesuffix("\n...")


def _indent(width: Any, text: Any) -> str:
    pad = " " * int(width)
    return pad + str(text).replace("\n", "\n" + pad)


def _int(value: Any) -> int:
    if isinstance(value, bool) or value is None:
        raise TemplateError(f"int of {value!r}")
    if isinstance(value, str):
        raise TemplateError(f"int of the string {value!r} (a quoted number in the values?)")
    return int(value)


def _eq(a: Any, *others: Any) -> bool:
    for b in others:
        if type(a) is not type(b) and not (a is None or b is None):
            raise TemplateError(f"eq: incompatible types {type(a).__name__} and {type(b).__name__}")
    return any(a == b for b in others)


def _printf(fmt: str, *args: Any) -> str:
    def convert(match: re.Match[str]) -> str:
        nonlocal args
        if match.group(0) == "%%":
            return "%"
        if not args:
            raise TemplateError(f"printf {fmt!r}: too few arguments")
        value, args = args[0], args[1:]
        if match.group(1) == "d":
            if not isinstance(value, int) or isinstance(value, bool):
                raise TemplateError(f"printf %d of {value!r}")
            return str(value)
        return _go_string(value)

    out = re.sub(r"%([dsv])|%%", convert, fmt)
    if args:
        raise TemplateError(f"printf {fmt!r}: too many arguments")
    return out


def _required(message: str, value: Any) -> Any:
    if value is None or value == "":
        raise TemplateError(message)
    return value


def _fail(message: str) -> str:
    raise TemplateError(message)


def _kind_is(kind: str, value: Any) -> bool:
    kinds = {"map": dict, "slice": list, "string": str, "bool": bool}
    if kind not in kinds:
        raise TemplateError(f"kindIs {kind!r} is not supported")
    return isinstance(value, kinds[kind])


def _has_key(mapping: Any, key: str) -> bool:
    if not isinstance(mapping, dict):
        raise TemplateError(f"hasKey on {type(mapping).__name__}")
    return key in mapping


def _add(*values: Any) -> int:
    return sum(_int(v) for v in values)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "toYaml": _to_yaml,
    "toJson": lambda v: json.dumps(v, separators=(",", ":")),
    "nindent": lambda width, text: "\n" + _indent(width, text),
    "indent": _indent,
    "quote": lambda v: json.dumps(_go_string(v)),
    "default": lambda fallback, value=None: value if truth(value) else fallback,
    "required": _required,
    "fail": _fail,
    "printf": _printf,
    "print": lambda *v: "".join(_go_string(x) for x in v),
    "int": _int,
    "add": _add,
    "not": lambda v: not truth(v),
    "empty": lambda v: not truth(v),
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "kindIs": _kind_is,
    "hasKey": _has_key,
    "trunc": lambda n, s: str(s)[: int(n)],
    "trimSuffix": lambda suffix, s: str(s).removesuffix(suffix),
    "sha256sum": lambda s: hashlib.sha256(str(s).encode()).hexdigest(),
    "dict": lambda *kv: dict(zip(kv[::2], kv[1::2], strict=True)),
    "list": lambda *v: list(v),
    "has": lambda needle, haystack: needle in haystack,
    "keys": lambda *maps: [k for m in maps for k in m],
    "sortAlpha": lambda items: sorted(str(i) for i in items),
    "get": lambda mapping, key: mapping.get(key, ""),
}


class Renderer:
    """Holds every parsed template of a chart (its files and their ``define``s) and executes them."""

    def __init__(self) -> None:
        self.templates: dict[str, list[Any]] = {}

    def add(self, name: str, source: str) -> None:
        for key, body in parse(source, name).items():
            if key in self.templates and key != name:
                raise TemplateError(f"template {key!r} is defined twice")
            self.templates[key] = body

    def render(self, name: str, data: Any) -> str:
        return self._execute(self.templates[name], data, [{"$": data}])

    # Every value is looked up with missing keys as nil, as Helm's missingkey=zero does; a field of nil fails.
    def _field(self, value: Any, path: list[str], text: str) -> Any:
        for name in path:
            if value is None:
                raise TemplateError(f"{text}: nil pointer evaluating .{name}")
            if not isinstance(value, Mapping):
                raise TemplateError(f"{text}: can't evaluate field {name} in a {type(value).__name__}")
            value = value.get(name)
        return value

    def _operand(self, operand: Any, dot: Any, scopes: list[dict[str, Any]]) -> Any:
        if isinstance(operand, _Pipeline):
            return self._pipeline(operand, dot, scopes)
        kind, text = operand.kind, operand.text
        if kind == "string":
            return json.loads(text)
        if kind == "raw":
            return text[1:-1]
        if kind == "number":
            return float(text) if "." in text else int(text)
        if kind == "field":
            return dot if text == "." else self._field(dot, text[1:].split("."), text)
        if kind == "variable":
            name, *path = text.split(".")
            for scope in reversed(scopes):
                if name in scope:
                    return self._field(scope[name], path, text)
            raise TemplateError(f"undefined variable {name}")
        if kind == "ident" and text in ("true", "false"):
            return text == "true"
        if kind == "ident" and text in FUNCTIONS:
            return FUNCTIONS[text]()  # a niladic function as an argument is called (text/template: "fun")
        raise TemplateError(f"unexpected {text!r}")

    def _command(self, command: list[Any], dot: Any, scopes: list[dict[str, Any]], piped: list[Any]) -> Any:
        head = command[0]
        if isinstance(head, _Token) and head.kind == "ident" and head.text not in ("true", "false", "nil"):
            args = [self._operand(a, dot, scopes) for a in command[1:]] + piped
            if head.text == "include":
                if len(args) != 2:
                    raise TemplateError("include needs a name and a context")
                if args[0] not in self.templates:
                    raise TemplateError(f"include: no template {args[0]!r}")
                # The included template starts afresh: $ is its data (text/template's walkTemplate).
                return self._execute(self.templates[args[0]], args[1], [{"$": args[1]}])
            if head.text == "and":
                for value in args:
                    if not truth(value):
                        return value
                return args[-1]
            if head.text == "or":
                for value in args:
                    if truth(value):
                        return value
                return args[-1]
            function = FUNCTIONS.get(head.text)
            if function is None:
                raise TemplateError(f"function {head.text!r} is not supported")
            try:
                return function(*args)
            except TypeError as exc:
                raise TemplateError(f"{head.text}: {exc}") from exc
        if len(command) != 1 or piped:
            raise TemplateError("a value cannot take arguments")
        return self._operand(head, dot, scopes)

    def _pipeline(self, pipeline: _Pipeline, dot: Any, scopes: list[dict[str, Any]]) -> Any:
        value: Any = None
        for i, command in enumerate(pipeline.commands):
            value = self._command(command, dot, scopes, [value] if i else [])
        return value

    def _declare(self, pipeline: _Pipeline, scopes: list[dict[str, Any]], values: list[Any]) -> None:
        if pipeline.assign:
            for name, value in zip(pipeline.declared, values, strict=True):
                for scope in reversed(scopes):
                    if name in scope:
                        scope[name] = value
                        break
                else:
                    raise TemplateError(f"assignment to undeclared {name}")
        else:
            scopes[-1].update(zip(pipeline.declared, values, strict=True))

    def _execute(self, nodes: list[Any], dot: Any, scopes: list[dict[str, Any]]) -> str:
        out: list[str] = []
        for node in nodes:
            if isinstance(node, _Text):
                out.append(node.text)
            elif isinstance(node, _Output):
                value = self._pipeline(node.pipeline, dot, scopes)
                if node.pipeline.declared:
                    self._declare(node.pipeline, scopes, [value])
                else:
                    out.append(_go_string(value))
            elif isinstance(node, _Block):
                out.append(self._block(node, dot, scopes))
        return "".join(out)

    def _block(self, block: _Block, dot: Any, scopes: list[dict[str, Any]]) -> str:
        scope: dict[str, Any] = {}
        value = self._pipeline(block.pipeline, dot, [*scopes, scope])
        if block.kind == "range":
            if value is not None and not isinstance(value, dict | list):
                raise TemplateError(f"range over {type(value).__name__}")
            items = sorted(value.items()) if isinstance(value, dict) else list(enumerate(value or []))
            if not items:
                return self._execute(block.otherwise, dot, [*scopes, {}])
            out = []
            for key, item in items:
                inner: dict[str, Any] = {}
                if len(block.pipeline.declared) == 2:
                    inner = dict(zip(block.pipeline.declared, (key, item), strict=True))
                elif block.pipeline.declared:
                    inner = {block.pipeline.declared[0]: item}
                out.append(self._execute(block.body, item, [*scopes, inner]))
            return "".join(out)
        if block.pipeline.declared:
            self._declare(block.pipeline, [*scopes, scope], [value])
        if truth(value):
            return self._execute(block.body, value if block.kind == "with" else dot, [*scopes, scope])
        return self._execute(block.otherwise, dot, [*scopes, scope])
