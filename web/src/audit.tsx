// Security ops: the trail with filters, alerts, integrity, one user's access history, and the
// trace of any event (traces.tsx).
import { useEffect, useState } from "preact/hooks";
import type { JSX } from "preact";
import { graphql } from "./graphql";
import type { ResultOf } from "./graphql";
import { query } from "./api";
import { ErrorLine, Field, errorText } from "./ui";
import { Denials, TraceView } from "./traces";

const TRAIL = graphql(`
  query Trail($action: String, $actorId: ID, $workOrderId: ID, $secretRefId: ID, $from: DateTime, $to: DateTime) {
    auditEvents(action: $action, actorId: $actorId, workOrderId: $workOrderId, secretRefId: $secretRefId, from: $from, to: $to, first: 100) {
      edges { node { id seq occurredAt action outcome secretRefId targetType targetId sourceIp traceId actor { id displayName } workOrder { id number } } }
    }
  }
`);
const OVERVIEW = graphql(`
  query SecurityOverview {
    auditIntegrity { ok checkedEvents firstBrokenSeq headSeq problems }
    securityAlerts(first: 20) { edges { node { id rule occurredAt actor { displayName } } } }
  }
`);
const PEOPLE = graphql(`query AuditPeople { users { id displayName } }`);
const HISTORY = graphql(`
  query AccessHistory($id: ID!) { user(id: $id) { id displayName accessHistory { id seq occurredAt action outcome secretRefId targetType targetId sourceIp traceId actor { id displayName } workOrder { id number } } } }
`);

type Event = ResultOf<typeof TRAIL>["auditEvents"]["edges"][number]["node"];

function Events({ events, caption, trace }: { events: Event[]; caption: string; trace: (id: string) => void }): JSX.Element {
  return (
    <table class="events">
      <caption>{caption}</caption>
      <thead><tr><th scope="col">#</th><th scope="col">When</th><th scope="col">Who</th><th scope="col">Action</th><th scope="col">Outcome</th><th scope="col">Job</th><th scope="col">Target</th><th scope="col">From</th><th scope="col">Trace</th></tr></thead>
      <tbody>
        {events.map((e) => (
          <tr key={e.id} data-testid={`event-${e.id}`}>
            <td>{e.seq}</td><td>{new Date(e.occurredAt).toLocaleString()}</td><td>{e.actor?.displayName ?? "system"}</td>
            <td>{e.action}</td><td class={`outcome-${e.outcome.toLowerCase()}`}>{e.outcome}</td>
            <td>{e.workOrder ? `#${e.workOrder.number}` : ""}</td><td>{e.targetType ?? ""} {e.secretRefId ?? e.targetId ?? ""}</td><td>{e.sourceIp ?? ""}</td>
            <td>{e.traceId ? <button type="button" class="link" data-testid={`trace-${e.id}`} onClick={() => e.traceId && trace(e.traceId)}>Show trace</button> : null}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

export function SecurityOps(): JSX.Element {
  const [overview, setOverview] = useState<ResultOf<typeof OVERVIEW> | null>(null);
  const [people, setPeople] = useState<ResultOf<typeof PEOPLE>["users"]>([]);
  const [events, setEvents] = useState<Event[]>([]);
  const [action, setAction] = useState("");
  const [actor, setActor] = useState("");
  const [job, setJob] = useState("");
  const [from, setFrom] = useState("");
  const [to, setTo] = useState("");
  const [person, setPerson] = useState("");
  const [history, setHistory] = useState<ResultOf<typeof HISTORY>["user"] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [traceId, setTraceId] = useState<string | null>(null);

  const search = (e?: globalThis.Event) => {
    e?.preventDefault();
    setError(null);
    query(TRAIL, {
      action: action || null, actorId: actor || null, workOrderId: job || null, secretRefId: null,
      from: from ? new Date(from).toISOString() : null, to: to ? new Date(to).toISOString() : null,
    }).then((d) => setEvents(d.auditEvents.edges.map((x) => x.node)), (err) => setError(errorText(err)));
  };
  useEffect(() => {
    query(OVERVIEW, {}).then(setOverview, (e) => setError(errorText(e)));
    query(PEOPLE, {}).then((d) => setPeople(d.users), () => setPeople([]));
    search();
  }, []);

  const integrity = overview?.auditIntegrity;
  return (
    <section aria-labelledby="sec-h">
      <h1 id="sec-h">Audit trail</h1>
      <ErrorLine message={error} />
      {integrity ? (
        <p class={integrity.ok ? "ok" : "bad"} data-testid="integrity">
          {integrity.ok ? `Chain intact: ${integrity.checkedEvents} events checked.` : `Chain broken at event ${integrity.firstBrokenSeq}: ${integrity.problems.join("; ")}`}
        </p>
      ) : null}
      <form class="filters" onSubmit={search}>
        <Field label="Action (e.g. secret.reveal)" name="action" value={action} onInput={setAction} />
        <div class="field">
          <label for="f-actor">Who</label>
          <select id="f-actor" name="actorId" value={actor} onChange={(e) => setActor((e.currentTarget as HTMLSelectElement).value)}>
            <option value="">Anyone</option>
            {people.map((u) => <option key={u.id} value={u.id}>{u.displayName}</option>)}
          </select>
        </div>
        <Field label="Work order id" name="workOrderId" value={job} onInput={setJob} />
        <Field label="From" name="from" type="datetime-local" value={from} onInput={setFrom} />
        <Field label="To" name="to" type="datetime-local" value={to} onInput={setTo} />
        <button type="submit">Search</button>
      </form>
      {traceId ? <TraceView traceId={traceId} close={() => setTraceId(null)} /> : null}
      <Events events={events} caption={`Events (${events.length})`} trace={setTraceId} />
      <Denials open={setTraceId} />
      <h2>Alerts</h2>
      {overview?.securityAlerts.edges.length === 0 ? <p>No alerts.</p> : null}
      <ul>
        {overview?.securityAlerts.edges.map(({ node: a }) => (
          <li key={a.id}>{new Date(a.occurredAt).toLocaleString()}: {a.rule}{a.actor ? ` (${a.actor.displayName})` : ""}</li>
        ))}
      </ul>
      <h2>A user's access history</h2>
      <form class="filters" onSubmit={(e) => { e.preventDefault(); if (person) query(HISTORY, { id: person }).then((d) => setHistory(d.user), (err) => setError(errorText(err))); }}>
        <div class="field">
          <label for="f-person">User</label>
          <select id="f-person" name="person" value={person} onChange={(e) => setPerson((e.currentTarget as HTMLSelectElement).value)}>
            <option value="">Choose…</option>
            {people.map((u) => <option key={u.id} value={u.id}>{u.displayName}</option>)}
          </select>
        </div>
        <button type="submit">Show history</button>
      </form>
      {history ? <Events events={history.accessHistory} caption={`${history.displayName}: access history`} trace={setTraceId} /> : null}
    </section>
  );
}
