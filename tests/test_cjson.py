"""protocols/cjson.py: JSON read and printed as cJSON 1.7.12 does (mod_audio_fork's bodies)."""

from __future__ import annotations

import pytest

from esl_audio_stream.protocols import cjson


def roundtrip(text: str) -> str:
    return cjson.dumps(cjson.parse(text))


@pytest.mark.parametrize(("given", "printed"), [
    ('{"a": 1, "b": [true, false, null]}', '{"a":1,"b":[true,false,null]}'),
    ('{"confidence": 1.0}', '{"confidence":1}'),  # a whole double prints as an integer
    ('{"x": 0.95}', '{"x":0.95}'),
    ('{"x": 1e20}', '{"x":1e+20}'),
    ('{"x": 100000000000000000000}', '{"x":1e+20}'),  # every number is a double
    ('{"x": 1e15}', '{"x":1e+15}'),
    ('{"x": 123456789012345}', '{"x":123456789012345}'),
    ('{"x": 0.1e-6}', '{"x":1e-07}'),
    ('{"x": 0.30000000000000004}', '{"x":0.30000000000000004}'),  # %1.17g when 15 digits lose it
    ('{"x": -0.0}', '{"x":-0}'),
    ('{"k": 1, "k": 2}', '{"k":1,"k":2}'),  # duplicates kept, in order
    ('{"s": "é/\\u00e9 \\"q\\" \\\\ \\n\\t\\u0001"}', '{"s":"é/é \\"q\\" \\\\ \\n\\t\\u0001"}'),
    ('  \n{"a":1} trailing garbage', '{"a":1}'),  # what follows the first value is ignored
    ('"just a string"', '"just a string"'),
    ("[]", "[]"),
    ("{}", "{}"),
])
def test_printed_as_cjson_prints_it(given, printed):
    assert roundtrip(given) == printed


@pytest.mark.parametrize("bad", ["", "   ", "not json", "{", '{"a":NaN}', "Infinity",
                                 '{"a":"\\ud800"}', "[" * 5000])
def test_what_cjson_refuses_is_refused(bad):
    with pytest.raises(cjson.ParseError):
        cjson.parse(bad)


def test_members_are_found_in_any_ascii_case_and_missing_is_not_null():
    obj = cjson.parse('{"Type":"x","DATA":null,"n":8000.7,"s":"8000"}')
    assert cjson.get_str(obj, "type") == "x"
    assert cjson.get(obj, "data") is None  # a JSON null member
    assert cjson.get(obj, "nothing") is cjson.MISSING
    assert cjson.get("not an object", "type") is cjson.MISSING
    assert cjson.valueint(cjson.get(obj, "n")) == 8000
    assert cjson.valueint(cjson.get(obj, "s")) == 0  # a string's valueint
    assert cjson.valueint(1e12) == 2**31 - 1  # saturated, as a C int
    assert cjson.detach(obj, "TYPE") == "x"
    assert cjson.dumps(obj) == '{"DATA":null,"n":8000.7,"s":"8000"}'
    assert cjson.detach(obj, "type") is cjson.MISSING
