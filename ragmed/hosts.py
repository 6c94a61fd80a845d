"""Which addresses count as "this machine": servers refuse to listen beyond it without credentials."""

from __future__ import annotations

import ipaddress

from ragmed.errors import ConfigError

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, secret: str | None, *, what: str, need: str, fix: str) -> None:
    """Refuse to expose ``what`` beyond this machine without ``secret`` (an API key, a UI login)."""
    if not is_loopback(host) and not secret:
        raise ConfigError(
            f"Refusing to serve {what} on {host!r} without {need}: anyone on the network could use it. "
            f"Set {fix}, or bind to 127.0.0.1."
        )


def host_header_allowed(header: str) -> bool:
    """A Host header naming this machine (DNS-rebinding defence for servers bound to loopback)."""
    host = header.strip().lower()
    if host.startswith("["):  # [::1]:8080
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host in LOOPBACK_NAMES or is_loopback(host)
