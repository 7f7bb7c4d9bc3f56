"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from imprint.api.identity import RuntimeDep
from imprint.api.problems import problem_response
from imprint.metrics import CONTENT_TYPE_LATEST

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The database answers and the CA is loaded")
def readyz(runtime: RuntimeDep) -> Response:
    try:
        with runtime.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return problem_response(503, "database_unavailable", "the database does not answer")
    return Response(
        content='{"status":"ready","database":"ok","ca":"loaded"}', media_type="application/json"
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(runtime: RuntimeDep) -> Response:
    return Response(runtime.metrics.render(), media_type=CONTENT_TYPE_LATEST)
