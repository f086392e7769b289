"""Talking to nodes: one pooled `requests.Session` per process, and header hygiene."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter

# Headers that describe one hop, or the body as the node encoded it. requests has already
# undone the node's encoding, and the server in front of us frames the body itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "content-encoding",
        "date",
        "server",
    }
)

# What a client may tell a node. Everything else (cookies, Host, the client's own
# Authorization unless an operator allows it) stays at the proxy.
FORWARDED_REQUEST_HEADERS = ("Content-Type", "Accept", "User-Agent", "X-Request-ID")


def response_headers(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in headers.items() if name.lower() not in HOP_BY_HOP]


def request_headers(headers: Mapping[str, str], *, forward_authorization: bool) -> dict[str, str]:
    names: Iterable[str] = FORWARDED_REQUEST_HEADERS
    if forward_authorization:
        names = (*FORWARDED_REQUEST_HEADERS, "Authorization")
    return {name: value for name in names if (value := headers.get(name)) is not None}


class Upstream:
    """HTTP client for nodes. Connections are pooled per node and reused across requests."""

    def __init__(self, pool_maxsize: int = 256) -> None:
        self.session = requests.Session()
        # pool_maxsize is per node: it must cover the concurrent streams to one node, or each
        # extra stream pays a new TCP handshake. Retries are ours (on another node), not urllib3's.
        adapter = HTTPAdapter(pool_connections=64, pool_maxsize=pool_maxsize, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        # Environment proxies (HTTP_PROXY) must not capture node traffic.
        self.session.trust_env = False

    def send(
        self,
        base_url: str,
        method: str,
        path: str,
        *,
        body: bytes | Any | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: tuple[float, float],
        params: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Start a request; the body is read by the caller (`stream=True`).

        Prepares the request itself instead of `Session.request`, which would merge session
        cookies, auth and environment settings we never use (about 0.15 ms a request).
        """
        prepared = requests.PreparedRequest()
        prepared.prepare(method=method, url=base_url + path, headers=headers, data=body, params=params)
        return self.session.send(prepared, timeout=timeout, stream=True, allow_redirects=False)

    def get_json(self, base_url: str, path: str, timeout: float) -> Any:
        response = self.session.get(base_url + path, timeout=timeout)
        response.raise_for_status()
        return response.json()

    def close(self) -> None:
        self.session.close()
