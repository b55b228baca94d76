// The dispatcher's board: customers and sites, jobs by day and region, the job actions, and a
// site's codes (the value goes from this form straight to the secrets door's uploadUrl).
import { useEffect, useId, useState } from "preact/hooks";
import type { JSX } from "preact";
import { graphql } from "./graphql";
import type { ResultOf } from "./graphql";
import { everyPage, mutate, query, secretsDoor } from "./api";
import { ErrorLine, Field, Notice, errorText, time } from "./ui";
import { statusText } from "./tech";

// Three small queries rather than one: each stays well inside the gateway's cost budget
// (lists count their `first`), and a site's codes are fetched only when a form needs them.
const PEOPLE = graphql(`
  query BoardPeople { regions { id name } users(role: TECHNICIAN) { id displayName status } }
`);
const CUSTOMERS = graphql(`
  query BoardCustomers($after: String) {
    customers(first: 100, after: $after) {
      edges { node { id name region { id name } sites { id address } } }
      pageInfo { hasNextPage endCursor }
    }
  }
`);
const JOBS = graphql(`
  query BoardJobs($regionId: ID, $from: DateTime, $to: DateTime, $after: String) {
    workOrders(regionId: $regionId, from: $from, to: $to, first: 100, after: $after) {
      pageInfo { hasNextPage endCursor }
      edges { node {
        id number title status priority scheduledStart scheduledEnd
        site { id address } region { name } assignee { id displayName }
      } }
    }
  }
`);
const SITE_SECRETS = graphql(`query SiteSecrets($id: ID!) { site(id: $id) { id secrets { id kind label version } } }`);

const CREATE_CUSTOMER = graphql(`mutation CreateCustomer($input: CreateCustomerInput!) { createCustomer(input: $input) { id } }`);
const CREATE_SITE = graphql(`mutation CreateSite($input: CreateSiteInput!) { createSite(input: $input) { id } }`);
const CREATE_JOB = graphql(`mutation CreateJob($input: CreateWorkOrderInput!) { createWorkOrder(input: $input) { id number } }`);
const ASSIGN = graphql(`mutation Assign($id: ID!, $assigneeId: ID!) { assignWorkOrder(id: $id, assigneeId: $assigneeId) { id } }`);
const DISPATCH = graphql(`mutation Dispatch($id: ID!) { dispatchWorkOrder(id: $id) { id } }`);
const RESCHEDULE = graphql(`mutation Reschedule($id: ID!, $input: UpdateWorkOrderInput!) { updateWorkOrder(id: $id, input: $input) { id } }`);
const CANCEL = graphql(`mutation Cancel($id: ID!, $reason: String!) { cancelWorkOrder(id: $id, reason: $reason) { id } }`);
const ATTACH = graphql(`mutation Attach($workOrderId: ID!, $secretRefId: ID!) { attachSecret(workOrderId: $workOrderId, secretRefId: $secretRefId) { id } }`);
const PREPARE = graphql(`
  mutation PrepareUpload($siteId: ID!, $kind: SecretKind!, $label: String!) {
    prepareSecretUpload(siteId: $siteId, kind: $kind, label: $label) { uploadUrl uploadToken secretRef { id } }
  }
`);
const ROTATE = graphql(`
  mutation PrepareRotation($secretRefId: ID!) {
    prepareSecretRotation(secretRefId: $secretRefId) { uploadUrl uploadToken secretRef { id } }
  }
`);

type Board = ResultOf<typeof PEOPLE> & ResultOf<typeof CUSTOMERS> & ResultOf<typeof JOBS>;
type Site = Board["customers"]["edges"][number]["node"]["sites"][number];
type SecretRef = NonNullable<ResultOf<typeof SITE_SECRETS>["site"]>["secrets"][number];

/** A site's codes (references only), fetched when `siteId` or `version` changes. */
function useSiteSecrets(siteId: string | undefined, version: unknown): SecretRef[] {
  const [refs, setRefs] = useState<SecretRef[]>([]);
  useEffect(() => {
    if (!siteId) return setRefs([]);
    query(SITE_SECRETS, { id: siteId }).then((d) => setRefs(d.site?.secrets ?? []), () => setRefs([]));
  }, [siteId, version]);
  return refs;
}
type Kind = "DOOR_CODE" | "ALARM_CODE" | "KEY_SAFE" | "GATE_CODE" | "OTHER";

const today = () => new Date().toISOString().slice(0, 10);
const iso = (local: string) => (local ? new Date(local).toISOString() : null);

function Select(props: { label: string; name: string; value: string; onChange: (v: string) => void; options: [string, string][] }): JSX.Element {
  const id = useId();
  return (
    <div class="field">
      <label for={id}>{props.label}</label>
      <select id={id} name={props.name} value={props.value} onChange={(e) => props.onChange((e.currentTarget as HTMLSelectElement).value)}>
        {props.options.map(([v, l]) => <option key={v} value={v}>{l}</option>)}
      </select>
    </div>
  );
}

export function Dispatcher(): JSX.Element {
  const [day, setDay] = useState(today());
  const [region, setRegion] = useState("");
  const [board, setBoard] = useState<Board | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [info, setInfo] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const load = () => {
    const from = new Date(`${day}T00:00:00`).toISOString();
    const to = new Date(`${day}T23:59:59`).toISOString();
    return Promise.all([
      query(PEOPLE, {}),
      everyPage((after) => query(CUSTOMERS, { after }).then((d) => d.customers)),
      everyPage((after) => query(JOBS, { regionId: region || null, from, to, after }).then((d) => d.workOrders)),
    ]).then(
      ([a, customers, workOrders]) => setBoard({ ...a, customers, workOrders }),
      (e) => setError(errorText(e)),
    );
  };
  useEffect(() => { void load(); }, [day, region]);

  // Resolves true when the change was made, so a form clears itself only then (a refused
  // change keeps what the dispatcher typed).
  async function act(done: string, fn: () => Promise<unknown>): Promise<boolean> {
    setBusy(true);
    setError(null);
    setInfo(null);
    try {
      await fn();
      await load();
      setInfo(done);
      return true;
    } catch (e) {
      setError(errorText(e));
      return false;
    } finally {
      setBusy(false);
    }
  }

  const regions = board?.regions ?? [];
  const customers = board?.customers.edges.map((e) => e.node) ?? [];
  const sites = customers.flatMap((c) => c.sites.map((s) => ({ ...s, customer: c.name ?? "(erased)" })));
  const techs = (board?.users ?? []).filter((u) => u.status === "ACTIVE");
  const jobs = board?.workOrders.edges.map((e) => e.node) ?? [];

  return (
    <section aria-labelledby="board-h">
      <h1 id="board-h">Dispatch board</h1>
      <div class="filters">
        <Field label="Day" name="day" type="date" value={day} onInput={setDay} />
        <Select label="Region" name="region" value={region} onChange={setRegion} options={[["", "All my regions"], ...regions.map((r): [string, string] => [r.id, r.name])]} />
      </div>
      {info ? <Notice>{info}</Notice> : null}
      <ErrorLine message={error} />
      <h2>Jobs</h2>
      {jobs.length === 0 ? <p>No jobs on this day.</p> : null}
      {board?.workOrders.pageInfo.hasNextPage ? <Notice>Showing the first {jobs.length} jobs: choose a region to see the rest.</Notice> : null}
      <ul class="board">
        {jobs.map((j) => (
          <li key={j.id} data-testid={`job-${j.id}`} class="board-job">
            <h3>#{j.number} {j.title}</h3>
            <p>{statusText(j.status)} · {time(j.scheduledStart)}–{time(j.scheduledEnd)} · {j.region.name} · {j.site?.address ?? ""}</p>
            <p>Assignee: {j.assignee?.displayName ?? "nobody"}</p>
            <JobActions job={j} techs={techs} sites={sites} busy={busy} act={act} />
          </li>
        ))}
      </ul>
      <NewJob sites={sites} busy={busy} act={act} showDay={setDay} />
      <NewCustomer regions={regions} busy={busy} act={act} />
      <NewSite customers={customers} busy={busy} act={act} />
      <Codes sites={sites} busy={busy} act={act} />
    </section>
  );
}

type Act = (done: string, fn: () => Promise<unknown>) => Promise<boolean>;
type Job = Board["workOrders"]["edges"][number]["node"];

function JobActions({ job, techs, sites, busy, act }: { job: Job; techs: Board["users"]; sites: (Site & { customer: string })[]; busy: boolean; act: Act }): JSX.Element {
  const [tech, setTech] = useState(job.assignee?.id ?? techs[0]?.id ?? "");
  const [start, setStart] = useState("");
  const [end, setEnd] = useState("");
  const [reason, setReason] = useState("");
  const site = sites.find((s) => s.id === job.site?.id);
  const refs = useSiteSecrets(site?.id, busy);
  const [picked, setSecret] = useState("");
  const secret = picked || refs[0]?.id || "";
  const open = !["COMPLETED", "CANCELLED"].includes(job.status);
  if (!open) return <></>;
  const n = job.number;
  return (
    <details class="job-actions">
      <summary>Change job #{n}</summary>
      <form onSubmit={(e) => { e.preventDefault(); void act(`Job #${n} assigned.`, () => mutate(ASSIGN, { id: job.id, assigneeId: tech })); }}>
        <Select label={`Technician for #${n}`} name="assignee" value={tech} onChange={setTech} options={techs.map((t): [string, string] => [t.id, t.displayName])} />
        <button type="submit" disabled={busy || !tech}>Assign</button>
      </form>
      {site && refs.length ? (
        <form onSubmit={(e) => { e.preventDefault(); void act(`Code attached to #${n}.`, () => mutate(ATTACH, { workOrderId: job.id, secretRefId: secret })); }}>
          <Select label={`Code for #${n}`} name="secretRef" value={secret} onChange={setSecret} options={refs.map((s): [string, string] => [s.id, s.label])} />
          <button type="submit" disabled={busy || !secret}>Attach code</button>
        </form>
      ) : null}
      {job.status === "SCHEDULED" ? (
        <button type="button" disabled={busy} onClick={() => act(`Job #${n} dispatched.`, () => mutate(DISPATCH, { id: job.id }))}>Dispatch</button>
      ) : null}
      <form onSubmit={(e) => { e.preventDefault(); void act(`Job #${n} rescheduled.`, () => mutate(RESCHEDULE, { id: job.id, input: { scheduledStart: iso(start), scheduledEnd: iso(end) } })); }}>
        <Field label={`New start for #${n}`} name="start" type="datetime-local" value={start} onInput={setStart} required />
        <Field label={`New end for #${n}`} name="end" type="datetime-local" value={end} onInput={setEnd} required />
        <button type="submit" disabled={busy}>Reschedule</button>
      </form>
      <form onSubmit={(e) => { e.preventDefault(); void act(`Job #${n} cancelled.`, () => mutate(CANCEL, { id: job.id, reason })); }}>
        <Field label={`Reason to cancel #${n}`} name="reason" value={reason} onInput={setReason} required />
        <button type="submit" class="danger" disabled={busy}>Cancel job</button>
      </form>
    </details>
  );
}

// A new job may start on another day than the board shows (late in the evening, "tomorrow
// morning"): the board then turns to that day, so the dispatcher sees the job they created.
function NewJob({ sites, busy, act, showDay }: { sites: (Site & { customer: string })[]; busy: boolean; act: Act; showDay: (day: string) => void }): JSX.Element {
  const [site, setSite] = useState("");
  const [title, setTitle] = useState("");
  const [start, setStart] = useState("");
  const [end, setEnd] = useState("");
  const chosen = site || sites[0]?.id || "";
  return (
    <form class="card" aria-labelledby="newjob-h" onSubmit={(e) => { e.preventDefault(); void act("Job created.", () => mutate(CREATE_JOB, { input: { siteId: chosen, title, scheduledStart: iso(start), scheduledEnd: iso(end) } })).then((made) => { if (!made) return; setTitle(""); if (start) showDay(start.slice(0, 10)); }); }}>
      <h2 id="newjob-h">New job</h2>
      <Select label="Site" name="siteId" value={chosen} onChange={setSite} options={sites.map((s): [string, string] => [s.id, `${s.customer}: ${s.address ?? ""}`])} />
      <Field label="Title" name="title" value={title} onInput={setTitle} required />
      <Field label="Start" name="scheduledStart" type="datetime-local" value={start} onInput={setStart} />
      <Field label="End" name="scheduledEnd" type="datetime-local" value={end} onInput={setEnd} />
      <button type="submit" disabled={busy || !chosen}>Create job</button>
    </form>
  );
}

function NewCustomer({ regions, busy, act }: { regions: Board["regions"]; busy: boolean; act: Act }): JSX.Element {
  const [name, setName] = useState("");
  const [phone, setPhone] = useState("");
  const [email, setEmail] = useState("");
  const [region, setRegion] = useState("");
  const chosen = region || regions[0]?.id || "";
  return (
    <form class="card" aria-labelledby="newcust-h" onSubmit={(e) => { e.preventDefault(); void act("Customer created.", () => mutate(CREATE_CUSTOMER, { input: { name, phone, email, regionId: chosen } })).then((made) => { if (made) setName(""); }); }}>
      <h2 id="newcust-h">New customer</h2>
      <Field label="Customer name" name="customerName" value={name} onInput={setName} required />
      <Field label="Phone" name="phone" type="tel" value={phone} onInput={setPhone} />
      <Field label="Customer email" name="customerEmail" type="email" value={email} onInput={setEmail} />
      <Select label="Customer region" name="customerRegion" value={chosen} onChange={setRegion} options={regions.map((r): [string, string] => [r.id, r.name])} />
      <button type="submit" disabled={busy || !chosen}>Create customer</button>
    </form>
  );
}

function NewSite({ customers, busy, act }: { customers: Board["customers"]["edges"][number]["node"][]; busy: boolean; act: Act }): JSX.Element {
  const [customer, setCustomer] = useState("");
  const [address, setAddress] = useState("");
  const chosen = customers.find((c) => c.id === customer) ?? customers[0];
  return (
    <form class="card" aria-labelledby="newsite-h" onSubmit={(e) => { e.preventDefault(); if (chosen) void act("Site created.", () => mutate(CREATE_SITE, { input: { customerId: chosen.id, address, regionId: chosen.region.id } })).then((made) => { if (made) setAddress(""); }); }}>
      <h2 id="newsite-h">New site</h2>
      <Select label="Site's customer" name="customerId" value={chosen?.id ?? ""} onChange={setCustomer} options={customers.map((c): [string, string] => [c.id, c.name ?? "(erased)"])} />
      <Field label="Address" name="address" value={address} onInput={setAddress} required />
      <button type="submit" disabled={busy || !chosen}>Create site</button>
    </form>
  );
}

const KINDS: [Kind, string][] = [["DOOR_CODE", "Door code"], ["ALARM_CODE", "Alarm code"], ["KEY_SAFE", "Key safe"], ["GATE_CODE", "Gate code"], ["OTHER", "Other"]];

/** Upload a new code or rotate one: the value goes only to the secrets door, then is cleared. */
function Codes({ sites, busy, act }: { sites: (Site & { customer: string })[]; busy: boolean; act: Act }): JSX.Element {
  const [site, setSite] = useState("");
  const [target, setTarget] = useState("new");
  const [kind, setKind] = useState<Kind>("DOOR_CODE");
  const [label, setLabel] = useState("");
  const [value, setValue] = useState("");
  const chosen = sites.find((s) => s.id === site) ?? sites[0];
  const refs = useSiteSecrets(chosen?.id, busy);
  const submit = (e: Event) => {
    e.preventDefault();
    if (!chosen) return;
    const v = value;
    setValue("");
    void act(target === "new" ? "Code uploaded." : "Code rotated.", async () => {
      const slot = target === "new"
        ? (await mutate(PREPARE, { siteId: chosen.id, kind, label })).prepareSecretUpload
        : (await mutate(ROTATE, { secretRefId: target })).prepareSecretRotation;
      await secretsDoor("PUT", slot.uploadUrl, { uploadToken: slot.uploadToken, value: v });
    });
  };
  return (
    <form class="card" aria-labelledby="codes-h" onSubmit={submit} autoComplete="off">
      <h2 id="codes-h">Site codes</h2>
      <Select label="Code's site" name="codeSite" value={chosen?.id ?? ""} onChange={(v) => { setSite(v); setTarget("new"); }} options={sites.map((s): [string, string] => [s.id, `${s.customer}: ${s.address ?? ""}`])} />
      <Select label="Code" name="codeTarget" value={target} onChange={setTarget} options={[["new", "A new code"], ...refs.map((s): [string, string] => [s.id, `Rotate ${s.label} (v${s.version})`])]} />
      {target === "new" ? (
        <>
          <Select label="Kind" name="kind" value={kind} onChange={(v) => setKind(v as Kind)} options={KINDS} />
          <Field label="Label" name="label" value={label} onInput={setLabel} required />
        </>
      ) : null}
      <Field label="Code value" name="codeValue" type="password" value={value} onInput={setValue} autoComplete="off" required />
      <button type="submit" disabled={busy || !chosen}>{target === "new" ? "Upload code" : "Rotate code"}</button>
    </form>
  );
}
