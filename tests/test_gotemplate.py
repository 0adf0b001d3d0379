"""The Go-template subset that renders the Helm chart (tests/support/gotemplate.py) follows text/template where the
chart relies on it, and refuses what Helm would render silently wrong (so the chart tests cannot pass by accident)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.gotemplate import Renderer, TemplateError


def run(source: str, data: Any = None, **defines: str) -> str:
    renderer = Renderer()
    for name, body in defines.items():
        renderer.add(name, body)
    renderer.add("t", source)
    return renderer.render("t", data)


def test_trim_markers_eat_whitespace_on_their_side_only() -> None:
    assert run("a  \n {{- 1 }} \n b") == "a1 \n b"
    assert run("a {{ 1 -}} \n\n b") == "a 1b"
    assert run("x{{/* a comment */}}y {{- /* trimmed */ -}} z") == "xyz"


def test_if_else_if_else_and_truth() -> None:
    source = "{{ if .a }}A{{ else if .b }}B{{ else if .c }}C{{ else }}D{{ end }}"
    assert [run(source, d) for d in ({"a": 1}, {"b": "x"}, {"c": [0]}, {"a": 0, "b": "", "c": {}})] == list("ABCD")


def test_range_over_a_map_is_sorted_by_key_and_binds_variables() -> None:
    assert run("{{ range $k, $v := . }}{{ $k }}={{ $v }};{{ end }}", {"b": 2, "a": 1}) == "a=1;b=2;"
    assert run("{{ range $i, $v := . }}{{ $i }}{{ $v }}{{ end }}", ["x", "y"]) == "0x1y"
    assert run("{{ range . }}{{ . }}{{ else }}none{{ end }}", []) == "none"


def test_variables_are_scoped_to_their_block() -> None:
    with pytest.raises(TemplateError, match="undefined variable"):
        run("{{ if true }}{{ $x := 1 }}{{ end }}{{ $x }}")
    assert run("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}") == "2"


def test_pipelines_pass_the_value_as_the_last_argument() -> None:
    assert run('{{ "a" | printf "%s-%s" "b" }}') == "b-a"
    assert run("{{ .x | default 7 }}|{{ .y | default 7 }}", {"x": 3}) == "3|7"
    assert run("{{ add 1 2 (int 3.0) }}") == "6"
    assert run("{{ toYaml . | nindent 2 }}", {"b": [1], "a": "x"}) == "\n  a: x\n  b:\n  - 1"


def test_include_starts_with_dollar_as_its_data() -> None:
    assert run('{{ include "n" .inner }}', {"inner": {"v": 5}, "v": 1}, d='{{ define "n" }}{{ $.v }}{{ end }}') == "5"


def test_what_helm_would_render_silently_wrong_is_refused() -> None:
    for source, data in [
        ("{{ .missing }}", {}),  # Helm: empty output
        ("{{ .a.b }}", {}),  # Helm: nil pointer evaluating
        ("{{ . }}", {"a": 1}),  # Helm: map[a:1]
        ('{{ eq 1 "1" }}', None),  # Go: incompatible types
        ("{{ int . }}", "25s"),  # sprig: 0
        ("{{ nosuchfunction 1 }}", None),
        ("{{ if true }}unclosed", None),
    ]:
        with pytest.raises(TemplateError):
            run(source, data)
