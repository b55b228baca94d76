// Small shared pieces: a labelled field, the error line (data-testid="error"), a busy button.
import type { ComponentChildren, JSX } from "preact";
import { useId } from "preact/hooks";

export function Field(props: {
  label: string;
  name: string;
  type?: "text" | "email" | "password" | "tel" | "date" | "datetime-local";
  value: string;
  onInput: (v: string) => void;
  autoComplete?: string;
  required?: boolean;
  inputMode?: "numeric" | "text" | "email";
  autoFocus?: boolean;
}): JSX.Element {
  const id = useId();
  // Preact types each input type's attributes apart; the union is chosen at run time here.
  const kind = { type: props.type ?? "text" } as unknown as { type: "text" };
  return (
    <div class="field">
      <label for={id}>{props.label}</label>
      <input
        id={id}
        name={props.name}
        {...kind}
        value={props.value}
        autoComplete={props.autoComplete}
        required={props.required}
        inputMode={props.inputMode}
        autoFocus={props.autoFocus}
        onInput={(e) => props.onInput((e.currentTarget as HTMLInputElement).value)}
      />
    </div>
  );
}

export function ErrorLine({ message }: { message: string | null }): JSX.Element | null {
  if (!message) return null;
  return (
    <p class="error" role="alert" data-testid="error">
      {message}
    </p>
  );
}

export function Notice({ children }: { children: ComponentChildren }): JSX.Element {
  return (
    <p class="notice" role="status">
      {children}
    </p>
  );
}

export function errorText(e: unknown): string {
  return e instanceof Error ? e.message : "Something went wrong: try again.";
}

export function when(iso: string | null | undefined): string {
  if (!iso) return "not scheduled";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });
}

export function time(iso: string | null | undefined): string {
  if (!iso) return "–";
  return new Date(iso).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
}
