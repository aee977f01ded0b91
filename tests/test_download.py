"""daemon.download.fetch against a real HTTP origin on loopback that misbehaves in every way we bound."""

from __future__ import annotations

import threading
import time
from typing import Iterator

import pytest

from daemon.address_policy import DEFAULT_DENY, AddressPolicy, HostRules, parse_rules
from daemon.config import DownloadLimits
from daemon.jobs.download import fetch
from daemon.errors import (ADDRESS_NOT_ALLOWED, AUDIO_TOO_LARGE, DOWNLOAD_FAILED, DOWNLOAD_TIMED_OUT,
                           INVALID_PARAMETER, ApiError)
from bench.daemon_proc import OriginHandler
from daemon_support import free_port, loopback_server

DEFAULT_POLICY = AddressPolicy(allow=HostRules(), deny=parse_rules("DOWNLOAD_DENY", DEFAULT_DENY))
LIMITS = DownloadLimits(connect_timeout=2.0, read_timeout=0.5, max_bytes=100_000, max_redirects=3,
                        addresses=DEFAULT_POLICY)
FILE = bytes(range(256)) * 100  # 25,600 bytes


class _Origin(OriginHandler):
    release: threading.Event

    def route(self) -> None:
        path = self.path
        if path == "/file":
            self.send_body(200, FILE)
        elif path in ("/404", "/500"):
            self.send_body(int(path[1:]), b"error page")
        elif path.startswith("/hop/"):
            left = int(path.rsplit("/", 1)[1])
            self.redirect("/file" if left == 0 else f"/hop/{left - 1}")
        elif path.startswith("/to/"):
            self.redirect("http://" + path[len("/to/"):])
        elif path == "/loop":
            self.redirect("/loop")
        elif path == "/stall":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.wfile.flush()
            self.release.wait(10)
        elif path == "/declared-huge":
            self.send_response(200)
            self.send_header("Content-Length", str(10 * LIMITS.max_bytes))
            self.end_headers()
        elif path == "/endless":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                for _ in range(100):
                    self.wfile.write(b"y" * 65536)
            except OSError:
                pass
            self.close_connection = True


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    release = threading.Event()
    with loopback_server(type("Origin", (_Origin,), {"release": release})) as url:
        try:
            yield url
        finally:
            release.set()


def _error(url: str, limits: DownloadLimits = LIMITS) -> ApiError:
    with pytest.raises(ApiError) as caught:
        fetch(url, limits)
    assert url in caught.value.description, "every download error names the URL"
    return caught.value


def test_fetches_a_file(origin):
    assert fetch(f"{origin}/file", LIMITS) == FILE


def test_follows_redirects_up_to_the_limit(origin):
    assert fetch(f"{origin}/hop/{LIMITS.max_redirects - 1}", LIMITS) == FILE


@pytest.mark.parametrize("status", [404, 500])
def test_http_error_from_the_origin(origin, status):
    error = _error(f"{origin}/{status}")
    assert (error.code, error.status) == (DOWNLOAD_FAILED, 502)
    assert f"HTTP {status}" in error.description


def test_redirect_chain_longer_than_the_limit(origin):
    error = _error(f"{origin}/hop/{LIMITS.max_redirects + 2}")
    assert error.code == DOWNLOAD_FAILED and "redirects" in error.description


def test_redirect_loop(origin):
    error = _error(f"{origin}/loop")
    assert error.code == DOWNLOAD_FAILED and "redirects" in error.description


def test_origin_that_stalls_after_the_headers(origin):
    started = time.monotonic()
    error = _error(f"{origin}/stall")
    assert (error.code, error.status) == (DOWNLOAD_TIMED_OUT, 504)
    assert "DOWNLOAD_READ_TIMEOUT" in error.description
    assert time.monotonic() - started < 5


def test_declared_length_over_the_limit(origin):
    error = _error(f"{origin}/declared-huge")
    assert (error.code, error.status) == (AUDIO_TOO_LARGE, 413)
    assert "DOWNLOAD_MAX_BYTES" in error.description


def test_body_over_the_limit_without_a_length(origin):
    error = _error(f"{origin}/endless")
    assert (error.code, error.status) == (AUDIO_TOO_LARGE, 413)


def test_refused_port():
    error = _error(f"http://127.0.0.1:{free_port()}/a.wav")
    assert error.code == DOWNLOAD_FAILED and "refused" in error.description


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/a.wav", "file:///etc/passwd", "127.0.0.1/a.wav"])
def test_only_http_and_https(url):
    error = _error(url)
    assert (error.code, error.status) == (INVALID_PARAMETER, 400)
    assert "http or https" in error.description


def test_whole_transfer_deadline(origin):
    with pytest.raises(ApiError) as caught:
        fetch(f"{origin}/file", LIMITS, deadline=time.monotonic() - 1)
    assert caught.value.code == DOWNLOAD_TIMED_OUT


@pytest.mark.parametrize("host", ["169.254.169.254", "169.254.1.1", "[fd00:ec2::254]", "[fe80::1]",
                                  "[::ffff:169.254.169.254]"])
def test_link_local_and_cloud_metadata_are_refused_by_default(host):
    started = time.monotonic()
    error = _error(f"http://{host}/latest/meta-data/")
    assert (error.code, error.status) == (ADDRESS_NOT_ALLOWED, 403)
    assert "DOWNLOAD_DENY" in error.description
    assert time.monotonic() - started < 1, "refused before connecting, not after a timeout"


def test_a_redirect_to_a_refused_address_is_refused(origin):
    error = _error(f"{origin}/to/169.254.169.254/latest/meta-data/")
    assert (error.code, error.status) == (ADDRESS_NOT_ALLOWED, 403)


def test_every_redirect_hop_is_checked(origin):
    """The first hop (127.0.0.1) is allowed; the redirect to 127.0.0.2 is not."""
    deny = AddressPolicy(allow=HostRules(), deny=parse_rules("DOWNLOAD_DENY", "127.0.0.2/32"))
    limits = DownloadLimits(**{**LIMITS.__dict__, "addresses": deny})
    assert fetch(f"{origin}/hop/1", limits) == FILE
    hop = origin.replace("127.0.0.1", "127.0.0.2")[len("http://"):]
    error = _error(f"{origin}/to/{hop}/file", limits)
    assert error.code == ADDRESS_NOT_ALLOWED and "127.0.0.2" in error.description


def test_private_ranges_are_allowed_by_default(origin):
    assert fetch(f"{origin}/file", LIMITS) == FILE  # 127.0.0.1; 10/8, 172.16/12, 192.168/16 alike


def test_an_allow_list_admits_only_its_hosts(origin):
    by_name = AddressPolicy(allow=parse_rules("DOWNLOAD_ALLOW", "localhost"), deny=DEFAULT_POLICY.deny)
    limits = DownloadLimits(**{**LIMITS.__dict__, "addresses": by_name})
    assert fetch(f"{origin}/file".replace("127.0.0.1", "localhost"), limits) == FILE
    error = _error(f"{origin}/file", limits)
    assert error.code == ADDRESS_NOT_ALLOWED and "DOWNLOAD_ALLOW" in error.description
    by_network = AddressPolicy(allow=parse_rules("DOWNLOAD_ALLOW", "127.0.0.0/8"), deny=DEFAULT_POLICY.deny)
    assert fetch(f"{origin}/file", DownloadLimits(**{**LIMITS.__dict__, "addresses": by_network})) == FILE


def test_deny_wins_over_allow(origin):
    both = AddressPolicy(allow=parse_rules("DOWNLOAD_ALLOW", "127.0.0.0/8"),
                         deny=parse_rules("DOWNLOAD_DENY", "127.0.0.1"))
    error = _error(f"{origin}/file", DownloadLimits(**{**LIMITS.__dict__, "addresses": both}))
    assert error.code == ADDRESS_NOT_ALLOWED


@pytest.mark.parametrize(("rules", "host", "address", "matched"), [
    ("10.0.0.0/8", "cdn.internal", "10.1.2.3", "10.0.0.0/8"),
    ("10.0.0.0/8", "cdn.internal", "11.0.0.1", None),
    (".example.com", "audio.example.com", "93.184.216.34", ".example.com"),
    (".example.com", "example.com", "93.184.216.34", ".example.com"),
    (".example.com", "badexample.com", "93.184.216.34", None),
    ("cdn.example.com", "CDN.Example.com.", "1.2.3.4", "cdn.example.com"),
    ("fd00::/8", "v6.internal", "fd12::1", "fd00::/8"),
])
def test_host_rules(rules, host, address, matched):
    import ipaddress

    assert parse_rules("DOWNLOAD_ALLOW", rules).match(host, ipaddress.ip_address(address)) == matched


@pytest.mark.parametrize("value", ["10.0.0.0/33", "bad host!", "*.example.com"])
def test_unreadable_rules_name_the_variable(value):
    with pytest.raises(ValueError, match="DOWNLOAD_DENY"):
        parse_rules("DOWNLOAD_DENY", value)
