"""Dependencies shared by the routes: the service, the metrics, the admin check, JSON bodies.

They are ``async def`` on purpose: FastAPI runs plain ``def`` dependencies in a thread pool,
which costs two thread switches per request for what is an attribute lookup.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, Generic, cast

import pydantic
import pydantic_core
from fastapi import Depends, Header, Request
from fastapi.dependencies.utils import request_params_to_args
from fastapi.exceptions import RequestValidationError

from bandits.errors import short_repr
from serving.api.validation import M, check_json_headers, json_body, query_errors, read_body
from serving.errors import (
    ForbiddenError,
    ServingError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
)
from serving.metrics import Metrics
from serving.service import RecommendationService
from serving.settings import MAX_ADMIN_TOKEN_CHARS


async def get_service(request: Request) -> RecommendationService:
    """The worker's :class:`RecommendationService`, from ``request.app.state``."""
    return request.app.state.service


async def get_metrics(request: Request) -> Metrics:
    """The worker's :class:`Metrics`, from ``request.app.state``."""
    return request.app.state.metrics


#: Longest ``Authorization`` header the routes read: ``Bearer`` and the longest admin token the
#: settings take (a longer header is a 422 of the header; every string the API takes is bounded).
MAX_AUTHORIZATION_CHARS = len("Bearer ") + MAX_ADMIN_TOKEN_CHARS


async def require_admin(
    request: Request,
    authorization: Annotated[str | None, Header(max_length=MAX_AUTHORIZATION_CHARS)] = None,
) -> None:
    """Allow the call only with ``Authorization: Bearer <admin token>``.

    Raises
    ------
    UnauthorizedError
        No bearer token, or more than one ``Authorization`` header (401: which one would be
        the credential is ambiguous; the first one won before, found by attack).
    ForbiddenError
        Wrong token, or no admin token configured (403).
    """
    if len(sent := request.headers.getlist("authorization")) > 1:
        raise UnauthorizedError(f"send one Authorization header, got {len(sent)}")
    if not authorization or not authorization.lower().startswith("bearer "):
        raise UnauthorizedError("admin endpoints need 'Authorization: Bearer <token>'")
    expected = request.app.state.settings.admin_token
    if expected is None:
        raise ForbiddenError("admin endpoints are disabled: set RECBANDITS_ADMIN_TOKEN")
    given = authorization[len("bearer "):].strip()
    if not secrets.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise ForbiddenError("wrong admin token")


#: Checks of a route's path parameters its dependency runs beside the query and the body
#: (:func:`bare`, :class:`JsonBody`): each takes the parameter's text and raises a
#: :class:`~serving.errors.ServingError` (its code the issue's type) or pydantic's
#: ``ValidationError`` for a bad one.
PathChecks = Mapping[str, Callable[[str], object]]


def _path_issues(request: Request, checks: PathChecks) -> list[dict[str, Any]]:
    """The 422 issues of ``request``'s path parameters under ``checks`` (none: empty)."""
    issues: list[dict[str, Any]] = []
    for name, check in checks.items():
        try:
            check(request.path_params[name])
        except ServingError as exc:
            issues.append({"loc": ("path", name), "type": exc.code, "msg": exc.message})
        except pydantic.ValidationError as exc:
            issues += [{"loc": ("path", name), "type": e["type"], "msg": e["msg"]}
                       for e in exc.errors()]
    return issues


async def _one_422(request: Request, allowed: Mapping[str, tuple[str, ...]] | None,
                   checks: PathChecks, read: Callable[[], Awaitable[Any]]) -> Any:
    """What ``read`` returns (the body, or nothing), once the query (``allowed``; None: not
    checked), the path (``checks``) and ``read`` itself gave no issue; else one 422 of them
    all: the rule of :func:`bare` and :class:`JsonBody`. A bad query, body or path hid the
    others, each said only once the ones before it were mended (found by attack). A body of
    another media type joins the others' 422 (its 415 hid them, found in review); alone it is
    the 415, and a bad path alone is left to the route, which answers it as it always has. A
    cut-off body or a client gone (408, 499) is answered as such.
    """
    issues = [] if allowed is None else _query_issues(request, allowed)
    path = _path_issues(request, checks)
    result = None
    try:
        result = await read()
    except RequestValidationError as exc:
        issues += exc.errors()
    except UnsupportedMediaTypeError as exc:
        if not issues and not path:
            raise
        issues.append({"loc": ("body",), "type": exc.code, "msg": exc.message})
    if issues:
        raise RequestValidationError([*path, *issues])
    return result


class JsonBody(Generic[M]):
    """A FastAPI route's JSON body as ``model``, read by the hot routes' one reader
    (:func:`~serving.api.validation.json_body`: 415, 422, 408 and 499 as theirs), as a dependency:
    ``body: Annotated[ItemIn, Depends(ITEM)]`` with ``ITEM = JsonBody(ItemIn)``.

    FastAPI never reads the body of such a route itself, for two reasons found by attack: its
    ``json.loads`` takes what the hot routes refuse (a byte-order mark, UTF-16, ``NaN``) and
    answers a number of 4,300 digits 400; and it parses the body before any dependency runs, so
    a malformed body sent without a token was answered 422 before the admin check's 401. The
    route's dependencies (the admin check, the query check) now run first, in their order.
    FastAPI documents no body it does not read: pass :attr:`openapi_extra` to the route.
    """

    def __init__(self, model: type[M], *, query: Mapping[str, tuple[str, ...]] | None = None,
                 path: PathChecks | None = None) -> None:
        self.model = model
        #: The route's query parameters (:func:`_query_issues`' ``allowed``; None: not
        #: checked here) and path checks: their issues and the body's in one 422.
        self.query = None if query is None else dict(query)
        self.path = dict(path or {})
        schema = model.model_json_schema()
        if "$defs" in schema:  # their $refs would point at the document's root
            raise TypeError(f"{model.__name__} nests models: document its body as a component")
        #: The route's ``openapi_extra``: the request body, documented from ``model``.
        self.openapi_extra: dict[str, Any] = {"requestBody": {
            "required": True, "content": {"application/json": {"schema": schema}}}}

    async def __call__(self, request: Request) -> M:
        """The body of ``request`` as :attr:`model` (see the class); with :attr:`query`, its
        query's issues, the body's and the path's in one 422.
        """
        return await checked_body(request, self.model, query=self.query, path=self.path)


async def checked_body(request: Request, model: type[M], *,
                       query: Mapping[str, tuple[str, ...]] | None = None,
                       path: PathChecks | None = None) -> M:
    """The JSON body of ``request`` as ``model``, its issues in one 422 with the query's
    (``query``: :func:`_query_issues`' ``allowed``; None: not checked) and the path's
    (:data:`PathChecks`): :class:`JsonBody`'s rule, which the hot routes that write (``POST
    /events``, ``POST /feedback``) call directly. An empty query has no issue: its check (and
    Starlette's parse of it) is skipped, so the hot routes' usual request pays one test.
    """
    if (query is None or not request.scope["query_string"]) and not path:
        return await json_body(request, model)
    return cast(M, await _one_422(request, query, dict(path or {}),
                                  lambda: json_body(request, model)))


def strict_query(*taken: str) -> Any:
    """The dependency of a GET route that writes (``GET /users/{id}/stream`` logs a decision
    per update): a query parameter not in ``taken``, or one given twice, is refused (422
    ``unknown_parameter``, ``repeated_parameter``: :func:`serving.api.validation.query_errors`,
    as on the other routes that write). Its body is not read (a GET's has no meaning).

    Those issues come with the route's path, query and header parameters' own (a repeated
    one's values not read), in one 422 as ``GET /recommendations`` answers: this dependency
    runs before FastAPI reads the parameters, so ``/users/abc/stream?x=1`` said only ``x``
    (found in review). The parameters are checked by the route's own declarations, not a copy
    of them.
    """
    async def check(request: Request) -> None:  # async: see the module doc
        if request.scope["query_string"]:
            names = [k for k, _ in request.query_params.multi_items()]
            if errors := query_errors(names, taken):
                repeated = {e["loc"][1] for e in errors if e["type"] == "repeated_parameter"}
                dependant = request.scope["route"].dependant
                errors += request_params_to_args(dependant.path_params, request.path_params)[1]
                query = [f for f in dependant.query_params if f.alias not in repeated]
                errors += request_params_to_args(query, request.query_params)[1]
                errors += request_params_to_args(dependant.header_params, request.headers)[1]
                raise RequestValidationError(errors)
    return Depends(check)


def bare(path: PathChecks | None = None, **allowed: tuple[str, ...]) -> Any:
    """The dependency of a side-effect route that reads no body: :func:`_query_issues`' check
    and :func:`_body_issues`', their issues in one 422 (found by attack: a bad query hid a
    body the route would refuse, said only once the query was mended), with the ``path``
    checks' beside them (:func:`_one_422`).

    Parameters
    ----------
    path : mapping of str to callable, optional
        :data:`PathChecks` of the route's path parameters.
    **allowed : tuple of str
        The route's query parameters and the values each may take (:func:`_query_issues`).
    """
    checks = dict(path or {})

    async def check(request: Request) -> None:  # async: see the module doc
        async def no_body() -> None:
            if issues := await _body_issues(request):
                raise RequestValidationError(issues)

        await _one_422(request, allowed, checks, no_body)
    return Depends(check)


def _query_issues(request: Request, allowed: Mapping[str, tuple[str, ...]]
                  ) -> list[dict[str, Any]]:
    """The 422 issues of the query of a side-effect route (the admin routes', ``PUT
    /users/{id}/preferences``, ``POST /events``, ``POST /feedback``; none: an empty list):
    parameters it does not take, given twice, or with a value outside ``allowed[name]`` (the
    route's parameters and the values each may take; FastAPI parses them after). A typo
    (``?candidat=true``) or a contradiction (``?candidate=true&candidate=false``) must not act
    as the default. One issue per
    parameter (:func:`serving.api.validation.query_errors`, the rule ``GET /recommendations``
    shares; a value outside ``allowed`` is ``enum``).
    """
    names = [k for k, _ in request.query_params.multi_items()]
    errors = query_errors(names, allowed)
    # Every bad parameter at once (review): a value outside its set, unless the parameter
    # is unknown or repeated, said above.
    # The value shown cut to 40 characters: a 6,000-character one came back whole (attack).
    errors += [{"loc": ("query", name), "type": "enum",
                "msg": f"must be one of {list(allowed[name])}, got {short_repr(value, 40)}"}
               for name, value in request.query_params.items()
               if name in allowed and names.count(name) == 1
               and value not in allowed[name]]
    return errors


async def _body_issues(request: Request) -> list[dict[str, Any]]:
    """The 422 error of a body on a side-effect route that reads none (``POST
    /admin/retrain``, the promotions, the rollback; none: an empty list). A body such as
    ``{"candidate": true}`` was ignored, so a retrain meant as a candidate went live (its
    options are query parameters). An empty body, or an empty JSON object (what some clients
    send with every POST), is taken; the latter read as every route reads a body: 415 for
    another media type, charset or encoding, 408 or 499 for a body cut off at the time-out or
    a client gone before its end (raised), so that a byte-order mark or UTF-16 is refused too.
    """
    body = await read_body(request)
    if not body:
        return []
    check_json_headers(request)
    try:
        empty = pydantic_core.from_json(body, allow_inf_nan=False) == {}
    except ValueError:  # not JSON, or not UTF-8 (a byte-order mark, UTF-16)
        empty = False
    if empty:
        return []
    # The 422 of any invalid body, located at the body. The path matched the route's
    # template (a version in it is at most 64 characters).
    return [{"loc": ("body",), "type": "body_not_allowed",
             "msg": f"{request.method} {request.url.path} takes no body (an empty one or {{}}); "
                    f"got {len(body)} byte{'' if len(body) == 1 else 's'}"}]


ServiceDep = Annotated[RecommendationService, Depends(get_service)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
AdminDep = Depends(require_admin)
