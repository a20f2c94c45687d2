"""GraphQL documents shared by the API tests."""

CUSTOMER_FIELDS = """
  id businessName firstName lastName displayName email archived version
  phones { type number }
  addresses { type line1 city postalCode }
  notificationEmails invoiceCcEmails
  settings { taxFree taxRate smsEnabled noEmail }
  customFields { key value }
  badges { fieldKey label icon }
"""

RESULT = """__typename
  ... on UserError { code message }
  ... on ValidationError { fieldErrors { field message } }
"""
CUSTOMER_RESULT = RESULT + "... on EmailTaken { takenEmail: email }\n"
DELETE_RESULT = (
    """__typename ... on UserError { code message } ... on HasAttachedRecords { attached }"""
)

CREATE_CUSTOMER = f"""mutation($input: CreateCustomerInput!) {{
  createCustomer(input: $input) {{ {CUSTOMER_RESULT} ... on Customer {{ {CUSTOMER_FIELDS} }} }} }}"""

UPDATE_CUSTOMER = f"""mutation($id: ID!, $input: UpdateCustomerInput!) {{
  updateCustomer(id: $id, input: $input) {{ {CUSTOMER_RESULT} ... on Customer {{ {CUSTOMER_FIELDS} }} }} }}"""

ARCHIVE_CUSTOMER = f"""mutation($id: ID!) {{
  archiveCustomer(id: $id) {{ {RESULT} ... on Customer {{ id archived }} }} }}"""

REENABLE_CUSTOMER = f"""mutation($id: ID!) {{
  reenableCustomer(id: $id) {{ {RESULT} ... on Customer {{ id archived }} }} }}"""

DELETE_CUSTOMER = f"""mutation($id: ID!) {{
  deleteCustomer(id: $id) {{ {DELETE_RESULT} ... on DeletedRecord {{ id }} }} }}"""

CREATE_CONTACT = f"""mutation($input: CreateContactInput!) {{
  createContact(input: $input) {{ {RESULT} ... on Contact {{ id firstName lastName email }} }} }}"""

CREATE_FACILITY = f"""mutation($input: CreateFacilityInput!) {{
  createFacility(input: $input) {{ {RESULT} ... on Facility {{ id name }} }} }}"""

CREATE_ASSET = f"""mutation($input: CreateAssetInput!) {{
  createAsset(input: $input) {{ {RESULT} ... on Asset {{ id kind serialNumber installDate }} }} }}"""

CUSTOMERS = """query($first: Int!, $after: String, $filter: CustomerFilter, $order: CustomerOrder) {
  customers(first: $first, after: $after, filter: $filter, orderBy: $order) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { cursor node { id displayName email archived } } } }"""

CREATE_FIELD = f"""mutation($input: CreateCustomFieldInput!) {{
  createCustomField(input: $input) {{ {RESULT} ... on CustomFieldDefinition {{ id key required }} }} }}"""


async def make_customer(api, **fields) -> dict:
    """Create a customer and return it (fails the test on a typed error)."""
    data = await api(CREATE_CUSTOMER, {"input": {"businessName": "Acme Doors", **fields}})
    result = data["createCustomer"]
    assert result["__typename"] == "Customer", result
    return result


async def make_tree(api, name: str = "Acme") -> dict:
    """A customer with one contact, one facility and one asset; returns their ids."""
    customer = await make_customer(api, businessName=name)
    contact = (
        await api(CREATE_CONTACT, {"input": {"customerId": customer["id"], "firstName": "Ann"}})
    )["createContact"]
    facility = (
        await api(CREATE_FACILITY, {"input": {"customerId": customer["id"], "name": "HQ"}})
    )["createFacility"]
    asset = (
        await api(CREATE_ASSET, {"input": {"facilityId": facility["id"], "kind": "Fire door"}})
    )["createAsset"]
    assert contact["__typename"] == "Contact", contact
    assert facility["__typename"] == "Facility", facility
    assert asset["__typename"] == "Asset", asset
    return {
        "customer": customer["id"],
        "contact": contact["id"],
        "facility": facility["id"],
        "asset": asset["id"],
    }
