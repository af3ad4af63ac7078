"""The API's requests, checked field by field: every way a body can be wrong is one 4xx line.

Bodies follow OpenAI's legacy completions API (``/v1/completions``), so its clients work unchanged;
charlm's own fields (``top_k``, ``greedy``, ``reverse``, ``stop_at_document_end``, ``novel``,
``unique``) sit beside them. OpenAI fields charlm has no use for are accepted at their neutral
values and refused otherwise, and an unknown field is refused with the nearest known name.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

MAX_LOGPROBS = 10
MAX_STOPS = 4
MAX_PROMPTS = 16


class ApiError(Exception):
    """An answer in OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        kind = {401: "authentication_error", 404: "not_found_error", 413: "invalid_request_error",
                429: "rate_limit_error", 503: "server_busy"}.get(self.status, "invalid_request_error")
        if self.status >= 500 and self.status != 503:
            kind = "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class Limits:
    """What one request may ask for (``charlm serve``'s flags)."""

    max_length: int = 2000
    max_prompt: int = 4096
    max_score: int = 100_000
    max_n: int = 16
    max_body: int = 1_000_000
    time_limit: float = 60.0


@dataclass
class CompletionRequest:
    model: str | None
    prompts: list[str]
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    top_k: int | None
    greedy: bool
    stops: list[str]
    n: int
    seed: int | None
    stream: bool
    logprobs: int
    echo: bool
    reverse: bool
    stop_at_document_end: bool
    novel: bool
    unique: bool


@dataclass
class ScoreRequest:
    model: str | None
    text: str
    top: int


# OpenAI fields charlm accepts only at the value that changes nothing.
_NEUTRAL = {"frequency_penalty": (0, 0.0), "presence_penalty": (0, 0.0), "best_of": (1,), "logit_bias": ({},),
            "suffix": (None, ""), "user": None, "stream_options": None}
_COMPLETION_FIELDS = ("model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "greedy", "stop", "n", "seed",
                      "stream", "logprobs", "echo", "reverse", "stop_at_document_end", "novel", "unique")


class _Body:
    """Typed reads from a JSON object, each failure one ApiError naming the field."""

    def __init__(self, body: Any, known: tuple[str, ...]):
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        self.body = body
        for name in body:
            if name in known:
                continue
            if name in _NEUTRAL:
                if _NEUTRAL[name] is not None and body[name] not in _NEUTRAL[name] and not (
                        name == "best_of" and body[name] == body.get("n", 1)):
                    raise ApiError(400, f"{name}={body[name]!r} is not supported by charlm: leave it out", name)
                continue
            near = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f"; known fields: {', '.join(known)}"
            raise ApiError(400, f"unknown field {name!r}{hint}", name)

    def get(self, name: str, types: type | tuple[type, ...], default: Any = None, what: str = "") -> Any:
        value = self.body.get(name, default)
        if value is None:
            return default
        wanted = types if isinstance(types, tuple) else (types,)
        wrong = isinstance(value, bool) and bool not in wanted  # JSON true is not a number here
        if wrong or not isinstance(value, wanted):
            raise ApiError(400, f"{name} must be {what or ' or '.join(t.__name__ for t in wanted)},"
                                f" got {type(value).__name__} {_short(value)}", name)
        return value

    def integer(self, name: str, low: int, high: int, default: int | None = None) -> int | None:
        value = self.get(name, int, default, "an integer")
        if value is not None and not low <= value <= high:
            raise ApiError(400, f"{name} must be from {low} to {high}, got {value}", name)
        return value

    def flag(self, name: str) -> bool:
        return bool(self.get(name, bool, False, "true or false"))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def completion_request(body: Any, limits: Limits) -> CompletionRequest:
    fields = _Body(body, _COMPLETION_FIELDS)
    prompt = fields.get("prompt", (str, list), "", "a string or a list of strings")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not prompts or len(prompts) > MAX_PROMPTS or not all(isinstance(p, str) for p in prompts):
        raise ApiError(400, f"prompt must be a string or a list of 1 to {MAX_PROMPTS} strings", "prompt")
    for p in prompts:
        if len(p) > limits.max_prompt:
            raise ApiError(400, f"prompt is {len(p):,} characters; this server takes at most {limits.max_prompt:,}"
                                " (charlm serve --max-prompt)", "prompt")
    temperature = fields.get("temperature", (int, float), None, "a number")
    if temperature is not None and not temperature > 0:
        raise ApiError(400, f"temperature must be > 0, got {temperature}; for the most likely character every"
                            " time, send \"greedy\": true", "temperature")
    top_p = fields.get("top_p", (int, float), None, "a number")
    if top_p is not None and not 0 < top_p <= 1:
        raise ApiError(400, f"top_p must be in (0, 1], got {top_p}", "top_p")
    stop = fields.get("stop", (str, list), None, "a string or a list of strings")
    stops = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if len(stops) > MAX_STOPS or not all(isinstance(s, str) and s for s in stops):
        raise ApiError(400, f"stop must be a non-empty string or a list of 1 to {MAX_STOPS} of them", "stop")
    logprobs = fields.get("logprobs", (int, bool), 0, "an integer")  # the openai client may send true
    logprobs = int(logprobs)
    if not 0 <= logprobs <= MAX_LOGPROBS:
        raise ApiError(400, f"logprobs must be from 0 to {MAX_LOGPROBS}, got {logprobs}", "logprobs")
    return CompletionRequest(
        model=fields.get("model", str, None, "a string"), prompts=prompts,
        max_tokens=fields.integer("max_tokens", 1, limits.max_length), temperature=temperature, top_p=top_p,
        top_k=fields.integer("top_k", 0, 1_000_000), greedy=fields.flag("greedy"), stops=stops,
        n=fields.integer("n", 1, limits.max_n, 1) or 1, seed=fields.integer("seed", -2**63, 2**64 - 1),
        stream=fields.flag("stream"), logprobs=logprobs, echo=fields.flag("echo"), reverse=fields.flag("reverse"),
        stop_at_document_end=fields.flag("stop_at_document_end"), novel=fields.flag("novel"),
        unique=fields.flag("unique"))


def score_request(body: Any, limits: Limits) -> ScoreRequest:
    fields = _Body(body, ("model", "text", "logprobs"))
    text = fields.get("text", str, None, "a string")
    if text is None:
        raise ApiError(400, "text is missing: send {\"model\": ..., \"text\": \"the text to score\"}", "text")
    if len(text) > limits.max_score:
        raise ApiError(400, f"text is {len(text):,} characters; this server scores at most {limits.max_score:,}"
                            " (charlm serve --max-score)", "text")
    return ScoreRequest(model=fields.get("model", str, None, "a string"), text=text,
                        top=fields.integer("logprobs", 0, MAX_LOGPROBS, 0) or 0)
