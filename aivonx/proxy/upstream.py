"""Talking to nodes: one pooled `requests.Session` per process, and header hygiene."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.cookies import RequestsCookieJar
from requests.sessions import preferred_clock
from requests.structures import CaseInsensitiveDict
from requests.utils import check_header_validity, get_auth_from_url, to_native_string

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


# urllib3 keeps one connection pool per node in an LRU of `pool_connections` pools. With more
# nodes than that, taking turns over the fleet evicts a pool (closing its connections) on
# nearly every request: each one then pays a TCP handshake (300 nodes behind a limit of 64
# halved the throughput). Pools are created lazily, so a high limit costs nothing unused.
POOL_CONNECTIONS = 4096


@functools.lru_cache(maxsize=1024)
def _prepared_url(url: str) -> str | None:
    """requests' own URL preparation (IDNA, quoting, validation), done once per URL.

    None when the URL carries credentials, which requests turns into an Authorization
    header: those requests take requests' general path.
    """
    if any(get_auth_from_url(url)):
        return None
    prepared = requests.PreparedRequest()
    prepared.prepare_url(url, None)
    return prepared.url


def prepare(
    method: str, url: str, headers: Mapping[str, str] | None, body: bytes | Any | None, params: Any = None
) -> requests.PreparedRequest:
    """The same PreparedRequest as `PreparedRequest.prepare`, built faster for the hot path.

    A proxied request has a non-empty bytes body and no query parameters; for it the steps
    of `prepare` that cannot change anything are skipped (an empty cookie jar adds no Cookie
    header, a bytes body gets only its Content-Length, a URL without credentials no auth) and
    the URL is prepared once. Anything else (files, empty bodies, params) goes through
    `prepare` itself.
    """
    prepared = requests.PreparedRequest()
    url_ready = _prepared_url(url) if params is None and isinstance(body, bytes) and body else None
    if url_ready is None:
        prepared.prepare(method=method, url=url, headers=headers, data=body, params=params)
        return prepared
    prepared.method = to_native_string(method.upper())
    prepared.url = url_ready
    prepared.headers = CaseInsensitiveDict()
    if headers:
        for header in headers.items():
            check_header_validity(header)  # as prepare_headers: no CR/LF smuggled to the node
            prepared.headers[to_native_string(header[0])] = header[1]
    prepared._cookies = RequestsCookieJar()
    prepared.headers["Content-Length"] = str(len(body))
    prepared.body = body
    return prepared


class Upstream:
    """HTTP client for nodes. Connections are pooled per node and reused across requests."""

    def __init__(self, pool_maxsize: int = 256, pool_connections: int = POOL_CONNECTIONS) -> None:
        self.session = requests.Session()
        # pool_maxsize is per node: it must cover the concurrent streams to one node, or each
        # extra stream pays a new TCP handshake. Retries are ours (on another node), not urllib3's.
        adapter = HTTPAdapter(pool_connections=pool_connections, pool_maxsize=pool_maxsize, max_retries=0)
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
        prepared = prepare(method, base_url + path, headers, body, params)
        return self._send(prepared, timeout)

    def _send(self, prepared: requests.PreparedRequest, timeout: tuple[float, float]) -> requests.Response:
        """`Session.send(prepared, stream=True, allow_redirects=False)` without what cannot
        apply here (about 40 us): environment proxies (trust_env is off), response hooks
        (none are set), keeping cookies (nodes set none, and no request sends the session's)
        and preparing the next request of a redirect (never followed)."""
        session = self.session
        adapter = session.get_adapter(url=prepared.url)
        start = preferred_clock()
        response = adapter.send(
            prepared, stream=True, timeout=timeout, verify=session.verify, cert=session.cert, proxies=session.proxies
        )
        response.elapsed = timedelta(seconds=preferred_clock() - start)
        return response

    def get_json(self, base_url: str, path: str, timeout: float) -> Any:
        response = self.session.get(base_url + path, timeout=timeout)
        response.raise_for_status()
        return response.json()

    def close(self) -> None:
        self.session.close()
