"""The OCSP responder over HTTP: RFC 6960 appendix A's POST and RFC 5019's GET.

Every answer, including a refusal (``malformedRequest``, ``unauthorized``), is an
``application/ocsp-response`` with HTTP 200, which is what OCSP clients read; the
responder itself lives in :mod:`imprint.pki.ocsp`.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from imprint.api.device_plane import run_blocking
from imprint.api.identity import runtime_of
from imprint.pki.ocsp import OcspAnswer
from imprint.store.db import runs_on_event_loop

router = APIRouter(tags=["ocsp"])

OCSP_REQUEST = "application/ocsp-request"
OCSP_RESPONSE = "application/ocsp-response"
#: An OCSP request for one certificate is about a hundred bytes; a signed one a few KB.
MAX_REQUEST = 16_384
_MALFORMED = b"\x30\x03\x0a\x01\x01"  # OCSPResponse { responseStatus malformedRequest }


def _answer(request: Request, answer: OcspAnswer | None, *, cacheable: bool) -> Response:
    runtime = runtime_of(request)
    if answer is None:
        runtime.metrics.ocsp_answered("malformed", False)
        return Response(_MALFORMED, media_type=OCSP_RESPONSE)
    runtime.metrics.ocsp_answered(answer.outcome, answer.cached)
    headers = {}
    seconds = runtime.settings.ocsp.cache_seconds
    if cacheable and answer.outcome in ("good", "revoked") and seconds:
        headers["Cache-Control"] = f"max-age={seconds}, public, no-transform, must-revalidate"
    return Response(answer.der, media_type=OCSP_RESPONSE, headers=headers)


async def _respond(request: Request, der: bytes) -> OcspAnswer:
    """A kept answer or a refusal at once. A fresh one (one ledger read, one signature):
    on SQLite as the device plane's work runs (:func:`~imprint.api.device_plane.run_blocking`:
    on the event loop, no thread hop, no connection per thread: about half the CPU and
    twice the rate); on PostgreSQL in the thread pool, where the sync driver's single
    round trip answered 15 % more a second than the async one at the same CPU
    (bench/README.md, step 23). One that first has a responder certificate issued goes
    to the thread pool too: that issuance commits on its own before the certificate
    signs anything, not with a commit group that could still fail after it."""
    runtime = runtime_of(request)
    at_once = runtime.ocsp.answer_at_once(der)
    if at_once is not None:
        return at_once
    if runs_on_event_loop(runtime.engine) or runtime.ocsp.signer_due():
        return await run_in_threadpool(runtime.ocsp.respond, der)
    return await run_blocking(runtime, runtime.ocsp.respond, der)


@router.post(
    "/ocsp",
    summary="OCSP (RFC 6960): a DER OCSPRequest in, a DER OCSPResponse out",
    response_class=Response,
)
async def ocsp_post(request: Request) -> Response:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if content_type != OCSP_REQUEST or not body or len(body) > MAX_REQUEST:
        return _answer(request, None, cacheable=False)
    return _answer(request, await _respond(request, body), cacheable=False)


@router.get(
    "/ocsp/{encoded:path}",
    summary="OCSP (RFC 5019): the base64 (URL-encoded) DER OCSPRequest in the path",
    response_class=Response,
)
async def ocsp_get(encoded: str, request: Request) -> Response:
    text = unquote(encoded)
    if len(text) > MAX_REQUEST * 2:
        return _answer(request, None, cacheable=False)
    try:
        der = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return _answer(request, None, cacheable=False)
    return _answer(request, await _respond(request, der), cacheable=True)
