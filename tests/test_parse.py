"""Tool-call dialects, including broken ones (RELIABILITY F7): parsed or reported, never raised or dropped."""

import pytest

from orchestra.toolcalls import (
    final_text,
    parse_openai_tool_calls,
    parse_tool_calls,
    render_hermes,
    strip_think,
)

CASES = [
    # (model output, expected [(name, arguments, error substring or None)], expected remaining text)
    ('<tool_call>{"name": "search", "arguments": {"q": "x"}}</tool_call>', [("search", {"q": "x"}, None)], ""),
    ("think first <tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>\n<tool_call>{\"name\": \"b\", "
     "\"arguments\": {\"k\": 1}}</tool_call>", [("a", {}, None), ("b", {"k": 1}, None)], "think first"),
    ('<tool_call>{"name": "a", "arguments": {"q": "x"</tool_call>', [("a", {}, "invalid JSON")], ""),
    ('<tool_call>{"name": "a", "arguments": {"q": 1}}', [("a", {}, "unclosed")], ""),
    ('<tool_call>{"arguments": {"q": 1}}</tool_call>', [("", {}, "without a `name`")], ""),
    ('<tool_call>{"name": "a", "arguments": null}</tool_call>', [("a", {}, None)], ""),
    ('<tool_call>{"name": "a", "arguments": "{\\"q\\": 2}"}</tool_call>', [("a", {"q": 2}, None)], ""),
    ('<tool_call>{"name": "a", "arguments": [1, 2]}</tool_call>', [("a", {}, "must be a JSON object")], ""),
    ('<tool_call>{"name": "a", "arguments": "not json"}</tool_call>', [("a", {}, "not valid JSON")], ""),
    ("<tool_call>[1]</tool_call>", [("", {}, "JSON object")], ""),
    ('```json\n{"name": "calc", "arguments": {"e": "1+1"}}\n```', [("calc", {"e": "1+1"}, None)], ""),
    ('Sure.\n```\n[{"name": "a", "arguments": {}}, {"name": "b", "arguments": {}}]\n```',
     [("a", {}, None), ("b", {}, None)], "Sure."),
    ('```json\n{"name": "a", "arguments": {', [("a", {}, "unclosed")], ""),
    ("```python\nprint(1)\n```", [], "```python\nprint(1)\n```"),
    ("The answer is 42.", [], "The answer is 42."),
    ('<think>maybe <tool_call>{"name": "x"}</tool_call></think>The answer is 4.', [], None),
]


@pytest.mark.parametrize(("text", "expected", "remaining"), CASES)
def test_hermes_and_fenced_dialects(text, expected, remaining):
    rest, calls = parse_tool_calls(text)
    got = [(c.name, c.arguments, c.error) for c in calls]
    assert len(got) == len(expected), got
    for (name, args, error), (exp_name, exp_args, exp_error) in zip(got, expected, strict=True):
        assert name == exp_name
        assert args == exp_args
        if exp_error is None:
            assert error is None
        else:
            assert error is not None and exp_error in error
    if remaining is not None:
        assert rest == remaining
    assert len({c.id for c in calls}) == len(calls)


def test_calls_inside_think_blocks_are_not_executed():
    rest, calls = parse_tool_calls('<think><tool_call>{"name": "x", "arguments": {}}</tool_call></think>done')
    assert calls == []
    assert strip_think(rest) == "done"


def test_openai_structured_tool_calls():
    raw = [
        {"id": "c1", "type": "function", "function": {"name": "a", "arguments": '{"q": "x"}'}},
        {"id": "c2", "type": "function", "function": {"name": "b", "arguments": '{"q": '}},
        {"id": "c3", "type": "function", "function": {"name": None, "arguments": "{}"}},
        {"id": "c4", "type": "function", "function": {"name": "d", "arguments": None}},
        {"id": "c5", "type": "function", "function": {"name": "e", "arguments": "[]"}},
    ]
    calls = parse_openai_tool_calls(raw)
    assert [(c.id, c.name, c.arguments, c.error is None) for c in calls] == [
        ("c1", "a", {"q": "x"}, True), ("c2", "b", {}, False), ("c3", "", {}, False), ("c4", "d", {}, True),
        ("c5", "e", {}, False)]


def test_render_hermes_round_trips():
    text = render_hermes("ask", {"model": "gpt-4", "n": 2})
    _, calls = parse_tool_calls(text)
    assert [(c.name, c.arguments) for c in calls] == [("ask", {"model": "gpt-4", "n": 2})]


def test_final_text_drops_reasoning_and_echoed_tool_output_markup():
    echoed = '<think>use the result</think><tool_output tool="calculator" call="c1" trust="untrusted">\n395\n</tool_output>'
    assert final_text(echoed) == "395"
    assert final_text("The answer is 395 (<b>bold</b> kept).") == "The answer is 395 (<b>bold</b> kept)."


@pytest.mark.parametrize("arguments", [
    {"model": "mixtral"}, {"model": "yi-34b"}, {"query": "a, b (c) = d", "k": 3}, {"word": "true"}, {"n": "123"},
    {"flag": False, "none": None, "items": [1, "é"]}, {"text": "总结一下 — «quotes» \"inside\""}, {"empty": ""}, {},
])
def test_compact_calls_round_trip_every_value(arguments):
    from orchestra.toolcalls import render_call

    text = render_call("tool_1", arguments, "compact")
    assert "\n" not in text and "<tool_call>" not in text
    visible, calls = parse_tool_calls(f"{text}\n{text}", dialect="compact")
    assert visible == "" and [(c.name, c.arguments, c.error) for c in calls] == [("tool_1", arguments, None)] * 2


@pytest.mark.parametrize(("text", "error"), [
    ("ask(model=mixt", "unclosed call"),
    ("ask(mixtral)", "key=value"),
    ('ask(model="mixtral)', "invalid JSON"),
    ("ask(model=a b=c)", None),  # a bare value runs to the next comma: "a b=c" is one string
    ("ask(model=a, model=b)", "given twice"),
    ('ask(model="a" "b")', "expected `,`"),
])
def test_a_compact_call_that_cannot_be_read_is_kept_with_its_error(text, error):
    visible, [call] = parse_tool_calls(text, dialect="compact")
    assert call.name == "ask" and visible == ""
    if error is None:
        assert call.error is None and call.arguments == {"model": "a b=c"}
    else:
        assert error in call.error and call.arguments == {}


def test_compact_parsing_keeps_other_lines_as_text_and_hermes_ignores_compact_calls():
    visible, calls = parse_tool_calls("<think>ask(model=x)</think>Let me ask.\nask(model=gpt-4)\n2 + 2 = 4",
                                      dialect="compact")
    assert visible == "Let me ask.\n2 + 2 = 4" and [c.arguments for c in calls] == [{"model": "gpt-4"}]
    assert parse_tool_calls("ask(model=gpt-4)") == ("ask(model=gpt-4)", [])
