"""The OpenAPI document describes the server: a bounded, seeded schemathesis pass against
a real HTTPS server, with the admin token and anonymously.

Every JSON API operation gets ``EXAMPLES`` generated requests that follow the schema
and ``EXAMPLES`` that break it (when some input has a rule to break). The pass fails on
any server error, a status or content type the document does not list for the
operation, a response body that violates its schema, or a request that follows the
schema refused with 400 (but for ``OPAQUE_BODIES``). Each path also gets a method it
does not have and must answer 405 with the right ``Allow``. The device protocols with
wire formats of their own are left out (docs/api.md, "What the OpenAPI document
covers").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.conftest import Service

#: Requests per operation and generation mode. 97 operations x 2 modes x 2 callers.
EXAMPLES = 3
#: Device protocols and the OAuth endpoints keep their own wire formats (docs/api.md).
UNCHECKED = (
    "/idprov/",
    "/midpoint/",
    "/api:v1/stack/",
    "/update",
    "/channels/",
    "/oauth/",
    "/relay/",  # the browser's approval page (HTML)
    "/.well-known/est",  # EST (RFC 7030): PKCS#7 and PKCS#10
    "/ocsp",  # OCSP (RFC 6960): DER requests and responses
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
#: Where a request the schema admits may still be refused (400), so "valid input is
#: accepted" is not checked: bodies that carry a CSR, certificates or a CRL (PEM or DER),
#: which no JSON schema can tell from other text ...
OPAQUE_BODIES = {
    "POST /api/v1/certificates",
    "POST /api/v1/client-cas/decode",
    "POST /api/v1/enrollments/{enrollment_id}/client-cas",
    "POST /api/v1/denied-certificates",
    "POST /api/v1/manufacturer-crls",
    "POST /api/v1/provision",
    "POST /api/v1/renew",
    "POST /api/v1/sign/identity-csr",
    "POST /api/v1/relay",
    # ... a plgd Helm values file (YAML text) ...
    "POST /api/v1/imports/plgd-values",
    # And rules across fields: an x509 enrollment's PEM chain and mechanism-dependent
    # fields; a public OAuth client cannot use client_credentials; a PSK needs org_id when
    # the caller has no organization of its own (an API key).
    "POST /api/v1/enrollments",
    "POST /api/v1/oauth-clients",
    "POST /api/v1/psk",
}
METHODS = ("get", "put", "post", "delete", "patch")


def checked(path: str) -> bool:
    return not path.startswith(UNCHECKED) and path != "/.well-known/openid-configuration"


def document(service: Service) -> dict[str, Any]:
    with service.client() as http:
        answer = http.get("/openapi.json")
    assert answer.status_code == 200
    loaded: dict[str, Any] = answer.json()
    return loaded


def run_pass(service: Service, headers: dict[str, str]) -> list[str]:
    """Every checked operation in both modes; the failures, one line each."""
    schema = schemathesis.openapi.from_dict(document(service))
    session = requests.Session()
    session.verify = str(service.root_cert)
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if not checked(operation.path):
            continue
        modes = [GenerationMode.POSITIVE]
        if _can_be_invalid(operation.definition.raw):
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:
            checks = CHECKS
            if mode is GenerationMode.POSITIVE and operation.label not in OPAQUE_BODIES:
                checks = [*CHECKS, positive_data_acceptance]
            test = _operation_test(operation, mode, service.base_url, session, headers, checks)
            try:
                test()
            except Unsatisfiable:
                continue  # nothing about this operation's input can be made invalid
            except (Exception, BaseExceptionGroup) as exc:  # report all, go on
                first = [line for line in str(_first(exc)).strip().splitlines() if line][:8]
                failures.append(
                    f"{operation.method.upper()} {operation.path} [{mode.value}]: "
                    + " | ".join(first)
                )
    session.close()
    return failures


def _can_be_invalid(operation: dict[str, Any]) -> bool:
    """Whether some input of the operation has a rule to break: a body, or a parameter
    with a rule beyond "any string" (a path segment of any text cannot be made invalid)."""
    loose = {"type", "title", "description"}

    def breakable(schema: dict[str, Any]) -> bool:
        return schema.get("type") != "string" or bool(set(schema) - loose)

    return "requestBody" in operation or any(
        breakable(parameter.get("schema", {})) for parameter in operation.get("parameters", [])
    )


def _first(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _operation_test(
    operation: Any,
    mode: GenerationMode,
    base_url: str,
    session: requests.Session,
    headers: dict[str, str],
    checks: list[Any],
) -> Callable[[], None]:
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,  # seeded: the same requests on every run
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def test(case: Any) -> None:
        response = case.call(
            base_url=base_url, session=session, headers=headers, timeout=30, verify=session.verify
        )
        case.validate_response(response, checks=checks, headers=headers)

    return test


@pytest.mark.parametrize("caller", ["admin", "anonymous"])
@pytest.mark.slow
def test_the_server_answers_as_its_openapi_document_says(service: Service, caller: str) -> None:
    headers = {"Authorization": f"Bearer {service.admin_token}"} if caller == "admin" else {}
    failures = run_pass(service, headers)
    assert not failures, "\n".join(failures)


@pytest.mark.slow
def test_a_wrong_method_gets_405_with_the_methods_of_the_path(service: Service) -> None:
    paths = document(service)["paths"]
    wrong: list[str] = []
    with service.admin() as http:
        for path, operations in paths.items():
            if "{" in path or not checked(path):
                continue
            documented = {m for m in operations if m in METHODS}
            missing = next(m for m in (*METHODS, "options") if m not in documented)
            answer = http.request(missing.upper(), path)
            allowed = {m.strip().lower() for m in answer.headers.get("allow", "").split(",")}
            if answer.status_code != 405 or allowed - {"head"} != documented:
                wrong.append(f"{missing.upper()} {path}: {answer.status_code} Allow={allowed}")
            assert answer.headers["content-type"] == "application/problem+json"
    assert not wrong, "\n".join(wrong)


def test_integers_beyond_64_bits_are_refused_not_a_server_error(service: Service) -> None:
    with service.admin() as http:
        for query in (
            "/api/v1/channels?after=9223372036854775808",
            "/api/v1/audit?before=9223372036854775808",
            "/api/v1/channels?after=2147483648",
            "/api/v1/audit?before=-1",
        ):
            answer = http.get(query)
            assert answer.status_code == 400, (query, answer.text)
            assert answer.json()["code"] == "request_invalid"


def test_the_document_has_the_problem_schema(service: Service) -> None:
    paths = document(service)["paths"]
    errors = [
        response
        for operations in paths.values()
        for operation in operations.values()
        for status, response in operation.get("responses", {}).items()
        if status.isdigit() and int(status) >= 400
    ]
    assert errors
    for response in errors:
        assert list(response["content"]) == ["application/problem+json"]
    assert not any(
        "422" in op.get("responses", {}) for ops in paths.values() for op in ops.values()
    )
