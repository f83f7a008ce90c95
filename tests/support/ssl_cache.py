"""httpx's default SSL context, built once per test process.

Every ``httpx.Client`` (an ``httpx.get`` too, and every openai or anthropic SDK client) loads
certifi's CA bundle into a new SSL context: about 30 ms, paid thousands of times by tests that
speak plain HTTP to 127.0.0.1 and never use it. The context for the default arguments is the
same each time, so the test process keeps one. Any other verify setting (a CA file, a context of
the caller's own, ``verify=False``) still gets a context of its own.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

import httpx._transports.default as transports

_build = transports.create_ssl_context  # type: ignore[attr-defined]  # httpx imports it there
_default: list[ssl.SSLContext] = []


def _create_ssl_context(verify: Any = True, cert: Any = None, trust_env: bool = True) -> ssl.SSLContext:
    if verify is not True or cert is not None or os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR"):
        return _build(verify=verify, cert=cert, trust_env=trust_env)
    if not _default:
        _default.append(_build(verify=True, cert=None, trust_env=trust_env))
    return _default[0]


def share_default_ssl_context() -> None:
    """Make every httpx transport of this process built with default TLS settings share one context."""
    transports.create_ssl_context = _create_ssl_context  # type: ignore[attr-defined]
