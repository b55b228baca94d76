// The technician's screens, phone first: today's jobs, one job, start/complete, "Get code".
import { useEffect, useState } from "preact/hooks";
import type { JSX } from "preact";
import { graphql } from "./graphql";
import type { ResultOf } from "./graphql";
import { ApiError, mutate, query, secretsDoor } from "./api";
import { ErrorLine, Notice, errorText, time, when } from "./ui";

const MY_JOBS = graphql(`
  query MyJobs {
    myJobs {
      id number title status priority scheduledStart scheduledEnd
      site { address }
    }
  }
`);
const JOB = graphql(`
  query Job($id: ID!) {
    workOrder(id: $id) {
      id number title description status priority scheduledStart scheduledEnd
      site { id address }
      secretRefs { id kind label version }
    }
  }
`);
const WINDOW = graphql(`query AccessWindow { accessWindowPolicy { leadMinutes graceMinutes } }`);
const START = graphql(`mutation Start($id: ID!) { startWorkOrder(id: $id) { id status } }`);
const COMPLETE = graphql(`mutation Complete($id: ID!) { completeWorkOrder(id: $id) { id status } }`);
const ACCESS = graphql(`
  mutation RequestAccess($workOrderId: ID!, $secretRefId: ID!) {
    requestSecretAccess(workOrderId: $workOrderId, secretRefId: $secretRefId) { id expiresAt revealUrl revealToken }
  }
`);

type Job = NonNullable<ResultOf<typeof JOB>["workOrder"]>;
type Grant = ResultOf<typeof ACCESS>["requestSecretAccess"];

const STATUS: Record<string, string> = {
  DRAFT: "Draft", SCHEDULED: "Scheduled", DISPATCHED: "Dispatched", IN_PROGRESS: "In progress",
  COMPLETED: "Completed", CANCELLED: "Cancelled",
};
export const statusText = (s: string) => STATUS[s] ?? s;

export function MyJobs({ open }: { open: (id: string) => void }): JSX.Element {
  const [jobs, setJobs] = useState<ResultOf<typeof MY_JOBS>["myJobs"] | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    query(MY_JOBS, {}).then((d) => setJobs(d.myJobs), (e) => setError(errorText(e)));
  }, []);
  return (
    <section aria-labelledby="jobs-h">
      <h1 id="jobs-h">Today's jobs</h1>
      <ErrorLine message={error} />
      {jobs === null && !error ? <p>Loading…</p> : null}
      {jobs?.length === 0 ? <Notice>No jobs for you today.</Notice> : null}
      <ul class="jobs">
        {jobs?.map((j) => (
          <li key={j.id}>
            <button type="button" class="job" data-testid={`job-${j.id}`} onClick={() => open(j.id)}>
              <span class="job-title">#{j.number} {j.title}</span>
              <span class="job-meta">{time(j.scheduledStart)}–{time(j.scheduledEnd)} · {statusText(j.status)}</span>
              <span class="job-meta">{j.site?.address ?? "Address withheld"}</span>
            </button>
          </li>
        ))}
      </ul>
    </section>
  );
}

const SHOW_SECONDS = 30;

/** The value is held in this component's state for SHOW_SECONDS, then dropped. */
export function Revealed({ value, onDone }: { value: string; onDone: () => void }): JSX.Element {
  const [left, setLeft] = useState(SHOW_SECONDS);
  useEffect(() => {
    const t = setInterval(() => setLeft((n) => n - 1), 1000);
    return () => clearInterval(t);
  }, []);
  useEffect(() => {
    if (left <= 0) onDone();
  }, [left]);
  return (
    <div class="revealed" role="status">
      <span class="secret-value" data-testid="secret-value">{value}</span>
      <span class="countdown">Hidden in {left} s</span>
      <button type="button" onClick={onDone}>Hide now</button>
    </div>
  );
}

function windowOpen(job: Job, lead: number | null, grace: number | null, now: number): "before" | "open" | "after" | "unknown" {
  if (!job.scheduledStart || !job.scheduledEnd || lead === null || grace === null) return "unknown";
  const start = Date.parse(job.scheduledStart) - lead * 60_000;
  const end = Date.parse(job.scheduledEnd) + grace * 60_000;
  return now < start ? "before" : now > end ? "after" : "open";
}

// Grants used this session, per job and secret: a code is shown once, and a second try
// goes to the secrets door with the spent token so it says so itself.
const spent = new Map<string, Grant>();
export function forgetGrants(): void {
  spent.clear();
}

export function JobView({ id, back }: { id: string; back: () => void }): JSX.Element {
  const [job, setJob] = useState<Job | null>(null);
  const [policy, setPolicy] = useState<{ lead: number; grace: number } | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [info, setInfo] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [shown, setShown] = useState<{ ref: string; value: string } | null>(null);
  const [now, setNow] = useState(Date.now());

  const load = () =>
    query(JOB, { id }).then(
      (d) => (d.workOrder ? setJob(d.workOrder) : setError("This job is not yours, or no longer exists.")),
      (e) => setError(errorText(e)),
    );
  useEffect(() => {
    void load();
    query(WINDOW, {}).then(
      (d) => setPolicy({ lead: d.accessWindowPolicy.leadMinutes, grace: d.accessWindowPolicy.graceMinutes }),
      () => setPolicy(null),
    );
    const t = setInterval(() => setNow(Date.now()), 15_000);
    return () => clearInterval(t);
  }, [id]);

  async function act(fn: () => Promise<void>): Promise<void> {
    setBusy(true);
    setError(null);
    setInfo(null);
    try {
      await fn();
    } catch (e) {
      setError(explain(e));
    } finally {
      setBusy(false);
    }
  }

  const reveal = (refId: string) =>
    act(async () => {
      const key = `${id}/${refId}`;
      let grant = spent.get(key);
      if (!grant) {
        grant = (await mutate(ACCESS, { workOrderId: id, secretRefId: refId })).requestSecretAccess;
        spent.set(key, grant);
      }
      const body = await secretsDoor("POST", grant.revealUrl, { revealToken: grant.revealToken });
      setShown({ ref: refId, value: String(body.value ?? "") });
    });

  if (!job)
    return (
      <section>
        <button type="button" class="link" onClick={back}>← Today's jobs</button>
        <ErrorLine message={error} />
        {!error ? <p>Loading…</p> : null}
      </section>
    );
  const win = windowOpen(job, policy?.lead ?? null, policy?.grace ?? null, now);
  const live = job.status === "DISPATCHED" || job.status === "IN_PROGRESS";
  return (
    <section aria-labelledby="job-h">
      <button type="button" class="link" onClick={back}>← Today's jobs</button>
      <h1 id="job-h">#{job.number} {job.title}</h1>
      <dl class="facts">
        <dt>Address</dt><dd>{job.site?.address ?? "Withheld"}</dd>
        <dt>Status</dt><dd data-testid="job-status">{statusText(job.status)}</dd>
        <dt>When</dt><dd>{when(job.scheduledStart)} – {time(job.scheduledEnd)}</dd>
        <dt>Priority</dt><dd>{job.priority}</dd>
      </dl>
      {job.description ? <p>{job.description}</p> : null}
      <div class="actions">
        {job.status === "DISPATCHED" ? (
          <button type="button" disabled={busy} onClick={() => act(async () => { await mutate(START, { id }); await load(); })}>Start job</button>
        ) : null}
        {job.status === "IN_PROGRESS" ? (
          <button type="button" disabled={busy} onClick={() => act(async () => { setShown(null); await mutate(COMPLETE, { id }); forgetJob(id); await load(); setInfo("Job completed."); })}>Complete job</button>
        ) : null}
      </div>
      <h2>Access codes</h2>
      {job.secretRefs.length === 0 ? <p>No codes are attached to this job.</p> : null}
      {!live ? <Notice>Codes are available only while the job is dispatched or in progress.</Notice> : null}
      {live && win === "before" ? <Notice>Codes are available from {time(new Date(Date.parse(job.scheduledStart!) - policy!.lead * 60_000).toISOString())}.</Notice> : null}
      {live && win === "after" ? <Notice>This job's access window has closed.</Notice> : null}
      <ul class="secrets">
        {job.secretRefs.map((r) => (
          <li key={r.id}>
            <span>{r.label} <small>({r.kind.replace("_", " ").toLowerCase()})</small></span>
            {shown?.ref === r.id ? (
              <Revealed value={shown.value} onDone={() => setShown(null)} />
            ) : (
              <button type="button" data-testid={`reveal-${r.id}`} disabled={busy || !live || win === "before" || win === "after"} onClick={() => reveal(r.id)}>
                Get code
              </button>
            )}
          </li>
        ))}
      </ul>
      {info ? <Notice>{info}</Notice> : null}
      <ErrorLine message={error} />
    </section>
  );
}

function forgetJob(id: string): void {
  for (const k of [...spent.keys()]) if (k.startsWith(`${id}/`)) spent.delete(k);
}

/** Clear words for the refusals a technician meets. */
function explain(e: unknown): string {
  if (e instanceof ApiError) {
    const m = e.message.toLowerCase();
    if (e.code === "OUTSIDE_ACCESS_WINDOW") return "Outside this job's access window: the code is not available now.";
    if (m.includes("used")) return "This code has already been used: it is shown only once. Ask your dispatcher if you need it again.";
    if (m.includes("revoked")) return "Access to this code was revoked.";
    if (m.includes("expired")) return "Your access to this code has expired.";
  }
  return errorText(e);
}
