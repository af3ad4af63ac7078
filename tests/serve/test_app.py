"""charlm serve: the API on a real uvicorn server on 127.0.0.1, its batching determinism, its limits,
and load and faults (bounded in count and time; traffic to 127.0.0.1 only)."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import pytest

import charlm
from charlm.serve import Limits, ServerSettings, create_app, load_models
from charlm.serve.run import serve_in_thread
from tests.conftest import charlm_cli, make_text
from tests.data.test_lines import WORDS
from tests.train.test_loop import small_config

KEY = "test-key-123"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from charlm.train import train

    root = tmp_path_factory.mktemp("serve")
    text = root / "text.txt"
    text.write_text(make_text(20_000))
    train(small_config(**{"train.max_steps": 30, "model.bidirectional": True}), text, root / "words", progress=False)
    names = root / "list.txt"
    names.write_text("\n".join(WORDS * 8) + "\n")
    train(small_config(**{"data.mode": "lines", "train.max_steps": 40, "train.max_epochs": None, "train.lr": 1e-2}),
          names, root / "names", progress=False)
    return root


@pytest.fixture(scope="module")
def url(runs):
    models = load_models([str(runs / "words"), str(runs / "names")], "cpu", max_streams=64, queue_limit=256)
    app = create_app(models, ServerSettings(limits=Limits(max_length=3000, max_n=16, time_limit=30)))
    with serve_in_thread(app) as address:
        yield address


@pytest.fixture(scope="module")
def lm(runs):
    return charlm.load(runs / "words")


def post(url: str, path: str, body, **kwargs) -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=60, **kwargs)


def complete(url: str, **body) -> dict:
    response = post(url, "/v1/completions", {"model": "words", **body})
    assert response.status_code == 200, response.text
    return response.json()


def test_a_seed_gives_the_text_charlm_sample_gives(url, lm, runs):
    result = complete(url, prompt="the ", max_tokens=120, seed=11, temperature=0.9, top_k=20)
    text = result["choices"][0]["text"]
    assert len(text) == 120 and result["choices"][0]["finish_reason"] == "length"
    assert lm.texts("the ", 120, seed=11, temperature=0.9, top_k=20)[0] == "the " + text
    printed = charlm_cli("sample", runs / "words", "--prime", "the ", "--length", 120, "--seed", 11,
                         "--temperature", 0.9, "--top-k", 20)
    assert printed.returncode == 0 and printed.stdout == "the " + text + "\n"


async def _stream_text(client: httpx.AsyncClient, url: str, body: dict) -> tuple[str, str]:
    text, reason = "", None
    async with client.stream("POST", url + "/v1/completions", json={"model": "words", "stream": True, **body}) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                choice = json.loads(line[6:])["choices"][0]
                text += choice["text"]
                reason = choice["finish_reason"] or reason
    return text, reason


def test_a_seed_gives_one_text_alone_and_among_63_others(url):
    body = {"prompt": "and ", "max_tokens": 150, "seed": 5, "temperature": 1.1}
    alone = complete(url, **body)["choices"][0]["text"]

    async def crowd() -> list[tuple[str, str]]:
        async with httpx.AsyncClient(timeout=60) as client:
            others = [_stream_text(client, url, {"prompt": "a" * (i % 7 + 1), "max_tokens": 40 + 5 * i, "seed": 100 + i,
                                                 "temperature": 0.5 + i % 3, "top_p": 0.9})
                      for i in range(63)]
            return await asyncio.gather(_stream_text(client, url, body), *others)

    results = asyncio.run(crowd())
    assert results[0] == (alone, "length")
    assert all(reason == "length" for _, reason in results)


def test_the_openai_client_works_unchanged(runs):
    openai = pytest.importorskip("openai")
    models = load_models([str(runs / "words")], "cpu", max_streams=8, queue_limit=32)
    with serve_in_thread(create_app(models, ServerSettings(api_key=KEY))) as address:
        client = openai.OpenAI(base_url=address + "/v1", api_key=KEY, max_retries=0)
        assert [m.id for m in client.models.list().data] == ["words"]
        made = client.completions.create(model="words", prompt="the ", max_tokens=50, seed=3, n=2)
        assert len(made.choices) == 2 and all(len(c.text) == 50 for c in made.choices)
        assert made.choices[0].text != made.choices[1].text
        streamed = "".join(chunk.choices[0].text for chunk in
                           client.completions.create(model="words", prompt="the ", max_tokens=50, seed=3, stream=True))
        assert streamed == made.choices[0].text
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=address + "/v1", api_key="wrong", max_retries=0).models.list()
        assert httpx.get(address + "/health").status_code == 200  # no key needed
        assert httpx.get(address + "/v1/models").status_code == 401


@pytest.mark.parametrize("body,status,words", [
    ("{not json", 400, "not valid JSON"),
    ([1, 2], 400, "JSON object"),
    ({"prompt": 5}, 400, "prompt must be"),
    ({"temperature": 0}, 400, "temperature must be > 0"),
    ({"temperature": "hot"}, 400, "temperature must be a number"),
    ({"top_p": 1.5}, 400, "top_p must be in (0, 1]"),
    ({"max_tokens": 10**6}, 400, "max_tokens must be from 1 to 3000"),
    ({"n": 99}, 400, "n must be from 1 to 16"),
    ({"stream": "yes"}, 400, "stream must be true or false"),
    ({"temprature": 1}, 400, "did you mean 'temperature'"),
    ({"presence_penalty": 0.5}, 400, "not supported"),
    ({"model": "nope"}, 404, "'nope' is not served here"),
    ({"prompt": "caf\u00e9 \u263a"}, 400, "never saw"),
    ({"stop": ""}, 400, "stop must be"),
    ({"model": "names", "stop": "x"}, 400, "do not apply to a lines model"),
    ({"stop_at_document_end": True}, 400, "several files"),
    ({"novel": True}, 400, "apply to models trained on lines"),
])
def test_bad_requests_get_one_line_in_openai_error_shape(url, body, status, words):
    content = body if isinstance(body, str) else json.dumps({"model": "words", **body} if isinstance(body, dict)
                                                              and "model" not in body else body)
    response = httpx.post(url + "/v1/completions", content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    error = response.json()["error"]
    assert words in error["message"] and "\n" not in error["message"] and "Traceback" not in response.text
    assert set(error) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("content, words", [
    ('{"model": "words", "temperature": NaN}', "NaN is not a JSON number"),
    ('{"model": "words", "temperature": Infinity}', "Infinity is not a JSON number"),
    ('{"model": "words", "top_p": 1e999}', "1e999 is out of range"),
    ("[" * 50_000 + "]" * 50_000, "nests arrays or objects too deeply"),
    (b'{"prompt": "\xff\xfe"}', "not valid JSON"),
])
def test_bodies_python_would_read_but_json_has_not_are_400s(url, content, words):
    response = httpx.post(url + "/v1/completions", content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and words in response.json()["error"]["message"], response.text


def _json_values():
    from hypothesis import strategies as st

    scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=12)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                           max_size=4), max_leaves=12)


def _short_answers(body: dict) -> dict:
    """The body for the served model unless it names one, asking for at most 2 characters where it would get
    more (the property is about reading bodies; a long answer only makes the test slow)."""
    tokens = body.get("max_tokens")
    long = isinstance(tokens, int) and not isinstance(tokens, bool) and tokens > 2
    return {"model": "words", **body, **({"max_tokens": 2} if long or "max_tokens" not in body else {})}


def test_no_body_and_no_field_value_is_a_server_error(url):
    """Property: whatever the body (bytes, or JSON with any field at any value), the answer is below 500, and an
    error is one line in OpenAI's shape."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from charlm.serve.protocol import _COMPLETION_FIELDS

    names = st.sampled_from([*_COMPLETION_FIELDS, "best_of", "logit_bias", "user", "text", "x"])
    bodies = st.dictionaries(names, _json_values(), max_size=5).map(_short_answers) | _json_values()
    with httpx.Client(base_url=url, timeout=60) as client:
        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        @given(body=bodies, raw=st.binary(max_size=64), path=st.sampled_from(["/v1/completions", "/v1/score"]))
        def check(body, raw, path):
            for content in (json.dumps(body), raw):
                response = client.post(path, content=content, headers={"Content-Type": "application/json"})
                assert response.status_code < 500, (content, response.text)
                if response.status_code >= 400:
                    message = response.json()["error"]["message"]
                    assert message and "\n" not in message and "Traceback" not in response.text
        check()


def test_oversize_bodies_are_refused_before_they_are_read(url):
    big = json.dumps({"model": "words", "prompt": "a" * 1_100_000})
    response = httpx.post(url + "/v1/completions", content=big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and "at most 1,000,000" in response.json()["error"]["message"]
    assert post(url, "/v1/completions", {"model": "words", "prompt": "a" * 5000}).status_code == 400  # --max-prompt


def test_unknown_routes_and_methods_are_json_errors(url):
    assert httpx.get(url + "/v2/nothing").json()["error"]["code"] == "not_found"
    assert httpx.get(url + "/v1/completions").status_code == 405


def test_stop_strings_end_a_choice_and_are_not_part_of_it(url, lm):
    full = complete(url, prompt="the ", max_tokens=200, seed=2)["choices"][0]["text"]
    stop = full[20:23]
    cut = complete(url, prompt="the ", max_tokens=200, seed=2, stop=[stop, "QQQ"])["choices"][0]
    assert cut["finish_reason"] == "stop" and cut["text"] == full[: full.index(stop)]

    async def streamed() -> tuple[str, str]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await _stream_text(client, url, {"prompt": "the ", "max_tokens": 200, "seed": 2, "stop": stop})

    assert asyncio.run(streamed()) == (cut["text"], "stop")


def test_logprobs_echo_and_several_prompts(url, lm):
    import torch

    result = complete(url, prompt=["the ", "a"], n=2, max_tokens=10, seed=4, logprobs=3, echo=True)
    assert [c["index"] for c in result["choices"]] == [0, 1, 2, 3]
    first = result["choices"][0]
    assert first["text"].startswith("the ") and len(first["text"]) == 14
    logprobs = first["logprobs"]
    assert logprobs["tokens"] == list(first["text"][4:]) and logprobs["text_offset"][0] == 4
    ids = torch.tensor([[lm.vocab.index[c] for c in "the "]])
    logits, _ = lm.model(ids)
    expected = torch.log_softmax(logits[0, -1] / lm.config.sample.temperature, dim=-1)
    assert logprobs["token_logprobs"][0] == pytest.approx(expected[lm.vocab.index[first["text"][4]]].item(), abs=1e-5)
    assert len(logprobs["top_logprobs"][0]) == 3
    assert result["usage"]["completion_tokens"] == 40


def test_reverse_writes_right_to_left(url, lm):
    result = complete(url, prompt=" the end", max_tokens=40, seed=8, reverse=True, echo=True, temperature=1.0)
    assert result["choices"][0]["text"] == lm.texts(" the end", 40, seed=8, reverse=True, temperature=1.0)[0]


def test_a_lines_model_gives_whole_lines_and_filters_them(url, runs):
    lines = charlm.load(runs / "names")
    result = post(url, "/v1/completions", {"model": "names", "n": 5, "seed": 3, "max_tokens": 30}).json()
    assert [c["text"] for c in result["choices"]] == lines.lines(5, max_length=30, seed=3,
                                                                 temperature=lines.config.sample.temperature)
    novel = post(url, "/v1/completions", {"model": "names", "n": 4, "seed": 3, "novel": True, "unique": True}).json()
    training = lines.training_lines()
    assert all(c["text"] not in training and c["novel"] for c in novel["choices"])
    assert novel["lines"]["made"] >= len(novel["choices"])


def test_a_failing_step_ends_its_requests_and_the_server_goes_on(url, monkeypatch, capfd):
    from charlm.generate.streams import StreamSet

    tick = StreamSet.tick
    calls = {"count": 0}

    def failing_once(self):
        calls["count"] += 1
        if calls["count"] == 1:
            raise RuntimeError("a bug")
        return tick(self)

    monkeypatch.setattr(StreamSet, "tick", failing_once)
    failed = post(url, "/v1/completions", {"model": "words", "prompt": "a", "max_tokens": 5})
    assert failed.status_code == 200 and failed.json()["choices"][0]["finish_reason"] == "error"
    assert "engine: RuntimeError: a bug" in capfd.readouterr().err
    assert len(complete(url, prompt="a", max_tokens=5)["choices"][0]["text"]) == 5


def test_a_many_file_model_stops_where_its_document_ends(tmp_path):
    from charlm.train import train

    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(4):
        (folder / f"{i}.txt").write_text(make_text(3_000, seed=i))
    train(small_config(**{"train.max_steps": 10}), folder, tmp_path / "files", progress=False)
    lm = charlm.load(tmp_path / "files")
    models = load_models([str(tmp_path / "files")], "cpu", max_streams=4, queue_limit=16)
    with serve_in_thread(create_app(models, ServerSettings())) as address:
        for seed in range(3):
            body = {"prompt": "the ", "max_tokens": 400, "seed": seed, "stop_at_document_end": True}
            choice = post(address, "/v1/completions", body).json()["choices"][0]
            expected = lm.texts("the ", 400, seed=seed, stop_at_document_end=True,
                                temperature=lm.config.sample.temperature)[0]
            assert "the " + choice["text"] == expected and "<doc>" not in choice["text"]
            assert choice["finish_reason"] == ("length" if len(choice["text"]) == 400 else "stop")


def test_models_and_their_cards(url):
    listed = httpx.get(url + "/v1/models").json()["data"]
    assert [m["id"] for m in listed] == ["words", "names"]
    card = httpx.get(url + "/v1/models/words").json()["charlm"]
    assert card["parameters"] > 0 and card["step"] == 30 and card["bidirectional"] is True
    assert card["config"]["model"]["cell"] and len(card["curve"]["train"]) > 0
    assert httpx.get(url + "/v1/models/nope").status_code == 404


def test_score_gives_each_characters_log_probability(url, lm):
    import torch

    text = "the cat\u263a sat"
    result = post(url, "/v1/score", {"model": "words", "text": text, "logprobs": 2}).json()
    assert [c["char"] for c in result["characters"]] == list(text)
    assert result["unknown"] == [{"index": 7, "char": "\u263a"}]
    known = text.replace("\u263a", "")
    logits, _ = lm.model(torch.tensor([[lm.vocab.index[c] for c in known]]))
    log_probs = torch.log_softmax(logits[0].double(), dim=-1)
    expected = [log_probs[i, lm.vocab.index[c]].item() for i, c in enumerate(known[1:])]
    got = [c["logprob"] for c in result["characters"] if c["logprob"] is not None]
    assert result["characters"][0]["logprob"] is None and got == pytest.approx(expected, abs=1e-5)
    assert result["loss"] == pytest.approx(-sum(expected) / len(expected), abs=1e-6)
    assert result["bits_per_char"] == pytest.approx(result["loss"] / 0.6931471805599453)
    assert len(result["characters"][1]["top"]) == 2
    assert post(url, "/v1/score", {"model": "words"}).status_code == 400


def test_health_metrics_and_the_page(url):
    assert httpx.get(url + "/health").json() == {"status": "ok", "models": ["words", "names"]}
    metrics = httpx.get(url + "/metrics").text
    assert 'charlm_requests_total{route="/health",status="200"}' in metrics
    assert 'charlm_active_streams{model="words"} 0' in metrics and "charlm_generated_characters_total" in metrics
    page = httpx.get(url + "/")
    assert page.status_code == 200 and "charlm playground" in page.text
    assert "http://" not in page.text.replace("http://www.w3.org/2000/svg", "")  # nothing fetched from elsewhere


def test_cors_is_off_unless_an_origin_is_named(runs, url):
    assert "access-control-allow-origin" not in httpx.get(url + "/v1/models", headers={"Origin": "http://x.test"}).headers
    models = load_models([str(runs / "words")], "cpu", max_streams=4, queue_limit=4)
    with serve_in_thread(create_app(models, ServerSettings(cors_origins=("http://x.test",)))) as address:
        headers = httpx.get(address + "/v1/models", headers={"Origin": "http://x.test"}).headers
        assert headers["access-control-allow-origin"] == "http://x.test"


def test_a_full_queue_answers_503_with_retry_after(runs):
    models = load_models([str(runs / "words")], "cpu", max_streams=1, queue_limit=1)
    with serve_in_thread(create_app(models, ServerSettings(limits=Limits(max_length=100_000)))) as address:
        async def flood() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=60) as client:
                return await asyncio.gather(*(client.post(address + "/v1/completions",
                                                          json={"prompt": "a", "max_tokens": 3000}) for _ in range(6)))
        answers = asyncio.run(flood())
        busy = [r for r in answers if r.status_code == 503]
        assert busy and any(r.status_code == 200 for r in answers)
        assert all(r.headers["retry-after"] == "1" and "busy" in r.json()["error"]["message"] for r in busy)
        too_many = httpx.post(address + "/v1/completions", json={"prompt": "a", "n": 2})
        assert too_many.status_code == 400 and "--max-streams" in too_many.json()["error"]["message"]


@pytest.mark.slow
def test_200_requests_from_64_clients_all_complete_and_match_their_seeds(url, lm):
    expected = {seed: complete(url, prompt="the ", max_tokens=30, seed=seed)["choices"][0]["text"] for seed in range(10)}

    async def load() -> list[tuple[int, str, str]]:
        gate = asyncio.Semaphore(64)
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=64)) as client:
            async def one(i: int) -> tuple[int, str, str]:
                async with gate:
                    text, reason = await _stream_text(client, url, {"prompt": "the ", "max_tokens": 30, "seed": i % 10})
                    return i % 10, text, reason
            return await asyncio.gather(*(one(i) for i in range(200)))

    async def load_and_health() -> tuple[list, list[float]]:
        waits: list[float] = []
        task = asyncio.create_task(load())
        async with httpx.AsyncClient(timeout=10) as client:
            while not task.done():  # the server keeps answering while it is loaded
                asked = time.monotonic()
                assert (await client.get(url + "/health")).status_code == 200
                waits.append(time.monotonic() - asked)
                await asyncio.sleep(0.1)
        return await task, waits

    started = time.monotonic()
    results, waits = asyncio.run(load_and_health())
    assert time.monotonic() - started < 120
    assert len(results) == 200 and all(text == expected[seed] and reason == "length" for seed, text, reason in results)
    assert len(waits) > 3 and max(waits) < 2.0


def _active(url: str) -> int:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith('charlm_active_streams{model="words"}'):
            return int(line.split()[-1])
    raise AssertionError("no active-streams gauge")


@pytest.mark.slow
def test_clients_that_leave_mid_stream_leave_no_stream_behind(url):
    async def leave() -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            async def one(i: int) -> None:
                body = {"model": "words", "prompt": "a", "max_tokens": 3000, "seed": i, "stream": True}
                async with client.stream("POST", url + "/v1/completions", json=body) as response:
                    async for line in response.aiter_lines():
                        if line.startswith("data: "):
                            return  # gone after the first character
            await asyncio.gather(*(one(i) for i in range(20)))

    asyncio.run(leave())
    deadline = time.monotonic() + 5
    while _active(url) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _active(url) == 0
    assert httpx.get(url + "/health").status_code == 200
    assert len(complete(url, prompt="a", max_tokens=20)["choices"][0]["text"]) == 20


@pytest.mark.slow
def test_garbage_slow_clients_and_big_bodies_do_not_stall_other_streams(url):
    host, port = url.removeprefix("http://").split(":")
    garbage = socket.create_connection((host, int(port)), timeout=10)
    garbage.sendall(b"\x00\xff\x13 NOT HTTP AT ALL\r\n\r\n" * 20)
    slow = socket.create_connection((host, int(port)), timeout=10)  # headers, then half a body, then nothing
    slow.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000\r\n\r\n{\"prompt\": ")
    try:
        started = time.monotonic()
        result = complete(url, prompt="the ", max_tokens=200, seed=1)
        assert len(result["choices"][0]["text"]) == 200 and time.monotonic() - started < 30
        big = httpx.post(url + "/v1/completions", content=b"x" * 2_000_000, headers={"Content-Type": "application/json"})
        assert big.status_code == 413
        assert httpx.get(url + "/health").status_code == 200
        reply = garbage.recv(200)
        assert reply == b"" or reply.startswith(b"HTTP/1.1 400")
    finally:
        garbage.close()
        slow.close()
