"""Organizations and users: the tree of what you see, sub-organizations, members, roles,
disabling a user and resetting her password.

Every action calls the admin API's route function (same checks, same audit entries):
an admin of a parent creates sub-organizations and members; a user sees only her own
subtree, and another subtree's organization or user is a 404 page.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from imprint.api.routes import orgs as orgs_api
from imprint.api.routes import users as users_api
from imprint.console.forms import model_of, org_rows, orgs_with_role
from imprint.console.pages import ConsoleRoute, ConsoleUser, flash, form_of, redirect, render
from imprint.console.pages import runtime as runtime_of
from imprint.runtime import Runtime
from imprint.tenancy.access import Principal, org_scope, role_in
from imprint.tenancy.roles import Role

router = APIRouter(route_class=ConsoleRoute)


def _context(rt: Runtime, user: Principal) -> dict[str, object]:
    tree = rt.org_tree()
    scope = org_scope(user, tree)
    rows = []
    for depth, org_id in org_rows(tree, scope):
        org = tree.orgs[org_id]
        rows.append(
            {"depth": depth, "id": org.id, "name": org.name, "role": role_in(user, org_id, tree)}
        )
    members = users_api.list_users(rt, user, 1000).items
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
    body = model_of(
        orgs_api.OrgIn,
        {
            "name": form.get("name", "").strip(),
            "id": form.get("id", "").strip() or None,
            "parent_id": form.get("parent_id", "").strip() or None,
        },
    )
    org = await run_in_threadpool(orgs_api.create, body, runtime_of(request), user)
    response = redirect("/console/orgs")
    flash(request, response, f"Organization {org.name} ({org.id}) created under {org.parent_id}.")
    return response


@router.post("/users")
async def create_user(request: Request, user: ConsoleUser) -> Response:
    form = await form_of(request)
    body = model_of(
        users_api.UserIn,
        {
            "username": form.get("username", "").strip(),
            "password": form.get("password", ""),
            "org_id": form.get("org_id", "").strip(),
            "role": form.get("role", "viewer"),
        },
    )
    created = await run_in_threadpool(users_api.create, body, runtime_of(request), user)
    response = redirect("/console/orgs")
    flash(request, response, f"User {created.username} is now {body.role.value} of {body.org_id}.")
    return response


@router.post("/users/{user_id}/roles")
async def set_role(user_id: str, request: Request, user: ConsoleUser) -> Response:
    form = await form_of(request)
    org_id = form.get("org_id", "").strip()
    rt = runtime_of(request)
    if form.get("role") == "remove":
        await run_in_threadpool(users_api.remove_role, user_id, org_id, rt, user)
        text = f"Membership in {org_id} removed."
    else:
        body = model_of(users_api.RoleIn, {"role": form.get("role", "")})
        await run_in_threadpool(users_api.set_role, user_id, org_id, body, rt, user)
        text = f"Role in {org_id} set to {body.role.value}."
    response = redirect("/console/orgs")
    flash(request, response, text)
    return response


@router.post("/users/{user_id}/disabled")
async def set_disabled(user_id: str, request: Request, user: ConsoleUser) -> Response:
    form = await form_of(request)
    body = model_of(users_api.UserPatch, {"disabled": form.get("disabled", "")})
    changed = await run_in_threadpool(
        users_api.update_user, user_id, body, runtime_of(request), user
    )
    response = redirect("/console/orgs")
    state = "disabled: her sessions and tokens have ended" if body.disabled else "enabled"
    flash(request, response, f"User {changed.username} is {state}.")
    return response


@router.post("/users/{user_id}/password")
async def reset_password(user_id: str, request: Request, user: ConsoleUser) -> Response:
    form = await form_of(request)
    body = model_of(users_api.PasswordIn, {"password": form.get("password", "")})
    rt = runtime_of(request)
    await run_in_threadpool(users_api.reset_password, user_id, body, rt, user)
    shown = await run_in_threadpool(users_api.show, user_id, rt, user)
    response = redirect("/console/orgs")
    flash(request, response, f"Password of {shown.username} reset; her sessions have ended.")
    return response
