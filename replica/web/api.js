// The chatd API (DESIGN §9) from the browser: the bearer token, the replica
// URLs to use (this page's own origin first, then the ones the user
// configured), and requests that move to the next replica when one cannot
// be reached.

/** A refused request: the API's JSON error, or a transport failure (status 0). */
export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** How long a plain request may take before it counts as unreachable. */
const REQUEST_TIMEOUT_MS = 15000;

export class Api {
  /**
   * `token`: the bearer token. `bases`: replica URLs, the preferred first.
   * `onChange(base)`: called when requests move to another replica.
   * `onUnauthorized()`: called on a 401 (the token is no longer good).
   */
  constructor({ token, bases, onChange = () => {}, onUnauthorized = () => {} }) {
    this.token = token;
    this.bases = [...new Set(bases.map((base) => base.replace(/\/+$/, '')))];
    this.index = 0;
    this.onChange = onChange;
    this.onUnauthorized = onUnauthorized;
  }

  /** The replica requests go to now. */
  get base() {
    return this.bases[this.index];
  }

  /**
   * Moves to the next replica, unless someone already moved away from
   * `from` (several requests failing together move once).
   */
  failover(from) {
    if (from !== this.base || this.bases.length < 2) return;
    this.index = (this.index + 1) % this.bases.length;
    this.onChange(this.base);
  }

  /** The absolute URL of an API path on `base`, with a query. */
  url(base, path, query = {}) {
    const url = new URL(`${base}/api/v1${path}`);
    for (const [key, value] of Object.entries(query)) {
      if (value !== undefined && value !== null && value !== '') url.searchParams.set(key, value);
    }
    return url;
  }

  /**
   * One request. Resolves to the JSON body (null for 204); rejects with an
   * ApiError. A replica that cannot be reached, or that answers 503 (it is
   * shutting down), is left for the next one; a POST is repeated on another
   * replica only when it is safe: it carries an `Idempotency-Key`, or
   * `retry: true` says repeating it is harmless.
   */
  async request(method, path, { body, query, idempotencyKey, retry = method !== 'POST' } = {}) {
    const headers = { Authorization: `Bearer ${this.token}`, Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (idempotencyKey) headers['Idempotency-Key'] = idempotencyKey;
    const repeatable = retry || Boolean(idempotencyKey);
    let lastError = null;
    for (let attempt = 0; attempt < this.bases.length; attempt++) {
      const base = this.base;
      let response;
      try {
        response = await fetch(this.url(base, path, query), {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
          cache: 'no-store',
        });
      } catch (error) {
        lastError = new ApiError(0, 'unreachable', `${base} cannot be reached (${error.message})`);
        this.failover(base);
        if (!repeatable) throw lastError;
        continue;
      }
      if (response.status === 503 && repeatable) {
        lastError = await errorOf(response);
        this.failover(base);
        continue;
      }
      if (!response.ok) {
        const error = await errorOf(response);
        if (response.status === 401) this.onUnauthorized(error);
        throw error;
      }
      if (response.status === 204) return null;
      return response.json();
    }
    throw lastError;
  }
}

/** The ApiError of a refused response. */
export async function errorOf(response) {
  try {
    const body = await response.json();
    const error = body.error ?? {};
    return new ApiError(response.status, error.code ?? 'error', error.message ?? response.statusText, error.details);
  } catch {
    return new ApiError(response.status, 'error', `${response.status} ${response.statusText}`);
  }
}

/**
 * A fresh `Idempotency-Key`: 128 random bits (crypto.randomUUID exists only
 * on https and localhost pages; getRandomValues everywhere).
 */
export function idempotencyKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map((byte) => byte.toString(16).padStart(2, '0')).join('');
}
