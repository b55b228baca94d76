// One GraphQL client for the console: the gateway's /graphql on the same origin, no cache
// (every answer is fetched fresh and kept only in the component that shows it). Operations go
// as Automatic Persisted Queries (a hash; the document only when the gateway asks for it), the
// way docs/api.md shows frontend teams; POST always, so no request lands in a URL or history.
import { Client, CombinedError, fetchExchange } from "@urql/core";
import { persistedExchange } from "@urql/exchange-persisted";
import type { TypedDocumentNode } from "@urql/core";
import { graphql } from "./graphql";
import { clearSession, getSession, setSession } from "./session";

export class ApiError extends Error {
  constructor(message: string, readonly code: string) {
    super(message);
  }
}

let expiredHandler: (() => void) | null = null;
export function onSessionExpired(fn: () => void): void {
  expiredHandler = fn;
}

// First-login tokens are good only for changePassword/enrollMfa/confirmMfa: they are used for
// those calls and never become the session.
let limitedToken: string | null = null;
export async function asLimited<T>(token: string, fn: () => Promise<T>): Promise<T> {
  limitedToken = token;
  try {
    return await fn();
  } finally {
    limitedToken = null;
  }
}

export const client = new Client({
  url: "/graphql",
  exchanges: [
    persistedExchange({ preferGetForPersistedQueries: false, enableForMutation: true }),
    fetchExchange,
  ],
  requestPolicy: "network-only",
  preferGetMethod: false,
  fetchOptions: (): RequestInit => {
    const token = limitedToken ?? getSession()?.accessToken;
    return {
      credentials: "omit",
      cache: "no-store",
      headers: token ? { authorization: `Bearer ${token}` } : ({} as Record<string, string>),
    };
  },
});

const REFRESH = graphql(`
  mutation Refresh($refreshToken: String!) {
    refresh(refreshToken: $refreshToken) {
      accessToken refreshToken expiresAt
      user { id email displayName roles }
    }
  }
`);

function toError(error: CombinedError): ApiError {
  const gql = error.graphQLErrors[0];
  if (gql) {
    const code = String(gql.extensions?.code ?? "ERROR");
    return new ApiError(gql.message, code);
  }
  const status = (error.response as Response | undefined)?.status;
  if (status === 401) return new ApiError("Your session has ended: sign in again.", "UNAUTHENTICATED");
  return new ApiError("Doorward cannot be reached: check your connection and try again.", "NETWORK");
}

async function once<D, V extends object>(doc: TypedDocumentNode<D, V>, vars: V, mutation: boolean): Promise<D> {
  const op = mutation ? client.mutation(doc, vars) : client.query(doc, vars);
  const res = await op.toPromise();
  if (res.error) throw toError(res.error);
  return res.data as D;
}

let refreshing: Promise<boolean> | null = null;

async function tryRefresh(): Promise<boolean> {
  const s = getSession();
  if (!s) return false;
  refreshing ??= (async () => {
    try {
      const data = await once(REFRESH, { refreshToken: s.refreshToken }, true);
      const r = data.refresh;
      setSession({
        accessToken: r.accessToken,
        refreshToken: r.refreshToken,
        expiresAt: Date.parse(r.expiresAt),
        user: { ...r.user, roles: [...r.user.roles] },
      });
      return true;
    } catch {
      return false;
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

/** Runs an operation; on UNAUTHENTICATED refreshes the session once, else ends it. */
export async function run<D, V extends object>(doc: TypedDocumentNode<D, V>, vars: V, mutation = false): Promise<D> {
  try {
    return await once(doc, vars, mutation);
  } catch (e) {
    if (e instanceof ApiError && e.code === "UNAUTHENTICATED" && getSession()) {
      if (await tryRefresh()) return once(doc, vars, mutation);
      clearSession();
      expiredHandler?.();
    }
    throw e;
  }
}

export const query = <D, V extends object>(doc: TypedDocumentNode<D, V>, vars: V) => run(doc, vars, false);
export const mutate = <D, V extends object>(doc: TypedDocumentNode<D, V>, vars: V) => run(doc, vars, true);

/** The secrets REST door (CONTRACT "Secret values: the only door"): the value never touches
 * the GraphQL client, a cache or any storage; the caller shows it and forgets it. */
export async function secretsDoor(method: "PUT" | "POST", url: string, body: Record<string, string>): Promise<Record<string, unknown>> {
  const s = getSession();
  if (!s) throw new ApiError("Your session has ended: sign in again.", "UNAUTHENTICATED");
  let res: Response;
  try {
    res = await fetch(url, {
      method,
      credentials: "omit",
      cache: "no-store",
      referrerPolicy: "no-referrer",
      headers: { "content-type": "application/json", authorization: `Bearer ${s.accessToken}` },
      body: JSON.stringify(body),
    });
  } catch {
    throw new ApiError("The secrets service cannot be reached: try again.", "NETWORK");
  }
  const json = (await res.json().catch(() => ({}))) as Record<string, unknown>;
  if (!res.ok) {
    const err = (json.error ?? {}) as { code?: string; message?: string };
    throw new ApiError(err.message ?? `Refused (${res.status}).`, err.code ?? String(res.status));
  }
  return json;
}

type Page = { edges: unknown[]; pageInfo: { hasNextPage: boolean; endCursor?: string | null } };

/** Every page of a connection, `first` at a time, up to `maxPages`: lists longer than one
 * page (the API's cap is 100) are shown whole; `pageInfo.hasNextPage` of the result says
 * whether the cap cut it short. */
export async function everyPage<C extends Page>(fetch: (after: string | null) => Promise<C>, maxPages = 20): Promise<C> {
  let page = await fetch(null);
  const edges = [...page.edges];
  for (let n = 1; n < maxPages && page.pageInfo.hasNextPage && page.pageInfo.endCursor; n++) {
    page = await fetch(page.pageInfo.endCursor);
    edges.push(...page.edges);
  }
  return { ...page, edges } as C;
}
