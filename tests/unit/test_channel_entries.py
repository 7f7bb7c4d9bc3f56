"""What the two write formats accept, and what they refuse without echoing it."""

from __future__ import annotations

import pytest

from imprint.channels.entries import (
    EmptyUpdate,
    UnknownChannelField,
    connector_draft,
    thingspeak_draft,
)
from imprint.errors import InvalidValue

FIELDS = {"field1": "temperature", "field3": "Relative Humidity"}


def test_thingspeak_parameters_become_an_entry() -> None:
    draft = thingspeak_draft(
        FIELDS,
        {"field1": "21.5", "lat": " 44.9 ", "long": "-93.2", "elevation": "250", "status": "ok"},
    )
    assert dict(draft.fields) == {"field1": "21.5"}
    assert (draft.latitude, draft.longitude, draft.elevation) == ("44.9", "-93.2", "250")
    assert draft.status == "ok"
    assert thingspeak_draft(FIELDS, {"status": "only a status"}).fields == {}


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"field2": "1"}, UnknownChannelField),  # not a field of this channel
        ({"field9": "1"}, InvalidValue),
        ({"lat": "90.5"}, InvalidValue),
        ({"long": "-180.01"}, InvalidValue),
        ({"elevation": "inf"}, InvalidValue),
        ({"elevation": "1e400"}, InvalidValue),
        ({"lat": "north"}, InvalidValue),
        ({"field1": "a\x00b"}, InvalidValue),
        ({"field1": "é" * 256}, InvalidValue),
        ({}, EmptyUpdate),
        ({"status": ""}, EmptyUpdate),
    ],
)
def test_thingspeak_refusals(params: dict[str, str], error: type[Exception]) -> None:
    with pytest.raises(error) as raised:
        thingspeak_draft(FIELDS, params)
    for value in params.values():
        if len(value) > 3:
            assert value not in str(raised.value)


def test_connector_names_are_labels_without_case_or_field_names() -> None:
    draft = connector_draft(FIELDS, {"TEMPERATURE": "50", "relative humidity": "40"})
    assert dict(draft.fields) == {"field1": "50", "field3": "40"}
    assert dict(connector_draft(FIELDS, {"field3": "41"}).fields) == {"field3": "41"}


def test_connector_refuses_unknown_names_and_lists_the_labels() -> None:
    with pytest.raises(UnknownChannelField) as raised:
        connector_draft(FIELDS, {"pressure": "1013"})
    assert str(raised.value) == (
        "'pressure' is not a field of this channel (it has temperature, Relative Humidity)"
    )
    with pytest.raises(UnknownChannelField):
        connector_draft(FIELDS, {"field2": "1"})  # a field name the channel does not use
    with pytest.raises(EmptyUpdate):
        connector_draft(FIELDS, {})
