"""Trusted proxies: parsing TRUSTED_PROXIES, and the environ rewrite for X-Forwarded-*."""

from __future__ import annotations

from typing import Any

import pytest

from django_wsgiserve.proxy import DEFAULT_TRUSTED_PROXIES, parse_trusted_proxies

FORWARDED = {
    "HTTP_X_FORWARDED_FOR": "6.6.6.6",
    "HTTP_X_FORWARDED_PROTO": "https",
    "HTTP_X_FORWARDED_HOST": "evil.example",
    "HTTP_X_FORWARDED_PORT": "443",
    "HTTP_FORWARDED": "for=6.6.6.6;proto=https",
    "HTTP_X_REAL_IP": "6.6.6.6",
}


def environ_for(peer: str, **headers: str) -> dict[str, Any]:
    return {
        "REMOTE_ADDR": peer,
        "REMOTE_PORT": "5555",
        "wsgi.url_scheme": "http",
        "HTTP_HOST": "example.com",
        **headers,
    }


@pytest.mark.parametrize(
    ("specs", "address", "expected"),
    [
        pytest.param(DEFAULT_TRUSTED_PROXIES, "127.0.0.1", True, id="default-loopback4"),
        pytest.param(DEFAULT_TRUSTED_PROXIES, "::1", True, id="default-loopback6"),
        pytest.param(DEFAULT_TRUSTED_PROXIES, "", True, id="default-unix"),
        pytest.param(DEFAULT_TRUSTED_PROXIES, "127.0.0.2", False, id="default-other-loopback"),
        pytest.param(DEFAULT_TRUSTED_PROXIES, "10.0.0.1", False, id="default-private"),
        pytest.param(("10.0.0.0/8",), "10.200.3.4", True, id="cidr-inside"),
        pytest.param(("10.0.0.0/8",), "11.0.0.1", False, id="cidr-outside"),
        pytest.param(("10.0.0.0/8",), "", False, id="cidr-not-unix"),
        pytest.param(("10.0.0.0/8",), "::ffff:10.1.2.3", True, id="ipv4-mapped"),
        pytest.param(("2001:db8::/32",), "2001:db8:1::5", True, id="cidr6"),
        pytest.param(("192.168.1.1",), "192.168.1.1", True, id="single"),
        pytest.param(("192.168.1.1",), "junk", False, id="junk-address"),
        pytest.param(("*",), "203.0.113.9", True, id="any"),
        pytest.param((), "127.0.0.1", False, id="empty"),
    ],
)
def test_is_trusted(specs: tuple[str, ...], address: str, expected: bool) -> None:
    assert parse_trusted_proxies(specs).is_trusted(address) is expected


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param("localhost", id="hostname"),
        pytest.param("10.0.0.0/33", id="bad-prefix"),
        pytest.param("1.2.3", id="short"),
        pytest.param("", id="empty"),
    ],
)
def test_invalid_spec(spec: str) -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        parse_trusted_proxies([spec])


@pytest.mark.parametrize(
    "peer", [pytest.param("203.0.113.5", id="tcp"), pytest.param("", id="unix")]
)
def test_untrusted_peer_loses_every_forwarded_header(peer: str) -> None:
    proxies = parse_trusted_proxies(["10.0.0.0/8"])
    environ = environ_for(peer, **FORWARDED, HTTP_USER_AGENT="ua")
    proxies.apply(environ)
    assert environ == environ_for(peer, HTTP_USER_AGENT="ua")


@pytest.mark.parametrize(
    ("forwarded_for", "expected"),
    [
        pytest.param("203.0.113.9", "203.0.113.9", id="one-hop"),
        pytest.param("6.6.6.6, 203.0.113.9", "203.0.113.9", id="spoofed-left-hop-ignored"),
        pytest.param("203.0.113.9, 10.0.0.2", "203.0.113.9", id="through-second-proxy"),
        pytest.param("6.6.6.6,203.0.113.9,10.1.1.1,10.0.0.2", "203.0.113.9", id="chain"),
        pytest.param("10.0.0.3, 10.0.0.2", "10.0.0.3", id="all-trusted-left-most"),
        pytest.param("203.0.113.9:4711", "203.0.113.9", id="with-port"),
        pytest.param("[2001:db8::9]:4711", "2001:db8::9", id="ipv6-with-port"),
        pytest.param("2001:db8::9", "2001:db8::9", id="ipv6"),
        pytest.param("unknown", "10.0.0.1", id="unknown-keeps-peer"),
        pytest.param(" , ", "10.0.0.1", id="empty-hops-keep-peer"),
    ],
)
def test_trusted_peer_sets_remote_addr(forwarded_for: str, expected: str) -> None:
    proxies = parse_trusted_proxies(["10.0.0.0/8"])
    environ = environ_for("10.0.0.1", HTTP_X_FORWARDED_FOR=forwarded_for)
    proxies.apply(environ)
    assert environ["REMOTE_ADDR"] == expected


@pytest.mark.parametrize(
    ("forwarded_proto", "scheme", "header"),
    [
        pytest.param("https", "https", "https", id="https"),
        pytest.param("HTTPS", "https", "https", id="upper-case"),
        pytest.param("http", "http", "http", id="http"),
        pytest.param("http, https", "https", "https", id="right-most-wins"),
        pytest.param("https, http", "http", "http", id="right-most-wins-http"),
        pytest.param("gopher", "http", None, id="unknown-scheme-dropped"),
    ],
)
def test_trusted_peer_sets_url_scheme(
    forwarded_proto: str, scheme: str, header: str | None
) -> None:
    proxies = parse_trusted_proxies(DEFAULT_TRUSTED_PROXIES)
    environ = environ_for("127.0.0.1", HTTP_X_FORWARDED_PROTO=forwarded_proto)
    proxies.apply(environ)
    assert environ["wsgi.url_scheme"] == scheme
    assert environ.get("HTTP_X_FORWARDED_PROTO") == header


def test_trusted_peer_keeps_other_forwarded_headers() -> None:
    proxies = parse_trusted_proxies(DEFAULT_TRUSTED_PROXIES)
    environ = environ_for("127.0.0.1", HTTP_X_FORWARDED_HOST="shop.example")
    proxies.apply(environ)
    assert environ["HTTP_X_FORWARDED_HOST"] == "shop.example"
    assert environ["REMOTE_ADDR"] == "127.0.0.1"


def test_no_forwarded_headers_is_untouched() -> None:
    proxies = parse_trusted_proxies(DEFAULT_TRUSTED_PROXIES)
    environ = environ_for("203.0.113.1")
    proxies.apply(environ)
    assert environ == environ_for("203.0.113.1")


# -- system checks: Django's proxy settings against TRUSTED_PROXIES --------------------------


def check_ids(**django_settings: object) -> list[str]:
    from django.core.checks import run_checks
    from django.test import override_settings

    with override_settings(**django_settings):
        return [str(message.id) for message in run_checks(tags=["wsgiserve"])]


@pytest.mark.parametrize(
    ("django_settings", "expected"),
    [
        pytest.param({}, [], id="nothing-set"),
        pytest.param(
            {"SECURE_PROXY_SSL_HEADER": ("HTTP_X_FORWARDED_PROTO", "https")},
            [],
            id="proto-header-with-default-trust",
        ),
        pytest.param(
            {"SECURE_PROXY_SSL_HEADER": ("HTTP_X_SCHEME", "https")},
            ["wsgiserve.W003"],
            id="unvetted-header",
        ),
        pytest.param(
            {
                "SECURE_PROXY_SSL_HEADER": ("HTTP_X_FORWARDED_PROTO", "https"),
                "WSGISERVE": {"TRUSTED_PROXIES": []},
            },
            ["wsgiserve.W003"],
            id="proto-header-nobody-trusted",
        ),
        pytest.param({"USE_X_FORWARDED_HOST": True}, [], id="forwarded-host-default-trust"),
        pytest.param(
            {"USE_X_FORWARDED_HOST": True, "WSGISERVE": {"TRUSTED_PROXIES": []}},
            ["wsgiserve.W004"],
            id="forwarded-host-nobody-trusted",
        ),
        pytest.param(
            {"USE_X_FORWARDED_PORT": True, "WSGISERVE": {"TRUSTED_PROXIES": []}},
            ["wsgiserve.W004"],
            id="forwarded-port-nobody-trusted",
        ),
    ],
)
def test_proxy_checks(django_settings: dict[str, object], expected: list[str]) -> None:
    assert check_ids(**django_settings) == expected
