"""Go-compatible JSON: byte-for-byte what Go's json.Marshal writes.

The expected bytes marked "go1.19.8" were printed by the real Go toolchain from
``tests/unit/vectors/gojson_vectors.go`` (Debian bookworm's golang-go). The
``\\b``/``\\f`` short escapes of Go 1.22 and later were derived from reading
``encoding/json``'s ``appendString``; that is the default here.
"""

from __future__ import annotations

import hashlib
import hmac
from base64 import b64encode

import pytest

from imprint.compat.gojson import Struct, marshal

PEM = "-----BEGIN PUBLIC KEY-----\nMFkw+/=\n-----END PUBLIC KEY-----\n"
GO_119 = (1, 19)


def request(device_id: str, ip: str, mac: str, pem: str, signature: str = "") -> Struct:
    return Struct.of(
        ("deviceID", device_id),
        ("ip", ip),
        ("mac", mac),
        ("publicKeyPEM", pem),
        ("signature", signature),
    )


def test_struct_fields_keep_declaration_order_and_output_is_compact() -> None:
    # go1.19.8
    expected = (
        b'{"deviceID":"AA:BB:CC:DD:EE:FF","ip":"192.0.2.7","mac":"",'
        b'"publicKeyPEM":"-----BEGIN PUBLIC KEY-----\\nMFkw+/=\\n-----END PUBLIC KEY-----\\n",'
        b'"signature":""}'
    )
    assert marshal(request("AA:BB:CC:DD:EE:FF", "192.0.2.7", "", PEM)) == expected


def test_hmac_over_the_marshalled_request_matches_go() -> None:
    message = marshal(request("AA:BB:CC:DD:EE:FF", "192.0.2.7", "", PEM))
    digest = hmac.new(b"12345678", message, hashlib.sha256).digest()
    # go1.19.8: Sign(string(json.Marshal(req)), "12345678") as idprov's client does
    assert b64encode(digest).decode() == "sY0LIh8i0pSzwbrA7Saqg8FVmMq5FhRLHWmLaoUgU/0="


def test_html_characters_quotes_backslashes_and_controls_are_escaped_like_go() -> None:
    value = request(
        '<a href="x">&amp;</a>',
        "tab\there\rcr\\back",
        "\x00\x01\x08\x0c\x1f\x7f",
        "é ü € 😀 \u2028 \u2029 \u2027 \u202a \ufffd",
    )
    # go1.19.8 (before 1.22, \b and \f were written as \u0008 and \u000c)
    expected = (
        b'{"deviceID":"\\u003ca href=\\"x\\"\\u003e\\u0026amp;\\u003c/a\\u003e",'
        b'"ip":"tab\\there\\rcr\\\\back",'
        b'"mac":"\\u0000\\u0001\\u0008\\u000c\\u001f\x7f",'
        b'"publicKeyPEM":"\xc3\xa9 \xc3\xbc \xe2\x82\xac \xf0\x9f\x98\x80 \\u2028 \\u2029 '
        b'\xe2\x80\xa7 \xe2\x80\xaa \xef\xbf\xbd","signature":""}'
    )
    assert marshal(value, go_version=GO_119) == expected
    # Go 1.22+: the same, with the short escapes for backspace and form feed.
    modern = expected.replace(b"\\u0008", b"\\b").replace(b"\\u000c", b"\\f")
    assert marshal(value) == modern


def test_omitted_field_and_present_uint_like_omitempty() -> None:
    waiting = Struct.of(
        ("status", "Waiting"), ("caCert", ""), ("clientCert", ""), ("signature", "")
    )
    retry = Struct((("retrySec", 30), *waiting.fields))
    # go1.19.8
    assert marshal(waiting) == b'{"status":"Waiting","caCert":"","clientCert":"","signature":""}'
    assert marshal(retry) == (
        b'{"retrySec":30,"status":"Waiting","caCert":"","clientCert":"","signature":""}'
    )


def test_byte_slices_are_base64_and_nil_is_null() -> None:
    def status(cert: bytes | None) -> Struct:
        return Struct.of(
            ("deviceID", "d1"),
            ("status", "Approved" if cert else "Waiting"),
            ("caCert", ""),
            ("clientCert", cert),
        )

    # go1.19.8
    assert marshal(status(None)) == (
        b'{"deviceID":"d1","status":"Waiting","caCert":"","clientCert":null}'
    )
    assert marshal(status(b"-----BEGIN CERTIFICATE-----\nAB\n")) == (
        b'{"deviceID":"d1","status":"Approved","caCert":"",'
        b'"clientCert":"LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCkFCCg=="}'
    )


def test_maps_sort_keys_bytewise_and_other_types() -> None:
    value = Struct.of(
        ("services", {"mqtt": "mqtts://b:8883", "api": "https://a", "Zeta": "z", "ä": "u"}),
        ("caCert", b"\xfb\xff\x00"),
        ("list", ["x", "<y>"]),
        ("flag", True),
        ("neg", -42),
    )
    empty = Struct.of(
        ("services", {}), ("caCert", b""), ("list", None), ("flag", False), ("neg", 0)
    )
    # go1.19.8
    assert marshal(value) == (
        b'{"services":{"Zeta":"z","api":"https://a","mqtt":"mqtts://b:8883","\xc3\xa4":"u"},'
        b'"caCert":"+/8A","list":["x","\\u003cy\\u003e"],"flag":true,"neg":-42}'
    )
    assert marshal(empty) == b'{"services":{},"caCert":"","list":null,"flag":false,"neg":0}'


def test_lone_surrogates_become_the_replacement_character_as_after_go_decoding() -> None:
    # go1.19.8: json.Unmarshal of "\ud800x\udc00" then json.Marshal
    assert marshal(request("\ud800x\udc00", "", "", "")) == (
        b'{"deviceID":"\xef\xbf\xbdx\xef\xbf\xbd","ip":"","mac":"","publicKeyPEM":"",'
        b'"signature":""}'
    )


def test_nested_structs_and_lists_stay_compact() -> None:
    inner = Struct.of(("a", [1, 2]), ("b", {"k": None}))
    assert marshal([inner, inner]) == b'[{"a":[1,2],"b":{"k":null}},{"a":[1,2],"b":{"k":null}}]'


@pytest.mark.parametrize("value", [1.5, object(), {1: "x"}])
def test_values_go_json_is_not_produced_for_are_refused(value: object) -> None:
    with pytest.raises(TypeError):
        marshal(value)  # type: ignore[arg-type]
