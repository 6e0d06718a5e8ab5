"""The allow rule of `STTM_STREAM_ALLOW`, one look-up per check, and the pinned URL."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.errors import VideoError
from service.errors import ApiError
from service.sources import AllowList, RefusedError, check, check_request, internal_kind


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.2", "loopback"), ("10.1.2.3", "private"), ("192.168.0.9", "private"), ("172.16.5.5", "private"),
        ("169.254.169.254", "cloud metadata"), ("169.254.1.1", "link-local"), ("100.100.100.200", "cloud metadata"),
        ("100.64.0.1", "non-public"), ("0.0.0.0", "unspecified"), ("224.0.0.1", "multicast"), ("::1", "loopback"),
        ("fe80::1", "link-local"), ("fd00:ec2::254", "cloud metadata"), ("fc00::1", "private"),
        ("::ffff:127.0.0.1", "loopback"), ("::ffff:169.254.169.254", "cloud metadata"),
        ("93.184.215.14", None), ("2606:4700::1111", None),
    ],
)  # fmt: skip
def test_internal_addresses_are_named(address, kind):
    import ipaddress

    assert internal_kind(ipaddress.ip_address(address)) == kind


def _stub(answers: dict[str, list[str]], calls: list | None = None):
    def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(host)
        return answers.get(host, [])

    return resolve


def test_listed_networks_and_names():
    allow = AllowList.parse(" 127.0.0.1 , cdn.example.com, 10.20.0.0/16,Cameras.Example.Internal. ")
    resolve = _stub({"cdn.example.com": ["93.184.215.14"], "cam.lan": ["10.20.3.4"], "evil.example": ["93.1.2.3"],
                     "cameras.example.internal": ["10.99.0.1"]})  # fmt: skip
    assert check("http://127.0.0.1:8080/a.m3u8", allow, resolve).address == "127.0.0.1"
    assert check("rtsp://cam.lan/live", allow, resolve).address == "10.20.3.4"  # by its listed network
    assert check("https://cdn.example.com/x.m3u8", allow, resolve).address == "93.184.215.14"  # by name, public
    for url, words in [
        ("http://127.0.0.2/", "127.0.0.2, a loopback address, is not in STTM_STREAM_ALLOW"),
        ("http://evil.example/", "neither evil.example nor 93.1.2.3 is in STTM_STREAM_ALLOW"),
        # a listed name reaches public addresses only: its internal answer must be listed itself
        ("http://cameras.example.internal/", "10.99.0.1, a private address,"),
        ("http://cdn.example.com@169.254.169.254/", "cloud metadata"),
    ]:
        with pytest.raises(RefusedError) as err:
            check(url, allow, resolve)
        assert words in str(err.value) and err.value.code == "forbidden_url", str(err.value)
    with pytest.raises(RefusedError):  # a name that answers one allowed and one internal address
        mixed = _stub({"mixed.example": ["93.1.2.3", "10.0.0.1"]})
        check("http://mixed.example/", AllowList.parse("mixed.example"), mixed)
    assert AllowList.parse("").refusal("127.0.0.1", "127.0.0.1")  # empty: nothing is allowed


@pytest.mark.parametrize("item", ["10.0.0.0/33", "http://cam.example.com", "*.example.com", "cam.example.com:554",
                                  "[::1]", "a b", "cam..example.com"])  # fmt: skip
def test_an_allow_item_that_would_never_match_stops_the_start(item):
    """Each was kept as a 'name' no host is ever called, so the camera it meant stayed refused."""
    with pytest.raises(ValueError, match=r"is neither an address, a network \(10.20.0.0/16\) nor a host name"):
        AllowList.parse(f"127.0.0.1,{item}")
    from pydantic import ValidationError

    from service.settings import Settings

    with pytest.raises(ValidationError, match="stream_allow"):
        Settings(stream_allow=item)
    assert AllowList.parse("cam-1.example.com,_rtsp.lan,10.20.0.0/16,::1,fd00::/8").names == {
        "cam-1.example.com",
        "_rtsp.lan",
    }


def test_a_check_looks_the_name_up_once_and_pins_the_address():
    calls = []
    resolve = _stub({"cam.example": ["127.0.0.1", "127.0.0.3"]}, calls)
    target = check("rtsp://user:pw@cam.example:8554/live?x=1", AllowList.parse("127.0.0.0/8"), resolve)
    assert calls == ["cam.example"]
    assert target.pinned_url == "rtsp://user:pw@127.0.0.1:8554/live?x=1" and target.host_header == "cam.example:8554"
    v6 = check("https://[::1]/x.m3u8", AllowList.parse("::1"), resolve)
    assert v6.pinned_url == "https://[::1]:443/x.m3u8" and v6.host_header == "[::1]" and calls == ["cam.example"]


@pytest.mark.parametrize(
    ("url", "status"),
    [("file:///etc/passwd", 403), ("concat:http://127.0.0.1/a.mp4|http://127.0.0.1/b.mp4", 403), ("pipe:0", 403),
     ("gopher://127.0.0.1/", 403), ("http:///clip.mp4", 422), ("http://127.0.0.1:99999/", 422),
     ("http://nowhere.invalid/", 422), ("http://10.1.2.3/clip.mp4", 403),
     # these were 201, then a stream that ended 'internal: InvalidURL' or retried for STTM_STREAM_RETRY_S
     ("http://127.0.0.1/?\x00", 422), ("http://127.0.0.1/x\r\nX-Injected: y", 422), ("http://127.0.0.1/a\x7f", 422),
     ("http://127.0.0.1\t/", 422), ("http://127.0.0.1:0/x", 422)],
)  # fmt: skip
def test_the_api_check_answers_403_or_422(url, status):
    with pytest.raises(ApiError) as err:
        check_request(url, AllowList.parse("127.0.0.1"), _stub({}))
    assert err.value.status == status, err.value.message


def test_a_refused_scheme_names_the_url_or_its_host():
    allow, rule = AllowList.parse("127.0.0.1"), "refused: only rtsp, rtsps, http, https URLs are read, not"
    for url, words in [("file:///etc/passwd", f"URL file:///etc/passwd {rule} 'file'"),
                       ("gopher://127.0.0.1/", f"host 127.0.0.1 {rule} 'gopher'")]:  # fmt: skip
        with pytest.raises(RefusedError) as err:
            check(url, allow, _stub({}))
        assert str(err.value) == words


def test_unresolvable_and_malformed_are_not_refusals():
    with pytest.raises(VideoError) as err:
        check("http://nowhere.invalid/", AllowList.parse("nowhere.invalid"), _stub({}))
    assert err.value.code == "unreachable" and not isinstance(err.value, RefusedError)
    for url in ("http://127.0.0.1/a\nb", "http://127.0.0.1:0/"):  # a redirect or a playlist line too: the same check
        with pytest.raises(VideoError) as err:
            check(url, AllowList.parse("127.0.0.1"), _stub({}))
        assert err.value.code == "bad_url" and not isinstance(err.value, RefusedError)
    for url in ("http://127.0.0.1/a%20b?q=%0A", "http://127.0.0.1/a b.ts"):  # encoded, or a space HTTP clients encode
        assert check(url, AllowList.parse("127.0.0.1"), _stub({})).port == 80


@settings(max_examples=300, deadline=None)
@given(st.ip_addresses())
def test_any_address_passes_only_inside_a_listed_network_or_public_behind_a_listed_name(ip):
    """With `10.20.0.0/16` and the name `cam.example` listed: an address passes as itself only
    inside 10.20/16, and behind the listed name only when it is public or inside 10.20/16."""
    import ipaddress

    allow = AllowList.parse("10.20.0.0/16,cam.example")
    inside = ip in ipaddress.ip_network("10.20.0.0/16") if ip.version == 4 else False
    resolve = _stub({"cam.example": [str(ip)], "other.example": [str(ip)]})
    literal = f"[{ip}]" if ip.version == 6 else str(ip)
    for url, allowed in [(f"http://{literal}/", inside),
                         ("http://cam.example/", inside or internal_kind(ip) is None),
                         ("http://other.example/", inside)]:  # fmt: skip
        try:
            assert check(url, allow, resolve).address == str(ip) and allowed, url
        except RefusedError:
            assert not allowed, url
