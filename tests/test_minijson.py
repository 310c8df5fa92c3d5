"""walship.minijson must behave exactly like json for every input."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from walship import minijson

# what walship writes: objects of strings, integers, booleans, null, objects
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.text(max_size=30),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30),
)
documents = st.recursive(
    scalars,
    lambda inner: st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=25,
)
# and what it must hand to json: floats, lists, escapes, odd keys
anything = st.recursive(
    st.one_of(scalars, st.floats(allow_nan=False)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)


@given(st.one_of(documents, anything))
@settings(max_examples=400, deadline=None)
def test_dumps_is_json_dumps(doc: object) -> None:
    for seps in ((",", ":"), (", ", ": ")):
        assert minijson.dumps(doc, separators=seps) == json.dumps(
            doc, sort_keys=True, separators=seps
        )


@given(st.one_of(documents, anything), st.sampled_from([None, 2]))
@settings(max_examples=400, deadline=None)
def test_loads_reads_what_json_writes(doc: object, indent: int | None) -> None:
    for text in (
        json.dumps(doc, indent=indent),
        json.dumps(doc, sort_keys=True, separators=(",", ":")),
        json.dumps(doc, ensure_ascii=False),
    ):
        assert minijson.loads(text) == json.loads(text)
        assert minijson.loads(text.encode()) == json.loads(text.encode())


def _same(text: str | bytes) -> None:
    try:
        expected = ("ok", json.loads(text))
    except ValueError as exc:
        expected = ("error", type(exc))
    try:
        got = ("ok", minijson.loads(text))
    except ValueError as exc:
        got = ("error", type(exc))
    assert got == expected, text


@given(st.text(alphabet='{}[]":, \t\n\r0123456789-.eEtrufalsn\\x\x00\x1f\u00e9', max_size=40))
@settings(max_examples=1500, deadline=None)
def test_loads_matches_json_on_arbitrary_text(text: str) -> None:
    _same(text)


@given(st.binary(max_size=40))
@settings(max_examples=500, deadline=None)
def test_loads_matches_json_on_arbitrary_bytes(data: bytes) -> None:
    _same(data)


@pytest.mark.parametrize(
    "text",
    [
        "{}",
        ' { "a" : 1 , "b" : { } } ',
        '{"a": -0}',
        '{"a": 01}',
        '{"a": 1.5}',
        '{"a": 1e3}',
        '{"a": "x\\"y"}',
        '{"a": "\\u00e9"}',
        '{"a": "tab\there"}',
        '{"a": "\u00e9\u007f"}',
        '{"a": [1, 2]}',
        '{"a": true, "a": false}',
        '{"a": truex}',
        '{"a": nul}',
        '{"a" 1}',
        '{"a": 1,}',
        '{"a": 1',
        "[1]",
        '"x"',
        "",
        "\ufeff{}",
        '{"a": 1} x',
        '{"' + "a" * 5000 + '": ' + "9" * 4200 + "}",
        '{"a": ' + "9" * 4400 + "}",
    ],
)
def test_loads_edge_cases(text: str) -> None:
    _same(text)
    _same(text.encode("utf-8"))


def test_loads_utf16_bytes_go_to_json() -> None:
    data = json.dumps({"a": "b"}).encode("utf-16")
    assert minijson.loads(data) == {"a": "b"}
