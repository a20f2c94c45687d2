/** The GraphQL documents the client sends (v2 sync contract). */
const CHANGE = "entity recordId customerId op version data";

export const LOGIN = `mutation($email: String!, $password: String!) { login(email: $email, password: $password) {
  __typename ... on LoginSuccess { token } ... on UserError { code message } } }`;

export const REGISTER = `mutation($input: RegisterDeviceInput!) { registerDevice(input: $input) {
  __typename ... on Device { id replicaId resolvesConflicts } ... on UserError { code message } } }`;

export const REPORT = `mutation($d: ID!, $input: ReportDeviceInput!) { reportDevice(deviceId: $d, input: $input) {
  __typename ... on UserError { code message } } }`;

export const SELECT = `mutation($d: ID!, $mode: SelectionMode!, $ids: [ID!]) {
  selectCustomers(deviceId: $d, mode: $mode, customerIds: $ids) {
    __typename ... on Device { selectionMode selectedCustomerIds } ... on UserError { code message } } }`;

export const PULL = `query($d: ID!, $since: String, $limit: Int!, $types: [SyncEntity!]) {
  pull(deviceId: $d, since: $since, limit: $limit, types: $types) {
    checkpoint hasMore reset changes { ${CHANGE} } } }`;

export const PUSH = `mutation($d: ID!, $changes: [ChangeInput!]!) { pushChanges(deviceId: $d, changes: $changes) {
  __typename
  ... on PushResult { reregisterRequired results { clientMutationId entity recordId outcome version conflictId
      conflicts { field serverValue clientValue } fieldErrors { field message } message replayed
      record { ${CHANGE} } } }
  ... on UserError { code message } } }`;

export const SYNC_STATE = `query($d: ID!) { syncState(deviceId: $d) { id deviceId status checkpoint headCheckpoint lag
  pendingChanges openConflicts lastPullAt lastPushAt } }`;

export const CHANGES = `subscription($d: ID!, $since: String, $types: [SyncEntity!]) {
  changes(deviceId: $d, since: $since, types: $types) { checkpoint reset changes { ${CHANGE} } } }`;
