"""The dashboard's web app (FastAPI): pages rendered with Jinja2, images served from the SDK,
operation progress as Server-Sent Events. Every route is a plain `def`: the SDK is
synchronous, so FastAPI runs each in its thread pool and pages load in parallel.

    app = create_app(Client("127.0.0.1:50051"))
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from .._images import enlarge_png
from ..errors import NotFound, ParasalError
from . import _evaluations, _views
from ._backend import Backend
from ._errors import ErrorView, FormError, dashboard_error, error_view
from ._uploads import MAX_UPLOAD_BYTES, UploadStore

log = logging.getLogger("parasal.dashboard")
HERE = Path(__file__).parent
# Images the browser may keep: indexed samples and their overlays never change for a bundle
# generation; a short max-age keeps a reloaded bundle from showing stale pictures for long.
IMAGE_CACHE = {"Cache-Control": "private, max-age=300"}


def create_app(client, *, bundle: str = "", target: str = "") -> FastAPI:
    """The dashboard over ``client`` (a `parasal.client.Client`, or any object with its
    methods), showing ``bundle`` ("" = the server's default)."""
    backend = Backend(client, bundle=bundle, target=target)
    uploads = UploadStore()
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals["target"] = backend.target
    app = FastAPI(title="parasal dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.backend = backend
    app.state.uploads = uploads
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    def page(request: Request, name: str, context: dict, status_code: int = 200) -> HTMLResponse:
        return templates.TemplateResponse(request, name, context, status_code=status_code)

    def error_page(request: Request, view: ErrorView) -> HTMLResponse:
        return page(request, "error.html", {"error": view}, status_code=view.http_status)

    @app.middleware("http")
    async def _same_origin_posts(request: Request, call_next):
        # The dashboard starts evaluations on a POST; a page on another site must not be able
        # to make a visitor's browser do that (CSRF). Browsers send Origin with every
        # cross-origin POST; a form of this dashboard sends its own.
        if request.method == "POST" and not _same_origin(request):
            view = dashboard_error("Refused", "this form came from another site", 403)
            return error_page(request, view)
        return await call_next(request)

    # -- errors: one handler per kind, so routes just let them propagate ------------------

    @app.exception_handler(ParasalError)
    def _on_sdk_error(request: Request, exc: ParasalError):
        view = error_view(exc, backend.target)
        log.info("%s %s -> %s %s", request.method, request.url.path, view.code, exc.details)
        if _wants_image(request):
            return Response(status_code=view.http_status)
        return error_page(request, view)

    @app.exception_handler(FormError)
    def _on_form_error(request: Request, exc: FormError):
        return error_page(request, dashboard_error("The form has a value the dashboard cannot use", str(exc)))

    @app.exception_handler(StarletteHTTPException)
    def _on_http_error(request: Request, exc: StarletteHTTPException):
        title = "No such page" if exc.status_code == 404 else "The request was refused"
        return error_page(request, dashboard_error(title, str(exc.detail), exc.status_code))

    @app.exception_handler(RequestValidationError)
    def _on_validation_error(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors())
        return error_page(request, dashboard_error("The address has a value the dashboard cannot use", problems))

    # -- pages ----------------------------------------------------------------------------

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})  # the dashboard itself; says nothing about the server

    @app.get("/", response_class=HTMLResponse)
    def overview(request: Request):
        return page(request, "overview.html", _views.overview(backend))

    @app.get("/samples", response_class=HTMLResponse)
    def samples(
        request: Request,
        true_labels: Annotated[list[str], Query()] = (),
        predicted_labels: Annotated[list[str], Query()] = (),
        correctness: str = "",
        failure_mode: str = "",
        min_loss: str = "",
        max_loss: str = "",
        only_with_surprise: bool = False,
        only_with_expectation: bool = False,
        order_by: str = "id",
        descending: bool = False,
        page_number: Annotated[int, Query(alias="page", ge=1)] = 1,
    ):
        if correctness not in ("", "correct", "misclassified"):
            raise FormError(f"correctness: choose correct or misclassified, not {correctness!r}")
        if order_by not in _views.SAMPLE_ORDERS:
            raise FormError(f"order_by: choose one of {', '.join(_views.SAMPLE_ORDERS)}")
        filters = _views.SampleFilters(
            true_labels=_labels(true_labels, "true_labels"),
            predicted_labels=_labels(predicted_labels, "predicted_labels"),
            correctness=correctness,
            failure_mode=_evaluations.one_int(failure_mode, "failure_mode"),
            min_loss=_evaluations.one_float(min_loss, "min_loss"),
            max_loss=_evaluations.one_float(max_loss, "max_loss"),
            only_with_surprise=only_with_surprise,
            only_with_expectation=only_with_expectation,
            order_by=order_by,
            descending=descending,
        )
        return page(request, "samples.html", _views.samples_page(backend, filters, page_number))

    @app.get("/samples/{sample_id}", response_class=HTMLResponse)
    def sample(request: Request, sample_id: int):
        return page(request, "sample.html", {"view": _views.sample_page(backend, sample_id)})

    @app.get("/samples/{sample_id}/surprise", response_class=HTMLResponse)
    def sample_surprise(request: Request, sample_id: int):
        return page(request, "_surprise.html", _views.surprise_view(backend, sample_id=sample_id))

    @app.get("/upload", response_class=HTMLResponse)
    def upload_form(request: Request):
        return page(request, "upload.html", {"info": backend.info(), "names": backend.class_names()})

    @app.post("/upload")
    def upload(image: Annotated[UploadFile, File()], label: Annotated[int, Form()]):
        data = image.file.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise FormError(f"image: larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB")
        if not data:
            raise FormError("image: choose or drop an image file")
        names = backend.class_names()
        if names and not 0 <= label < len(names):
            raise FormError(f"label: choose one of the {len(names)} classes")
        token = uploads.add(data, label, image.filename or "upload")
        return RedirectResponse(f"/uploads/{token}", status_code=303)

    @app.get("/uploads/{token}", response_class=HTMLResponse)
    def uploaded(request: Request, token: str):
        item = uploads.get(token)
        if "page" not in item.cache:
            item.cache["page"] = _views.upload_page(backend, token, item)
        return page(request, "sample.html", {"view": item.cache["page"]})

    @app.get("/uploads/{token}/surprise", response_class=HTMLResponse)
    def uploaded_surprise(request: Request, token: str):
        item = uploads.get(token)
        return page(request, "_surprise.html", _views.surprise_view(backend, image=item.data, label=item.label))

    # -- images ---------------------------------------------------------------------------

    @app.get("/img/samples/{sample_id}.png")
    def sample_png(sample_id: int, scale: Annotated[int, Query(ge=1, le=16)] = 1):
        found = backend.call("sample", sample_id, include_image=True)
        if not found.image_png:
            raise NotFound(f"the server sent no image for sample {sample_id}")
        return _png(enlarge_png(found.image_png, scale))

    @app.get("/img/samples/{sample_id}/overlay.png")
    def sample_overlay(sample_id: int):
        return _png(backend.call("explain_input", sample_id=sample_id).overlay_png)

    @app.get("/img/uploads/{token}.png")
    def upload_png(token: str):
        item = uploads.get(token)
        return Response(item.data, media_type=item.media_type, headers=IMAGE_CACHE)

    @app.get("/img/uploads/{token}/overlay.png")
    def upload_overlay(token: str):
        item = uploads.get(token)
        if "overlay" not in item.cache:
            explanation = backend.call("explain_input", image=item.data, label=item.label)
            item.cache["overlay"] = explanation.overlay_png
        return _png(item.cache["overlay"])

    @app.get("/img/operations/{op_id}/plot.png")
    def operation_plot(op_id: str):
        result = backend.client.operation(op_id, bundle=backend.bundle).result
        if not getattr(result, "plot_png", None):
            raise NotFound(f"operation {op_id} has no plot")
        return _png(result.plot_png)

    # -- evaluations ----------------------------------------------------------------------

    @app.get("/evaluations", response_class=HTMLResponse)
    def evaluations(request: Request, sample_id: str = "", failure_mode: str = "", upload: str = ""):
        context = {
            "upload": upload,
            "upload_name": uploads.get(upload).name if upload else "",
            "info": backend.info(),
            "operations": backend.client.operations(bundle=backend.bundle),
            "sample_id": sample_id,
            "failure_mode": failure_mode,
            "experiments": _views.EXPERIMENTS if backend.offers("start_experiment") else (),
            "selections": _evaluations.SELECTIONS,
        }
        return page(request, "evaluations.html", context)

    @app.post("/evaluations/{kind}")
    async def start_evaluation(request: Request, kind: str):
        form = await request.form()  # async only to read the form; the SDK call goes to a thread
        values = {k: v for k, v in form.items() if isinstance(v, str)}
        selections = [v for v in form.getlist("selections") if isinstance(v, str)]
        from starlette.concurrency import run_in_threadpool

        handle = await run_in_threadpool(_evaluations.start, backend, kind, values, selections, uploads)
        return RedirectResponse(f"/operations/{handle.id}", status_code=303)

    @app.get("/operations/{op_id}", response_class=HTMLResponse)
    def operation(request: Request, op_id: str):
        op = backend.client.operation(op_id, bundle=backend.bundle)
        return page(request, "operation.html", {"info": backend.info(), **_evaluations.operation_view(op)})

    @app.get("/operations/{op_id}/events")
    def operation_events(op_id: str):
        backend.client.operation(op_id, bundle=backend.bundle)  # NotFound before the stream starts
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(_evaluations.events(backend, op_id), media_type="text/event-stream", headers=headers)

    @app.post("/operations/{op_id}/cancel")
    def cancel(op_id: str):
        backend.client.cancel(op_id, bundle=backend.bundle)
        return RedirectResponse(f"/operations/{op_id}", status_code=303)

    return app


def _png(data: bytes) -> Response:
    return Response(data, media_type="image/png", headers=IMAGE_CACHE)


def _labels(values, name: str) -> list[int]:
    """Label filters from the query; "" (the form's "any") is no filter."""
    return [label for v in values for label in (_evaluations.ints(v, name) or [])]


def _same_origin(request: Request) -> bool:
    from urllib.parse import urlsplit

    origin = request.headers.get("origin")
    if origin is None:
        return True  # not a browser's cross-origin request (curl, scripts)
    # "null" (a sandboxed frame, a file:// page) has no netloc: refused
    return urlsplit(origin).netloc == request.headers.get("host", "")


def _wants_image(request: Request) -> bool:
    return request.url.path.startswith("/img/")
