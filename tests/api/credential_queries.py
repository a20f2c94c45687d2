"""GraphQL documents and helpers shared by the credential tests."""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager

import httpx
from sqlalchemy import func, select

from db.engine import set_tenant
from server.app import create_app
from tests.api.queries import CREATE_CONTACT, RESULT
from tests.conftest import PASSWORD, Api

CREDENTIAL_FIELDS = """
  id name username url notes isPublic hasPassword version
  customer { id } contact { id }
"""

CREATE_CREDENTIAL = f"""mutation($input: CreateCredentialInput!) {{
  createCredential(input: $input) {{ {RESULT} ... on Credential {{ {CREDENTIAL_FIELDS} }} }} }}"""

UPDATE_CREDENTIAL = f"""mutation($id: ID!, $input: CredentialFields!) {{
  updateCredential(id: $id, input: $input) {{ {RESULT} ... on Credential {{ {CREDENTIAL_FIELDS} }} }} }}"""

DELETE_CREDENTIAL = """mutation($id: ID!) {
  deleteCredential(id: $id) { __typename ... on UserError { code message } ... on DeletedRecord { id } } }"""

REVEAL = """mutation($id: ID!, $deviceId: ID) {
  revealCredentialPassword(id: $id, deviceId: $deviceId) {
    __typename
    ... on UserError { code message }
    ... on RateLimited { retryAfterSeconds }
    ... on RevealedPassword { credentialId password revealedAt } } }"""

CREDENTIALS = """query($first: Int!, $after: String, $customerId: ID, $contactId: ID, $search: String) {
  credentials(first: $first, after: $after, customerId: $customerId, contactId: $contactId, search: $search) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { node { id name isPublic hasPassword } } } }"""

REPORT = """query($first: Int!, $after: String, $filter: CredentialAccessFilter) {
  credentialAccessReport(first: $first, after: $after, filter: $filter) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { node {
      id revealedAt userId userEmail credentialId credentialName customerId clientAddress deviceId
      customer { id } } } } }"""


async def make_credential(api: Api, owner: dict[str, str], **fields) -> dict:
    """Create a credential of ``owner`` ({"customerId": ..} or {"contactId": ..})."""
    data = await api(CREATE_CREDENTIAL, {"input": {"name": "Router", **owner, **fields}})
    result = data["createCredential"]
    assert result["__typename"] == "Credential", result
    return result


async def make_contact(api: Api, customer_id: str) -> str:
    """A contact of the customer; returns its id."""
    data = await api(CREATE_CONTACT, {"input": {"customerId": customer_id, "firstName": "Pat"}})
    assert data["createContact"]["__typename"] == "Contact", data
    return data["createContact"]["id"]


async def reveal(api: Api, credential_id: str, device_id: str | None = None) -> dict:
    """The revealCredentialPassword result."""
    data = await api(REVEAL, {"id": credential_id, "deviceId": device_id})
    return data["revealCredentialPassword"]


async def add_portal_user(tenant, customer_id: str, **caps: bool) -> Api:
    """A portal user of ``customer_id`` with capabilities, signed in."""
    email = f"portal-{uuid.uuid4().hex[:8]}@example.com"
    data = await tenant.admin(
        """mutation($input: CreateUserInput!) { createUser(input: $input) {
             __typename ... on UserError { message } } }""",
        {
            "input": {
                "email": email,
                "name": "Portal",
                "password": PASSWORD,
                "role": "PORTAL",
                "customerId": customer_id,
                "capabilities": caps or None,
            }
        },
    )
    assert data["createUser"]["__typename"] == "User", data
    return await tenant.login(email)


async def access_log_count(owner_engine, org_id, credential_id=None) -> int:
    """Access-log rows of a tenant (or of one credential), read as the owner."""
    from db.tables import credential_access_log as log

    async with owner_engine.begin() as conn:
        await set_tenant(conn, org_id)
        query = select(func.count()).where(log.c.org_id == org_id)
        if credential_id is not None:
            query = query.where(log.c.credential_id == credential_id)
        return int((await conn.execute(query)).scalar_one())


@asynccontextmanager
async def api_with(settings, db, token: str):
    """An in-process app with other settings (e.g. another key ring) on the same database."""
    app = create_app(settings, database=db)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://fieldsync.test") as c:
        yield Api(c, token)
