"""Byte-exact JSON as Go's ``encoding/json.Marshal`` writes it.

Some peers sign JSON by HMAC over the bytes ``json.Marshal`` produced (idprov does), so
checking their signature means producing the same bytes. Go's rules, as implemented by
``encoding/json`` (Go 1.22 and later):

- compact: no whitespace between tokens;
- struct fields in declaration order (:class:`Struct`); map keys sorted (any
  :class:`~collections.abc.Mapping`);
- strings: ``"`` and ``\\`` escaped with a backslash; ``\\b \\f \\n \\r \\t`` as short
  escapes; other bytes below 0x20 as ``\\u00XX`` (lowercase hex); ``<``, ``>`` and
  ``&`` as ``\\u003c``, ``\\u003e``, ``\\u0026`` (HTML-safe by default); U+2028 and
  U+2029 as ``\\u2028`` and ``\\u2029``; every other character as raw UTF-8 (DEL and
  non-ASCII included);
- a string with a lone surrogate (Go strings cannot hold one; Go's decoder turns it
  into U+FFFD) encodes U+FFFD as raw UTF-8, as Go would after decoding it;
- ``[]byte`` (:class:`bytes`) as a standard base64 string with padding;
- ``None`` as ``null``, booleans as ``true``/``false``, integers in decimal.

Floats are refused: Go formats them in ways this module has no use for.
Go before 1.22 wrote ``\\b`` and ``\\f`` as ``\\u0008`` and ``\\u000c``; ``go_version``
selects that behaviour for peers built with an older toolchain.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

__all__ = ["GoValue", "Struct", "marshal"]

GoValue: TypeAlias = (
    "bool | int | str | bytes | Struct | Mapping[str, GoValue] | Sequence[GoValue] | None"
)

_HEX = "0123456789abcdef"
_SHORT = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_SHORT_122 = {**_SHORT, "\b": "\\b", "\f": "\\f"}
_HTML = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}


@dataclass(frozen=True, slots=True)
class Struct:
    """A Go struct value: ``(json name, value)`` pairs in field declaration order.

    Leave out a field tagged ``omitempty`` when its value is empty, as Go does.
    """

    fields: tuple[tuple[str, GoValue], ...]

    @classmethod
    def of(cls, *fields: tuple[str, GoValue]) -> Struct:
        return cls(tuple(fields))


def _escape_table(short_bf: bool) -> list[str]:
    short = _SHORT_122 if short_bf else _SHORT
    table = []
    for code in range(128):
        char = chr(code)
        if char in short:
            table.append(short[char])
        elif char in _HTML:
            table.append(_HTML[char])
        elif code < 0x20:
            table.append(f"\\u00{_HEX[code >> 4]}{_HEX[code & 0xF]}")
        else:
            table.append(char)
    return table


_TABLES = {True: _escape_table(True), False: _escape_table(False)}


def _string(text: str, table: list[str]) -> str:
    out = ['"']
    for char in text:
        code = ord(char)
        if code < 128:
            out.append(table[code])
        elif code in (0x2028, 0x2029):
            out.append(f"\\u{code:04x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\ufffd")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _encode(value: GoValue, table: list[str], out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, str):
        out.append(_string(value, table))
    elif isinstance(value, bytes):
        out.append('"' + base64.b64encode(value).decode("ascii") + '"')
    elif isinstance(value, Struct):
        out.append("{")
        for index, (name, item) in enumerate(value.fields):
            if index:
                out.append(",")
            out.append(_string(name, table) + ":")
            _encode(item, table, out)
        out.append("}")
    elif isinstance(value, Mapping):
        out.append("{")
        for index, name in enumerate(sorted(value)):
            if not isinstance(name, str):
                raise TypeError("Go map keys here must be strings")
            if index:
                out.append(",")
            out.append(_string(name, table) + ":")
            _encode(value[name], table, out)
        out.append("}")
    elif isinstance(value, Sequence):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _encode(item, table, out)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as Go JSON")


def marshal(value: GoValue, *, go_version: tuple[int, int] = (1, 22)) -> bytes:
    """The bytes ``json.Marshal`` returns for ``value``.

    Args:
        value: a :class:`Struct`, mapping (a Go map), sequence, string, bytes
            (a Go ``[]byte``), int, bool or None.
        go_version: the peer's Go version; before 1.22 ``\\b`` and ``\\f`` were
            written as ``\\u0008`` and ``\\u000c``.

    Raises:
        TypeError: a float or another type Go JSON is not produced for here.
    """
    out: list[str] = []
    _encode(value, _TABLES[go_version >= (1, 22)], out)
    return "".join(out).encode("utf-8")
