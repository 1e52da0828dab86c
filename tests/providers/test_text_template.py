"""The text-chunk template: what it learns from, and which lines it takes as a plain literal."""

from __future__ import annotations

from relaygate.providers.text_template import TextTemplate, valid

HEAD = b'data: {"id":"c","model":"m","choices":[{"index":0,"delta":{"content":'
FOOT = b'},"finish_reason":null}]}'


def learned(text: str = "Hello") -> TextTemplate:
    template = TextTemplate()
    template.learn(HEAD + b'"' + text.encode() + b'"' + FOOT, text)
    return template


def test_nothing_matches_before_a_template_is_learned() -> None:
    assert TextTemplate().literal(HEAD + b'"x"' + FOOT) is None


def test_a_line_of_the_template_gives_its_literal_as_sent() -> None:
    template = learned()
    assert template.literal(HEAD + b'" w\\u00e9rld\\n"' + FOOT) == b'" w\\u00e9rld\\n"'


def test_anything_but_one_valid_json_string_is_left_to_the_decoder() -> None:
    template = learned()
    for bad in (
        b'"say \\"hi\\""',  # escaped quotes: not found without decoding
        b'""',  # no text
        b'"a\x01b"',  # a raw control character
        b'"a\rdata: [DONE]\r"',  # ... which would end a client's SSE line
        b'"a\\x"',  # an invalid escape
        b'"a\\u12"',  # a short one
        b'"\\ud83d\\ude00"',  # surrogates
        b'"\xff\xfe"',  # not UTF-8
    ):
        assert template.literal(HEAD + bad + FOOT) is None, bad
    for good in (b'"ends in a backslash \\\\"', b'"caf\xc3\xa9 \\u00e9 \\n"'):
        assert template.literal(HEAD + good + FOOT) == good


def test_a_line_that_differs_outside_the_text_does_not_match() -> None:
    template = learned()
    other = HEAD.replace(b'"model":"m"', b'"model":"n"')
    assert template.literal(other + b'"x"' + FOOT) is None
    assert template.literal(HEAD + b'"x"' + FOOT[:-1] + b',"obfuscation":"ab"}') is None


def test_an_ambiguous_text_teaches_nothing() -> None:
    # "m" is also the model's name: the literal's place in the line cannot be told
    assert learned("m").literal(HEAD + b'"x"' + FOOT) is None


def test_texts_encoders_disagree_on_teach_nothing() -> None:
    for text in ("caf\u00e9", "a<b", "a/b", "tab\there"):
        assert learned(text).literal(HEAD + b'"x"' + FOOT) is None, text


def test_it_gives_up_on_a_stream_whose_chunks_never_repeat() -> None:
    template = TextTemplate()
    for i in range(3):
        template.learn(HEAD + b'"Hi"' + FOOT + b" " * i, "Hi")
    assert template.literal(HEAD + b'"x"' + FOOT + b"  ") == b'"x"'  # the third was learned
    template.learn(HEAD + b'"Hi"' + FOOT + b"   ", "Hi")  # a fourth is not
    assert template.literal(HEAD + b'"x"' + FOOT + b"   ") is None


def test_a_run_of_literals_is_valid_only_if_each_one_is() -> None:
    assert valid([b'"one"', b'" two \\n"', b'"caf\xc3\xa9"'])
    for bad in (
        [b'"a","b"'],  # two strings in one literal: each would pass, joined with a comma
        [b'"a"', b'""'],
        [b'"a"', b'"b\\"c"'],
        [b'"a"', b'"\xff"'],
        [b'"a" ', b'"b"'],
    ):
        assert not valid(bad), bad
