"""TLS on the tcp transport: round trips, mutual TLS and the identity a handler sees, refused
handshakes (counted, logged, the server goes on), a client that does not trust its server,
reconnection after a restart, and the options' checks. Certificates are made by trustme."""

from __future__ import annotations

import logging
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
from _tls_certs import Certs, make_certs

import distro_core as distro
from distro_core._transports._tls import subject_of
from distro_core.testing import Recorder, wait_until


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """Certificates of another CA, which the servers and clients of ``certs`` do not trust."""
    return make_certs(tmp_path_factory.mktemp("tls-other"), "other-")


TCP = distro.create("tcp")


def echo_server(certs: Certs, **options: Any) -> tuple[distro.Server, Recorder]:
    server = TCP.server({"port": 0, "certfile": certs.server, **options})
    got = Recorder()
    server.post("/note", got)

    @server.post("/echo")
    def echo(msg: distro.Message) -> Any:
        return {"payload": msg.payload, "identity": msg.peer_identity}

    return server, got


def echo(payload: Any = None) -> distro.Message:
    return distro.message({"uri": "/echo", "verb": "POST"}, payload)


def note(payload: Any = None) -> distro.Message:
    return distro.message({"uri": "/note", "verb": "POST"}, payload)


async def test_round_trip_over_tls_server_certificate_only(certs: Certs) -> None:
    server, got = echo_server(certs)
    async with server, TCP.client(port=server.address[1], cafile=certs.ca) as client:
        reply = await client.request(echo({"n": 1}), timeout=5)
        assert reply.payload == {"payload": {"n": 1}, "identity": None}  # no client certificate
        for n in range(300):  # a burst at once: many frames in few TLS records
            await client.send(note(n))
        await got.wait_for(300)
        assert got.payloads == list(range(300))
        await client.send(note("confirmed"), confirm=True, timeout=5)
    assert server.stats.dropped == {}


async def test_the_first_frames_sent_with_the_handshake_are_not_lost(certs: Certs) -> None:
    # A TLS 1.3 client may send its first frames right behind its last handshake bytes; the
    # server reads them before the connection is handed to the frame reader.
    server, got = echo_server(certs, cafile=certs.ca)
    async with server:
        for round in range(5):
            async with TCP.client(
                port=server.address[1], cafile=certs.ca, certfile=certs.client
            ) as client:
                for n in range(50):
                    await client.send(note([round, n]))
        await got.wait_for(250)
    assert sorted(got.payloads) == [[r, n] for r in range(5) for n in range(50)]
    assert server.stats.dropped == {}


async def test_mutual_tls_handler_sees_the_client_certificate_subject(certs: Certs) -> None:
    server, _ = echo_server(certs, cafile=certs.ca)
    seen: list[Any] = []
    server.post("/confirmed", lambda msg: seen.append(msg.peer_identity))
    async with server:
        # certificate and key in one file, then in two
        for options in (
            {"certfile": certs.client},
            {"certfile": certs.client_cert, "keyfile": certs.client_key},
        ):
            async with TCP.client(port=server.address[1], cafile=certs.ca, **options) as client:
                reply = await client.request(echo("hi"), timeout=5)
                await client.send(
                    distro.message({"uri": "/confirmed", "verb": "POST"}), confirm=True, timeout=5
                )
            assert reply.payload == {"payload": "hi", "identity": certs.client_subject}
    assert certs.client_subject.startswith("CN=orders,")
    # a confirmed send goes through the server's repeat window, and keeps the identity
    assert seen == [certs.client_subject, certs.client_subject]


async def test_a_client_without_certificate_is_refused_counted_and_the_server_goes_on(
    certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    server, _ = echo_server(certs, cafile=certs.ca)  # cafile: client certificates required
    caplog.set_level(logging.WARNING)
    async with server:
        port = server.address[1]
        with pytest.raises(distro.ConnectionError):
            # TLS 1.3: the client's handshake ends before the server has checked it; the server
            # refuses it then, and the request fails on the closed connection.
            async with TCP.client(port=port, cafile=certs.ca, connect_timeout=2) as client:
                await client.request(echo("no certificate"), timeout=5)
        await wait_until(lambda: server.stats.dropped.get("tls_handshake") == 1, 5)
        async with TCP.client(port=port, cafile=certs.ca, certfile=certs.client) as client:
            reply = await client.request(echo("with one"), timeout=5)
        assert reply.payload["payload"] == "with one"
    assert server.stats.dropped == {"tls_handshake": 1}
    assert server.stats.handled == 1
    logged = [r.getMessage() for r in caplog.records if "tls_handshake" in r.getMessage()]
    assert len(logged) == 1 and "certificate" in logged[0], logged


async def test_a_client_certificate_from_another_ca_is_refused(certs: Certs, other: Certs) -> None:
    server, _ = echo_server(certs, cafile=certs.ca)
    async with server:
        with pytest.raises(distro.ConnectionError):
            async with TCP.client(
                port=server.address[1], cafile=certs.ca, certfile=other.client
            ) as client:
                await client.request(echo(), timeout=5)
        await wait_until(lambda: server.stats.dropped.get("tls_handshake") == 1, 5)


async def test_optional_client_certificates(certs: Certs) -> None:
    server, _ = echo_server(certs, cafile=certs.ca, client_cert="optional")
    async with server:
        port = server.address[1]
        async with TCP.client(port=port, cafile=certs.ca) as client:
            assert (await client.request(echo(), timeout=5)).payload["identity"] is None
        async with TCP.client(port=port, cafile=certs.ca, certfile=certs.client) as client:
            reply = await client.request(echo(), timeout=5)
            assert reply.payload["identity"] == certs.client_subject


async def test_a_client_that_does_not_trust_the_server_refuses_it(
    certs: Certs, other: Certs
) -> None:
    server, _ = echo_server(certs)
    async with server:
        with pytest.raises(distro.ConnectionError, match="certificate verify failed"):
            async with TCP.client(port=server.address[1], cafile=other.ca):
                pass
        # a certificate for another name: the host name check
        with pytest.raises(distro.ConnectionError, match="certificate verify failed"):
            async with TCP.client(
                port=server.address[1], cafile=certs.ca, server_hostname="elsewhere.example"
            ):
                pass
        async with TCP.client(
            port=server.address[1], cafile=certs.ca, server_hostname="localhost"
        ) as client:
            assert (await client.request(echo(1), timeout=5)).payload["payload"] == 1
        # the refused clients cost the server a failed handshake each, nothing else
        await wait_until(lambda: server.stats.dropped.get("tls_handshake") == 2, 5)


async def test_a_plain_client_or_a_silent_one_is_a_failed_handshake(certs: Certs) -> None:
    server, got = echo_server(certs, connect_timeout=0.3)
    async with server:
        port = server.address[1]
        async with TCP.client(port=port) as plain:  # TCP connects; the server reads no TLS
            await plain.send(note("plain"))
        await wait_until(lambda: server.stats.dropped.get("tls_handshake") == 1, 5)
        silent = socket.create_connection(("127.0.0.1", port))  # sends nothing at all
        try:
            await wait_until(lambda: server.stats.dropped.get("tls_handshake") == 2, 5)
        finally:
            silent.close()
        async with TCP.client(port=port, cafile=certs.ca) as client:
            assert (await client.request(echo(3), timeout=5)).payload["payload"] == 3
    assert got.payloads == []


async def test_a_tls_client_of_a_plain_server_fails_within_connect_timeout(certs: Certs) -> None:
    async with TCP.server(port=0) as server:
        with pytest.raises(distro.ConnectionError):
            async with TCP.client(port=server.address[1], cafile=certs.ca, connect_timeout=0.5):
                pass


async def test_handshakes_in_progress_count_against_max_connections(certs: Certs) -> None:
    server, _ = echo_server(certs, max_connections=2, connect_timeout=5)
    async with server:
        port = server.address[1]
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        try:
            await wait_until(lambda: server.stats.dropped.get("too_many_connections") == 1, 5)
        finally:
            for sock in silent:
                sock.close()
        await wait_until(lambda: server.stats.dropped.get("tls_handshake") == 2, 5)
        async with TCP.client(port=port, cafile=certs.ca) as client:
            assert (await client.request(echo(), timeout=5)).payload["identity"] is None


async def test_a_client_reconnects_over_tls_after_the_server_restarts(certs: Certs) -> None:
    first, _ = echo_server(certs, cafile=certs.ca)
    await first.start()
    port = first.address[1]
    client = TCP.client(port=port, cafile=certs.ca, certfile=certs.client)
    async with client:
        try:
            assert (await client.request(echo(1), timeout=5)).payload["payload"] == 1
        finally:
            await first.aclose()
        with pytest.raises(distro.ConnectionError):
            await client.request(echo(2), timeout=5)  # nothing listens
        second, _ = echo_server(certs, cafile=certs.ca, port=port)
        async with second:
            reply = await client.request(echo(3), timeout=5)  # a new TLS connection
            assert reply.payload == {"payload": 3, "identity": certs.client_subject}
        assert second.stats.dropped == {}


async def test_ssl_contexts_given_as_they_are(certs: Certs) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certs.authority.issue_cert("127.0.0.1").configure_cert(server_ctx)
    certs.authority.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.create_default_context()
    certs.authority.configure_trust(client_ctx)
    certs.authority.issue_cert("x@example", common_name="billing").configure_cert(client_ctx)
    server = TCP.server(port=0, tls=server_ctx)
    server.post("/who", lambda msg: msg.peer_identity)
    async with server, TCP.client(port=server.address[1], tls=client_ctx) as client:
        reply = await client.request(distro.message({"uri": "/who", "verb": "POST"}), timeout=5)
    assert reply.payload.startswith("CN=billing,")
    # a client-side context cannot serve, and a server-side one cannot connect
    with pytest.raises(ValueError, match="certificate"):
        await TCP.server(port=0, tls=client_ctx).start()
    async with TCP.server(port=0, tls=server_ctx) as server:
        with pytest.raises(ValueError, match="client-side"):
            await TCP.client(port=server.address[1], tls=server_ctx).open()


def test_the_identity_is_the_subject_in_rfc4514_form(tmp_path: Path) -> None:
    from cryptography import x509

    ca = trustme.CA()
    for name in ("plain", "Doe, John", "a+b", ' "quoted" <x>;', "#hash", "tail "):
        issued = ca.issue_cert("client@example", common_name=name)
        path = tmp_path / "c.pem"
        issued.cert_chain_pems[0].write_to_path(str(path))
        expected = x509.load_pem_x509_certificate(path.read_bytes()).subject.rfc4514_string()
        decoded = ssl._ssl._test_decode_cert(str(path))  # type: ignore[attr-defined]
        assert subject_of(decoded) == expected, name
    assert subject_of(None) is None and subject_of({}) is None


# -- options ---------------------------------------------------------------------------------


def test_bad_options_are_refused_when_made(certs: Certs, tmp_path: Path, other: Certs) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    ctx = ssl.create_default_context()
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"tls": "yes"}, TypeError, "'tls'"),
        ({"certfile": 42}, TypeError, "'certfile'"),
        ({"certfile": str(tmp_path / "missing.pem")}, ValueError, "certfile.*no such file"),
        ({"cafile": str(tmp_path / "missing.pem")}, ValueError, "cafile.*no such file"),
        (
            {"keyfile": str(tmp_path / "missing.pem"), "certfile": certs.server},
            ValueError,
            "keyfile",
        ),
        ({"certfile": str(junk)}, ValueError, "certfile"),
        ({"cafile": str(junk)}, ValueError, "cafile"),
        ({"certfile": certs.client_cert, "keyfile": other.client_key}, ValueError, "keyfile"),
        ({"keyfile": certs.client_key}, ValueError, "'keyfile' needs 'certfile'"),
        ({"tls": ctx, "cafile": certs.ca}, ValueError, "cafile"),
        ({"tls": False, "certfile": certs.server}, ValueError, "tls=False"),
        ({"certfile": certs.server, "client_cert": "maybe"}, ValueError, "client_cert"),
        ({"certfile": certs.server, "client_cert": "required"}, ValueError, "needs 'cafile'"),
        ({"tls": True, "server_hostname": ""}, ValueError, "server_hostname"),
        ({"tls": True, "server_hostname": 5}, ValueError, "server_hostname"),
        ({"server_hostname": "localhost"}, ValueError, "TLS, which is off"),
        ({"tls": ctx, "certfile": certs.server}, ValueError, "certfile"),
    ]
    for options, error, text in cases:
        with pytest.raises(error, match=text):
            TCP.server(port=0, **options)
        with pytest.raises(error, match=text):
            TCP.client(port=1, **options)


async def test_a_tls_server_needs_a_certificate(certs: Certs) -> None:
    server = TCP.server(port=0, tls=True, cafile=certs.ca)  # fine for a client, not a server
    with pytest.raises(ValueError, match="certfile"):
        await server.start()
    assert not server.is_serving


def test_tls_off_unless_asked() -> None:
    assert TCP.transport.from_options({"port": 0}).tls is None  # type: ignore[attr-defined]
    assert TCP.transport.from_options({"tls": False}).tls is None  # type: ignore[attr-defined]
