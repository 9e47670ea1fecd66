"""Pages leave as ``respond`` lets answers leave: rendered in full, their audit event (with the digest of
exactly these bytes) committed, and only then sent, under the console's Content-Security-Policy."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import Request, Response
from fastapi.responses import RedirectResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from sqlalchemy.orm import Session

from gateway.audit_trail import AuditContext, commit_with_event
from gateway.http.console.security import CONSOLE_CSP, session_cookie_name

templates = Environment(
    loader=PackageLoader("gateway.http.console", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,  # a misspelt name in a template fails its test, never renders as blank
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(value: Any) -> str:
    """Timestamps as the officer reads them: UTC, to the second, with the zone said."""
    if value is None:
        return "—"
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _epsilon(value: Any) -> str:
    return "—" if value is None else f"{float(value):.4g}"


templates.filters["when"] = _when
templates.filters["epsilon"] = _epsilon

HTML_HEADERS = {"Content-Security-Policy": CONSOLE_CSP}


def html(content: bytes, status_code: int = 200) -> Response:
    return Response(content, status_code=status_code, media_type="text/html; charset=utf-8", headers=HTML_HEADERS)


def render(template: str, **context: Any) -> bytes:
    return templates.get_template(template).render(**context).encode()


def page(
    session: Session,
    audit: AuditContext,
    template: str,
    *,
    rows_released: int | None = None,
    **context: Any,
) -> Response:
    """Render, commit the page's event with the digest of the exact bytes, then hand them out."""
    content = render(template, request_id=audit.request_id, **context)
    commit_with_event(
        session, audit, audit.finish(decision="allow", rows_released=rows_released, response_body=content)
    )
    return html(content)


def redirect(location: str) -> RedirectResponse:
    """303: after a form, the browser asks for the next page with GET (a reload never re-sends the form)."""
    response = RedirectResponse(location, status_code=303)
    response.headers["Content-Security-Policy"] = CONSOLE_CSP
    return response


class ConsoleErrorPage:
    """A refusal under ``/console`` as a page (the API's code and request id on it), or, for a page asked
    for without a valid session, the way back to signing in."""

    prefix = "/console"

    def render(
        self,
        request: Request,
        status: int,
        code: str,
        detail: Any,
        request_id: str | None,
        headers: dict[str, str] | None,
    ) -> Response:
        if status == 401 and request.method == "GET" and not request.url.path.startswith("/console/oidc/"):
            response: Response = redirect("/console/login?ended=1")
            for secure in (False, True):  # a cookie that no longer works, whichever kind the browser holds
                response.delete_cookie(session_cookie_name(secure), path="/", secure=secure, httponly=True)
            return response
        text = detail if isinstance(detail, str) else "; ".join(_problem(item) for item in detail or [])
        officer = getattr(request.state, "console_officer", None)  # signed in: the page still offers sign-out
        content = render(
            "error.html",
            status=status,
            code=code,
            detail=text,
            request_id=request_id,
            officer=officer.principal if officer else None,
            csrf_token=officer.csrf_token if officer else "",
            nav="",
        )
        response = html(content, status_code=status)
        response.headers.update(headers or {})
        return response


def _problem(item: Any) -> str:
    if isinstance(item, dict):
        where = ".".join(str(part) for part in item.get("loc", [])[1:])
        return f"{where}: {item.get('msg', '')}" if where else str(item.get("msg", ""))
    return str(item)
