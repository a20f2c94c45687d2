import { createClient, type Client as WsClient } from "graphql-ws";

/** A network failure or a server error worth retrying (connection refused, lost response, 5xx, 429). */
export class TransportError extends Error {
  constructor(message: string, readonly status?: number) {
    super(message);
    this.name = "TransportError";
  }
}

/** The server answered with GraphQL errors (a bad request: retrying it unchanged does not help). */
export class GraphQLRequestError extends Error {
  constructor(readonly errors: Array<{ message: string; extensions?: { code?: string } }>) {
    super(errors.map((e) => e.message).join("; "));
    this.name = "GraphQLRequestError";
  }
  get code(): string | undefined {
    return this.errors[0]?.extensions?.code;
  }
  /** A server-side failure (a bug, a deadlock, a restart): the same request may succeed later. */
  get transient(): boolean {
    return this.errors.some(
      (e) => e.extensions?.code === "INTERNAL_SERVER_ERROR" || /^internal server error$/i.test(e.message),
    );
  }
}

export interface TransportOptions {
  /** The server's base URL, e.g. `https://sync.example.com` (`/graphql` is added). */
  url: string;
  /** A bearer token, or a function returning a fresh one. */
  token: string | (() => string | Promise<string>);
  /** fetch implementation (default: global fetch). */
  fetch?: typeof fetch;
  /** WebSocket implementation for graphql-ws (default: global WebSocket). */
  webSocketImpl?: unknown;
  /** Per-request timeout in ms (default 30,000). */
  timeoutMs?: number;
}

export type ConnectionState = "offline" | "connecting" | "online";

/** GraphQL over HTTP and over graphql-ws, with the bearer token. */
export class Transport {
  private ws: WsClient | undefined;
  private listeners = new Set<(state: ConnectionState, error?: unknown) => void>();

  constructor(readonly options: TransportOptions) {}

  get endpoint(): string {
    return this.options.url.replace(/\/+$/, "").replace(/\/graphql$/, "") + "/graphql";
  }

  async token(): Promise<string> {
    const t = this.options.token;
    return typeof t === "function" ? await t() : t;
  }

  async request<T>(query: string, variables: Record<string, unknown>): Promise<T> {
    const doFetch = this.options.fetch ?? fetch;
    let response: Response;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), this.options.timeoutMs ?? 30_000);
    try {
      response = await doFetch(this.endpoint, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          accept: "application/graphql-response+json, application/json",
          authorization: `Bearer ${await this.token()}`,
        },
        body: JSON.stringify({ query, variables }),
        signal: controller.signal,
      });
    } catch (error) {
      throw new TransportError(`network: ${(error as Error).message ?? error}`);
    } finally {
      clearTimeout(timer);
    }
    if (response.status === 429 || response.status >= 500) {
      throw new TransportError(`HTTP ${response.status}`, response.status);
    }
    let body: { data?: T; errors?: Array<{ message: string; extensions?: { code?: string } }> };
    try {
      body = (await response.json()) as typeof body;
    } catch (error) {
      throw new TransportError(`unreadable response (HTTP ${response.status}): ${(error as Error).message}`);
    }
    if (body.errors?.length) throw new GraphQLRequestError(body.errors);
    if (!response.ok || body.data === undefined) {
      throw new TransportError(`HTTP ${response.status}`, response.status);
    }
    return body.data;
  }

  onConnection(listener: (state: ConnectionState, error?: unknown) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The graphql-ws client (one socket for every feed), created on first use. */
  socket(retryWait: (retries: number) => Promise<void>): WsClient {
    if (this.ws) return this.ws;
    const emit = (s: ConnectionState, e?: unknown) => this.listeners.forEach((l) => l(s, e));
    const webSocketImpl = this.options.webSocketImpl ?? (globalThis as { WebSocket?: unknown }).WebSocket;
    this.ws = createClient({
      url: this.endpoint.replace(/^http/, "ws"),
      webSocketImpl,
      // Not lazy: the socket stays up (and retries) while the client lives, so a retry in
      // progress when the last subscription ends cannot reject with no one listening.
      lazy: false,
      onNonLazyError: (error) => emit("offline", error),
      keepAlive: 10_000,
      retryAttempts: Number.POSITIVE_INFINITY,
      shouldRetry: () => true,
      retryWait,
      connectionParams: async () => ({ authorization: `Bearer ${await this.token()}` }),
      on: {
        connecting: () => emit("connecting"),
        connected: () => emit("online"),
        closed: (event) => emit("offline", event),
        error: (error) => emit("offline", error),
      },
    });
    return this.ws;
  }

  async close(): Promise<void> {
    const ws = this.ws;
    this.ws = undefined;
    // dispose() awaits a connection attempt in progress, which rejects when that attempt fails.
    if (ws) await Promise.resolve(ws.dispose()).catch(() => undefined);
  }
}
