// Break-glass (ADMIN): a code outside any job, with a fresh one-time code of the requester, a
// reason, and (when the organisation asks for it) a second admin's approval. Every step is on
// the audit trail and raises an alert; the code is shown once, like a technician's.
import { useEffect, useState } from "preact/hooks";
import type { JSX } from "preact";
import { graphql } from "./graphql";
import type { ResultOf } from "./graphql";
import { everyPage, mutate, query, secretsDoor } from "./api";
import { getSession } from "./session";
import { Revealed } from "./tech";
import { ErrorLine, Field, Notice, errorText, when } from "./ui";

const SITES = graphql(`
  query BreakGlassSites($after: String) {
    customers(first: 100, after: $after) {
      edges { node { id name sites { id address } } }
      pageInfo { hasNextPage endCursor }
    }
  }
`);
const SITE_SECRETS = graphql(`query BreakGlassSiteSecrets($id: ID!) { site(id: $id) { id secrets { id kind label } } }`);
const REQUESTS = graphql(`
  query BreakGlassRequests {
    breakGlassPolicy { requireSecondApprover }
    breakGlassRequests {
      id status reason createdAt expiresAt
      requester { id displayName }
      approver { id displayName }
      secretRef { id label kind }
      grant { id revealUrl revealToken secretRef { id } }
    }
  }
`);
const REQUEST = graphql(`
  mutation RequestBreakGlass($secretRefId: ID!, $reason: String!, $otp: String!) {
    requestBreakGlassAccess(secretRefId: $secretRefId, reason: $reason, otp: $otp) {
      id status grant { id revealUrl revealToken secretRef { id } }
    }
  }
`);
const APPROVE = graphql(`
  mutation ApproveBreakGlass($requestId: ID!, $otp: String!) { approveBreakGlass(requestId: $requestId, otp: $otp) { id status } }
`);
const DENY = graphql(`mutation DenyBreakGlass($requestId: ID!) { denyBreakGlass(requestId: $requestId) { id status } }`);

type Requests = ResultOf<typeof REQUESTS>;
type Grant = { id: string; revealUrl: string; revealToken: string; secretRef: { id: string } };

// A grant reaches its requester once (the API shows it a single time): kept here, in memory,
// until used or signed out, so leaving the screen does not lose it.
const unused = new Map<string, Grant>();
export function forgetBreakGlass(): void {
  unused.clear();
}

const STATUS: Record<string, string> = {
  PENDING: "Waiting for a second admin",
  APPROVED: "Approved",
  DENIED: "Denied",
  EXPIRED: "Expired",
};

export function BreakGlass(): JSX.Element {
  const [sites, setSites] = useState<ResultOf<typeof SITES>["customers"] | null>(null);
  const [requests, setRequests] = useState<Requests | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [info, setInfo] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [shown, setShown] = useState<string | null>(null);
  const me = getSession()?.user.id;

  const load = () =>
    query(REQUESTS, {}).then((d) => {
      for (const r of d.breakGlassRequests) if (r.grant) unused.set(r.grant.secretRef.id, r.grant);
      setRequests(d);
    }, (e) => setError(errorText(e)));
  useEffect(() => {
    void load();
    everyPage((after) => query(SITES, { after }).then((d) => d.customers)).then(setSites, (e) => setError(errorText(e)));
  }, []);

  async function act(done: string | null, fn: () => Promise<unknown>): Promise<void> {
    setBusy(true); setError(null); setInfo(null);
    try { await fn(); await load(); if (done) setInfo(done); } catch (e) { setError(errorText(e)); } finally { setBusy(false); }
  }

  const reveal = (refId: string) =>
    act(null, async () => {
      const grant = unused.get(refId);
      if (!grant) throw new Error("This code was already shown: ask again if you still need it.");
      unused.delete(refId);
      const body = await secretsDoor("POST", grant.revealUrl, { revealToken: grant.revealToken });
      setShown(String(body.value ?? ""));
    });

  const places = (sites?.edges ?? []).flatMap((e) =>
    e.node.sites.map((s): [string, string] => [s.id, `${s.address ?? "(address withheld)"} · ${e.node.name ?? "(erased)"}`]));
  return (
    <section aria-labelledby="bg-h">
      <h1 id="bg-h">Break-glass access</h1>
      <p>For emergencies only: every request, approval and reveal is audited and raises a security alert.
        {requests?.breakGlassPolicy.requireSecondApprover ? " A second admin must approve each request." : ""}</p>
      {info ? <Notice>{info}</Notice> : null}
      <ErrorLine message={error} />
      {shown !== null ? <Revealed value={shown} onDone={() => setShown(null)} /> : null}
      <NewRequest places={places} busy={busy} act={act} />
      <table>
        <caption>Requests</caption>
        <thead><tr><th scope="col">Code</th><th scope="col">Requested by</th><th scope="col">Reason</th><th scope="col">When</th><th scope="col">Status</th><th scope="col">Actions</th></tr></thead>
        <tbody>
          {requests?.breakGlassRequests.map((r) => (
            <tr key={r.id} data-testid={`breakglass-${r.id}`}>
              <td>{r.secretRef?.label ?? "(removed)"}</td>
              <td>{r.requester.displayName}</td>
              <td>{r.reason}</td>
              <td>{when(r.createdAt)}</td>
              <td>{STATUS[r.status] ?? r.status}{r.approver ? ` by ${r.approver.displayName}` : ""}</td>
              <td>
                {r.status === "PENDING" && r.requester.id !== me ? <Decide id={r.id} busy={busy} act={act} /> : null}
                {r.status === "APPROVED" && r.requester.id === me && r.secretRef && unused.has(r.secretRef.id) ? (
                  <button type="button" data-testid={`reveal-${r.secretRef.id}`} disabled={busy} onClick={() => r.secretRef && reveal(r.secretRef.id)}>Get code</button>
                ) : null}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

type Act = (done: string | null, fn: () => Promise<unknown>) => Promise<void>;

function NewRequest({ places, busy, act }: { places: [string, string][]; busy: boolean; act: Act }): JSX.Element {
  const [siteId, setSiteId] = useState("");
  const [refs, setRefs] = useState<{ id: string; kind: string; label: string }[]>([]);
  const [refId, setRefId] = useState("");
  useEffect(() => {
    setRefId("");
    if (!siteId) return setRefs([]);
    query(SITE_SECRETS, { id: siteId }).then((d) => setRefs(d.site?.secrets ?? []), () => setRefs([]));
  }, [siteId]);
  const [reason, setReason] = useState("");
  const [otp, setOtp] = useState("");
  const submit = (e: Event) => {
    e.preventDefault();
    void act(null, async () => {
      const r = (await mutate(REQUEST, { secretRefId: refId, reason, otp })).requestBreakGlassAccess;
      if (r.grant) unused.set(r.grant.secretRef.id, r.grant);
      setReason(""); setOtp("");
    });
  };
  return (
    <form class="card" aria-labelledby="bg-new-h" autoComplete="off" onSubmit={submit}>
      <h2 id="bg-new-h">Ask for a code</h2>
      <div class="field">
        <label for="bg-site">Site</label>
        <select id="bg-site" name="siteId" value={siteId} required onChange={(e) => setSiteId((e.currentTarget as HTMLSelectElement).value)}>
          <option value="">Choose a site</option>
          {places.map(([id, where]) => <option key={id} value={id}>{where}</option>)}
        </select>
      </div>
      <div class="field">
        <label for="bg-ref">Code</label>
        <select id="bg-ref" name="secretRefId" value={refId} required onChange={(e) => setRefId((e.currentTarget as HTMLSelectElement).value)}>
          <option value="">Choose a site's code</option>
          {refs.map((r) => <option key={r.id} value={r.id}>{r.label} ({r.kind.toLowerCase().replace("_", " ")})</option>)}
        </select>
      </div>
      <Field label="Reason (kept on the audit trail)" name="reason" value={reason} onInput={setReason} required />
      <Field label="Your one-time code" name="stepUpOtp" value={otp} onInput={setOtp} inputMode="numeric" autoComplete="one-time-code" required />
      <button type="submit" class="danger" disabled={busy}>Ask for break-glass access</button>
    </form>
  );
}

function Decide({ id, busy, act }: { id: string; busy: boolean; act: Act }): JSX.Element {
  const [otp, setOtp] = useState("");
  return (
    <form onSubmit={(e) => { e.preventDefault(); void act("Approved: the requester can now get the code once.", () => mutate(APPROVE, { requestId: id, otp })); }}>
      <Field label="Your one-time code to approve" name="approveOtp" value={otp} onInput={setOtp} inputMode="numeric" autoComplete="one-time-code" required />
      <button type="submit" disabled={busy}>Approve</button>
      <button type="button" class="danger" disabled={busy} onClick={() => void act("Denied.", () => mutate(DENY, { requestId: id }))}>Deny</button>
    </form>
  );
}
