// Calls to the memory API, with the key typed into this tab. The key and the tenant live in
// sessionStorage: they go when the tab closes, and no other tab or site can read them.

const KEY = "mnemo.key";
const TENANT = "mnemo.tenant";
const PREFIX = document.querySelector('meta[name="mnemo-memory-api"]').content;

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || null;
  }
}

export function session() {
  return { key: sessionStorage.getItem(KEY) || "", tenant: sessionStorage.getItem(TENANT) || "" };
}

export function saveSession(key, tenant) {
  key ? sessionStorage.setItem(KEY, key) : sessionStorage.removeItem(KEY);
  tenant ? sessionStorage.setItem(TENANT, tenant) : sessionStorage.removeItem(TENANT);
}

export function forget() {
  sessionStorage.removeItem(KEY);
  sessionStorage.removeItem(TENANT);
}

// Every path segment an id fills is encoded: an id never changes which endpoint is called.
export function path(strings, ...ids) {
  return strings.reduce((out, part, i) => out + part + (i < ids.length ? encodeURIComponent(ids[i]) : ""), "");
}

export async function call(method, route, { query, body } = {}) {
  const { key, tenant } = session();
  const headers = { Accept: "application/json" };
  if (key) headers["X-Mnemo-Api-Key"] = key;
  if (tenant) headers["X-Mnemo-Tenant"] = tenant;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const url = new URL(PREFIX + route, window.location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const response = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
    credentials: "omit",
    redirect: "error",
  });
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}
