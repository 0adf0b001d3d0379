"""A browser's W3C ``traceparent``/``tracestate`` as bff reads them: valid ones are understood exactly, anything else
is ignored without an error or a log line (the browser picks the bytes, and may send megabytes of them)."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bff.config import TracingSettings
from bff.telemetry.exchange import Exchange
from bff.telemetry.tracing import (
    Tracing,
    TracingObserver,
    browser_context,
    parse_traceparent,
    parse_tracestate,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


def test_a_valid_traceparent_is_read_exactly() -> None:
    context = parse_traceparent([f"00-{TRACE_ID}-{SPAN_ID}-01"])
    assert context is not None
    assert (format(context.trace_id, "032x"), format(context.span_id, "016x")) == (TRACE_ID, SPAN_ID)
    assert context.trace_flags.sampled
    assert context.is_remote


@pytest.mark.parametrize(
    "value",
    [
        f"00-{TRACE_ID}-{SPAN_ID}-01-extra",  # version 00 has nothing after the flags
        f"ff-{TRACE_ID}-{SPAN_ID}-01",  # version ff is invalid
        f"00-{'0' * 32}-{SPAN_ID}-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE_ID.upper()}-{SPAN_ID}-01",  # upper-case hex
        f"00-{TRACE_ID}-{SPAN_ID}",
        f"00-{TRACE_ID}-{SPAN_ID}-1",
        f"00_{TRACE_ID}_{SPAN_ID}_01",
        "",
        "garbage",
        f"00-{TRACE_ID}-{SPAN_ID}-01" + " " * 600,
    ],
)
def test_a_malformed_traceparent_is_ignored(value: str) -> None:
    assert parse_traceparent([value]) is None


def test_a_later_version_may_carry_more_after_the_flags() -> None:
    context = parse_traceparent([f"01-{TRACE_ID}-{SPAN_ID}-01-what-comes-next"])
    assert context is not None
    assert format(context.trace_id, "032x") == TRACE_ID


def test_two_traceparent_fields_are_ignored() -> None:
    value = f"00-{TRACE_ID}-{SPAN_ID}-01"
    assert parse_traceparent([value, value]) is None


def test_tracestate_is_kept_only_when_every_member_is_well_formed() -> None:
    state = parse_tracestate(["congo=t61rcWkgMzE", "rojo=00f067aa0ba902b7"])
    assert state is not None
    assert dict(state.items()) == {"congo": "t61rcWkgMzE", "rojo": "00f067aa0ba902b7"}
    assert parse_tracestate(["congo=t61rcWkgMzE,bad key=1"]) is None
    assert parse_tracestate(["a=1,a=2"]) is None  # a key at most once
    assert parse_tracestate([",".join(f"k{i}=v" for i in range(33))]) is None  # at most 32 members
    assert parse_tracestate(["k=" + "v" * 600]) is None


def test_browser_context_reads_the_headers_of_a_scope() -> None:
    headers = [
        (b"traceparent", f"00-{TRACE_ID}-{SPAN_ID}-00".encode()),
        (b"tracestate", b"vendor=abc"),
        (b"cookie", b"__Host-bff=x"),
    ]
    context = browser_context(headers)
    assert context is not None
    assert not context.trace_flags.sampled
    assert dict(context.trace_state.items()) == {"vendor": "abc"}
    # A broken tracestate does not cost the valid traceparent.
    context = browser_context([(b"traceparent", f"00-{TRACE_ID}-{SPAN_ID}-01".encode()), (b"tracestate", b"=")])
    assert context is not None
    assert not dict(context.trace_state.items())
    assert browser_context([(b"tracestate", b"vendor=abc")]) is None


class Recording(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


header_values = st.one_of(
    st.binary(max_size=700),
    st.text(alphabet="0123456789abcdefABCDEF-_ ,=\t\x00\xff", max_size=120).map(lambda s: s.encode("latin-1")),
    st.builds(
        lambda v, t, s, f, rest: f"{v}-{t}-{s}-{f}{rest}".encode("latin-1"),
        st.sampled_from(["00", "01", "ff", "0", "zz"]),
        st.text(alphabet="0123456789abcdef", min_size=31, max_size=33),
        st.text(alphabet="0123456789abcdef", min_size=15, max_size=17),
        st.sampled_from(["00", "01", "ff", "1"]),
        st.sampled_from(["", "-", "-x", " ", "\x00"]),
    ),
)


@settings(max_examples=400, deadline=None)
@given(parents=st.lists(header_values, max_size=3), states=st.lists(header_values, max_size=3))
def test_any_header_values_are_read_safely(parents: list[bytes], states: list[bytes]) -> None:
    """Whatever the browser sends: no exception, no log line, and a context only from one well-formed field."""
    headers = [(b"traceparent", v) for v in parents] + [(b"tracestate", v) for v in states]
    handler = Recording()
    records = handler.records
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        context = browser_context(headers)
    finally:
        root.removeHandler(handler)
    assert not records
    if context is None:
        return
    assert len(parents) == 1
    value = parents[0].decode("latin-1").strip(" \t")
    assert value[:2] != "ff"
    assert value[3:35] == format(context.trace_id, "032x") != "0" * 32
    assert value[36:52] == format(context.span_id, "016x") != "0" * 16
    assert context.is_remote


def observed(propagate: bool) -> tuple[TracingObserver, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    settings = TracingSettings(enabled=True, propagate_from_browser=propagate)
    return Tracing(settings, processor=SimpleSpanProcessor(exporter)).observer(), exporter


valid_parents = st.builds(
    lambda t, s, f: f"00-{t:032x}-{s:016x}-{f}".encode(),
    st.integers(1, 2**128 - 1),
    st.integers(1, 2**64 - 1),
    st.sampled_from(["00", "01", "03"]),
)


@settings(max_examples=200, deadline=None)
@given(
    propagate=st.booleans(),
    parents=st.lists(st.one_of(valid_parents, header_values), max_size=2),
    states=st.lists(st.one_of(st.just(b"vendor=browser"), header_values), max_size=2),
)
def test_any_browser_trace_context_gives_a_server_span_parented_or_linked_only_when_valid(
    propagate: bool, parents: list[bytes], states: list[bytes]
) -> None:
    """Through the observer, as a request goes: a valid ``traceparent`` is continued (or only linked, by default);
    anything else starts a new trace with no link. The browser's ``tracestate`` never reaches a link."""
    observer, exporter = observed(propagate)
    headers = [(b"traceparent", v) for v in parents] + [(b"tracestate", v) for v in states]
    scope = {"type": "http", "method": "GET", "path": "/api/x", "raw_path": b"/api/x", "headers": headers}
    exchange = Exchange(scope, "/api", 0.0)
    observer.start(exchange)
    exchange.status = 200
    observer.end(exchange)
    valid = browser_context(headers)
    if propagate and valid is not None and not valid.trace_flags.sampled:
        # The browser's "not sampled" is continued too: nothing recorded, the trace id still the browser's.
        assert not exporter.get_finished_spans()
        assert exchange.trace_id == format(valid.trace_id, "032x")
        return
    [span] = exporter.get_finished_spans()
    assert exchange.trace_id == format(span.context.trace_id, "032x")
    if valid is None:
        assert span.parent is None
        assert not span.links
    elif propagate:
        assert span.parent is not None
        assert (span.parent.trace_id, span.parent.span_id) == (valid.trace_id, valid.span_id)
        assert span.context.trace_id == valid.trace_id
    else:
        assert span.parent is None
        assert [(link.context.trace_id, link.context.span_id) for link in span.links] == [
            (valid.trace_id, valid.span_id)
        ]
        assert not span.links[0].context.trace_state
        assert span.context.trace_id != valid.trace_id


def test_mounted_in_a_traced_application_the_server_span_is_a_child_of_the_hosts() -> None:
    """An application embedding bff (``bff.create_app``) that traces its own requests: the host's span is current
    when bff's observer starts, and bff continues it rather than the browser's header or a new trace."""
    observer, exporter = observed(propagate=False)
    host = TracerProvider().get_tracer("host")
    headers = [(b"traceparent", f"00-{TRACE_ID}-{SPAN_ID}-01".encode())]
    scope = {"type": "http", "method": "GET", "path": "/api/x", "raw_path": b"/api/x", "headers": headers}
    with host.start_as_current_span("host request") as outer:
        exchange = Exchange(scope, "/api", 0.0)
        observer.start(exchange)
        exchange.status = 200
        observer.end(exchange)
    [span] = exporter.get_finished_spans()
    assert span.parent is not None
    assert (span.parent.trace_id, span.parent.span_id) == (
        outer.get_span_context().trace_id,
        outer.get_span_context().span_id,
    )
    assert not span.links
