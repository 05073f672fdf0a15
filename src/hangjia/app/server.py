"""The HTTP server: builds the FastAPI app around one `Engine` and runs it with uvicorn.

Every error leaves as OpenAI's `{"error": {...}}` body, so OpenAI clients raise their typed
exceptions (NotFoundError, BadRequestError, RateLimitError, ...) with our message instead of a generic one.
"""

from __future__ import annotations

import errno
import logging
import socket
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from hangjia.app import embeddings, feedback_api, openai_api, web
from hangjia.app.admission import Admission, Admissions, QueueFull
from hangjia.app.auth import Accounts, Auth, secret_key
from hangjia.app.backends import backend_of, build_backends
from hangjia.app.cache import ResponseCache
from hangjia.app.db.engine import database_url
from hangjia.app.deps import EngineDep, MetricsDep
from hangjia.app.exchanges import ExchangeStore
from hangjia.app.metrics import CONTENT_TYPE, Metrics
from hangjia.app.registry import Registry
from hangjia.app.schemas import ErrorDetail, ErrorResponse
from hangjia.app.versions import Versions
from hangjia.core.config import ServeConfig
from hangjia.core.errors import HangjiaError
from hangjia.llm.generation import Engine
from hangjia.llm.weights import DOMAIN


def create_app(
    engine: Engine,
    serve_config: ServeConfig,
    store: ExchangeStore | None = None,
    registry: Registry | None = None,
    *,
    auth: Auth | None = None,
) -> FastAPI:
    """The app around `engine`; with a `store`, chat answers are recorded and /v1/feedback takes judgements; with a
    `registry`, its versions and aliases are served (`domain` = the production alias, `domain@N`, `domain@ALIAS`); with
    `auth`, the web app's pages sign people in (app/web/)."""
    app = FastAPI(title="Hangjia", summary="OpenAI-compatible API for a domain-tuned model with RAG.")
    app.state.engine = engine
    app.state.serve_config = serve_config
    app.state.metrics = Metrics()
    app.state.versions = Versions(engine, serve_config, app.state.metrics, registry)
    app.state.admissions = Admissions.for_engine(
        engine, serve_config.max_running, serve_config.max_waiting, app.state.versions.parallel
    )
    app.state.cache = ResponseCache(serve_config.cache_size, app.state.metrics)
    app.state.embedder = embeddings.Embedder()
    app.state.embedding_admission = Admission(1, serve_config.max_waiting)
    app.state.store = store
    app.include_router(openai_api.router)
    app.include_router(feedback_api.router)
    app.include_router(embeddings.router)
    web.install(app, auth)

    @app.get("/health", tags=["ops"])
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready", tags=["ops"])
    async def ready(engine: EngineDep) -> dict[str, str | list[str]]:
        """Readiness: the models are loaded (the app exists only once they are)."""
        return {"status": "ready", "models": engine.model_names}

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def metrics(metrics: MetricsDep) -> Response:
        """Prometheus text format; names as vLLM's with the `hangjia:` prefix, labelled by model_name."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    app.add_exception_handler(QueueFull, _queue_full)
    app.add_exception_handler(HangjiaError, _hangjia_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _server_error)
    return app


def _error(
    status_code: int, message: str, param: str | None = None, kind: str | None = None, headers: dict | None = None
) -> JSONResponse:
    kind = kind or ("invalid_request_error" if status_code < 500 else "server_error")
    body = ErrorResponse(error=ErrorDetail(message=message, type=kind, param=param))
    return JSONResponse(body.model_dump(), status_code=status_code, headers=headers)


async def _queue_full(request: Request, exc: QueueFull) -> JSONResponse:
    return _error(429, exc.message, kind="rate_limit_error", headers={"Retry-After": str(exc.retry_after)})


async def _hangjia_error(request: Request, exc: HangjiaError) -> JSONResponse:
    return _error(exc.status_code, exc.message)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """400 (OpenAI's status for a bad body, not FastAPI's 422) with one readable line per problem."""
    problems, params = [], []
    for err in exc.errors():
        if err["type"] == "json_invalid":
            problems.append(f"the body is not valid JSON ({err.get('ctx', {}).get('error', 'decode error')})")
            continue
        loc = ".".join(str(p) for p in err["loc"] if p != "body") or "body"
        params.append(loc)
        problems.append(f"{loc}: {err['msg'].removeprefix('Value error, ')}")
    return _error(400, "Invalid request: " + "; ".join(problems) + ".", param=params[0] if params else None)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    return _error(exc.status_code, str(exc.detail))


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    return _error(500, "Internal server error; see the server log.")


def _bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket now, so a taken port fails in a second rather than after the model loads.

    Same options as uvicorn's own bind (IPv6 when the host has a colon, SO_REUSEADDR so a port in
    TIME_WAIT is not mistaken for a busy one); uvicorn is then handed this socket, so no one can take
    the port in between.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise HangjiaError(f"Port {port} on {host} is already in use; pick another with --port.") from None
        reason = exc.strerror or str(exc)
        raise HangjiaError(f"Cannot listen on {host}:{port} ({reason}); check --host and --port.") from None
    return sock


def startup_warnings(engine: Engine, workspace: Path) -> list[str]:
    """What `hangjia serve` says at startup about a workspace it can only partly serve (requests for the missing
    part get a 4xx saying the same)."""
    warnings = []
    if DOMAIN not in engine.model_names:
        warnings.append(f"No trained model in {workspace} yet: only 'base' is served; `hangjia build` makes 'domain'.")
    if engine.index is None:
        warnings.append(f"No search index in {workspace}: answers are not grounded in documents; run `hangjia ingest`.")
    elif not engine.index.chunks:
        warnings.append(
            f"The search index in {workspace} holds no passages: requests with rag get a 400; run `hangjia ingest "
            "--force` on a folder of readable documents."
        )
    return warnings


def serve(
    workspace: Path,
    base_model: str,
    serve_config: ServeConfig,
    rag_top_k: int,
    guard: bool = True,
    database: str | None = None,
) -> None:
    """Serve the workspace's models over HTTP until interrupted."""
    import uvicorn

    from hangjia.core.workspace import Workspace

    host, port = serve_config.host, serve_config.port
    sock = _bind(host, port)
    try:
        ws = Workspace(workspace)
        engine = Engine.from_workspace(ws, base_model, rag_top_k=rag_top_k, guard=guard, versions=serve_config.versions)
        startup = [name for name in engine.model_names if name not in engine.versions]  # versions load on demand
        engine.backends.update(build_backends(startup, ws, engine.base_dir, serve_config))
        store = open_store(database, workspace) if serve_config.record else None
        registry = Registry(database_url(database, ws.root), ws.root, create=False)  # read only, once a second
        auth = open_auth(database, ws.root, serve_config)
        app = create_app(engine, serve_config, store, registry, auth=auth)
        config = uvicorn.Config(app, host=host, port=port, log_level="info")
        # uvicorn prints no "running on" line when handed a socket, so say where we are ourselves.
        address = f"[{host}]" if ":" in host else host
        log = logging.getLogger("uvicorn.error")
        kinds = {name: backend_of(name, serve_config, ws, engine.base_dir) for name in startup}
        kinds |= {name: f"{kind}, on first request" for name, kind in app.state.versions.kinds.items()}
        served = ", ".join(f"{name} ({kind})" for name, kind in kinds.items())
        log.info("Serving %s at http://%s:%d/v1 (Press CTRL+C to quit)", served, address, port)
        for alias, version in app.state.versions.aliases.items():
            log.info("%s is %s (the registry's alias; read again at most once a second)", alias, version)
        for warning in startup_warnings(engine, workspace):
            log.warning(warning)
        if serve_config.backends.get(DOMAIN, serve_config.backend) == "auto" and kinds.get(DOMAIN) == "transformers":
            log.info(
                "'domain' runs on transformers; `hangjia export --formats %s` lets llama.cpp serve it (faster).",
                serve_config.gguf,
            )
        try:
            uvicorn.Server(config).run(sockets=[sock])
        finally:
            engine.close()
            registry.close()
            auth.accounts.close()
            if store is not None:
                store.close()
    finally:
        sock.close()


def open_store(configured: str | None, workspace: Path) -> ExchangeStore:
    """The exchange and feedback store on the workspace's database (database.url, $HANGJIA_DATABASE_URL, else
    WS/hangjia.db), its tables brought up to date first."""
    from hangjia.app.db.schema import upgrade

    url = database_url(configured, workspace)
    upgrade(url)
    return ExchangeStore(url)


def open_auth(configured: str | None, workspace: Path, serve_config: ServeConfig) -> Auth:
    """Sign-in for the web app: the users on the workspace's database (tables brought up to date first), the session
    secret ($HANGJIA_SECRET_KEY, else WS/secret_key) and the cookie settings."""
    from hangjia.app.db.engine import database_url
    from hangjia.app.db.schema import upgrade

    url = database_url(configured, workspace)
    upgrade(url)
    return Auth(
        Accounts.open(url),
        secret_key(workspace),
        serve_config.session_hours,
        secure_cookies=serve_config.secure_cookies,
    )
