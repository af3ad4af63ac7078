"""The HTTP side of ``charlm serve``: a Starlette app (any ASGI server runs it; the CLI uses uvicorn).

Routes: ``/`` the playground page, ``/health``, ``/metrics`` (Prometheus text), ``/v1/models``,
``/v1/models/{id}``, ``/v1/completions`` (JSON, or server-sent events with ``stream``) and
``/v1/score``. The app keeps no state between requests but the loaded models, so replicas behind a
proxy need nothing shared. Every error is a JSON body in OpenAI's shape, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hmac
import json
import math
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from charlm.data.vocab import format_chars
from charlm.errors import CharlmError
from charlm.generate.sample import LineDraw
from charlm.generate.streams import Draw, stream_seed
from charlm.serve.engine import Busy, Completion, Score, Work
from charlm.serve.models import ServedModel
from charlm.serve.protocol import ApiError, CompletionRequest, Limits, completion_request, score_request
from charlm.serve.scoring import score

OPEN_PATHS = ("/health", "/")  # the page is code and no data: it asks for the key itself


@dataclass
class ServerSettings:
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    limits: Limits = Limits()


class Server:
    """What every route reads: the served models, the settings, and the request counters."""

    def __init__(self, models: dict[str, ServedModel], settings: ServerSettings):
        self.models, self.settings = models, settings
        self.requests: Counter[tuple[str, int]] = Counter()

    def model(self, name: str | None) -> ServedModel:
        if name is None:
            if len(self.models) == 1:
                return next(iter(self.models.values()))
            raise ApiError(400, f"model is missing: this server has {', '.join(self.models)}", "model")
        if name not in self.models:
            raise ApiError(404, f"model {name!r} is not served here; served: {', '.join(self.models)}", "model",
                           "model_not_found")
        return self.models[name]

    def close(self) -> None:
        for served in self.models.values():
            served.engine.close()


def create_app(models: dict[str, ServedModel], settings: ServerSettings | None = None) -> Starlette:
    """The ASGI app for ``models`` (``charlm.serve.models.load_models``)."""
    server = Server(models, settings or ServerSettings())
    routes = [Route("/", page), Route("/health", health), Route("/metrics", metrics),
              Route("/v1/models", list_models), Route("/v1/models/{name:str}", one_model),
              Route("/v1/completions", completions, methods=["POST"]), Route("/v1/score", score_text, methods=["POST"])]
    middleware = [Middleware(Guard, server=server)]
    if server.settings.cors_origins:
        middleware.insert(0, Middleware(CORSMiddleware, allow_origins=list(server.settings.cors_origins),
                                        allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"]))
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        server.close()

    app = Starlette(routes=routes, middleware=middleware, exception_handlers={404: _not_found, 405: _not_allowed},
                    lifespan=lifespan)
    app.state.server = server
    return app


class Guard:
    """ASGI middleware: the API key (constant-time compare), request counting, and no 500 with a traceback."""

    def __init__(self, app: Any, server: Server):
        self.app, self.server = app, server

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = {"code": 500}

        async def counted(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        path = scope["path"]
        try:
            key = self.server.settings.api_key
            if key and path not in OPEN_PATHS and scope["method"] != "OPTIONS" and not _authorized(scope, key):
                await _error(ApiError(401, "missing or wrong API key: send the header 'Authorization: Bearer KEY'",
                                      code="invalid_api_key"))(scope, receive, counted)
            else:
                await self.app(scope, receive, counted)
        finally:
            route = path if path in ("/", "/health", "/metrics", "/v1/models", "/v1/completions", "/v1/score") else (
                "/v1/models/{id}" if path.startswith("/v1/models/") else "other")
            self.server.requests[(route, status["code"])] += 1


def _authorized(scope: dict, key: str) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            given = value.decode("latin-1")
            return given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), key.encode())
    return False


def _error(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error(ApiError(404, f"no route {request.url.path}: see GET /v1/models, POST /v1/completions,"
                                " POST /v1/score", code="not_found"))


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return _error(ApiError(405, f"{request.method} is not allowed on {request.url.path}"))


def _server(request: Request) -> Server:
    return request.app.state.server


def api(handler: Any) -> Any:
    """A route whose ApiErrors become their JSON answers."""
    async def route(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as error:
            return _error(error)
    route.__name__ = handler.__name__
    return route


async def read_json(request: Request) -> Any:
    """The body as JSON, refused past the size limit before it is all read."""
    limit = _server(request).settings.limits.max_body
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the body is {int(declared):,} bytes; at most {limit:,} are accepted")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"the body is over {limit:,} bytes, the most accepted")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(400, "the client went away before the body was sent") from None
    try:
        return json.loads(b"".join(chunks), parse_constant=_not_a_number, parse_float=_finite)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON ({exc}); send a JSON object") from None
    except RecursionError:
        raise ApiError(400, "the body nests arrays or objects too deeply to read; send a flat JSON object") from None


def _not_a_number(name: str) -> float:
    """Python reads NaN and Infinity; JSON has neither, and a temperature of Infinity is no request."""
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range for a number")
    return value


# ---- routes --------------------------------------------------------------------------------------

@functools.cache
def page_html() -> str:
    """The playground: one file, nothing fetched from elsewhere; its colours are ``charlm inspect text``'s."""
    from charlm.inspection.text import SURPRISAL_BANDS, SURPRISAL_STEP, surprisal_styles

    html = resources.files("charlm.serve").joinpath("page.html").read_text(encoding="utf-8")
    return (html.replace("SURPRISAL_STYLES", surprisal_styles()).replace("SURPRISAL_STEP", str(SURPRISAL_STEP))
            .replace("SURPRISAL_BANDS", str(SURPRISAL_BANDS)))


async def page(request: Request) -> Response:
    return HTMLResponse(page_html())


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok", "models": list(_server(request).models)})


async def metrics(request: Request) -> Response:
    server = _server(request)
    lines = ["# HELP charlm_requests_total HTTP requests answered, by route and status.",
             "# TYPE charlm_requests_total counter"]
    for (route, code), count in sorted(server.requests.items()):
        lines.append(f'charlm_requests_total{{route="{route}",status="{code}"}} {count}')
    gauges = (("charlm_active_streams", "gauge", "Streams generating now.", lambda m: m.engine.active_streams),
              ("charlm_queued_streams", "gauge", "Streams waiting for room.", lambda m: m.engine.queued_streams),
              ("charlm_generated_characters_total", "counter", "Characters generated.", lambda m: m.engine.generated))
    for name, kind, text, value in gauges:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        lines += [f'{name}{{model="{model}"}} {value(served)}' for model, served in server.models.items()]
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")


async def list_models(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": [m.card() for m in _server(request).models.values()]})


@api
async def one_model(request: Request) -> Response:
    return JSONResponse(_server(request).model(request.path_params["name"]).card(curve=True))


@api
async def completions(request: Request) -> Response:
    server = _server(request)
    body = completion_request(await read_json(request), server.settings.limits)
    served = server.model(body.model)
    plan = _plan(served, body, server.settings.limits)
    if served.lines_model:
        return await _lines(request, served, body, plan)
    queue: asyncio.Queue = asyncio.Queue()  # every prompt's events, in the order they are made
    works = [_completion(served, body, prompt, plan, server.settings.limits, queue=queue, first_index=number * body.n)
             for number, prompt in enumerate(body.prompts)]
    _submit(served, works)
    if body.stream:
        return _events(_stream(served, body, works, queue))
    try:
        choices = await _gather(queue, works, body)
    finally:
        for work in works:
            served.engine.cancel(work)
    return JSONResponse(_envelope(served, body, choices))


@dataclass
class Plan:
    """A completion's settings once the run's own sampling defaults fill what the request left out."""

    length: int
    draw: Draw


def _plan(served: ServedModel, body: CompletionRequest, limits: Limits) -> Plan:
    saved = served.lm.config.sample
    if body.reverse and not served.lm.model.bidirectional:
        raise ApiError(400, "reverse needs a bidirectional model; this one reads forward only", "reverse")
    if body.stop_at_document_end and served.lm.vocab.document is None:
        raise ApiError(400, "stop_at_document_end needs a model trained on several files (it has no document"
                            " marker): use stop or max_tokens", "stop_at_document_end")
    if body.n > served.engine.max_streams:
        raise ApiError(400, f"n={body.n} is more than the {served.engine.max_streams} streams this server runs at"
                            " once (charlm serve --max-streams)", "n")
    if (body.novel or body.unique) and not served.lines_model:
        raise ApiError(400, "novel and unique apply to models trained on lines (data.mode: lines)", "novel")
    if served.lines_model and (body.reverse or body.stops or body.echo):
        raise ApiError(400, "reverse, stop and echo do not apply to a lines model: each choice is one line")
    for prompt in body.prompts:
        missing = served.lm.vocab.missing(prompt)
        if missing:
            raise ApiError(400, f"prompt has characters the model never saw: {format_chars(missing)}; remove them"
                                f" (GET /v1/models/{served.name} lists its vocab)", "prompt")
    draw = Draw(temperature=body.temperature if body.temperature is not None else saved.temperature,
                top_k=body.top_k if body.top_k is not None else saved.top_k,
                top_p=body.top_p if body.top_p is not None else saved.top_p,
                greedy=body.greedy, logprobs=body.logprobs)
    return Plan(body.max_tokens or min(saved.length, limits.max_length), draw)


def _completion(served: ServedModel, body: CompletionRequest, prompt: str, plan: Plan, limits: Limits,
                seeds: list[int | None] | None = None, queue: asyncio.Queue | None = None,
                first_index: int = 0) -> Completion:
    kind, vocab = served.lm.kind, served.lm.vocab
    ids = kind.start_tokens(vocab, prompt[::-1] if body.reverse else prompt)
    seeds = seeds or [stream_seed(body.seed, i) for i in range(body.n)]
    draws = [dataclasses.replace(plan.draw, seed=seed) for seed in seeds]
    return Completion(asyncio.get_running_loop(), ids, draws, plan.length, body.stops,
                      "backward" if body.reverse else "forward", body.stop_at_document_end, limits.time_limit,
                      queue, first_index)


def _submit(served: ServedModel, works: list[Work]) -> None:
    try:
        for work in works:
            served.engine.submit(work)
    except Busy as busy:
        for work in works:
            served.engine.cancel(work)
        raise ApiError(503, f"the server is busy ({busy}); retry in a moment", headers={"Retry-After": "1"}) from None


def _logprobs(pieces: list[tuple[str, float | None, Any]], offset: int) -> dict[str, Any]:
    """OpenAI's legacy logprobs object for characters starting at text offset ``offset``."""
    return {"tokens": [c for c, _, _ in pieces], "token_logprobs": [lp for _, lp, _ in pieces],
            "top_logprobs": [dict(top) if top else None for _, _, top in pieces],
            "text_offset": list(range(offset, offset + len(pieces)))}


async def _gather(queue: asyncio.Queue, works: list[Completion], body: CompletionRequest) -> list[dict[str, Any]]:
    """Every choice of every prompt, once all have finished."""
    total = sum(w.streams for w in works)
    pieces: dict[int, list] = {position: [] for position in range(total)}
    reasons: dict[int, str] = {}
    while len(reasons) < total:
        kind, position, value = await queue.get()
        if kind == "text":
            pieces[position] += value
        elif kind == "finish":
            reasons[position] = value
        else:
            raise ApiError(503, str(value), headers={"Retry-After": "1"})
    choices = []
    for position in range(total):
        prompt = body.prompts[position // body.n]
        made = "".join(c for c, _, _ in pieces[position])
        made = made[::-1] if body.reverse else made
        text = (made + prompt if body.reverse else prompt + made) if body.echo else made
        choices.append({"text": text, "index": position, "finish_reason": reasons[position],
                        "logprobs": _logprobs(pieces[position], len(prompt) if body.echo else 0) if body.logprobs
                        else None})
    return choices


def _envelope(served: ServedModel, body: CompletionRequest, choices: list[dict[str, Any]]) -> dict[str, Any]:
    prompt_chars = sum(len(p) for p in body.prompts)
    made = sum(len(c["text"]) for c in choices) - (prompt_chars * body.n if body.echo else 0)
    return {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion",
            "created": int(time.time()), "model": served.name, "choices": choices,
            "usage": {"prompt_tokens": prompt_chars, "completion_tokens": made, "total_tokens": prompt_chars + made}}


def _events(chunks: AsyncIterator[str]) -> StreamingResponse:
    """Server-sent events: each chunk (JSON text) a ``data:`` line, then ``data: [DONE]``."""
    async def encoded() -> AsyncIterator[bytes]:
        async for chunk in chunks:
            yield f"data: {chunk}\n\n".encode()
        yield b"data: [DONE]\n\n"
    return StreamingResponse(encoded(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _stream(served: ServedModel, body: CompletionRequest, works: list[Completion],
                  queue: asyncio.Queue) -> AsyncIterator[str]:
    """Chunks as the engine makes them, every prompt's choices interleaved; the client going away
    (the generator closed) takes its streams out at the next tick."""
    chunk = _Chunks(f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time()), served.name)
    open_choices = sum(w.streams for w in works)
    offsets: dict[int, int] = {}
    try:
        if body.echo:
            for position in range(open_choices):
                prompt = body.prompts[position // body.n]
                offsets[position] = len(prompt)
                yield chunk.text(position, prompt[::-1] if body.reverse else prompt)
        while open_choices:
            events = [await queue.get()]
            while not queue.empty():  # a client that fell behind gets what piled up in one chunk per choice
                events.append(queue.get_nowait())
            for kind, position, value in _merged(events):
                if kind == "text":
                    text = "".join(c for c, _, _ in value)
                    logprobs = _logprobs(value, offsets.get(position, 0)) if body.logprobs else None
                    offsets[position] = offsets.get(position, 0) + len(text)
                    yield chunk.text(position, text, logprobs)
                elif kind == "finish":
                    open_choices -= 1
                    yield chunk.finish(position, value)
                else:
                    yield json.dumps({"error": ApiError(503, str(value)).body()["error"]})
                    return
    finally:
        for work in works:
            served.engine.cancel(work)


class _Chunks:
    """Server-sent chunks of one completion: the fixed part of the JSON made once."""

    def __init__(self, object_id: str, created: int, model: str):
        self.head = json.dumps({"id": object_id, "object": "text_completion", "created": created, "model": model})[:-1]

    def text(self, index: int, text: str, logprobs: dict | None = None) -> str:
        return (f'{self.head}, "choices": [{{"text": {json.dumps(text)}, "index": {index}, "logprobs":'
                f' {json.dumps(logprobs)}, "finish_reason": null}}]}}')

    def finish(self, index: int, reason: str) -> str:
        return (f'{self.head}, "choices": [{{"text": "", "index": {index}, "logprobs": null,'
                f' "finish_reason": {json.dumps(reason)}}}]}}')


def _merged(events: list[tuple]) -> list[tuple[str, int, Any]]:
    """Events in order, consecutive text events of one choice joined."""
    merged: list[tuple[str, int, Any]] = []
    for kind, position, value in events:
        if kind == "text" and merged and merged[-1][0] == "text" and merged[-1][1] == position:
            merged[-1] = ("text", position, merged[-1][2] + value)
        else:
            merged.append((kind, position, value))
    return merged


async def _lines(request: Request, served: ServedModel, body: CompletionRequest, plan: Plan) -> Response:
    """A lines model: each choice is one whole line, drawn through ``LineDraw``'s filters in rounds
    as ``charlm sample --novel --unique`` draws them."""
    exclude = await asyncio.to_thread(_training_lines, served) if body.novel else None
    limits = _server(request).settings.limits
    choices, made, novel = [], 0, 0
    for number, prompt in enumerate(body.prompts):
        draw = LineDraw(body.n, exclude, body.unique)
        for round_number in range(LineDraw.ROUNDS):
            round_seed = LineDraw.round_seed(body.seed, round_number)
            work = _completion(served, body, prompt, plan, limits, [stream_seed(round_seed, i) for i in range(body.n)])
            _submit(served, [work])
            try:
                lines = [prompt + c["text"] for c in await _gather(work.queue, [work], body)]
            finally:
                served.engine.cancel(work)
            if draw.take(lines) or body.greedy:
                break
        made, novel = made + draw.made, novel + draw.novel
        choices += [{"text": line, "index": number * body.n + j, "finish_reason": "stop", "logprobs": None}
                    | ({"novel": True} if body.novel else {}) for j, line in enumerate(draw.lines)]
    result = _envelope(served, body, choices)
    result["lines"] = {"made": made, "novel": novel if body.novel else None}
    if body.stream:
        async def chunks() -> AsyncIterator[str]:
            head = {k: v for k, v in result.items() if k not in ("choices", "usage", "lines")}
            for choice in choices:
                yield json.dumps(head | {"choices": [choice]})
        return _events(chunks())
    return JSONResponse(result)


def _training_lines(served: ServedModel) -> set[str]:
    try:
        return served.training_lines()
    except CharlmError as exc:
        raise ApiError(400, f"novel needs the training text, which cannot be read here: {exc}", "novel") from None


@api
async def score_text(request: Request) -> Response:
    server = _server(request)
    body = score_request(await read_json(request), server.settings.limits)
    served = server.model(body.model)
    lm = served.lm
    work = Score(asyncio.get_running_loop(), lambda: score(lm.model, lm.vocab, lm.kind, body.text, body.top))
    _submit(served, [work])
    try:
        kind, _, value = await work.queue.get()
    finally:
        served.engine.cancel(work)
    if kind == "error":
        raise ApiError(503, str(value), headers={"Retry-After": "1"})
    return JSONResponse({"object": "score", "model": served.name, **value.as_dict()})
