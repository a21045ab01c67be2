"""``verify=`` for the workers' httpx2 clients: TLS only where the URL asks for it.

An ``https`` URL gets httpx2's default context: verified against the system's (or certifi's)
CAs, ``SSL_CERT_FILE`` honoured, as always. An ``http`` URL needs no TLS, and loading those CAs
costs a worker ~1 MiB of RSS and a client ~40 ms for nothing, so its client gets a context that
trusts no CA at all: anything that would ever need TLS on it (a redirect is never followed; an
absolute ``https`` endpoint of another host, an ``https`` proxy) fails its certificate check.
Fail closed, never unverified.
"""

from __future__ import annotations

import ssl

__all__ = ["tls_for"]


def tls_for(url: str) -> ssl.SSLContext | bool:
    """``verify=`` for an httpx2 client of ``url``: True (the default, verified context) for
    ``https``; for anything else a context that verifies against no CA, so every TLS handshake
    on it fails."""
    if url[:6].lower() == "https:":
        return True
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname, no CA
