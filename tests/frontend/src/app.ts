// Frontend code over the generated types, checked by `tsc --noEmit --strict`: what a screen
// does with each document's result. It only has to compile: a scalar typed `unknown` (or a
// result union that lost a member) makes it fail.
import type { TypedDocumentNode } from "@graphql-typed-document-node/core";
import { print } from "graphql";
import {
  CustomerDetailDocument,
  CustomerListDocument,
  CustomerSearchDocument,
  NodeByIdDocument,
  SyncDashboardDocument,
  UpdateCustomerDocument,
  type CustomerDetailQuery,
  type CustomerListQuery,
  type CustomerRowFragment,
  type NodeCardFragment,
  type SyncDashboardQuery,
  type UpdateCustomerMutation,
} from "./gql/graphql";
import possibleTypesJson from "./gql/possible-types.json";

/** One GraphQL request over HTTP, typed by its document. */
export async function execute<Result, Variables>(
  url: string,
  document: TypedDocumentNode<Result, Variables>,
  variables: Variables,
): Promise<Result> {
  const response = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ query: print(document), variables }),
  });
  const body = (await response.json()) as { data?: Result; errors?: { message: string }[] };
  if (body.errors?.length || body.data === undefined) {
    throw new Error(body.errors?.map((e) => e.message).join("; ") ?? "no data");
  }
  return body.data;
}

/** "Changed 3 days ago": DateTime is an ISO 8601 string. */
export function changedDaysAgo(row: CustomerRowFragment, now: Date): number {
  const changed = new Date(row.updatedAt);
  return Math.floor((now.getTime() - changed.getTime()) / 86_400_000);
}

/** Every customer, page by page (the list screen's "load more"). */
export async function allCustomers(url: string): Promise<CustomerRowFragment[]> {
  const rows: CustomerRowFragment[] = [];
  let after: string | null = null;
  for (;;) {
    const page: CustomerListQuery = await execute(url, CustomerListDocument, {
      first: 100,
      after,
      orderBy: { field: "UPDATED_AT", direction: "DESC" },
    });
    rows.push(...page.customers.edges.map((edge) => edge.node));
    if (!page.customers.pageInfo.hasNextPage) return rows;
    after = page.customers.pageInfo.endCursor;
  }
}

export async function search(url: string, text: string): Promise<string[]> {
  const found = await execute(url, CustomerSearchDocument, { search: text });
  return found.customers.edges.map(({ node }) => `${node.displayName} <${node.email ?? "-"}>`);
}

type Detail = NonNullable<CustomerDetailQuery["customer"]>;

/** The detail page's header and counts. */
export function summary(customer: Detail): string {
  const created = new Date(customer.createdAt).toISOString().slice(0, 10);
  const edits = Object.values(customer.version).reduce((sum, counter) => sum + counter, 0);
  const assets = customer.facilitiesConnection.edges.reduce(
    (sum, { node }) => sum + node.assetsConnection.totalCount,
    0,
  );
  const installed = customer.facilitiesConnection.edges
    .flatMap(({ node }) => node.assetsConnection.edges)
    .map(({ node }) => (node.installDate === null ? null : new Date(node.installDate)))
    .filter((date): date is Date => date !== null);
  const custom = customer.customFields.map((f) => `${f.label}: ${JSON.stringify(f.value)}`);
  return [
    `${customer.displayName} (since ${created}, ${edits} edits)`,
    `${customer.contactsConnection.totalCount} contacts, ${assets} assets`,
    `${installed.length} with an install date`,
    ...custom,
  ].join("\n");
}

export async function loadDetail(url: string, id: string): Promise<Detail | null> {
  return (await execute(url, CustomerDetailDocument, { id, first: 20 })).customer;
}

type UpdateResult = UpdateCustomerMutation["updateCustomer"];

/** What the edit form shows after saving: every member of the result union handled. */
export function afterSave(result: UpdateResult): string {
  switch (result.__typename) {
    case "Customer":
      return `Saved ${result.displayName} at ${new Date(result.updatedAt).toLocaleTimeString()}`;
    case "ValidationError":
      return result.fieldErrors.map((e) => `${e.field}: ${e.message}`).join("\n");
    case "NotFound":
      return `${result.id} is gone: ${result.message}`;
    case "EmailTaken":
      return `${result.email ?? "That email"} is taken`;
    case "Forbidden":
      return result.message;
    case "EditConflict":
      return result.fields.map((f) => `${f.field}: theirs ${JSON.stringify(f.serverValue)}`).join("\n");
    default: {
      const unhandled: never = result;
      return unhandled;
    }
  }
}

export async function save(
  url: string,
  customer: Detail,
  email: string,
): Promise<string> {
  const saved = await execute(url, UpdateCustomerDocument, {
    id: customer.id,
    input: { email },
    baseVersion: customer.version,
  });
  return afterSave(saved.updateCustomer);
}

type DashboardDevice = SyncDashboardQuery["devices"][number];

/** Devices that have not pulled for a day, or are behind with changes to send. */
export function needsAttention(data: SyncDashboardQuery, now: Date): DashboardDevice[] {
  return data.devices.filter(({ syncState }) => {
    const pulled = syncState.lastPullAt === null ? null : new Date(syncState.lastPullAt);
    const stale = pulled === null || now.getTime() - pulled.getTime() > 86_400_000;
    return stale || (syncState.status !== "SYNCED" && syncState.pendingChanges > 0);
  });
}

export function openConflictAges(data: SyncDashboardQuery, now: Date): Map<string, number> {
  return new Map(
    data.conflicts.map((c) => [c.id, now.getTime() - new Date(c.createdAt).getTime()]),
  );
}

export async function dashboard(url: string): Promise<SyncDashboardQuery> {
  return execute(url, SyncDashboardDocument, { status: null });
}

/** A card for any object a link points at. */
export function card(node: NodeCardFragment): string {
  switch (node.__typename) {
    case "Customer":
      return `${node.displayName}, changed ${new Date(node.updatedAt).toDateString()}`;
    case "Contact":
      return [node.firstName, node.lastName].filter(Boolean).join(" ");
    case "Facility":
    case "Credential":
    case "Device":
    case "ExternalSource":
      return node.name;
    case "Asset":
      return node.installDate === null ? node.kind : `${node.kind} (${node.installDate})`;
    case "User":
      return `${node.name} (${node.role})`;
    case "SyncConflict":
      return `${node.entity} conflict, ${node.status}`;
    case "CustomFieldDefinition":
      return node.label;
    case "ImportBatch":
      return `${node.rows} rows ${node.status} on ${new Date(node.createdAt).toDateString()}`;
    case "CredentialAccess":
      return `${node.userEmail} revealed ${node.credentialName ?? "?"} at ${new Date(node.revealedAt).toISOString()}`;
    default: {
      const unhandled: never = node;
      return unhandled;
    }
  }
}

export async function lookUp(url: string, id: string): Promise<string | null> {
  const { node } = await execute(url, NodeByIdDocument, { id });
  return node === null ? null : card(node);
}

/** Apollo Client's `possibleTypes`, generated from the schema. */
export const possibleTypes: Record<string, string[]> = possibleTypesJson.possibleTypes;
