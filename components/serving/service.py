"""The HTTP service: the champion model behind ``POST /v1/moderate``, a page for people, probes, metrics.

    POST /v1/moderate  {"items": ["text", {"text": ..., "context": {"audience", "surface"}}], "context": {...}}
                       -> {"model": {name, version, alias, variant},
                           "results": [{**Result.to_dict(include_text=False), "model": {...the same}}]}
    GET  /v1/model     the served model's thresholds, categories and the request limits (for the page)
    GET  /health       the process is up (always 200)
    GET  /ready        200 with the model when one is loaded; 503 with the reason otherwise
    GET  /metrics      Prometheus text format
    GET  /             the page (static/index.html); /docs the OpenAPI docs (Swagger UI, served locally)

Scoring is :func:`components.serving.moderate.moderate`, nothing else; requests that arrive
together are scored in one batch (:mod:`components.serving.batching`); the model comes from
:class:`components.serving.loader.ModelHolder`, which a background task re-checks every
``poll_s`` seconds (an alias that moved loads the new version and swaps it in between batches).
Bad input gets 413 (body too large) or 422 with a short message naming the field, never the input
(:mod:`components.serving.request_body`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from components.core.taxonomy import AUDIENCES, LABELS, SURFACES, categories
from components.serving.batching import MicroBatcher, Overloaded, ShuttingDown
from components.serving.loader import LoadedModel, ModelHolder
from components.serving.moderate import Result, moderate
from components.serving.http_body import InputError, read_body
from components.serving.request_body import parse_request, request_model

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
PAGE_FILES = {"app.js": "text/javascript", "app.css": "text/css"}
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")

@dataclass(frozen=True)
class ServiceSettings:
    """The request limits and timings (``content-moderation serve`` options)."""

    max_batch_items: int = 64  # texts one request may hold
    # Texts scored together: requests that arrive together are batched up to this many. Wider than one
    # request, so the texts of several sort into batches of like length (less padding): measured with
    # benchmarks/service.py, 50 clients sending 32 texts each scored 0.55 of bare onnxruntime with 64, 0.98 with 256.
    max_scored_items: int = 256
    max_text_chars: int = 10_000
    batch_wait_ms: float = 5.0
    poll_s: float = 30.0
    max_pending_requests: int = 1024
    max_body_bytes: int | None = None  # default: room for max_batch_items texts of max_text_chars, all escaped

    @property
    def body_limit(self) -> int:
        return self.max_body_bytes or self.max_batch_items * self.max_text_chars * 6 + 64 * 1024


# ---------------------------------------------------------------------------------------- metrics


class Metrics:
    """The service's Prometheus metrics, in a registry of its own (several apps in one process never clash)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

        self.registry = r = CollectorRegistry()
        self.requests = Counter("moderation_http_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=r)
        self.latency = Histogram("moderation_http_request_seconds", "HTTP request latency by route", ["route"],
                                 registry=r, buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.batch_items = Histogram("moderation_batch_items", "texts per scored batch", registry=r,
                                     buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.batch_requests = Histogram("moderation_batch_requests", "requests per scored batch", registry=r,
                                        buckets=(1, 2, 4, 8, 16, 32, 64))
        self.batch_seconds = Histogram("moderation_batch_seconds", "time to score one batch", registry=r,
                                       buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.texts = Counter("moderation_texts_scored", "texts scored", registry=r)
        self.flags = Counter("moderation_flags", "flags raised, by category", ["category"], registry=r)
        self.actions = Counter("moderation_actions", "recommended actions", ["action"], registry=r)
        self.model = Info("moderation_model", "the model answering requests", registry=r)
        self.loaded = Gauge("moderation_model_loaded", "1 when a model is loaded", registry=r)
        self.version = Gauge("moderation_model_version", "the registry version served (0: a folder or none)",
                             registry=r)
        self.registry_up = Gauge("moderation_registry_reachable", "1 when the last registry poll was answered",
                                 registry=r)
        self.swaps = Gauge("moderation_model_swaps", "model swaps since start", registry=r)
        for name in LABELS:
            self.flags.labels(category=name)

    def observe_results(self, results: list[Result]) -> None:
        for r in results:
            self.actions.labels(action=r.action).inc()
            for f in r.flags:
                self.flags.labels(category=f.category).inc()

    def observe_holder(self, holder: ModelHolder) -> None:
        model = holder.current
        self.loaded.set(1 if model else 0)
        self.registry_up.set(0 if holder.registry.startswith("unreachable") else 1)
        self.swaps.set(holder.swaps)
        if model is not None:
            self.model.info({k: str(v) if v is not None else "" for k, v in model.info().items()})
            self.version.set(int(model.version) if (model.version or "").isdigit() else 0)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class _Measured:
    """ASGI middleware: count and time every HTTP request by its route (a path template) and status."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [500]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(route=route, status=str(status[0])).inc()
            self.metrics.latency.labels(route=route).observe(time.perf_counter() - started)


# ---------------------------------------------------------------------------------------- the app


class ModelInfo(BaseModel):
    name: str
    version: Optional[str]
    alias: Optional[str]
    variant: str


class ModerateResponse(BaseModel):
    model: ModelInfo
    results: list[dict[str, Any]] = Field(description="per text, in order: context, action, flags (most severe "
                                                      "first), scores (all 18), language, and the model that "
                                                      "scored it (the same as ``model``)")


def create_app(holder: ModelHolder, settings: ServiceSettings | None = None) -> FastAPI:
    """The service around ``holder``'s model; the lifespan runs the batcher and the registry poll."""
    settings = settings or ServiceSettings()
    metrics = Metrics()
    body_model = request_model(settings.max_batch_items, settings.max_text_chars)

    def score(texts: list[str], contexts: list) -> tuple[LoadedModel, list[Result]]:
        model = holder.current  # one model for the whole batch, whatever a swap does meanwhile
        if model is None:
            raise LookupError(holder.problem)
        return model, moderate(model.classifier, texts, contexts)

    def batch_seen(items: int, requests: int, seconds: float) -> None:
        metrics.batch_items.observe(items)
        metrics.batch_requests.observe(requests)
        metrics.batch_seconds.observe(seconds)
        metrics.texts.inc(items)

    batcher = MicroBatcher(score, max(settings.max_scored_items, settings.max_batch_items), settings.batch_wait_ms / 1000,
                           settings.max_pending_requests, on_batch=batch_seen)

    async def poll() -> None:
        first = not holder.checked
        while True:
            if not first:
                await asyncio.sleep(settings.poll_s)
            first = False
            await asyncio.to_thread(holder.check)
            metrics.observe_holder(holder)
            if holder.done:
                return

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        metrics.observe_holder(holder)
        tasks = [asyncio.create_task(batcher.run(), name="batcher")]
        if not holder.done:
            tasks.append(asyncio.create_task(poll(), name="registry-poll"))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    app = FastAPI(title="Content moderation", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="The champion classifier over HTTP: 18 categories, flags at tuned thresholds, "
                              "a recommended action. See the README, section 'Serving the champion'.")
    app.state.holder, app.state.metrics, app.state.settings = holder, metrics, settings
    app.add_middleware(_Measured, metrics=metrics)

    @app.exception_handler(InputError)
    async def _input_error(_request, exc: InputError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    def unavailable(reason: str) -> JSONResponse:
        return JSONResponse({"detail": reason}, status_code=503, headers={"Retry-After": "5"})

    schema = body_model.model_json_schema(ref_template="#/components/schemas/{model}")
    body_defs = schema.pop("$defs", {})  # added to the OpenAPI components below

    @app.post("/v1/moderate", response_model=ModerateResponse, summary="Moderate texts",
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}},
              responses={413: {"description": "body too large"}, 422: {"description": "invalid input"},
                         503: {"description": "no model loaded yet, or overloaded"}})
    async def moderate_texts(request: Request) -> Response:
        """Score each text in its context: the flags at the model's tuned thresholds and the recommended
        action, per text in order; ``model`` (in the response and in each item) says which model answered."""
        body = parse_request(await read_body(request, settings.body_limit, "; send fewer or shorter texts per request"),
                             body_model)
        if holder.current is None:
            return unavailable(holder.problem)
        texts, contexts = body.texts_and_contexts()
        try:
            model, results = await batcher.submit(texts, contexts)
        except (Overloaded, ShuttingDown, LookupError) as exc:
            return unavailable(str(exc))
        except Exception:  # our fault, not the input's: logged whole, answered briefly
            log.exception("scoring a request of %d texts failed", len(texts))
            return JSONResponse({"detail": "scoring failed; the service logged why"}, status_code=500)
        metrics.observe_results(results)
        info = model.info()
        # the model once for the response and again in each item: an item stored on its own (an audit
        # log of decisions) still says which model decided it; a response never spans a model swap
        return JSONResponse({"model": info, "results": [{**r.to_dict(include_text=False), "model": info}
                                                        for r in results]},
                            headers={"X-Model-Version": str(info["version"] or "")})

    @app.get("/v1/model", summary="The served model: thresholds, categories, limits")
    async def model_info() -> Response:
        """The served model, its threshold per category, the categories (taxonomy order), the contexts
        and the request limits. 503 (with the contexts and limits) when no model is loaded."""
        common = {"audiences": list(AUDIENCES), "surfaces": list(SURFACES),
                  "limits": {"max_batch_items": settings.max_batch_items, "max_text_chars": settings.max_text_chars}}
        model = holder.current
        if model is None:
            return JSONResponse({"detail": holder.problem, **common}, status_code=503, headers={"Retry-After": "5"})
        thresholds = {name: round(float(t), 6) for name, t in zip(LABELS, model.classifier.thresholds)}
        return JSONResponse({
            "model": model.info(), "tuned": model.classifier.tuned, "thresholds": thresholds,
            "categories": [{"name": c.name, "severity": c.severity, "description": c.description}
                           for c in categories()], **common,
        })

    @app.get("/health", summary="The process is up")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready", summary="A model is loaded (200) or why not (503)")
    async def ready() -> Response:
        model = holder.current
        body: dict[str, Any] = {"registry": holder.registry, "source": str(holder.ref)}
        if holder.loading:
            body["loading"] = holder.loading
        if holder.rejected:
            body["rejected"] = holder.rejected
        if model is None:
            return JSONResponse({"status": "not ready", "reason": holder.problem, **body}, status_code=503)
        return JSONResponse({"status": "ready", "model": model.info(), **body})

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        metrics.observe_holder(holder)
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8",
                            headers={"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-cache"})

    @app.get("/static/{name}", include_in_schema=False)
    async def page_file(name: str) -> Response:
        if name not in PAGE_FILES:
            return JSONResponse({"detail": "not found"}, status_code=404)
        return FileResponse(STATIC / name, media_type=f"{PAGE_FILES[name]}; charset=utf-8",
                            headers={"Cache-Control": "no-cache"})

    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    # The OpenAPI page with Swagger UI's own files (package swagger-ui-bundle), not a CDN: it works offline.
    app.mount("/docs-assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon-32x32.png")

    default_openapi = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            default_openapi().setdefault("components", {}).setdefault("schemas", {}).update(body_defs)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
