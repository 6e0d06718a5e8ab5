"""Which URLs a live stream may read: a URL source is a request the server makes, so it is
refused unless its host is allowed (`STTM_STREAM_ALLOW`: hostnames and CIDRs) and its scheme
is one FFmpeg reads a stream with (rtsp, rtsps, http, https; HLS over http(s)). FFmpeg itself
is held to the same protocols (`media.stream.PROTOCOLS`: never `file:`, `concat:`, `pipe:`).
HTTP redirects are followed here, each hop re-checked, and FFmpeg gets the final URL."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import httpx

from media.stream import URL_SCHEMES
from service.errors import ApiError

MAX_REDIRECTS = 5
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class AllowList:
    """Parsed `STTM_STREAM_ALLOW`: `127.0.0.1,cameras.example.internal,10.0.0.0/8`."""

    names: frozenset[str] = frozenset()
    networks: tuple[Network, ...] = field(default_factory=tuple)

    @classmethod
    def parse(cls, text: str) -> AllowList:
        names, networks = set(), []
        for item in filter(None, (part.strip().lower() for part in text.split(","))):
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                names.add(item.rstrip("."))
        return cls(frozenset(names), tuple(networks))

    def allows(self, host: str, addresses: list[str]) -> bool:
        """A host named in the list, or one whose every address lies in an allowed network."""
        if host.lower().rstrip(".") in self.names:
            return True
        ips = [ipaddress.ip_address(a.split("%")[0]) for a in addresses]
        return bool(ips) and all(any(ip in net for net in self.networks) for ip in ips)


def _addresses(host: str) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(host, None)})
    except OSError:
        return []


def check_url(url: str, allow: AllowList) -> None:
    """403 unless the scheme is a stream protocol and the host is allowed; 422 if malformed."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in URL_SCHEMES:
        raise ApiError(403, "forbidden_url", f"only {', '.join(URL_SCHEMES)} URLs are read (not {scheme or url!r}:)")
    try:
        host = parts.hostname
    except ValueError:
        host = None
    if not host:
        raise ApiError(422, "invalid_request", "the URL has no host")
    if not allow.allows(host, _addresses(host)):
        raise ApiError(403, "forbidden_url", f"host {host!r} is not in STTM_STREAM_ALLOW")


def resolve(url: str, allow: AllowList, timeout_s: float) -> str:
    """Check `url`, and for http(s) follow its redirects, checking every hop; the final URL.
    Blocking (DNS, HTTP): call it off the event loop."""
    check_url(url, allow)
    if not url.lower().startswith("http"):
        return url
    with httpx.Client(follow_redirects=False, timeout=timeout_s) as client:
        for _ in range(MAX_REDIRECTS):
            try:
                with client.stream("GET", url) as response:
                    location = response.headers.get("location") if response.is_redirect else None
            except httpx.HTTPError as err:
                raise ApiError(422, "unreachable", f"cannot reach the source ({type(err).__name__})") from None
            if location is None:
                return url
            url = urljoin(url, location)
            check_url(url, allow)
    raise ApiError(422, "unreachable", f"more than {MAX_REDIRECTS} redirects")
