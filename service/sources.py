"""Which addresses a live stream may connect to (`STTM_STREAM_ALLOW`), decided once per fetch.

A URL source is a request the server makes, so every connection a stream opens — its first
URL, each redirect, every URL a playlist names — goes through `check`: the scheme must be a
stream protocol, the host is resolved **once**, every address it resolves to must be allowed,
and the caller connects to the checked address (`Target.address`), never to the name again (a
name that answers an allowed address first and an internal one later gains nothing).

The rule (`AllowList.refusal`), per address:
- an address inside a listed network (`127.0.0.1`, `10.20.0.0/16`) is allowed;
- a listed name (`cdn.example.com`) is allowed when its addresses are public; an internal one
  (loopback, private, link-local, cloud metadata, shared, multicast, reserved) must be listed
  itself, so a listed name cannot be pointed at the server's own network;
- anything else is refused. An empty list allows nothing.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from media.errors import VideoError
from media.url import URL_SCHEMES
from service.errors import ApiError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]  # (host, port) -> its addresses, in the resolver's order
DEFAULT_PORTS = {"http": 80, "https": 443, "rtsp": 554, "rtsps": 322}
HOST_NAME = re.compile(r"(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*")
# a control character: no URL holds one unencoded (RFC 3986), and HTTP clients refuse it only when they send (the
# stream then ended `internal`, or retried for STTM_STREAM_RETRY_S); CR LF would split a request. A space passes:
# HTTP clients encode it, and a playlist may name a segment so
UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
METADATA = tuple(ipaddress.ip_network(n) for n in ("169.254.169.254/32", "fd00:ec2::254/128", "100.100.100.200/32"))


class RefusedError(VideoError):
    """A URL the policy refuses: nothing was sent to it. `str()` names the host and the rule."""

    def __init__(self, host: str, rule: str, what: str = "host") -> None:
        super().__init__("forbidden_url", f"{what} {host} refused: {rule}")
        self.host, self.rule = host, rule


@dataclass(frozen=True)
class Target:
    """A checked URL and the one address to connect to."""

    url: str
    scheme: str
    host: str  # as the URL names it (lower case, no brackets)
    port: int
    address: str

    @property
    def pinned_url(self) -> str:
        """`url` with its host replaced by the checked address (user info and port kept)."""
        parts = urlsplit(self.url)
        ip = f"[{self.address}]" if ":" in self.address else self.address
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo + '@' if userinfo else ''}{ip}:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS.get(self.scheme) else f"{host}:{self.port}"


def internal_kind(ip: Address) -> str | None:
    """What makes an address internal ("loopback", "private", ...), or None for a public one."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in net for net in METADATA if net.version == ip.version):
        return "cloud metadata"
    for kind in ("unspecified", "loopback", "link_local", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if ip.is_global else "non-public"


@dataclass(frozen=True)
class AllowList:
    """Parsed `STTM_STREAM_ALLOW`: `127.0.0.1,cameras.example.com,10.20.0.0/16`."""

    names: frozenset[str] = frozenset()
    networks: tuple[Network, ...] = field(default_factory=tuple)

    @classmethod
    def parse(cls, text: str) -> AllowList:
        """ValueError in one line for an item that is neither an address, a network nor a host
        name (a URL, a port, a wildcard, a mistyped network: each would never match)."""
        names, networks = set(), []
        for item in filter(None, (part.strip().lower() for part in text.split(","))):
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                if not HOST_NAME.fullmatch(item.rstrip(".")):
                    raise ValueError(
                        f"{item!r} is neither an address, a network (10.20.0.0/16) nor a host name (cam.example.com)"
                    ) from None
                names.add(item.rstrip("."))
        return cls(frozenset(names), tuple(networks))

    def refusal(self, host: str, address: str) -> str | None:
        """Why `host` at `address` may not be connected to (the rule, in words), or None."""
        ip = ipaddress.ip_address(address.split("%")[0])
        if any(ip in net for net in self.networks):
            return None
        kind = internal_kind(ip)
        where = f"{address}, a {kind} address," if kind else address
        if host.rstrip(".") not in self.names:
            return (
                f"{where} is not in STTM_STREAM_ALLOW"
                if host == address
                else (f"neither {host} nor {where} is in STTM_STREAM_ALLOW")
            )
        if kind:
            return (
                f"it resolves to {where} which STTM_STREAM_ALLOW does not list (a listed name reaches public "
                "addresses only)"
            )
        return None


def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses from the system resolver (one look-up); [] when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return list(dict.fromkeys(info[4][0] for info in infos))


def check(url: str, allow: AllowList, resolver: Resolver = system_resolver) -> Target:
    """Resolve the URL's host once and check every address. Raises `RefusedError` (the scheme or
    the host is not allowed) or VideoError `bad_url` / `unreachable` (malformed, no address)."""
    if UNSAFE.search(url):
        raise VideoError("bad_url", f"malformed URL {url[:200]!r}: a control character (percent-encode it)")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        if parts.port == 0:  # no server listens there; `port or default` read it as the default port
            raise ValueError
        host, port = (parts.hostname or "").rstrip("."), parts.port or DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        raise VideoError("bad_url", f"malformed URL {url[:200]!r}") from None
    if scheme not in URL_SCHEMES:
        rule = f"only {', '.join(URL_SCHEMES)} URLs are read, not {scheme or url[:100]!r}"
        raise RefusedError(host, rule) if host else RefusedError(url[:100], rule, what="URL")
    if not host:
        raise VideoError("bad_url", f"the URL {url[:200]!r} has no host")
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        addresses = resolver(host, port)
    if not addresses:
        raise VideoError("unreachable", f"host {host} does not resolve")
    for address in addresses:
        if rule := allow.refusal(host, address):
            raise RefusedError(host, rule)
    return Target(url, scheme, host, port, addresses[0])


def check_request(url: str, allow: AllowList, resolver: Resolver = system_resolver) -> Target:
    """`check` for `POST /v1/streams`: 403 `forbidden_url`, 422 when malformed or unresolvable.
    Blocking (DNS): call it off the event loop."""
    try:
        return check(url, allow, resolver)
    except RefusedError as err:
        raise ApiError(403, "forbidden_url", str(err)) from None
    except VideoError as err:
        raise ApiError(422, "invalid_request" if err.code == "bad_url" else err.code, str(err)) from None
