// Security ops: a request's trace (the span tree across the services, the access decisions
// on it, and the audit events it wrote), and the latest denied accesses.
import { useEffect, useState } from "preact/hooks";
import type { JSX } from "preact";
import { graphql } from "./graphql";
import type { ResultOf } from "./graphql";
import { query } from "./api";
import { ErrorLine, errorText } from "./ui";

const TRACE = graphql(`
  query Trace($traceId: ID!) {
    trace(traceId: $traceId) {
      traceId startedAt durationMs services
      spans { spanId parentSpanId service name kind startedAt durationMs status attributes { key value } }
      auditEvents { id seq action outcome actor { displayName } }
    }
  }
`);
const DENIALS = graphql(`
  query Denials {
    traces(filter: { decision: DENY }, first: 20) {
      edges { node { traceId startedAt services spans { spanId name attributes { key value } } } }
    }
  }
`);

type Trace = NonNullable<ResultOf<typeof TRACE>["trace"]>;
type Span = Trace["spans"][number];

// The decision convention's attributes, shown by their meaning (CONTRACT "Telemetry").
const DECISION = "doorward.decision";
const REASON = "doorward.decision.reason";

function attr(span: { attributes: { key: string; value: string }[] }, key: string): string | undefined {
  return span.attributes.find((a) => a.key === key)?.value;
}

/** Spans in tree order with their depth: parents before children, siblings by start time. */
function tree(spans: Span[]): [Span, number][] {
  const ids = new Set(spans.map((s) => s.spanId));
  const children = new Map<string | null, Span[]>();
  for (const s of spans) {
    const parent = s.parentSpanId && ids.has(s.parentSpanId) ? s.parentSpanId : null;
    children.set(parent, [...(children.get(parent) ?? []), s]);
  }
  const out: [Span, number][] = [];
  const walk = (parent: string | null, depth: number) => {
    const kids = (children.get(parent) ?? []).sort((a, b) => a.startedAt.localeCompare(b.startedAt));
    for (const k of kids) {
      out.push([k, depth]);
      walk(k.spanId, depth + 1);
    }
  };
  walk(null, 0);
  return out;
}

export function TraceView({ traceId, close }: { traceId: string; close: () => void }): JSX.Element {
  const [trace, setTrace] = useState<Trace | null | undefined>(undefined);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    query(TRACE, { traceId }).then((d) => setTrace(d.trace), (e) => setError(errorText(e)));
  }, [traceId]);
  return (
    <section class="card" aria-labelledby="trace-h" data-testid="trace">
      <h2 id="trace-h">Trace {traceId}</h2>
      <button type="button" class="link" onClick={close}>Close the trace</button>
      <ErrorLine message={error} />
      {trace === null ? <p>This trace has expired, or it is not your organisation's.</p> : null}
      {trace ? (
        <>
          <p>{new Date(trace.startedAt).toLocaleString()} · {trace.durationMs.toFixed(1)} ms · {trace.services.join(", ")}</p>
          <table class="spans">
            <caption>Spans</caption>
            <thead><tr><th scope="col">Span</th><th scope="col">Service</th><th scope="col">Duration</th><th scope="col">Decision</th><th scope="col">Status</th></tr></thead>
            <tbody>
              {tree(trace.spans).map(([s, depth]) => (
                <tr key={s.spanId} data-testid={`span-${s.name}`}>
                  <td style={{ paddingLeft: `${0.5 + depth}rem` }}>{s.name}</td>
                  <td>{s.service}</td>
                  <td>{s.durationMs.toFixed(1)} ms</td>
                  <td>{attr(s, DECISION) ? `${attr(s, DECISION)}${attr(s, REASON) ? ` (${attr(s, REASON)})` : ""}` : ""}</td>
                  <td>{s.status === "UNSET" ? "" : s.status.toLowerCase()}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <h3>Audit events of this trace</h3>
          <ul>
            {trace.auditEvents.map((e) => (
              <li key={e.id}>#{e.seq} {e.action} · {e.outcome}{e.actor ? ` · ${e.actor.displayName}` : ""}</li>
            ))}
          </ul>
        </>
      ) : null}
    </section>
  );
}

/** The latest denied accesses, each opening its trace. */
export function Denials({ open }: { open: (traceId: string) => void }): JSX.Element {
  const [rows, setRows] = useState<ResultOf<typeof DENIALS>["traces"]["edges"] | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    query(DENIALS, {}).then((d) => setRows(d.traces.edges), (e) => setError(errorText(e)));
  }, []);
  return (
    <>
      <h2>Denied accesses</h2>
      <ErrorLine message={error} />
      {rows?.length === 0 ? <p>No denied access in the traces kept.</p> : null}
      <ul>
        {rows?.map(({ node: t }) => {
          const denied = t.spans.find((s) => attr(s, DECISION) === "deny");
          return (
            <li key={t.traceId}>
              {new Date(t.startedAt).toLocaleString()}: {denied?.name ?? "access"} denied
              {denied && attr(denied, REASON) ? ` (${attr(denied, REASON)})` : ""}{" "}
              <button type="button" class="link" onClick={() => open(t.traceId)}>Show trace</button>
            </li>
          );
        })}
      </ul>
    </>
  );
}
