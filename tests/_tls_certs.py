"""Certificates for the TLS tests, made by ``trustme`` (a throwaway CA) into a directory."""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import trustme

__all__ = ["Certs", "make_certs"]


@attrs.frozen
class Certs:
    """PEM files of one throwaway CA, a server certificate it signed (for 127.0.0.1, ::1 and
    localhost), a client certificate (CN ``orders``), and what the CA itself is.

    :ivar ca: the CA's certificate (``cafile``).
    :ivar server: the server's certificate and key in one file (``certfile``).
    :ivar client: the client's certificate and key in one file.
    :ivar client_cert: the client's certificate alone (``certfile`` with ``client_key``).
    :ivar client_key: the client's private key alone (``keyfile``).
    :ivar authority: the ``trustme.CA``, to issue more.
    :ivar client_subject: the client certificate's subject as RFC 4514 text, read by
        ``cryptography`` (what ``msg.peer_identity`` must equal).
    """

    ca: str
    server: str
    client: str
    client_cert: str
    client_key: str
    authority: trustme.CA
    client_subject: str


def make_certs(directory: Path, name: str = "") -> Certs:
    """Write a fresh CA and its certificates under ``directory``."""
    from cryptography import x509

    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "::1", "localhost")
    client = ca.issue_cert("orders@example.com", common_name="orders")
    paths = {}
    for key, blob in (
        ("ca", ca.cert_pem),
        ("server", server.private_key_and_cert_chain_pem),
        ("client", client.private_key_and_cert_chain_pem),
        ("client_cert", client.cert_chain_pems[0]),
        ("client_key", client.private_key_pem),
    ):
        path = directory / f"{name}{key}.pem"
        blob.write_to_path(os.fspath(path))
        paths[key] = os.fspath(path)
    cert = x509.load_pem_x509_certificate(client.cert_chain_pems[0].bytes())
    return Certs(authority=ca, client_subject=cert.subject.rfc4514_string(), **paths)
