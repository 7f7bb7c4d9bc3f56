"""Organizations and users: the tree of what you see, sub-organizations (renamed, and
deleted when empty), members, roles, disabling or deleting a user and resetting her
password.

Every action calls the same operation as the admin API (``runtime.app.organizations``,
``runtime.app.users``: same checks, same audit entries): an admin of a parent creates
sub-organizations and members; a user sees only her own subtree, and another subtree's
organization or user is a 404 page.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from imprint.console.forms import org_rows, orgs_with_role
from imprint.console.pages import ConsoleRoute, ConsoleUser, flash, form_of, redirect, render
from imprint.console.pages import runtime as runtime_of
from imprint.errors import InvalidValue
from imprint.runtime import Runtime
from imprint.tenancy.access import Principal
from imprint.tenancy.orgs import OrgTree
from imprint.tenancy.roles import Role

router = APIRouter(route_class=ConsoleRoute)


def _role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise InvalidValue("role: viewer, operator or admin") from None


def _flag(value: str) -> bool:
    if value.lower() in {"true", "1", "yes", "on"}:
        return True
    if value.lower() in {"false", "0", "no", "off"}:
        return False
    raise InvalidValue("disabled: true or false")


def _context(rt: Runtime, user: Principal) -> dict[str, object]:
    entries = {e.org.id: e for e in rt.app.organizations.list(user)}
    rows = []
    for depth, org_id in org_rows(OrgTree(e.org for e in entries.values()), None):
        entry = entries[org_id]
        rows.append({"depth": depth, "id": org_id, "name": entry.org.name, "role": entry.role})
    members = rt.app.users.list(user, limit=1000)
    return {
        "orgs": rows,
        "members": members,
        "admin_orgs": orgs_with_role(rt, user, Role.ADMIN),
        "roles": [r.value for r in Role],
    }


@router.get("/orgs")
async def org_page(request: Request, user: ConsoleUser) -> Response:
    context = await run_in_threadpool(_context, runtime_of(request), user)
    return render(request, "orgs.html", title="Organizations", active="/console/orgs", **context)


@router.post("/orgs")
async def create_org(request: Request, user: ConsoleUser) -> Response:
    form = await form_of(request)
    entry = await run_in_threadpool(
        runtime_of(request).app.organizations.create,
        user,
        form.get("name", "").strip(),
        parent_id=form.get("parent_id", "").strip() or None,
        org_id=form.get("id", "").strip() or None,
    )
    org = entry.org
    response = redirect("/console/orgs")
    flash(request, response, f"Organization {org.name} ({org.id}) created under {org.parent_id}.")
    return response


@router.post("/orgs/{org_id}/name")
async def rename_org(org_id: str, request: Request, user: ConsoleUser) -> Response:
    form = await form_of(request)
    entry = await run_in_threadpool(
        runtime_of(request).app.organizations.rename, user, org_id, form.get("name", "")
    )
    response = redirect("/console/orgs")
    flash(request, response, f"Organization {entry.org.id} is now called {entry.org.name}.")
    return response


@router.post("/orgs/{org_id}/delete")
async def delete_org(org_id: str, request: Request, user: ConsoleUser) -> Response:
    form = await form_of(request)
    _confirmed(form.get("confirm", ""))
    org = await run_in_threadpool(runtime_of(request).app.organizations.delete, user, org_id)
    response = redirect("/console/orgs")
    flash(request, response, f"Organization {org.name} ({org.id}) deleted.")
    return response


@router.post("/users/{user_id}/delete")
async def delete_user(user_id: str, request: Request, user: ConsoleUser) -> Response:
    form = await form_of(request)
    _confirmed(form.get("confirm", ""))
    gone = await run_in_threadpool(runtime_of(request).app.users.delete, user, user_id)
    response = redirect("/console/orgs")
    flash(request, response, f"User {gone.username} deleted; the audit log keeps her entries.")
    return response


def _confirmed(value: str) -> None:
    if value != "yes":
        raise InvalidValue("tick the box to confirm", code="confirmation_required")


@router.post("/users")
async def create_user(request: Request, user: ConsoleUser) -> Response:
    form = await form_of(request)
    org_id = form.get("org_id", "").strip()
    role = _role(form.get("role", "viewer"))
    created = await run_in_threadpool(
        runtime_of(request).app.users.create,
        user,
        form.get("username", "").strip(),
        form.get("password", ""),
        org_id=org_id,
        role=role,
    )
    response = redirect("/console/orgs")
    flash(request, response, f"User {created.username} is now {role.value} of {org_id}.")
    return response


@router.post("/users/{user_id}/roles")
async def set_role(user_id: str, request: Request, user: ConsoleUser) -> Response:
    form = await form_of(request)
    org_id = form.get("org_id", "").strip()
    users = runtime_of(request).app.users
    if form.get("role") == "remove":
        await run_in_threadpool(users.remove_role, user, user_id, org_id)
        text = f"Membership in {org_id} removed."
    else:
        role = _role(form.get("role", ""))
        await run_in_threadpool(users.set_role, user, user_id, org_id, role)
        text = f"Role in {org_id} set to {role.value}."
    response = redirect("/console/orgs")
    flash(request, response, text)
    return response


@router.post("/users/{user_id}/disabled")
async def set_disabled(user_id: str, request: Request, user: ConsoleUser) -> Response:
    form = await form_of(request)
    users = runtime_of(request).app.users
    disabled = _flag(form.get("disabled", ""))
    changed = await run_in_threadpool(users.disable if disabled else users.enable, user, user_id)
    response = redirect("/console/orgs")
    state = "disabled: her sessions and tokens have ended" if disabled else "enabled"
    flash(request, response, f"User {changed.username} is {state}.")
    return response


@router.post("/users/{user_id}/password")
async def reset_password(user_id: str, request: Request, user: ConsoleUser) -> Response:
    form = await form_of(request)
    users = runtime_of(request).app.users
    changed = await run_in_threadpool(users.reset_password, user, user_id, form.get("password", ""))
    response = redirect("/console/orgs")
    flash(request, response, f"Password of {changed.username} reset; her sessions have ended.")
    return response
