// Admin: users (create, roles, regions, deactivate) and regions.
import { useEffect, useState } from "preact/hooks";
import type { JSX } from "preact";
import { graphql } from "./graphql";
import type { ResultOf } from "./graphql";
import { mutate, query } from "./api";
import { ErrorLine, Field, Notice, errorText } from "./ui";

const PEOPLE = graphql(`
  query People { regions { id name } users { id email displayName roles status mfaEnabled regions { id name } } }
`);
const CREATE_REGION = graphql(`mutation CreateRegion($name: String!) { createRegion(name: $name) { id } }`);
const CREATE_USER = graphql(`mutation CreateUser($input: CreateUserInput!) { createUser(input: $input) { id } }`);
const UPDATE_USER = graphql(`mutation UpdateUser($id: ID!, $input: UpdateUserInput!) { updateUser(id: $id, input: $input) { id } }`);
const DEACTIVATE = graphql(`mutation Deactivate($id: ID!, $reason: String!) { deactivateUser(id: $id, reason: $reason) { id status } }`);

const POLICY = graphql(`
  query OrgPolicy { accessWindowPolicy { leadMinutes graceMinutes maxWindowHours timezone } breakGlassPolicy { requireSecondApprover } }
`);
const UPDATE_WINDOW = graphql(`
  mutation UpdateWindow($input: AccessWindowPolicyInput!) { updateAccessWindowPolicy(input: $input) { leadMinutes } }
`);
const UPDATE_BREAK_GLASS = graphql(`
  mutation UpdateBreakGlass($requireSecondApprover: Boolean!) { updateBreakGlassPolicy(requireSecondApprover: $requireSecondApprover) }
`);

const ROLES = ["ADMIN", "DISPATCHER", "TECHNICIAN", "SUBCONTRACTOR", "AUDITOR"] as const;
type Role = (typeof ROLES)[number];
type Data = ResultOf<typeof PEOPLE>;

export function Admin(): JSX.Element {
  const [data, setData] = useState<Data | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [info, setInfo] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const load = () => query(PEOPLE, {}).then(setData, (e) => setError(errorText(e)));
  useEffect(() => { void load(); }, []);
  async function act(done: string, fn: () => Promise<unknown>): Promise<void> {
    setBusy(true); setError(null); setInfo(null);
    try { await fn(); await load(); setInfo(done); } catch (e) { setError(errorText(e)); } finally { setBusy(false); }
  }
  return (
    <section aria-labelledby="admin-h">
      <h1 id="admin-h">People and regions</h1>
      {info ? <Notice>{info}</Notice> : null}
      <ErrorLine message={error} />
      <table>
        <caption>Users</caption>
        <thead><tr><th scope="col">Name</th><th scope="col">Email</th><th scope="col">Roles</th><th scope="col">Regions</th><th scope="col">Status</th><th scope="col">Actions</th></tr></thead>
        <tbody>
          {data?.users.map((u) => (
            <tr key={u.id}>
              <td>{u.displayName}</td><td>{u.email}</td>
              <td>{u.roles.join(", ")}</td><td>{u.regions.map((r) => r.name).join(", ")}</td>
              <td>{u.status === "ACTIVE" ? "Active" : "Deactivated"}{u.mfaEnabled ? " · MFA" : ""}</td>
              <td>{u.status === "ACTIVE" ? <UserActions user={u} regions={data.regions} busy={busy} act={act} /> : null}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <OrgSettings busy={busy} act={act} />
      <NewUser regions={data?.regions ?? []} busy={busy} act={act} />
      <NewRegion busy={busy} act={act} />
    </section>
  );
}

type Act = (done: string, fn: () => Promise<unknown>) => Promise<void>;

function Checks<T extends string>({ legend, all, chosen, set }: { legend: string; all: [T, string][]; chosen: T[]; set: (v: T[]) => void }): JSX.Element {
  return (
    <fieldset>
      <legend>{legend}</legend>
      {all.map(([v, l]) => (
        <label key={v} class="check">
          <input type="checkbox" checked={chosen.includes(v)} onChange={(e) => set((e.currentTarget as HTMLInputElement).checked ? [...chosen, v] : chosen.filter((x) => x !== v))} />
          {l}
        </label>
      ))}
    </fieldset>
  );
}

function UserActions({ user, regions, busy, act }: { user: Data["users"][number]; regions: Data["regions"]; busy: boolean; act: Act }): JSX.Element {
  const [roles, setRoles] = useState<Role[]>([...user.roles] as Role[]);
  const [regionIds, setRegionIds] = useState(user.regions.map((r) => r.id));
  const [reason, setReason] = useState("");
  return (
    <details>
      <summary>Change {user.displayName}</summary>
      <form onSubmit={(e) => { e.preventDefault(); void act("User updated.", () => mutate(UPDATE_USER, { id: user.id, input: { roles, regionIds } })); }}>
        <Checks legend="Roles" all={ROLES.map((r): [Role, string] => [r, r.toLowerCase()])} chosen={roles} set={setRoles} />
        <Checks legend="Regions" all={regions.map((r): [string, string] => [r.id, r.name])} chosen={regionIds} set={setRegionIds} />
        <button type="submit" disabled={busy}>Save</button>
      </form>
      <form onSubmit={(e) => { e.preventDefault(); void act("User deactivated: every session and grant of theirs has ended.", () => mutate(DEACTIVATE, { id: user.id, reason })); }}>
        <Field label={`Reason to deactivate ${user.displayName}`} name="reason" value={reason} onInput={setReason} required />
        <button type="submit" class="danger" disabled={busy}>Deactivate</button>
      </form>
    </details>
  );
}

function NewUser({ regions, busy, act }: { regions: Data["regions"]; busy: boolean; act: Act }): JSX.Element {
  const [email, setEmail] = useState("");
  const [name, setName] = useState("");
  const [pw, setPw] = useState("");
  const [roles, setRoles] = useState<Role[]>(["TECHNICIAN"]);
  const [regionIds, setRegionIds] = useState<string[]>([]);
  return (
    <form class="card" aria-labelledby="newuser-h" autoComplete="off" onSubmit={(e) => { e.preventDefault(); void act("User created: they change the password at first sign-in.", () => mutate(CREATE_USER, { input: { email, displayName: name, roles, regionIds, initialPassword: pw } })).then(() => setPw("")); }}>
      <h2 id="newuser-h">New user</h2>
      <Field label="User's email" name="userEmail" type="email" value={email} onInput={setEmail} required />
      <Field label="Display name" name="displayName" value={name} onInput={setName} required />
      <Field label="Initial password" name="initialPassword" type="password" value={pw} onInput={setPw} autoComplete="new-password" required />
      <Checks legend="Roles" all={ROLES.map((r): [Role, string] => [r, r.toLowerCase()])} chosen={roles} set={setRoles} />
      <Checks legend="Regions" all={regions.map((r): [string, string] => [r.id, r.name])} chosen={regionIds} set={setRegionIds} />
      <button type="submit" disabled={busy}>Create user</button>
    </form>
  );
}

function NewRegion({ busy, act }: { busy: boolean; act: Act }): JSX.Element {
  const [name, setName] = useState("");
  return (
    <form class="card" aria-labelledby="newregion-h" onSubmit={(e) => { e.preventDefault(); void act("Region created.", () => mutate(CREATE_REGION, { name })).then(() => setName("")); }}>
      <h2 id="newregion-h">New region</h2>
      <Field label="Region name" name="regionName" value={name} onInput={setName} required />
      <button type="submit" disabled={busy}>Create region</button>
    </form>
  );
}

/** Organisation settings: the access window around a job, and break-glass approval. */
function OrgSettings({ busy, act }: { busy: boolean; act: Act }): JSX.Element {
  const [lead, setLead] = useState("");
  const [grace, setGrace] = useState("");
  const [zone, setZone] = useState("");
  const [second, setSecond] = useState(false);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    query(POLICY, {}).then((d) => {
      setLead(String(d.accessWindowPolicy.leadMinutes));
      setGrace(String(d.accessWindowPolicy.graceMinutes));
      setZone(d.accessWindowPolicy.timezone);
      setSecond(d.breakGlassPolicy.requireSecondApprover);
    }, (e) => setError(errorText(e)));
  }, []);
  const save = (e: Event) => {
    e.preventDefault();
    void act("Organisation settings saved.", async () => {
      await mutate(UPDATE_WINDOW, { input: { leadMinutes: Number(lead), graceMinutes: Number(grace), timezone: zone } });
      await mutate(UPDATE_BREAK_GLASS, { requireSecondApprover: second });
    });
  };
  return (
    <form class="card" aria-labelledby="org-h" onSubmit={save}>
      <h2 id="org-h">Organisation settings</h2>
      <ErrorLine message={error} />
      <Field label="Codes available this many minutes before a job" name="leadMinutes" value={lead} onInput={setLead} inputMode="numeric" required />
      <Field label="…and this many minutes after it ends" name="graceMinutes" value={grace} onInput={setGrace} inputMode="numeric" required />
      <Field label="Time zone (e.g. Europe/London)" name="timezone" value={zone} onInput={setZone} required />
      <label class="check">
        <input type="checkbox" checked={second} onChange={(e) => setSecond((e.currentTarget as HTMLInputElement).checked)} />
        Break-glass needs a second admin's approval
      </label>
      <div><button type="submit" disabled={busy}>Save settings</button></div>
    </form>
  );
}
