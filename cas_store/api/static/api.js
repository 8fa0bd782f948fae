// The HTTP API client: JSON in and out, the bearer token, typed errors.
//
// The token is asked for once, on the first 401, and kept in sessionStorage so it
// lasts for this tab only; a refused token is forgotten and asked for again.

const TOKEN_KEY = "cas-store.token";

export class ApiError extends Error {
  constructor(status, body, headers) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || `http_${status}`;
    this.details = err;
    this.etag = headers?.get("ETag") ?? null;
  }

  /** For a conflict: the session's current version, from the body or the ETag. */
  get currentSeq() {
    const n = this.details.current ?? this.details.current_seq ?? this.etag?.replace(/\D/g, "");
    return n === undefined || n === null || n === "" ? null : Number(n);
  }
}

let askToken = async () => null;

/** Install the function that asks the user for a token (returns null if they cancel). */
export function setTokenPrompt(fn) {
  askToken = fn;
}

export function currentToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

let pendingAsk = null;

async function obtainToken(refused) {
  // Several requests can fail with 401 at once; ask the user a single time for all of them.
  if (!pendingAsk) {
    pendingAsk = askToken(refused).finally(() => {
      pendingAsk = null;
    });
  }
  const token = await pendingAsk;
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  return token;
}

/** Call the API; resolve to the parsed JSON body (and the response), or throw ApiError. */
export async function request(path, { method = "GET", body, headers = {} } = {}) {
  for (;;) {
    const token = currentToken();
    const h = { Accept: "application/json", ...headers };
    if (token) h.Authorization = `Bearer ${token}`;
    if (body !== undefined) h["Content-Type"] = "application/json";
    const res = await fetch(`/api${path}`, {
      method,
      headers: h,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
    let data = null;
    const text = await res.text();
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (res.status === 401) {
      if (token) forgetToken();
      const fresh = await obtainToken(Boolean(token));
      if (fresh) continue;
      throw new ApiError(401, data || { error: { code: "unauthorized", message: "A token is required." } });
    }
    if (!res.ok) throw new ApiError(res.status, data, res.headers);
    return { data, res };
  }
}

const enc = encodeURIComponent;

function qs(params) {
  const parts = [];
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") parts.push(`${enc(k)}=${enc(v)}`);
  }
  return parts.length ? `?${parts.join("&")}` : "";
}

export async function listSessions({ q, cursor, limit = 50 } = {}) {
  return (await request(`/sessions${qs({ limit, cursor, q })}`)).data;
}

/** Full-text search over every session's messages; hits name session, index and seq. */
export async function searchMessages({ q, cursor, limit = 20 } = {}) {
  return (await request(`/search${qs({ q, cursor, limit })}`)).data;
}

export async function getSession(sid) {
  return (await request(`/sessions/${enc(sid)}`)).data;
}

export async function getMeta(sid) {
  return (await request(`/sessions/${enc(sid)}/meta`)).data;
}

/** Versions newest first; accepts a bare list or an object holding one. */
export async function listVersions(sid, { limit, before } = {}) {
  const { data } = await request(`/sessions/${enc(sid)}/versions${qs({ limit, before })}`);
  if (Array.isArray(data)) return data;
  return data.versions || data.items || [];
}

export async function getVersion(sid, seq) {
  return (await request(`/sessions/${enc(sid)}/versions/${enc(seq)}`)).data;
}

export async function getDiff(sid, from, to) {
  return (await request(`/sessions/${enc(sid)}/diff${qs({ from, to })}`)).data;
}

/** Restore version seq, only if the head is still headSeq (else ApiError 412). */
export async function restore(sid, seq, headSeq) {
  const { data } = await request(`/sessions/${enc(sid)}/restore`, {
    method: "POST",
    body: { seq },
    headers: { "If-Match": `"${headSeq}"` },
  });
  return data;
}

/** Run recovery for one session (a report only when dryRun); returns its action or null. */
export async function recover(sid, { dryRun = false } = {}) {
  const { data } = await request(`/recover${qs({ session_id: sid, dry_run: dryRun })}`, {
    method: "POST",
  });
  return (data.actions || []).find((a) => a.session_id === sid) || null;
}
