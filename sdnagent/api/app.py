"""The REST/JSON routes, on FastAPI: each judges and writes through ``tapdb/ops.py``.

Errors are one line naming the field, as tapctl's: 400 for a rule or quota broken
(and for a request body or query that is not what the OpenAPI document says),
404 for an object that does not exist, 409 for a change that collides with what
exists (a name or priority taken, an object in use), 401 without a known token,
403 for a write by a reader, 503 when tapdb cannot be reached.  Nothing is
half-applied: every change is one tapdb transaction.
"""
from __future__ import annotations

import dataclasses
import html
import json
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from sdnagent import model, trace
from sdnagent.api import schemas as S
from sdnagent.api.audit import AuditLog
from sdnagent.api.identity import Identity, who
from sdnagent.api.replica import Replica, View
from sdnagent.cli import tapctl
from sdnagent.tapdb import ops, rpc

PREFIX = "/v1"
CONSOLE = Path(__file__).with_name("console.html")
AUDIT_BODY = 4096  # a request body longer than this is recorded by its length
TARGETS, FILTERS, SESSIONS = (f"{PREFIX}/traffic-mirror-targets",
                              f"{PREFIX}/traffic-mirror-filters",
                              f"{PREFIX}/traffic-mirror-sessions")


class ApiError(Exception):
    def __init__(self, status: int, message: str, field: Optional[str] = None):
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


class Wait:
    """``?wait=true&timeout=S``: as ``tapctl --wait --timeout S``."""

    def __init__(self, wait: bool = Query(False, description="return once every chassis "
                                                               "alive when the wait began "
                                                               "applied the change"),
                 timeout: float = Query(10.0, gt=0, description="seconds to wait")):
        self.wait, self.timeout = wait, timeout


def create_app(connect: Callable[[], ops.IntentDb], identities: dict[str, Identity],
               audit: AuditLog, replica: Replica) -> FastAPI:
    """The API over tapdb; ``connect`` opens a service-layer connection (one per worker
    thread, opened again after tapdb was lost); ``replica`` is what reads are served
    from."""
    app = FastAPI(title="sdnagent API", version="1",
                  description="VPC traffic mirroring: targets, filters, sessions, sources.",
                  docs_url=None, redoc_url=None)
    connections: dict[int, ops.IntentDb] = {}  # one per worker thread, by thread id

    def db(request: Request) -> ops.IntentDb:
        """The service layer for this request: in the caller's project (an admin's: the
        ``project`` query parameter, else the default one), confined to it unless the
        caller is an admin."""
        thread = request.state.thread = threading.get_ident()
        api = connections.get(thread)
        if api is None:
            api = connections[thread] = connect()
        api.warnings.clear()
        api.committed_generation = None
        identity: Identity = request.state.who
        if identity.admin:
            api.project = model.parse_project(request.query_params.get(
                "project", model.DEFAULT_PROJECT))
            api.confined = False
        else:
            api.project = identity.project or model.DEFAULT_PROJECT
            api.confined = True
        return api

    def forget(request: Request) -> None:
        """Drop the connection of the thread that served ``request`` (tapdb was lost: the
        next request there connects again)."""
        api = connections.pop(getattr(request.state, "thread", -1), None)
        if api is not None:
            api.close()

    def caller(request: Request) -> Identity:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        found = who(identities, token.strip()) if scheme.lower() == "bearer" else None
        if found is None:
            raise ApiError(401, "a known bearer token is needed (Authorization: Bearer TOKEN)")
        request.state.who = found
        return found

    def writer(request: Request) -> Identity:
        found = caller(request)
        if not found.writes:
            raise ApiError(403, f"identity {found.name} ({found.role}) may not change anything")
        return found

    def admin(request: Request) -> Identity:
        found = caller(request)
        if not found.admin:
            raise ApiError(403, f"identity {found.name} ({found.role}) may not do this; an "
                                "admin may")
        return found

    def seen(request: Request, obj: Any, kind: str, name: str) -> Any:
        """``obj`` when the caller may see its project, else not found (the same answer
        as for a name that does not exist)."""
        if not request.state.who.sees(obj.project):
            raise model.NotFound(kind, f"no {kind} named {name!r}")
        return obj

    def visible(request: Request, objects: Any) -> list:
        """What the caller may see of ``objects`` (an admin may ask for one project)."""
        identity: Identity = request.state.who
        wanted = request.query_params.get("project") if identity.admin else None
        return [o for o in objects if identity.sees(o.project)
                and (wanted is None or o.project == wanted)]

    # ------------------------------------------------------------ errors and audit

    def fail(request: Request, status: int, message: str, field: Optional[str]) -> JSONResponse:
        request.state.outcome = message
        return JSONResponse({"field": field, "message": message}, status_code=status)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return fail(request, exc.status, exc.message, exc.field)

    @app.exception_handler(model.IntentError)
    async def _intent_error(request: Request, exc: model.IntentError) -> JSONResponse:
        status = (404 if isinstance(exc, model.NotFound) else
                  409 if isinstance(exc, model.Conflict) else
                  403 if isinstance(exc, model.Denied) else 400)
        return fail(request, status, str(exc), exc.field)

    @app.exception_handler(ops.TapdbError)
    @app.exception_handler(rpc.RpcError)
    async def _tapdb_error(request: Request, exc: Exception) -> JSONResponse:
        forget(request)
        return fail(request, 503, f"tapdb: {exc}", None)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(where) or None
        return fail(request, 400, f"{field or 'request'}: {first.get('msg', 'not allowed')}",
                    field)

    registry = CollectorRegistry()
    requests = Counter("sdnagent_api_requests", "Requests answered, by method, route and "
                       "status.", ["method", "route", "status"], registry=registry)
    seconds = Histogram("sdnagent_api_request_seconds", "Time to answer a request, by method "
                        "and route.", ["method", "route"], registry=registry,
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

    @app.middleware("http")
    async def _audit(request: Request, call_next: Callable) -> Any:
        started = time.perf_counter()
        asked: Any = None
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            raw = await request.body()  # kept by the request: the route reads it again
            try:
                asked = json.loads(raw) if raw else None
            except ValueError:
                asked = raw[:256].decode("utf-8", "replace")
            if len(raw) > AUDIT_BODY:
                asked = f"({len(raw)} bytes, not kept)"
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "other")
        requests.labels(request.method, route, str(response.status_code)).inc()
        seconds.labels(request.method, route).observe(time.perf_counter() - started)
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            identity = getattr(request.state, "who", None)
            audit.write(who=identity.name if identity else "-",
                        role=identity.role if identity else "-", method=request.method,
                        path=request.url.path, query=str(request.url.query) or None,
                        request=asked, status=response.status_code,
                        outcome=getattr(request.state, "outcome", "ok"))
        return response

    # ------------------------------------------------------------ helpers

    def done(api: ops.IntentDb, item: Any, wait: Wait) -> dict:
        applied = None
        generation = api.committed_generation
        replica.caught_up(generation)  # a read after this answer sees the change
        if wait.wait and generation:
            late = api.wait_applied(generation, wait.timeout)
            applied = S.Applied(generation=generation, complete=not late,
                                late=[S.Late(chassis=n, at=lag.at, why=lag.silent)
                                      for n, lag in sorted(late.items())])
        return {"item": item, "warnings": list(api.warnings), "applied": applied}

    def page(items: list, offset: int, limit: int,
             shown: Callable[[list], list] = lambda page: page) -> dict:
        """The page of ``items`` from ``offset``; ``shown`` makes the items of that page
        alone what is answered (statuses and counters cost per item shown)."""
        return {"items": shown(items[offset:offset + limit]), "total": len(items),
                "offset": offset, "limit": limit}

    Offset = Query(0, ge=0)
    Limit = Query(100, ge=1, le=1000)

    # ------------------------------------------------------------ targets

    @app.get(TARGETS, response_model=S.Page[S.Target], summary="List mirror targets")
    def list_targets(request: Request, offset: int = Offset, limit: int = Limit,
                     _: Identity = Depends(caller)) -> dict:
        def answer(view: View) -> dict:
            found = visible(request, (t for _n, t in sorted(view.intent.targets.items())))
            return page(found, offset, limit,
                        lambda some: [S.target_of(t) for t in view.shown(some, "target")])
        return replica.read(answer)

    @app.post(TARGETS, response_model=S.Written[S.Target], status_code=201,
              summary="Create a mirror target (disabled unless enabled)")
    def create_target(request: Request, body: S.TargetIn, wait: Wait = Depends(),
                      _: Identity = Depends(writer)) -> dict:
        api = db(request)
        where = body.model_dump(exclude={"name", "enabled"})
        t = api.target_add(body.name, enabled=body.enabled, **where)
        return done(api, S.target_of(t), wait)

    @app.get(TARGETS + "/{name}", response_model=S.Target, summary="Read a mirror target")
    def read_target(request: Request, name: str, _: Identity = Depends(caller)) -> S.Target:
        def answer(view: View) -> S.Target:
            [t] = view.shown([seen(request, view.intent.target(name), "target", name)],
                             "target")
            return S.target_of(t)
        return replica.read(answer)

    @app.patch(TARGETS + "/{name}", response_model=S.Written[S.Target],
               summary="Enable or disable a mirror target")
    def patch_target(request: Request, name: str, body: S.Enabled, wait: Wait = Depends(),
                     _: Identity = Depends(writer)) -> dict:
        api = db(request)
        api.set_enabled("target", name, body.enabled)
        return done(api, None, wait)

    @app.delete(TARGETS + "/{name}", response_model=S.Written[S.Target],
                summary="Delete a mirror target no session uses")
    def delete_target(request: Request, name: str, wait: Wait = Depends(),
                      _: Identity = Depends(writer)) -> dict:
        api = db(request)
        api.delete("target", name)
        return done(api, None, wait)

    @app.post(TARGETS + "/{name}/members", response_model=S.Written[S.Target],
              status_code=201, summary="Add a member to a collector group")
    def add_member(request: Request, name: str, body: S.MemberIn, wait: Wait = Depends(),
                   _: Identity = Depends(writer)) -> dict:
        api = db(request)
        return done(api, S.target_of(api.member(name, "add", body.ip)), wait)

    @app.patch(TARGETS + "/{name}/members/{ip}", response_model=S.Written[S.Target],
               summary="Enable or disable a member of a collector group")
    def patch_member(request: Request, name: str, ip: str, body: S.Enabled,
                     wait: Wait = Depends(), _: Identity = Depends(writer)) -> dict:
        api = db(request)
        verb = "enable" if body.enabled else "disable"
        return done(api, S.target_of(api.member(name, verb, ip)), wait)

    @app.delete(TARGETS + "/{name}/members/{ip}", response_model=S.Written[S.Target],
                summary="Remove a member from a collector group")
    def delete_member(request: Request, name: str, ip: str, wait: Wait = Depends(),
                      _: Identity = Depends(writer)) -> dict:
        api = db(request)
        return done(api, S.target_of(api.member(name, "del", ip)), wait)

    # ------------------------------------------------------------ filters

    @app.get(FILTERS, response_model=S.Page[S.Filter], summary="List mirror filters")
    def list_filters(request: Request, offset: int = Offset, limit: int = Limit,
                     _: Identity = Depends(caller)) -> dict:
        def answer(view: View) -> dict:
            found = visible(request, (f for _n, f in sorted(view.intent.filters.items())))
            return page([S.filter_of(f) for f in found], offset, limit)
        return replica.read(answer)

    @app.post(FILTERS, response_model=S.Written[S.Filter], status_code=201,
              summary="Create an empty mirror filter")
    def create_filter(request: Request, body: S.FilterIn, wait: Wait = Depends(),
                      _: Identity = Depends(writer)) -> dict:
        api = db(request)
        flt = api.filter_add(body.name)
        return done(api, S.filter_of(dataclasses.replace(flt, project=api.project)), wait)

    @app.get(FILTERS + "/{name}", response_model=S.Filter, summary="Read a mirror filter")
    def read_filter(request: Request, name: str, _: Identity = Depends(caller)) -> S.Filter:
        return replica.read(lambda view: S.filter_of(
            seen(request, view.intent.filter(name), "filter", name)))

    @app.delete(FILTERS + "/{name}", response_model=S.Written[S.Filter],
                summary="Delete a mirror filter no session uses")
    def delete_filter(request: Request, name: str, wait: Wait = Depends(),
                      _: Identity = Depends(writer)) -> dict:
        api = db(request)
        api.delete("filter", name)
        return done(api, None, wait)

    @app.post(FILTERS + "/{name}/rules", response_model=S.Written[S.Rule], status_code=201,
              summary="Add a rule to a filter direction")
    def create_rule(request: Request, name: str, body: S.RuleIn, wait: Wait = Depends(),
                    _: Identity = Depends(writer)) -> dict:
        api = db(request)
        fields = body.model_dump(exclude={"direction"})
        rule = api.rule_add(name, body.direction, **fields)
        return done(api, S.rule_of(body.direction, rule), wait)

    @app.delete(FILTERS + "/{name}/rules/{direction}/{priority}",
                response_model=S.Written[S.Rule], summary="Delete a filter rule")
    def delete_rule(request: Request, name: str, direction: str, priority: str,
                    wait: Wait = Depends(), _: Identity = Depends(writer)) -> dict:
        api = db(request)
        api.rule_del(name, direction, priority)
        return done(api, None, wait)

    # ------------------------------------------------------------ sessions

    @app.get(SESSIONS, response_model=S.Page[S.Session], summary="List mirror sessions",
             description="By priority; filtered by name (a part of it), state (the worst "
                         "of its sources') and chassis (one of its sources' statuses' "
                         "writers).")
    def list_sessions(request: Request, offset: int = Offset, limit: int = Limit,
                      name: Optional[str] = None, state: Optional[str] = None,
                      chassis: Optional[str] = None, _: Identity = Depends(caller)) -> dict:
        def item(view: View, s: model.Session) -> S.Session:
            return S.session_of(s, tapctl.summed({s.name: view.counters(s.name)}).get(
                s.name, {}))

        def answer(view: View) -> dict:
            found = [s for s in visible(request, sorted(view.intent.sessions.values(),
                                                        key=lambda s: s.priority))
                     if not name or name in s.name]
            if not chassis and not state:  # statuses for the page alone
                return page(found, offset, limit,
                            lambda some: [item(view, s) for s in view.shown(some, "session")])
            kept = []
            for s in view.shown(found, "session"):
                if chassis and not any(dict(src.status).get("chassis") == chassis
                                       for src in s.sources):
                    continue
                if state and S.session_of(s, {}).state != state:
                    continue
                kept.append(s)
            return page(kept, offset, limit, lambda some: [item(view, s) for s in some])
        return replica.read(answer)

    @app.post(SESSIONS, response_model=S.Written[S.Session], status_code=201,
              summary="Create a mirror session (disabled unless enabled)")
    def create_session(request: Request, body: S.SessionIn, wait: Wait = Depends(),
                       _: Identity = Depends(writer)) -> dict:
        api = db(request)
        s = api.session_add(body.name, target=body.target, priority=body.priority,
                            filter=body.filter, vni=body.vni, packet_length=body.packet_length,
                            enabled=body.enabled, controls=body.change())
        return done(api, S.session_of(s, {}), wait)

    @app.get(SESSIONS + "/{name}", response_model=S.Session, summary="Read a mirror session")
    def read_session(request: Request, name: str, _: Identity = Depends(caller)) -> S.Session:
        def answer(view: View) -> S.Session:
            [sess] = view.shown([seen(request, view.intent.session(name), "session", name)],
                                "session")
            return S.session_of(sess, tapctl.summed({name: view.counters(name)}).get(name, {}))
        return replica.read(answer)

    @app.patch(SESSIONS + "/{name}", response_model=S.Written[S.Session],
               summary="Change a mirror session: enable or disable it, its caps, its "
                       "sample or its end")
    def patch_session(request: Request, name: str, body: S.SessionPatch, wait: Wait = Depends(),
                      _: Identity = Depends(writer)) -> dict:
        api = db(request)
        s = api.session_set(name, body.change(), body.enabled)
        return done(api, S.session_of(s, {}), wait)

    @app.delete(SESSIONS + "/{name}", response_model=S.Written[S.Session],
                summary="Delete a mirror session and its sources")
    def delete_session(request: Request, name: str, wait: Wait = Depends(),
                       _: Identity = Depends(writer)) -> dict:
        api = db(request)
        api.delete("session", name)
        return done(api, None, wait)

    @app.post(SESSIONS + "/{name}/sources", response_model=S.Written[S.Source],
              status_code=201, summary="Add a source to a session (enabled)")
    def create_source(request: Request, name: str, body: S.SourceIn, wait: Wait = Depends(),
                      _: Identity = Depends(writer)) -> dict:
        api = db(request)
        src = api.source_add(name, port=body.port, direction=body.direction,
                             vswitch=body.vswitch)
        item = S.Source(key=src.key, type=src.type, direction=src.direction,
                        enabled=src.enabled, status=S.Status(state="pending"))
        return done(api, item, wait)

    @app.patch(SESSIONS + "/{name}/sources/{key}", response_model=S.Written[S.Source],
               summary="Enable or disable a session's source")
    def patch_source(request: Request, name: str, key: str, body: S.Enabled,
                     wait: Wait = Depends(), _: Identity = Depends(writer)) -> dict:
        api = db(request)
        api.set_enabled("source", name, body.enabled, key=key)
        return done(api, None, wait)

    @app.delete(SESSIONS + "/{name}/sources/{key}", response_model=S.Written[S.Source],
                summary="Delete a session's source")
    def delete_source(request: Request, name: str, key: str, wait: Wait = Depends(),
                      _: Identity = Depends(writer)) -> dict:
        api = db(request)
        api.source_del(name, key)
        return done(api, None, wait)

    @app.get(SESSIONS + "/{name}/stats", response_model=S.Stats,
             summary="What a session mirrored, added up and by chassis")
    def session_stats(request: Request, name: str, _: Identity = Depends(caller)) -> S.Stats:
        def answer(view: View) -> S.Stats:
            seen(request, view.intent.session(name), "session", name)
            by_chassis = view.counters(name)
            return S.Stats(session=name, counters=tapctl.summed({name: by_chassis}).get(
                name, {}), by_chassis=by_chassis)
        return replica.read(answer)

    # ------------------------------------------------------------ ports of projects

    @app.get(f"{PREFIX}/port-registrations", response_model=S.Page[S.Registration],
             summary="The ports registered to projects (a member's: its project's)")
    def list_registrations(request: Request, offset: int = Offset, limit: int = Limit,
                           _: Identity = Depends(caller)) -> dict:
        found = [S.Registration(iface_id=i, project=p)
                 for i, p in sorted(db(request).registrations().items())]
        return page(visible(request, found), offset, limit)

    @app.post(f"{PREFIX}/port-registrations", response_model=S.Written[S.Registration],
              status_code=201, summary="Register a port to a project (admins: the cloud's "
                                       "integration)")
    def register_port(request: Request, body: S.Registration, wait: Wait = Depends(),
                      _: Identity = Depends(admin)) -> dict:
        api = db(request)
        api.register_port(body.iface_id, body.project)
        return done(api, body, wait)

    @app.delete(f"{PREFIX}/port-registrations/{{iface_id}}",
                response_model=S.Written[S.Registration], summary="Unregister a port")
    def unregister_port(request: Request, iface_id: str, wait: Wait = Depends(),
                        _: Identity = Depends(admin)) -> dict:
        api = db(request)
        api.unregister_port(iface_id)
        return done(api, None, wait)

    @app.get(f"{PREFIX}/projects/{{name}}", response_model=S.Project,
             summary="A project's quotas and what it has (admins; members and readers: "
                     "their own)")
    def read_project(request: Request, name: str,
                     identity: Identity = Depends(caller)) -> S.Project:
        if not identity.sees(name):
            raise model.NotFound("project", f"no project named {name!r}")
        quotas, usage = db(request).project_usage(name)
        return S.Project(name=name, quotas=quotas, usage=usage)

    @app.put(f"{PREFIX}/projects/{{name}}/quotas", response_model=S.Written[S.Project],
             summary="Set a project's quotas (admins)")
    def set_quotas(request: Request, name: str, body: S.QuotasIn, wait: Wait = Depends(),
                   _: Identity = Depends(admin)) -> dict:
        api = db(request)
        api.set_quotas(name, body.model_dump())
        quotas, usage = api.project_usage(name)
        return done(api, S.Project(name=name, quotas=quotas, usage=usage), wait)

    # ------------------------------------------------------------ the rest

    @app.post(f"{PREFIX}/traffic-mirror-trace", response_model=S.TraceOut,
              summary="What the intent does with one packet at a source port (a member's: "
                      "a port of its project, its project's sessions)")
    def trace_packet(request: Request, body: S.TraceIn,
                     identity: Identity = Depends(caller)) -> S.TraceOut:
        registered = (db(request).registrations().get(body.port)
                      if identity.project is not None else None)
        if identity.project is not None and registered != identity.project:
            raise model.NotFound("port", f"iface {body.port} is not a port of project "
                                         f"{identity.project!r}")

        def answer(view: View) -> S.TraceOut:
            intent = view.intent
            if identity.project is not None:
                intent = model.Intent.of(*(visible(request, objs.values()) for objs in (
                    intent.targets, intent.filters, intent.sessions)))
            text = trace.describe(intent, body.port, body.direction, body.packet,
                                  view.bindings, {n: (ip, e) for n, ip, e in view.chassis()})
            return S.TraceOut(lines=text.splitlines())
        return replica.read(answer)

    @app.get(f"{PREFIX}/chassis", response_model=S.Page[S.Chassis],
             summary="The hypervisors that registered, and whether they are heard from")
    def list_chassis(request: Request, offset: int = Offset, limit: int = Limit,
                     _: Identity = Depends(caller)) -> dict:
        def answer(view: View) -> dict:
            rows = tapctl.chassis_json(view.chassis(), view.beats, view.now, view.mtus())
            return page([S.Chassis(**{k: v for k, v in r.items()
                                      if k in S.Chassis.model_fields}) for r in rows],
                        offset, limit)
        return replica.read(answer)

    @app.get(f"{PREFIX}/audit", response_model=list[S.AuditRecord],
             summary="The latest writes asked of the API, accepted or refused (admins)")
    def read_audit(limit: int = Limit, _: Identity = Depends(admin)) -> list[dict]:
        return audit.tail(limit)

    @app.get("/metrics", response_class=PlainTextResponse, include_in_schema=False)
    def metrics(_: Identity = Depends(caller)) -> str:
        return generate_latest(registry).decode()

    @app.get("/console", response_class=HTMLResponse, include_in_schema=False)
    def console() -> str:
        """The console: one page that asks for a token and speaks the API with it."""
        return CONSOLE.read_text(encoding="utf-8")

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    def docs() -> str:
        return docs_page(app.openapi())

    return app


def docs_page(spec: dict) -> str:
    """A page of every operation with its parameters and bodies, from the OpenAPI
    document itself (nothing fetched from elsewhere)."""
    parts = [f"<h1>{html.escape(spec['info']['title'])}</h1>",
             "<p>The OpenAPI 3 document: <a href='/openapi.json'>/openapi.json</a>. "
             "Every call takes <code>Authorization: Bearer TOKEN</code>.</p>"]
    for path, item in spec["paths"].items():
        for method, op in item.items():
            params = ", ".join(f"{p['name']} ({p['in']})" for p in op.get("parameters", []))
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            parts.append(f"<h3>{method.upper()} {html.escape(path)}</h3>"
                         f"<p>{html.escape(op.get('summary', ''))}</p>"
                         + (f"<p>parameters: {html.escape(params)}</p>" if params else "")
                         + (f"<pre>{html.escape(json.dumps(body.get('schema', {})))}</pre>"
                            if body else ""))
    schemas = spec.get("components", {}).get("schemas", {})
    parts.append("<h2>Schemas</h2>" + "".join(
        f"<h3>{html.escape(n)}</h3><pre>{html.escape(json.dumps(s, indent=1))}</pre>"
        for n, s in sorted(schemas.items())))
    return ("<!doctype html><html><head><meta charset='utf-8'><title>sdnagent API</title>"
            "</head><body>" + "".join(parts) + "</body></html>")
