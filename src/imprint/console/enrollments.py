"""Enrollments: list, create (every mechanism), edit, enable/disable, OOB bulk, reg. keys.

The create form is the API's :class:`~imprint.provisioning.specs.EnrollmentSpec` field
by field and goes through the same operation as the API's create (same checks, same
audit entry). Generated secrets (pre-shared key, group key, registration key) are shown
once, on the page that answers the form, and never again. The OOB-secret bulk upload
takes a CSV or JSON file, previews it as a dry run (nothing written), and then registers
all rows or none, through the API's import operation.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from imprint.console.csrf import check_csrf
from imprint.console.forms import model_of, orgs_with_role
from imprint.console.listing import Pager, csv_response
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
from imprint.pki.profiles import PROFILE_NAMES
from imprint.provisioning.channels import KeyDelivery
from imprint.provisioning.enrollments import (
    KEY_TYPES,
    DeviceIdRule,
    EnrollmentKind,
    Mechanism,
    ReprovisionPolicy,
)
from imprint.provisioning.oob_secrets import (
    ImportReport,
    RawRow,
    RowsInvalid,
    parse_csv,
    parse_json,
)
from imprint.provisioning.specs import EnrollmentPatch, EnrollmentSpec
from imprint.runtime import Runtime
from imprint.store.listing import Order
from imprint.store.oob_secrets import OOB_SECRET_SORT
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
        rt.app.enrollments.search, user, mechanism=chosen, owner=None, limit=500
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
        created = await run_in_threadpool(rt.app.enrollments.create, user, body)
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
    group_key = created.group_key
    return render(
        request,
        "enrollment_created.html",
        title="Enrollment created",
        active=PAGE,
        created=created,
        group_key=None if group_key is None else base64.b64encode(group_key).decode(),
    )


@dataclass(frozen=True, slots=True)
class SecretQuery:
    """The secrets list's search, sort and page, as the query string gives them."""

    q: str = ""
    sort: str = ""
    page: int = 1

    def order(self) -> Order:
        return OOB_SECRET_SORT.known(Order.parse(self.sort, OOB_SECRET_SORT.default))


def _secrets(
    rt: Runtime, user: Principal, enrollment_id: str, query: SecretQuery
) -> dict[str, object]:
    """A page of the enrollment's registered secrets with the true total."""
    params = {"q": query.q, "sort": query.sort}
    pager = Pager(f"{PAGE}/{quote(enrollment_id, safe='')}", params, query.page, 0, query.order())
    found = rt.app.oob_secrets.page(
        user,
        enrollment_id,
        limit=pager.size,
        text=query.q or None,
        order=query.order(),
        offset=pager.offset,
    )
    return {
        "secrets": found.items,
        "secrets_pager": replace(pager, total=found.total),
        "secrets_query": query,
    }


def _detail_context(
    rt: Runtime, user: Principal, enrollment_id: str, secrets: SecretQuery | None = None
) -> dict[str, object]:
    enrollment = rt.app.enrollments.show(user, enrollment_id)
    context: dict[str, object] = {
        "e": enrollment,
        "policies": [p.value for p in ReprovisionPolicy],
        "profiles": PROFILE_NAMES,
        "deliveries": [d.value for d in KeyDelivery],
        "cas": [],
        "keys": [],
        "secrets": [],
    }
    if enrollment.mechanism is Mechanism.CLIENT_CA:
        context["cas"] = rt.client_cas.for_enrollment(enrollment_id)
    if enrollment.mechanism is Mechanism.REGISTRATION_KEY:
        context["keys"] = rt.app.registration_keys.show(user, enrollment_id)
        context["now"] = rt.clock.now()
    if enrollment.mechanism is Mechanism.OOB_SECRET:
        context.update(_secrets(rt, user, enrollment_id, secrets or SecretQuery()))
    return context


@router.get("/enrollments/{enrollment_id}")
async def enrollment_page(
    enrollment_id: str,
    request: Request,
    user: ConsoleUser,
    q: Annotated[str | None, Query(max_length=200)] = None,
    sort: Annotated[str | None, Query(max_length=20)] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    query = SecretQuery((q or "").strip(), sort or "", page)
    context = await run_in_threadpool(
        _detail_context, runtime_of(request), user, enrollment_id, query
    )
    pager = context.get("secrets_pager")
    if isinstance(pager, Pager) and pager.beyond:
        return redirect(pager.beyond)
    return render(
        request, "enrollment.html", title=f"Enrollment {enrollment_id}", active=PAGE, **context
    )


@router.post("/enrollments/{enrollment_id}/state")
async def set_state(enrollment_id: str, request: Request, user: ConsoleUser) -> Response:
    form = await form_of(request)
    enable = form.get("enabled") == "true"
    operations = runtime_of(request).app.enrollments
    action = operations.enable if enable else operations.disable
    await run_in_threadpool(action, user, enrollment_id)
    response = redirect(f"{PAGE}/{enrollment_id}")
    flash(request, response, f"Enrollment {'enabled' if enable else 'disabled'}.")
    return response


def patch_data(form: dict[str, str]) -> dict[str, Any]:
    """The EnrollmentPatch of the edit form: every field on the form is set as shown
    (blank: none); the pre-shared key changes only when asked."""
    data: dict[str, Any] = {
        "manual_approval": form.get("manual_approval") == "on",
        "quota": _int(form.get("quota", ""), "quota"),
        "validity_days": _int(form.get("validity_days", ""), "validity_days"),
        "renewal_grace_days": _int(form.get("renewal_grace_days", ""), "renewal_grace_days") or 0,
        "valid_from": _time(form.get("valid_from", ""), "valid_from"),
        "valid_until": _time(form.get("valid_until", ""), "valid_until"),
        "device_id_pattern": form.get("device_id_pattern", "").strip() or None,
        "services": _pairs(form.get("services", ""), "services"),
        "channel": None,
    }
    if form.get("reprovision"):
        data["reprovision"] = form["reprovision"]
    if form.get("profile", "").strip():
        data["profile"] = form["profile"].strip()
    if form.get("key_types", "").strip():
        data["key_types"] = [k.strip() for k in form["key_types"].split(",") if k.strip()]
    if form.get("channel_fields", "").strip():
        data["channel"] = {
            "fields": _pairs(form["channel_fields"], "channel fields"),
            "delivery": form.get("channel_delivery") or "sealed",
        }
        if form.get("channel_name", "").strip():
            data["channel"]["name"] = form["channel_name"].strip()
    psk = form.get("psk_action", "keep")
    if psk == "generate":
        data["generate_pre_shared_key"] = True
    elif psk == "remove":
        data["pre_shared_key"] = None
    elif psk == "set":
        data["pre_shared_key"] = form.get("pre_shared_key", "")
    elif psk != "keep":
        raise InvalidValue("pre-shared key: keep, set, generate or remove")
    return data


@router.post("/enrollments/{enrollment_id}/edit")
async def edit(enrollment_id: str, request: Request, user: ConsoleUser) -> Response:
    patch = model_of(EnrollmentPatch, patch_data(dict(await form_of(request))))
    operations = runtime_of(request).app.enrollments
    patched = await run_in_threadpool(operations.update, user, enrollment_id, patch)
    if patched.generated_pre_shared_key is not None:
        return render(
            request,
            "enrollment_psk.html",
            title="New pre-shared key",
            active=PAGE,
            e=patched.enrollment,
            pre_shared_key=patched.generated_pre_shared_key,
        )
    response = redirect(f"{PAGE}/{enrollment_id}")
    changed = ", ".join(patched.changed) or "nothing changed"
    flash(request, response, f"Enrollment saved ({changed}).")
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


# --- OOB secrets: export --------------------------------------------------------------------

_EXPORT_CHUNK = 1000


@router.get("/enrollments/{enrollment_id}/oob-secrets.csv")
async def export_secrets(
    enrollment_id: str,
    request: Request,
    user: ConsoleUser,
    q: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """The registered secrets that match the search (never the secrets themselves)."""
    rt = runtime_of(request)
    text = (q or "").strip() or None
    operations = rt.app.oob_secrets
    # The first page here, so a refusal is an error page, not a broken download.
    first = await run_in_threadpool(
        lambda: operations.page(user, enrollment_id, limit=_EXPORT_CHUNK, text=text)
    )

    def rows() -> Iterator[tuple[object, ...]]:
        found = first
        while True:
            for s in found.items:
                yield (s.device_id, s.valid_until, s.created_at, s.used_at)
            if found.next is None:
                return
            found = operations.page(
                user, enrollment_id, limit=_EXPORT_CHUNK, after=found.next, text=text
            )

    return csv_response(
        f"{enrollment_id}-oob-secrets.csv",
        ["device_id", "valid_until", "created_at", "used_at"],
        rows(),
    )


# --- OOB secrets: bulk upload ---------------------------------------------------------------


def _rows(name: str, text: str) -> list[RawRow]:
    if name.lower().endswith(".json") or text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except ValueError:
            raise InvalidValue("the file is not valid JSON") from None
        return parse_json(data)
    return list(parse_csv(text))


def _import(
    rt: Runtime, user: Principal, enrollment_id: str, rows: list[RawRow], dry_run: bool
) -> ImportReport:
    try:
        return rt.app.oob_secrets.import_secrets(user, enrollment_id, rows, dry_run=dry_run)
    except RowsInvalid as exc:
        return exc.report


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
        status=400 if report.problems and not dry_run else 200,
        title="OOB secrets import",
        active=PAGE,
        report=report,
        text=text if dry_run and not report.problems else "",
    )
