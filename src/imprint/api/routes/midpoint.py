"""The midPoint-compatible registration route (see :mod:`imprint.compat.midpoint`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field

from imprint.api.device_plane import run_blocking
from imprint.api.identity import RuntimeDep
from imprint.attestation.registration_key import KEY_HALF_HEADER
from imprint.compat.midpoint import (
    key_half_from,
    plain_lines,
    registration_evidence,
    sealed_answer,
)

router = APIRouter(prefix="/midpoint/ws/iot", tags=["midpoint"])

_NO_STORE = {"Cache-Control": "no-store"}
_FORM = "application/x-www-form-urlencoded"


class Registered(BaseModel):
    status: Literal["approved"]
    serial: str
    owner: str
    channel: int = Field(description="The channel id (also inside `sealed`)")
    services: dict[str, str]
    sealed: dict[str, str] = Field(
        description="HKDF-SHA256(second half of the key) + AES-256-GCM, the serial as "
        "associated data: {channel: {id, write_key}, pre_shared_key?}"
    )


class Waiting(BaseModel):
    status: Literal["pending"]
    serial: str
    retry_after: int


async def _form_key(request: Request) -> str | None:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if request.method != "POST" or content_type != _FORM:
        return None
    value = (await request.form()).get("key")
    return value if isinstance(value, str) else None


_ROUTE: dict[str, Any] = {
    "summary": "midPoint: register a device by serial and key half, get its channel",
    "description": (
        "The first half of the registration key goes in the X-Imprint-Key-Half header "
        "(preferred), a `key` form field of a POST, or the `key` query parameter as "
        "midPoint firmware sends it. 200 `application/json` with the write key sealed "
        "under the second half; or `text/plain` lines `channel=<id>` and `writeKey=<key>` "
        "when the enrollment's channel delivery is `plain`."
    ),
    "response_model": Registered,
    "responses": {
        200: {"content": {"text/plain": {}}},
        202: {"model": Waiting, "description": "Waiting for an administrator's approval"},
    },
}


@router.get("/devices/{serial}", operation_id="midpoint_register", **_ROUTE)
@router.post("/devices/{serial}", operation_id="midpoint_register_post", **_ROUTE)
async def register(
    request: Request,
    runtime: RuntimeDep,
    serial: Annotated[str, Path(max_length=200, description="The device's serial number")],
    key: Annotated[
        str | None, Query(max_length=64, description="First half of the key (midPoint style)")
    ] = None,
) -> Response:
    half = key_half_from(
        query=key, form=await _form_key(request), header=request.headers.get(KEY_HALF_HEADER)
    )
    evidence = registration_evidence(
        serial,
        half,
        at=runtime.clock.now(),
        source=request.client.host if request.client else None,
    )
    outcome = await run_blocking(runtime, runtime.provisioner.provision, evidence)
    if outcome.status == "pending" or outcome.bundle is None:
        retry = outcome.retry_after or 30
        waiting = Waiting(status="pending", serial=outcome.device_id, retry_after=retry)
        return JSONResponse(
            waiting.model_dump(), status_code=202, headers={"Retry-After": str(retry)}
        )
    channel = outcome.bundle.channel
    if channel is not None and channel.write_key is not None:
        return PlainTextResponse(plain_lines(channel), headers=_NO_STORE)
    return JSONResponse(sealed_answer(outcome.bundle), headers=_NO_STORE)
