"""The connectivity platform's data write: ``POST /api:v1/stack/alias`` over mutual TLS.

``curl --cert device.pem --key device-key.pem -d temperature=50`` writes 50 to the
field labelled ``temperature`` of the device's channel. The certificate is the whole
credential: one imprint issued, or one from a client CA that a client-ca enrollment
trusts, and then the first write provisions the device (see
:mod:`imprint.api.channel_access`). The answer is 204 with no body, as the platform's.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request, Response

from imprint.api.channel_access import device_channel
from imprint.api.device_plane import run_blocking
from imprint.api.identity import runtime_of
from imprint.channels.entries import connector_draft
from imprint.errors import InvalidRequest, InvalidValue
from imprint.runtime import Runtime

router = APIRouter(tags=["channels"])

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class FormRequired(InvalidRequest):
    code = "media_type_unsupported"


async def _form(request: Request) -> dict[str, str]:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in _FORM_TYPES:
        raise FormRequired("send form data (curl -d temperature=50)")
    values: dict[str, str] = {}
    form = await request.form()
    for name, item in form.multi_items():
        if not isinstance(item, str):
            raise InvalidValue(f"{name[:40]!r}: a value, not a file")
        if name in values:
            raise InvalidValue(f"{name[:40]!r}: given twice")
        values[name] = item
    return values


def _write(runtime: Runtime, request: Request, values: dict[str, str]) -> None:
    channel = device_channel(request, runtime, lambda fields: connector_draft(fields, values))
    draft = connector_draft(channel.fields, values)
    interval = timedelta(seconds=runtime.settings.channels.min_write_interval_seconds)
    runtime.channel_entries.append(channel.id, draft, min_interval=interval)


@router.post(
    "/api:v1/stack/alias",
    status_code=204,
    summary="Write named values with the device's certificate (self-provisions on first contact)",
    response_class=Response,
    responses={204: {"description": "Stored"}},
)
async def write_alias(request: Request) -> Response:
    runtime = runtime_of(request)
    values = await _form(request)
    await run_blocking(runtime, _write, runtime, request, values)
    return Response(status_code=204)
