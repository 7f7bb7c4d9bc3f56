"""ThingSpeak's urlencoded form, read as Starlette's own form parser reads it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from starlette.datastructures import Headers
from starlette.formparsers import FormParser

from imprint.api.routes.thingspeak import urlencoded_fields
from imprint.errors import InvalidValue

BODIES = [
    b"api_key=ABCDEFGHIJKLMNOP&field1=21.5&field2=40",
    b"field1=caf%C3%A9+au+lait&status=a%26b%3Dc",
    b"a",
    b"=v",
    b"a&&b",
    b"&a=1&",
    b"a=b=c",
    b"a=%zz&b=%C3&c=+%2B",
    b"name=\xe9t\xc3\xa9",
    b"a=1&a=2",
    b"",
]


def starlettes(body: bytes) -> list[tuple[str, str]]:
    async def stream() -> AsyncIterator[bytes]:
        yield body

    async def parse() -> list[tuple[str, str]]:
        headers = Headers({"content-type": "application/x-www-form-urlencoded"})
        form = await FormParser(headers, stream()).parse()
        return [(name, str(value)) for name, value in form.multi_items()]

    return asyncio.run(parse())


@pytest.mark.parametrize("body", BODIES)
def test_a_form_reads_as_starlette_reads_it(body: bytes) -> None:
    assert urlencoded_fields(body) == starlettes(body)


def test_more_than_a_thousand_fields_are_refused_not_empty_parts() -> None:
    assert len(urlencoded_fields(b"&".join([b"f=1"] * 1000) + b"&&&")) == 1000
    with pytest.raises(InvalidValue, match="at most 1000 fields"):
        urlencoded_fields(b"&".join([b"f=1"] * 1001))
