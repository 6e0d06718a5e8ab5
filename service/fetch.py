"""Every HTTP(S) request a live stream makes: checked, pinned, bounded.

`Fetcher.get(url, max_bytes)` checks the URL (`service.sources.check`: one look-up, every
address allowed), connects to the checked address itself — the URL's host is replaced by the
address; the `Host` header and TLS's server name (SNI, and the certificate check) keep the
name — and follows redirects by hand, each hop checked the same way. Nothing is sent to a
refused URL. Proxies from the environment are ignored (they would connect elsewhere).
"""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import Iterator
from urllib.parse import urljoin

import httpx

from media.errors import VideoError
from service.sources import AllowList, Resolver, check, system_resolver

MAX_REDIRECTS = 5
CHUNK = 64 << 10


class Fetcher:
    """One stream's HTTP client; every wait bounded by `timeout_s`, a whole body by `4 * timeout_s`."""

    def __init__(
        self,
        allow: AllowList,
        timeout_s: float,
        resolver: Resolver = system_resolver,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.allow, self.timeout_s, self.resolver, self.verify = allow, timeout_s, resolver, verify
        self.client: httpx.Client | None = None
        self.client_host: str | None = None
        self.requests = 0  # sent, all hosts together

    def close(self) -> None:
        if self.client is not None:
            self.client.close()

    def _client_for(self, host: str) -> httpx.Client:
        """A client whose kept-alive connections served `host` only: httpx pools by address, and
        a connection set up (and its certificate checked) for one name must not carry another's
        requests."""
        if host != self.client_host:
            self.close()
            self.client = httpx.Client(
                follow_redirects=False, timeout=self.timeout_s, trust_env=False, verify=self.verify
            )
            self.client_host = host
        return self.client

    @contextlib.contextmanager
    def open(self, url: str) -> Iterator[tuple[str, httpx.Response]]:
        """`(final URL, response)` of a GET, its body not read yet. Raises `RefusedError` (a URL or
        hop not allowed) or VideoError `unreachable` (network, HTTP error, too many redirects)."""
        for _ in range(MAX_REDIRECTS + 1):
            target = check(url, self.allow, self.resolver)
            extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
            client = self._client_for(target.host)
            request = client.build_request(
                "GET", target.pinned_url, headers={"Host": target.host_header}, extensions=extensions
            )
            self.requests += 1
            try:
                response = client.send(request, stream=True)
            except httpx.HTTPError as err:
                raise VideoError("unreachable", f"cannot reach {target.host} ({type(err).__name__}: {err})") from None
            with contextlib.closing(response):
                if response.is_redirect and "location" in response.headers:
                    url = urljoin(url, response.headers["location"])
                    continue
                if response.status_code >= 400:
                    raise VideoError("unreachable", f"HTTP {response.status_code} from {target.host}")
                yield url, response
                return
        raise VideoError("unreachable", f"more than {MAX_REDIRECTS} redirects")

    def chunks(self, response: httpx.Response, max_bytes: int, whole: bool = True) -> Iterator[bytes]:
        """The body, at most `max_bytes`; with `whole`, within `4 * timeout_s` (a playlist, a
        segment: a server dripping bytes ends too), else each read within `timeout_s` (a file)."""
        deadline, size = time.monotonic() + (4 * self.timeout_s if whole else float("inf")), 0
        try:
            for chunk in response.iter_bytes(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise VideoError("too_large", f"a response over {max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise VideoError("timeout", f"a response took over {4 * self.timeout_s:.0f} s")
                yield chunk
        except httpx.HTTPError as err:
            raise VideoError("unreachable", f"the source dropped ({type(err).__name__})") from None

    def get(self, url: str, max_bytes: int) -> tuple[str, bytes]:
        """`(final URL, body)`: `open` and the whole body."""
        with self.open(url) as (final, response):
            return final, b"".join(self.chunks(response, max_bytes))
