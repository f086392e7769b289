"""Fuzzing the bodies of the Ollama and /v1 routes: whatever a client sends, the proxy answers
a 2xx/4xx in the route's error shape, never a 5xx of its own making.

The fake node is healthy ("ok" mode), so every 5xx the client sees was produced by the proxy.
Examples are derandomized (the same on every run) and bounded so a backend takes well under a
minute; `AIVONX_FUZZ_EXAMPLES=N` raises the number of examples per route for a longer hunt.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import RunningProxy
from tests.fake_ollama import FakeOllama

EXAMPLES = int(os.environ.get("AIVONX_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,  # the same examples on every run: a failure is reproducible as it stands
    database=None,
    deadline=None,
    suppress_health_check=[
        # One proxy and node serve every example on purpose (starting them per example is slow).
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)

OLLAMA_ROUTES = {
    "/api/generate": "POST",
    "/api/chat": "POST",
    "/api/embed": "POST",
    "/api/embeddings": "POST",
    "/api/show": "POST",
    "/api/pull": "POST",
    "/api/delete": "DELETE",
    "/api/copy": "POST",
    "/api/create": "POST",
    "/api/push": "POST",
}
OPENAI_ROUTES = {"/v1/chat/completions": "POST", "/v1/completions": "POST", "/v1/embeddings": "POST"}
ROUTES = {**OLLAMA_ROUTES, **OPENAI_ROUTES}
MODEL = "llama3:latest"

# -- strategies ------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
)  # fmt: skip
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
model_names = st.one_of(
    st.sampled_from(["llama3", "llama3:latest", "LLAMA3", " llama3 ", "library/llama3", "ghost", "", "a" * 400]),
    st.text(max_size=30),
    json_values,
)
messages = st.one_of(
    st.lists(
        st.fixed_dictionaries(
            {}, optional={"role": st.one_of(st.sampled_from(["user", "system", "assistant", "tool"]), json_values),
                          "content": json_values, "images": json_values, "tool_calls": json_values}
        ),
        max_size=5,
    ),
    # Huge arrays: a long conversation forwarded whole.
    st.integers(1_000, 20_000).map(lambda n: [{"role": "user", "content": "hello there"}] * n),
    json_values,
)  # fmt: skip


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": model_names,
        "name": model_names,
        "source": model_names,
        "destination": model_names,
        "from": model_names,
        "prompt": json_values,
        "input": json_values,
        "messages": messages,
        "stream": json_values,
        "options": st.one_of(st.dictionaries(st.sampled_from(["num_predict", "temperature", "seed"]), json_values),
                             json_values),
        "format": json_values,
        "keep_alive": json_values,
        "node": json_values,
        "files": json_values,
        "max_tokens": json_values,
        "stream_options": json_values,
        # Deep nesting within what a JSON parser is expected to handle.
        "tools": st.integers(1, 400).map(nested),
    },
).flatmap(
    # Unknown fields next to the known ones.
    lambda body: st.dictionaries(st.text(max_size=12), json_values, max_size=3).map(lambda extra: {**extra, **body})
)  # fmt: skip

valid_json = bodies.map(lambda body: json.dumps(body).encode())
raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=100).map(str.encode),
    # Almost JSON: a valid body cut short or with a byte flipped.
    st.tuples(valid_json, st.integers(0, 50)).map(lambda pair: pair[0][: max(0, len(pair[0]) - pair[1] - 1)]),
    # Non-UTF-8 bytes inside an otherwise valid JSON string.
    st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80abc"]).map(
        lambda bad: b'{"model": "llama3", "prompt": "' + bad + b'"}'
    ),
    # JSON that is not an object.
    st.one_of(scalars, st.lists(json_values, max_size=3)).map(lambda v: json.dumps(v).encode()),
    st.just(b""),
    st.just(b"   \n"),
    # UTF-16 and UTF-32 encoded JSON (json.loads accepts them; a node may not).
    st.sampled_from(["utf-16", "utf-32"]).map(lambda codec: '{"model": "llama3", "prompt": "x"}'.encode(codec)),
)  # fmt: skip


# -- the proxy under test ----------------------------------------------------------------------


@pytest.fixture
def fuzz_target(
    make_proxy: Callable[..., RunningProxy], fake_nodes: Callable[..., FakeOllama]
) -> tuple[RunningProxy, FakeOllama]:
    node = fake_nodes(MODEL, "nomic-embed-text:latest", name="fuzz-node")
    node.max_recorded = 20  # the fuzzer sends thousands of requests; keep memory flat
    return make_proxy(node), node


def restore(proxy: RunningProxy, node: FakeOllama) -> None:
    """Undo what an example did to the node's models (pull, create, copy, delete), so later
    examples still route to MODEL and every example starts from the same state."""
    names = {entry["name"] for entry in node._model_entries()}
    if names != {MODEL, "nomic-embed-text:latest"}:
        with node._cond:
            node.models.clear()
            node.loaded.clear()
        node.add_model(MODEL)
        node.add_model("nomic-embed-text:latest")
        proxy.refresh()
    elif not proxy.manager.active_holders(MODEL):
        proxy.refresh()


def check_answer(route: str, response: requests.Response) -> None:
    status = response.status_code
    assert status < 500, f"{route} answered {status}: {response.text[:500]}"
    if status < 400:
        return
    assert response.headers.get("Content-Type", "").startswith("application/json"), response.headers
    body = response.json()
    if route.startswith("/v1/"):
        assert set(body) == {"error"}, body
        error = body["error"]
        assert isinstance(error, dict) and isinstance(error.get("message"), str) and error["message"], body
        assert {"type", "param", "code"} <= set(error), body
    else:
        assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body


def send(proxy: RunningProxy, route: str, data: bytes) -> requests.Response:
    # A fresh connection per example: a body the proxy refused unread cannot spoil the next one.
    return requests.request(
        ROUTES[route],
        proxy.url + route,
        data=data,
        headers={"Content-Type": "application/json", "Connection": "close"},
        timeout=30,
    )


@pytest.mark.timeout(300)
@pytest.mark.parametrize("route", list(ROUTES))
def test_json_bodies_never_get_a_proxy_500(fuzz_target: tuple[RunningProxy, FakeOllama], route: str) -> None:
    proxy, node = fuzz_target

    @FUZZ
    @given(body=bodies)
    def run(body: dict[str, Any]) -> None:
        check_answer(route, send(proxy, route, json.dumps(body).encode()))
        restore(proxy, node)

    run()
    assert proxy.active_total() == 0
    # The proxy still serves after everything it was sent.
    response = requests.post(proxy.url + "/api/generate", json={"model": "llama3", "prompt": "x", "stream": False})
    assert response.status_code == 200, response.text


@pytest.mark.timeout(300)
@pytest.mark.parametrize("route", list(ROUTES))
def test_raw_bodies_never_get_a_proxy_500(fuzz_target: tuple[RunningProxy, FakeOllama], route: str) -> None:
    proxy, node = fuzz_target

    @FUZZ
    @given(data=raw_bodies)
    def run(data: bytes) -> None:
        check_answer(route, send(proxy, route, data))
        restore(proxy, node)

    run()
    assert proxy.active_total() == 0


# -- cases the fuzzer found, pinned ---------------------------------------------------------------

DEEP = b'{"model": "llama3", "prompt": "x", "tools": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


@pytest.mark.parametrize("route", ["/api/generate", "/v1/chat/completions", "/api/pull"])
def test_json_nested_too_deep_is_400(fuzz_target: tuple[RunningProxy, FakeOllama], route: str) -> None:
    """json.loads raises RecursionError (not ValueError) past the recursion limit: this was a 500."""
    proxy, _ = fuzz_target
    response = send(proxy, route, DEEP)
    check_answer(route, response)
    assert response.status_code == 400
    message = response.json()["error"]
    assert "nested too deeply" in (message["message"] if route.startswith("/v1/") else message)


def test_management_api_json_nested_too_deep_is_400(fuzz_target: tuple[RunningProxy, FakeOllama]) -> None:
    proxy, _ = fuzz_target
    deep = b'{"username": ' + b"[" * 100_000 + b"]" * 100_000 + b', "password": "x"}'
    response = requests.post(
        proxy.url + "/api/account/login", data=deep, headers={"Content-Type": "application/json"}, timeout=30
    )
    assert response.status_code == 400, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    assert "nested too deeply" in response.json()["detail"]


@pytest.mark.parametrize(
    "data",
    [
        b'{"model": "llama3", "prompt": "\xed\xa0\x80", "stream": false}',
        '{"model": "llama3", "prompt": "x", "stream": false}'.encode("utf-16"),
    ],
    ids=["encoded-surrogate", "utf-16"],
)
def test_non_utf8_body_is_400(fuzz_target: tuple[RunningProxy, FakeOllama], data: bytes) -> None:
    proxy, _ = fuzz_target
    response = send(proxy, "/api/generate", data)
    check_answer("/api/generate", response)
    assert response.status_code == 400 and "invalid JSON body" in response.json()["error"]


@pytest.mark.parametrize("route", ["/api/create", "/api/pull"])
def test_create_and_pull_refused_by_every_node_keep_the_nodes_4xx(
    fuzz_target: tuple[RunningProxy, FakeOllama], route: str
) -> None:
    proxy, _ = fuzz_target
    # create: neither `from` nor `files`; pull: a body Ollama cannot parse (UTF-16 JSON).
    data = (
        b'{"model": "mine", "stream": false}'
        if route == "/api/create"
        else '{"model": "llama3", "stream": false}'.encode("utf-16")
    )
    response = send(proxy, route, data)
    check_answer(route, response)
