// Sign-in, first-login password change and MFA enrolment (CONTRACT "Console" hooks: inputs
// email, password, otp, newPassword; Enter submits every form).
import { useState } from "preact/hooks";
import type { JSX } from "preact";
import { graphql } from "./graphql";
import { asLimited, mutate } from "./api";
import { setSession } from "./session";
import { ErrorLine, Field, Notice, errorText } from "./ui";
import { QrCode } from "./qr";

const LOGIN = graphql(`
  mutation Login($email: String!, $password: String!, $otp: String) {
    login(email: $email, password: $password, otp: $otp) {
      accessToken refreshToken expiresAt passwordChangeRequired mfaEnrollmentRequired
      user { id email displayName roles }
    }
  }
`);
const CHANGE_PASSWORD = graphql(`
  mutation ChangePassword($currentPassword: String!, $newPassword: String!) {
    changePassword(currentPassword: $currentPassword, newPassword: $newPassword)
  }
`);
const ENROLL = graphql(`mutation EnrollMfa { enrollMfa { secret otpauthUri } }`);
const CONFIRM = graphql(`mutation ConfirmMfa($otp: String!) { confirmMfa(otp: $otp) { recoveryCodes } }`);

type Step =
  | { kind: "login" }
  | { kind: "password" }
  | { kind: "mfa"; secret: string; uri: string }
  | { kind: "codes"; codes: string[] };

export function SignIn({ notice }: { notice: string | null }): JSX.Element {
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [otp, setOtp] = useState("");
  const [newPassword, setNewPassword] = useState("");
  const [step, setStep] = useState<Step>({ kind: "login" });
  const [error, setError] = useState<string | null>(null);
  const [info, setInfo] = useState<string | null>(notice);
  const [busy, setBusy] = useState(false);
  // The first-login token is good only for changePassword/enrollMfa/confirmMfa: kept here,
  // never made the session.
  const [limited, setLimited] = useState<{ token: string; mfa: boolean } | null>(null);

  async function act(fn: () => Promise<void>): Promise<void> {
    setBusy(true);
    setError(null);
    try {
      await fn();
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy(false);
    }
  }

  const withLimited = <T,>(fn: () => Promise<T>): Promise<T> => asLimited(limited!.token, fn);

  const login = (e: Event) => {
    e.preventDefault();
    void act(async () => {
      const { login: r } = await mutate(LOGIN, { email, password, otp: otp || null });
      setOtp("");
      if (r.passwordChangeRequired || r.mfaEnrollmentRequired) {
        setLimited({ token: r.accessToken, mfa: r.mfaEnrollmentRequired });
        setInfo(null);
        if (r.passwordChangeRequired) setStep({ kind: "password" });
        else {
          const { enrollMfa } = await asLimited(r.accessToken, () => mutate(ENROLL, {}));
          setStep({ kind: "mfa", secret: enrollMfa.secret, uri: enrollMfa.otpauthUri });
        }
        return;
      }
      setPassword("");
      setSession({
        accessToken: r.accessToken,
        refreshToken: r.refreshToken,
        expiresAt: Date.parse(r.expiresAt),
        user: { ...r.user, roles: [...r.user.roles] },
      });
    });
  };

  const change = (e: Event) => {
    e.preventDefault();
    void act(async () => {
      await withLimited(() => mutate(CHANGE_PASSWORD, { currentPassword: password, newPassword }));
      // The change ends that session: sign in again with the new password (held here).
      const fresh = newPassword;
      setNewPassword("");
      setPassword(fresh);
      const { login: r } = await mutate(LOGIN, { email, password: fresh, otp: null });
      if (r.mfaEnrollmentRequired) {
        setLimited({ token: r.accessToken, mfa: true });
        const { enrollMfa } = await asLimited(r.accessToken, () => mutate(ENROLL, {}));
        setStep({ kind: "mfa", secret: enrollMfa.secret, uri: enrollMfa.otpauthUri });
        return;
      }
      setLimited(null);
      setPassword("");
      setSession({
        accessToken: r.accessToken,
        refreshToken: r.refreshToken,
        expiresAt: Date.parse(r.expiresAt),
        user: { ...r.user, roles: [...r.user.roles] },
      });
    });
  };

  const confirm = (e: Event) => {
    e.preventDefault();
    void act(async () => {
      const { confirmMfa } = await withLimited(() => mutate(CONFIRM, { otp }));
      setOtp("");
      setLimited(null);
      setStep({ kind: "codes", codes: [...confirmMfa.recoveryCodes] });
    });
  };

  if (step.kind === "password") {
    return (
      <main class="card narrow">
        <h1>Choose a new password</h1>
        <Notice>This is your first sign-in: replace the password you were given.</Notice>
        <form onSubmit={change}>
          {password ? null : <Field label="Current password" name="password" type="password" value={password} onInput={setPassword} autoComplete="current-password" required />}
          <Field label="New password" name="newPassword" type="password" value={newPassword} onInput={setNewPassword} autoComplete="new-password" required autoFocus />
          <ErrorLine message={error} />
          <button type="submit" disabled={busy}>Change password</button>
        </form>
      </main>
    );
  }
  if (step.kind === "mfa") {
    return (
      <main class="card narrow">
        <h1>Set up two-step sign-in</h1>
        <p>Scan this code with an authenticator app, then type the 6-digit code it shows.</p>
        <QrCode text={step.uri} label="QR code for your authenticator app" />
        <p>
          Or enter this key by hand: <code class="secret-key">{step.secret}</code>
        </p>
        <form onSubmit={confirm}>
          <Field label="Code from your app" name="otp" value={otp} onInput={setOtp} inputMode="numeric" autoComplete="one-time-code" required autoFocus />
          <ErrorLine message={error} />
          <button type="submit" disabled={busy}>Confirm</button>
        </form>
      </main>
    );
  }
  if (step.kind === "codes") {
    return (
      <main class="card narrow">
        <h1>Your recovery codes</h1>
        <p>Write these down now: each works once instead of an app code, and they are not shown again.</p>
        <ul class="codes" data-testid="recovery-codes">
          {step.codes.map((c) => (
            <li key={c}><code>{c}</code></li>
          ))}
        </ul>
        <button type="button" autoFocus onClick={() => { setPassword(""); setStep({ kind: "login" }); setInfo("Two-step sign-in is on: sign in with your password and a code."); }}>
          I have saved them: sign in
        </button>
      </main>
    );
  }
  return (
    <main class="card narrow">
      <h1>Sign in to Doorward</h1>
      {info ? <Notice>{info}</Notice> : null}
      <form onSubmit={login}>
        <Field label="Email" name="email" type="email" value={email} onInput={setEmail} autoComplete="username" required autoFocus />
        <Field label="Password" name="password" type="password" value={password} onInput={setPassword} autoComplete="current-password" required />
        <Field label="One-time code (if you use two-step sign-in)" name="otp" value={otp} onInput={setOtp} inputMode="numeric" autoComplete="one-time-code" />
        <ErrorLine message={error} />
        <button type="submit" disabled={busy}>Sign in</button>
      </form>
    </main>
  );
}
