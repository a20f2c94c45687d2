"""Compressed HTTP responses (issue #18): negotiation, bad Accept-Encoding, large pages
streamed, a client that drops mid-stream, and the switch to turn it off."""

from __future__ import annotations

import asyncio
import gzip
import time
from typing import Any

import httpx
import orjson
import pytest
import zstandard

from db.engine import Database
from db.seed import seed_records
from server.app import create_app
from server.compression import MAX_HEADER_CHARS, NotAcceptableError, choose_encoding
from server.settings import Settings
from tests.api.sync_client import PULL, Device
from tests.conftest import LiveServer, Tenant, new_tenant


def decode(coding: str | None, raw: bytes) -> bytes:
    """What a client does with the body it received."""
    if coding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    if coding == "gzip":
        return gzip.decompress(raw)
    assert coding is None, coding
    return raw


async def raw_post(
    client: httpx.AsyncClient, body: dict[str, Any], token: str | None, accept: str | None
) -> tuple[httpx.Response, bytes]:
    """POST /graphql and return the response with its body as sent on the wire."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = client.build_request("POST", "/graphql", content=orjson.dumps(body), headers=headers)
    # httpx adds its own Accept-Encoding; the test states exactly what the client offers.
    if accept is None:
        del request.headers["Accept-Encoding"]
    else:
        request.headers["Accept-Encoding"] = accept
    response = await client.send(request, stream=True)
    raw = b"".join([chunk async for chunk in response.aiter_raw()])
    await response.aclose()
    return response, raw


async def seeded_device(db: Database, tenant: Tenant, customers: int = 40) -> Device:
    """A tenant with a few hundred records and a device that sees them all."""
    await seed_records(db, tenant.org_id, customers_count=customers, assets_per_customer=5)
    return await Device(tenant.admin).register()


def page_body(device: Device, limit: int = 500) -> dict[str, Any]:
    return {"query": PULL, "variables": {"d": device.id, "since": None, "limit": limit}}


@pytest.mark.parametrize(
    ("accept", "coding"),
    [
        ("zstd", "zstd"),
        ("gzip", "gzip"),
        ("x-gzip", "gzip"),
        ("gzip, deflate, br, zstd", "zstd"),
        ("gzip;q=0.5, zstd;q=0.1", "gzip"),
        ("*", "zstd"),
        ("zstd;q=0, *", "gzip"),
        ("identity;q=0, gzip", "gzip"),
        ("identity, gzip;q=0.5", None),
        ("br", None),
        ("deflate", None),
        ("unknown-coding", None),
        ("gzip;q=not-a-number", None),
        ("", None),
        (None, None),
    ],
)
async def test_negotiated_coding_carries_the_same_page(
    db: Database, client: httpx.AsyncClient, accept: str | None, coding: str | None
) -> None:
    """A pull page comes in the coding the client prefers among zstd and gzip (or none),
    says so with Vary, and decodes to exactly the uncompressed page."""
    tenant = await new_tenant(db, client)
    device = await seeded_device(db, tenant, customers=10)
    plain, plain_raw = await raw_post(client, page_body(device), tenant.admin.token, None)
    assert plain.status_code == 200
    assert "content-encoding" not in plain.headers
    response, raw = await raw_post(client, page_body(device), tenant.admin.token, accept)
    assert response.status_code == 200
    assert response.headers.get("content-encoding") == coding
    assert "accept-encoding" in response.headers["vary"].lower()
    page, plain_page = orjson.loads(decode(coding, raw)), orjson.loads(plain_raw)
    assert page["data"]["pull"]["changes"] == plain_page["data"]["pull"]["changes"]
    assert len(page["data"]["pull"]["changes"]) > 100
    if coding is not None:
        assert len(raw) * 4 < len(plain_raw), (len(raw), len(plain_raw))


@pytest.mark.parametrize("accept", ["identity;q=0", "*;q=0", "br, identity;q=0"])
async def test_refusing_every_coding_we_have_is_not_acceptable(
    client: httpx.AsyncClient, accept: str
) -> None:
    """A client that refuses identity and offers nothing the server has gets a clear 406."""
    response, raw = await raw_post(client, {"query": "{ __typename }"}, None, accept)
    assert response.status_code == 406
    body = orjson.loads(raw)
    assert body["errors"][0]["extensions"]["code"] == "NOT_ACCEPTABLE"
    assert "zstd, gzip or identity" in body["errors"][0]["message"]


async def test_small_answers_are_not_compressed(client: httpx.AsyncClient) -> None:
    """Below a kilobyte the framing eats the gain: identity, but still Vary."""
    response, raw = await raw_post(client, {"query": "{ __typename }"}, None, "zstd, gzip")
    assert response.status_code == 200
    assert "content-encoding" not in response.headers
    assert "accept-encoding" in response.headers["vary"].lower()
    assert orjson.loads(raw) == {"data": {"__typename": "Query"}}


async def test_graphiql_assets_are_compressed(client: httpx.AsyncClient) -> None:
    """The GraphiQL bundle (a streamed file) arrives compressed and intact."""
    path = "/graphiql/static/graphiql.min.js"
    plain = await client.get(path, headers={"Accept-Encoding": "identity"})
    async with client.stream("GET", path, headers={"Accept-Encoding": "gzip"}) as response:
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    assert response.headers["content-encoding"] == "gzip"
    assert "content-length" not in response.headers or int(
        response.headers["content-length"]
    ) == len(raw)
    assert gzip.decompress(raw) == plain.content
    assert len(raw) * 2 < len(plain.content)


def test_hostile_accept_encoding_is_read_in_linear_time() -> None:
    """Headers built to be slow or odd: answered at once; an over-long one counts as absent."""
    longest = ",".join(["gzip;q=0.1"] * (MAX_HEADER_CHARS // 11))
    assert choose_encoding(longest) == "gzip"
    assert choose_encoding("zstd;" + "x" * (MAX_HEADER_CHARS * 50)) is None
    assert choose_encoding(";" * MAX_HEADER_CHARS) is None
    assert choose_encoding("gzip;q=1e9, zstd;q=-5") == "gzip"
    started = time.perf_counter()
    for _ in range(1000):
        choose_encoding("," * MAX_HEADER_CHARS)
        choose_encoding(";q=" * (MAX_HEADER_CHARS // 3))
    assert time.perf_counter() - started < 2
    with pytest.raises(NotAcceptableError):
        choose_encoding("gzip;q=0, zstd;q=0, identity;q=0")


async def test_compression_can_be_turned_off(settings: Settings, db: Database) -> None:
    """Behind a proxy that compresses, FIELDSYNC_HTTP_COMPRESSION=false answers identity."""
    app = create_app(settings.model_copy(update={"http_compression": False}), database=db)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://fieldsync.test") as off:
        tenant = await new_tenant(db, off)
        device = await seeded_device(db, tenant, customers=5)
        response, raw = await raw_post(off, page_body(device), tenant.admin.token, "zstd, gzip")
    assert response.status_code == 200
    assert "content-encoding" not in response.headers
    assert orjson.loads(raw)["data"]["pull"]["changes"]


async def test_a_large_page_streams_and_a_dropped_client_frees_it(
    live_server: LiveServer, db: Database
) -> None:
    """Over a real socket a 1,000-change page leaves compressed in pieces (no length known in
    advance); a client that hangs up mid-body leaves the server answering as before."""
    async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as http:
        tenant = await new_tenant(db, http)
        device = await seeded_device(db, tenant, customers=200)
        response, raw = await raw_post(http, page_body(device, 1000), tenant.admin.token, "zstd")
        assert response.headers["content-encoding"] == "zstd"
        assert response.headers.get("transfer-encoding") == "chunked"
        changes = orjson.loads(decode("zstd", raw))["data"]["pull"]["changes"]
        assert len(changes) == 1000

        host, port = live_server.url.removeprefix("http://").split(":")
        body = orjson.dumps(page_body(device, 1000))
        for _ in range(5):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(
                b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Accept-Encoding: gzip\r\nAuthorization: Bearer "
                + (tenant.admin.token or "").encode()
                + b"\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            assert b"content-encoding: gzip" in head.lower()
            await reader.read(100)  # a little of the body, then the phone loses signal
            writer.transport.abort()

        again, raw = await raw_post(http, page_body(device, 1000), tenant.admin.token, "gzip")
        assert again.status_code == 200
        assert len(orjson.loads(gzip.decompress(raw))["data"]["pull"]["changes"]) == 1000
        assert (await http.get("/readyz")).status_code == 200
