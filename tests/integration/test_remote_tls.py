"""TLS of the remote kind's client (worker.tls.tls_for), against a real TLS server.

An ``http`` remote's client loads no CA (it needs no TLS; the CAs cost ~1 MiB of RSS): every TLS
handshake on it must fail its certificate check, never go unverified. An ``https`` remote's
client keeps httpx2's verified default: a certificate no trusted CA signed is refused, and
``SSL_CERT_FILE`` naming the CA that did is accepted. The server is a real one on 127.0.0.1
with a self-signed certificate made by the openssl CLI.
"""

from __future__ import annotations

import http.server
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx2
import pytest

from worker.kinds.oauth import OAuthError, request_token
from worker.tls import tls_for

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl CLI")


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def do_POST(self) -> None:  # a token endpoint
        self.rfile.read(int(self.headers["content-length"]))
        body = b'{"access_token": "t0", "token_type": "Bearer", "expires_in": 60}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``(https URL, its certificate)`` of a TLS server on 127.0.0.1."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    make = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    make += ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
    make += ["-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        make,
        check=True,
        capture_output=True,
        timeout=60,
    )
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{httpd.server_address[1]}/", cert
    finally:
        httpd.shutdown()
        httpd.server_close()


def get(url: str, verify: ssl.SSLContext | bool) -> int:
    async def body() -> int:
        async with httpx2.AsyncClient(verify=verify, timeout=10) as client:
            return (await client.get(url)).status_code

    return anyio.run(body)


def test_an_http_remotes_client_trusts_no_ca_and_fails_closed(server: tuple[str, Path]) -> None:
    url, _ = server
    refusing = tls_for("http://127.0.0.1:9/mcp")
    assert isinstance(refusing, ssl.SSLContext)
    assert refusing.verify_mode == ssl.CERT_REQUIRED and refusing.check_hostname
    assert refusing.cert_store_stats()["x509_ca"] == 0
    with pytest.raises(httpx2.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        get(url, refusing)


def test_an_https_remotes_client_verifies(
    server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, cert = server
    assert tls_for(url.upper()) is True and tls_for(url) is True
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with pytest.raises(httpx2.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        get(url, tls_for(url))  # self-signed: no CA it trusts vouches for it
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    assert get(url, tls_for(url)) == 200  # the same server, once its CA is trusted


def test_an_https_token_endpoint_is_verified(
    server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The OAuth token request's client (``request_token``) gets its context from its own URL:
    an ``https`` token endpoint is verified even when the remote server itself is ``http``."""
    url, cert = server

    def token() -> str:
        async def body() -> str:
            answer = await request_token(
                url + "token",
                {"grant_type": "client_credentials"},
                client_id="spctl",
                client_secret="s3cret",
                method="client_secret_basic",
            )
            return answer.access_token

        return anyio.run(body)

    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with pytest.raises(OAuthError, match="CERTIFICATE_VERIFY_FAILED"):
        token()
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    assert token() == "t0"
