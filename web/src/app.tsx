// The console's shell: who is signed in decides the screens; sign-out and expiry clear all.
import { useEffect, useState } from "preact/hooks";
import type { JSX } from "preact";
import { graphql } from "./graphql";
import { mutate, onSessionExpired } from "./api";
import { clearSession, getSession, onSessionChange } from "./session";
import { SignIn } from "./signin";
import { JobView, MyJobs, forgetGrants } from "./tech";
import { Dispatcher } from "./dispatch";
import { Admin } from "./admin";
import { SecurityOps } from "./audit";
import { BreakGlass, forgetBreakGlass } from "./breakglass";

const LOGOUT = graphql(`mutation Logout { logout }`);

type View = "jobs" | "board" | "people" | "breakglass" | "audit";

function viewsFor(roles: string[]): [View, string][] {
  const v: [View, string][] = [];
  if (roles.includes("TECHNICIAN") || roles.includes("SUBCONTRACTOR")) v.push(["jobs", "My jobs"]);
  if (roles.includes("DISPATCHER") || roles.includes("ADMIN")) v.push(["board", "Dispatch"]);
  if (roles.includes("ADMIN")) v.push(["people", "People"], ["breakglass", "Break-glass"]);
  if (roles.includes("AUDITOR") || roles.includes("ADMIN")) v.push(["audit", "Audit"]);
  return v;
}

/** Drops every trace of the session in this tab: tokens, spent grants, screens' state. */
function wipe(): void {
  forgetGrants();
  forgetBreakGlass();
  clearSession();
}

export function App(): JSX.Element {
  const [, force] = useState(0);
  const [notice, setNotice] = useState<string | null>(null);
  const [view, setView] = useState<View | null>(null);
  const [job, setJob] = useState<string | null>(null);

  useEffect(() => onSessionChange(() => force((n) => n + 1)), []);
  useEffect(() => {
    onSessionExpired(() => {
      forgetGrants();
      forgetBreakGlass();
      setNotice("Your session has ended: sign in again.");
      setView(null);
      setJob(null);
    });
  }, []);
  // Expiry: an expired access token is refreshed on the next call (api.run); when the
  // refresh is refused too, onSessionExpired above brings back the sign-in form.
  const session = getSession();


  if (!session) return <SignIn key={notice ?? ""} notice={notice} />;
  const views = viewsFor(session.user.roles);
  const current = view && views.some(([v]) => v === view) ? view : views[0]?.[0] ?? null;

  const signOut = async () => {
    try {
      await mutate(LOGOUT, {});
    } catch {
      // Signed out locally regardless: the token is dropped below.
    }
    wipe();
    setView(null);
    setJob(null);
    setNotice("You are signed out.");
  };

  return (
    <div class="shell">
      <header>
        <span class="brand">Doorward</span>
        <nav aria-label="Main">
          {views.map(([v, label]) => (
            <button key={v} type="button" aria-current={current === v ? "page" : undefined} onClick={() => { setView(v); setJob(null); }}>
              {label}
            </button>
          ))}
        </nav>
        <span class="who">{session.user.displayName}</span>
        <button type="button" class="signout" onClick={signOut}>Sign out</button>
      </header>
      <main>
        {current === null ? <p>Your account has no role with a screen here.</p> : null}
        {current === "jobs" ? (job ? <JobView id={job} back={() => setJob(null)} /> : <MyJobs open={setJob} />) : null}
        {current === "board" ? <Dispatcher /> : null}
        {current === "people" ? <Admin /> : null}
        {current === "breakglass" ? <BreakGlass /> : null}
        {current === "audit" ? <SecurityOps /> : null}
      </main>
    </div>
  );
}
