// The session lives in this module's memory only: never localStorage, sessionStorage, cookies
// or IndexedDB, so a reload or a closed tab signs out, and nothing outlives `clear()`.
export interface SessionUser {
  id: string;
  email: string;
  displayName: string;
  roles: string[];
}

interface Session {
  accessToken: string;
  refreshToken: string;
  expiresAt: number;
  user: SessionUser;
}

let current: Session | null = null;
const listeners = new Set<() => void>();

export function getSession(): Session | null {
  return current;
}

export function setSession(next: Session | null): void {
  current = next;
  listeners.forEach((fn) => fn());
}

export function clearSession(): void {
  setSession(null);
}

export function onSessionChange(fn: () => void): () => void {
  listeners.add(fn);
  return () => listeners.delete(fn);
}
