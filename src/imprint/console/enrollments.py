"""Enrollments: list, create (every mechanism), edit, enable/disable, OOB bulk, reg. keys.

The create form is the API's :class:`~imprint.provisioning.specs.EnrollmentSpec` field
by field and goes through the API's create (same checks, same audit entry). Generated
secrets (pre-shared key, group key, registration key) are shown once, on the page that
answers the form, and never again. The OOB-secret bulk upload takes a CSV or JSON file,
previews it as a dry run (nothing written), and then registers all rows or none.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from imprint.api.routes import enrollments as enrollments_api
from imprint.api.routes.oob_secrets import ImportOut, secret_store
from imprint.app.auditing import audit
from imprint.app.scoping import scope_of, visible_enrollment
from imprint.console.csrf import check_csrf
from imprint.console.forms import model_of, orgs_with_role
from imprint.console.pages import (
    ConsoleRoute,
    ConsoleSessionDep,
    ConsoleUser,
    flash,
    form_of,
    redirect,
    render,
)
from imprint.console.pages import runtime as runtime_of
from imprint.errors import InvalidValue
from imprint.provisioning.enrollments import (
    KEY_TYPES,
    DeviceIdRule,
    Enrollment,
    EnrollmentKind,
    Mechanism,
    ReprovisionPolicy,
    validate_enrollment,
)
from imprint.provisioning.oob_secrets import (
    RowsInvalid,
    parse_csv,
    parse_json,
    register_secrets,
    secret_enrollment,
)
from imprint.provisioning.specs import EnrollmentSpec
from imprint.runtime import Runtime
from imprint.tenancy.access import Principal
from imprint.tenancy.roles import Role

router = APIRouter(route_class=ConsoleRoute)

MECHANISMS = [m.value for m in Mechanism if m is not Mechanism.RENEWAL]
PAGE = "/console/enrollments"


def _int(value: str, name: str) -> int | None:
    value = value.strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidValue(f"{name}: a whole number") from None


def _time(value: str, name: str) -> datetime | None:
    value = value.strip()
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidValue(f"{name}: a date and time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _pairs(text: str, name: str) -> dict[str, str]:
    """``key=value`` per line (or comma separated)."""
    found: dict[str, str] = {}
    for item in text.replace(",", "\n").splitlines():
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidValue(f"{name}: write key=value, one per line")
        found[key.strip()] = value.strip()
    return found


def _pems(text: str) -> list[str]:
    marker = "-----END CERTIFICATE-----"
    return [part.strip() + "\n" + marker + "\n" for part in text.split(marker) if part.strip()]


def spec_data(form: dict[str, str]) -> dict[str, Any]:
    """The EnrollmentSpec fields of the create form (blank fields: the spec's defaults)."""
    data: dict[str, Any] = {
        "mechanism": form.get("mechanism", ""),
        "kind": form.get("kind", "group"),
        "owner": form.get("owner", "").strip(),
        "manual_approval": form.get("manual_approval") == "on",
        "generate_pre_shared_key": form.get("generate_pre_shared_key") == "on",
        "enabled": form.get("enabled", "on") == "on",
        "reprovision": form.get("reprovision") or ReprovisionPolicy.ALLOW.value,
    }
    for name in ("id", "registration_id", "device_id_pattern", "group_key", "profile"):
        if form.get(name, "").strip():
            data[name] = form[name].strip()
    if form.get("device_id_rule"):
        data["device_id_rule"] = form["device_id_rule"]
    for name in ("validity_days", "quota", "renewal_grace_days"):
        number = _int(form.get(name, ""), name)
        if number is not None:
            data[name] = number
    for name in ("valid_from", "valid_until"):
        data[name] = _time(form.get(name, ""), name)
    if form.get("key_types", "").strip():
        data["key_types"] = [k.strip() for k in form["key_types"].split(",") if k.strip()]
    if form.get("services", "").strip():
        data["services"] = _pairs(form["services"], "services")
    if form.get("chain", "").strip():
        data["x509"] = {
            "certificate_chain": _pems(form["chain"]),
            "accept_expired": form.get("accept_expired") == "on",
        }
        if form.get("lead_certificate_name", "").strip():
            data["x509"]["lead_certificate_name"] = form["lead_certificate_name"].strip()
    if form.get("channel_fields", "").strip():
        data["channel"] = {
            "fields": _pairs(form["channel_fields"], "channel fields"),
            "delivery": form.get("channel_delivery") or "sealed",
        }
    return data


def _form_context(rt: Runtime, user: Principal) -> dict[str, object]:
    return {
        "mechanisms": MECHANISMS,
        "kinds": [k.value for k in EnrollmentKind],
        "rules": [r.value for r in DeviceIdRule],
        "policies": [p.value for p in ReprovisionPolicy],
        "key_types": KEY_TYPES,
        "owners": orgs_with_role(rt, user, Role.ADMIN),
    }


@router.get("/enrollments")
async def enrollment_list(
    request: Request,
    user: ConsoleUser,
    mechanism: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    rt = runtime_of(request)
    chosen = Mechanism(mechanism) if mechanism in MECHANISMS else None
    found = await run_in_threadpool(
        rt.enrollments.search, mechanism=chosen, owner=None, limit=500, owners=scope_of(rt, user)
    )
    return render(
        request,
        "enrollments.html",
        title="Enrollments",
        active=PAGE,
        enrollments=sorted(found, key=lambda e: e.id),
        mechanisms=MECHANISMS,
        mechanism=chosen.value if chosen else "",
    )


@router.get("/enrollments/new")
async def new_enrollment(
    request: Request,
    user: ConsoleUser,
    mechanism: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    context = await run_in_threadpool(_form_context, runtime_of(request), user)
    return render(
        request,
        "enrollment_new.html",
        title="New enrollment",
        active=PAGE,
        values={"mechanism": mechanism if mechanism in MECHANISMS else "x509"},
        error=None,
        **context,
    )


@router.post("/enrollments/new")
async def create_enrollment(request: Request, user: ConsoleUser) -> Response:
    form = dict(await form_of(request))
    rt = runtime_of(request)
    try:
        body = model_of(EnrollmentSpec, spec_data(form))
        created = await run_in_threadpool(enrollments_api.create, body, rt, user)
    except InvalidValue as exc:
        context = await run_in_threadpool(_form_context, rt, user)
        form.pop("csrf", None)
        return render(
            request,
            "enrollment_new.html",
            status=400,
            title="New enrollment",
            active=PAGE,
            values=form,
            error=exc.message,
            **context,
        )
    return render(
        request,
        "enrollment_created.html",
        title="Enrollment created",
        active=PAGE,
        created=created,
    )


def _detail_context(rt: Runtime, user: Principal, enrollment_id: str) -> dict[str, object]:
    enrollment = visible_enrollment(rt, user, enrollment_id, Role.VIEWER)
    context: dict[str, object] = {
        "e": enrollment,
        "policies": [p.value for p in ReprovisionPolicy],
        "cas": [],
        "keys": [],
        "secrets": [],
    }
    if enrollment.mechanism is Mechanism.CLIENT_CA:
        context["cas"] = rt.client_cas.for_enrollment(enrollment_id)
    if enrollment.mechanism is Mechanism.REGISTRATION_KEY:
        context["keys"] = rt.app.registration_keys.show(user, enrollment_id)
        context["now"] = datetime.now(UTC)
    if enrollment.mechanism is Mechanism.OOB_SECRET:
        context["secrets"] = secret_store(rt).search(enrollment_id, limit=50)
    return context


@router.get("/enrollments/{enrollment_id}")
async def enrollment_page(enrollment_id: str, request: Request, user: ConsoleUser) -> Response:
    context = await run_in_threadpool(_detail_context, runtime_of(request), user, enrollment_id)
    return render(
        request, "enrollment.html", title=f"Enrollment {enrollment_id}", active=PAGE, **context
    )


@router.post("/enrollments/{enrollment_id}/state")
async def set_state(enrollment_id: str, request: Request, user: ConsoleUser) -> Response:
    form = await form_of(request)
    enable = form.get("enabled") == "true"
    action = enrollments_api.enable if enable else enrollments_api.disable
    await run_in_threadpool(action, enrollment_id, runtime_of(request), user)
    response = redirect(f"{PAGE}/{enrollment_id}")
    flash(request, response, f"Enrollment {'enabled' if enable else 'disabled'}.")
    return response


def _edit(rt: Runtime, user: Principal, enrollment_id: str, form: dict[str, str]) -> Enrollment:
    current = visible_enrollment(rt, user, enrollment_id, Role.ADMIN)
    changed = dataclasses.replace(
        current,
        manual_approval=form.get("manual_approval") == "on",
        quota=_int(form.get("quota", ""), "quota"),
        validity_days=_int(form.get("validity_days", ""), "validity_days"),
        renewal_grace_days=_int(form.get("renewal_grace_days", ""), "renewal_grace_days") or 0,
        valid_from=_time(form.get("valid_from", ""), "valid_from"),
        valid_until=_time(form.get("valid_until", ""), "valid_until"),
        device_id_pattern=form.get("device_id_pattern", "").strip() or None,
        reprovision=ReprovisionPolicy(form.get("reprovision") or current.reprovision.value),
        updated_at=datetime.now(UTC),
    )
    if changed.reprovision.value not in {p.value for p in ReprovisionPolicy}:
        raise InvalidValue("reprovision: unknown policy")
    validate_enrollment(changed)
    rt.enrollments.replace(changed)
    audit(rt, user, "enrollment.update", "enrollment", enrollment_id, org_id=changed.owner)
    return changed


@router.post("/enrollments/{enrollment_id}/edit")
async def edit(enrollment_id: str, request: Request, user: ConsoleUser) -> Response:
    form = dict(await form_of(request))
    if form.get("reprovision") not in {None, "", *(p.value for p in ReprovisionPolicy)}:
        raise InvalidValue("reprovision: unknown policy")
    await run_in_threadpool(_edit, runtime_of(request), user, enrollment_id, form)
    response = redirect(f"{PAGE}/{enrollment_id}")
    flash(request, response, "Enrollment saved.")
    return response


# --- registration key --------------------------------------------------------------------


@router.post("/enrollments/{enrollment_id}/registration-key")
async def rotate_key(enrollment_id: str, request: Request, user: ConsoleUser) -> Response:
    form = await form_of(request)
    rt = runtime_of(request)
    transition = form.get("transition", "").strip() or None
    issued = await run_in_threadpool(
        lambda: rt.app.registration_keys.rotate(user, enrollment_id, transition=transition)
    )
    return render(
        request, "registration_key.html", title="Registration key", active=PAGE, issued=issued
    )


# --- OOB secrets: bulk upload ---------------------------------------------------------------


def _rows(name: str, text: str) -> list[Any]:
    if name.lower().endswith(".json") or text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except ValueError:
            raise InvalidValue("the file is not valid JSON") from None
        return parse_json(data)
    return list(parse_csv(text))


def _import(
    rt: Runtime, user: Principal, enrollment_id: str, rows: list[Any], dry_run: bool
) -> ImportOut:
    visible_enrollment(rt, user, enrollment_id, Role.OPERATOR)
    enrollment = secret_enrollment(rt.enrollments, enrollment_id)
    try:
        report = register_secrets(secret_store(rt), enrollment, rows, dry_run=dry_run)
    except RowsInvalid as exc:
        return ImportOut.of(exc.report)
    if report.written:
        audit(
            rt,
            user,
            "oob_secret.import",
            "enrollment",
            enrollment_id,
            org_id=enrollment.owner,
            created=report.created,
            updated=report.updated,
        )
    return ImportOut.of(report)


@router.post("/enrollments/{enrollment_id}/oob-secrets")
async def upload_secrets(
    enrollment_id: str, request: Request, user: ConsoleUser, session: ConsoleSessionDep
) -> Response:
    rt = runtime_of(request)
    limit = rt.settings.server.max_upload_bytes  # the whole request's limit, too
    # The preview sends the file back as a text field: allow a whole file in one.
    async with request.form(max_files=1, max_fields=10, max_part_size=limit) as form:
        check_csrf(session.csrf, form.get("csrf"))
        upload = form.get("file")
        dry_run = form.get("mode") != "write"
        if isinstance(upload, UploadFile):
            raw = await upload.read(limit + 1)
            name = upload.filename or ""
        else:
            raw, name = str(form.get("text") or "").encode(), "pasted.csv"
    if not raw.strip():
        raise InvalidValue("choose a CSV or JSON file (or paste rows)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidValue("the file is not UTF-8 text") from None
    rows = _rows(name, text)
    report = await run_in_threadpool(_import, rt, user, enrollment_id, rows, dry_run)
    return render(
        request,
        "oob_report.html",
        status=400 if report.invalid and not dry_run else 200,
        title="OOB secrets import",
        active=PAGE,
        report=report,
        text=text if dry_run and not report.invalid else "",
    )
