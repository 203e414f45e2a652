/**
 * A typed ServiceTitan API client for the raw.* cache: OAuth2 client credentials, the v2 export
 * feeds (continuation tokens) and list endpoints (page/pageSize) for locations, jobs,
 * appointments, technicians and appointment assignments (which technicians work which
 * appointment), with retries, timeouts and a per-(app, tenant) rate limiter.
 * No business rules and no database: a sync task decides what to fetch and records what it got.
 *
 * Checked in ServiceTitan's developer portal (developer.servicetitan.io; read through the stored
 * copies of its pages), and in the portal's OpenAPI models as published in generated clients:
 *   - "OAuth 2.0": only the client-credentials grant; tokens live 900 s, no refresh tokens, cache
 *     the token (ServiceTitan throttles token requests); token endpoints
 *     https://auth.servicetitan.io/connect/token and https://auth-integration.servicetitan.io/connect/token.
 *   - "Make Your First API Call": form body grant_type=client_credentials, client_id, client_secret;
 *     answer {access_token, expires_in: 900, token_type: "Bearer", scope}; API calls carry the
 *     access token in Authorization plus the app key in the ST-App-Key header.
 *   - "Environments": api.servicetitan.io (production), api-integration.servicetitan.io (integration).
 *   - "Transactional & Export APIs": /export/ feeds return active, inactive and deleted rows;
 *     parameters `from` (continuation token, or a date meaning modifiedOn >= date) and
 *     `includeRecentChanges`; answer {hasMore, continueFrom, data}; changes show up 15 minutes
 *     late unless includeRecentChanges=true, which may return the same rows again.
 *   - "FAQs: APIs, App Keys & Client Keys": 60 calls per second per application per tenant.
 *   - OpenAPI models (crm, jpm, settings v2): paths /crm/v2/tenant/{tenant}/export/locations,
 *     /jpm/v2/tenant/{tenant}/export/jobs, .../export/appointments,
 *     /settings/v2/tenant/{tenant}/export/technicians and the list paths without /export;
 *     list answers {page, pageSize, hasMore, totalCount (only with includeTotal), data}; list
 *     filters page, pageSize (50 by default), includeTotal, modifiedOnOrAfter (RFC 3339, UTC) and
 *     active (True | Any | False, True by default); errors are RFC 7807 objects
 *     {type, title, status, traceId, errors, data}.
 *   - OpenAPI models (dispatch v2): /dispatch/v2/tenant/{tenant}/export/appointment-assignments
 *     and the list path without /export (same list filters); rows {id, technicianId,
 *     technicianName, assignedById, assignedOn, status (Scheduled | Dispatched | Working | Done),
 *     isPaused, jobId, appointmentId, createdOn, modifiedOn, active}. This export, unlike the
 *     technicians and appointments exports, takes `active` and returns only active rows unless
 *     told otherwise, so we send active=Any: an unassigned technician is an inactive row we need.
 *   - "Timeouts and pagination" (partner portal): pageSize between 1 and 5000; ServiceTitan's
 *     own timeout is 100 s.
 * Assumed (not documented where we could look):
 *   - 429 answers carry Retry-After in seconds or as an HTTP date (third-party rate-limit profiles
 *     say so; we cap the wait at 60 s and fall back to backoff when it is missing).
 *   - A wrong client secret gets 400 {"error":"invalid_client"} from the token endpoint (seen by
 *     third parties probing it; we treat 400 and 401 there the same: permanent).
 *   - An expired token, a missing or wrong ST-App-Key all answer 401.
 *   - The export page size is ServiceTitan's choice; we never send one.
 */

export type ServiceTitanEnvironment = "production" | "integration";
export type ServiceTitanResource = "locations" | "jobs" | "appointments" | "technicians" | "appointment-assignments";
/** First path segment of an API: CRM, Job Planning & Management, Settings, Dispatch. */
export type ServiceTitanModule = "crm" | "jpm" | "settings" | "dispatch";
export type ServiceTitanErrorKind = "auth" | "rate_limited" | "server" | "timeout" | "network" | "malformed" | "client";

/** Every resource the client reads; the path segment after /export/ or the tenant. */
export const SERVICE_TITAN_RESOURCES: readonly ServiceTitanResource[] = [
  "locations",
  "jobs",
  "appointments",
  "technicians",
  "appointment-assignments",
];

/** The API module (first path segment) each resource lives in. */
export const SERVICE_TITAN_MODULES: Readonly<Record<ServiceTitanResource, ServiceTitanModule>> = {
  locations: "crm",
  jobs: "jpm",
  appointments: "jpm",
  technicians: "settings",
  "appointment-assignments": "dispatch",
};

/** Export feeds that take `active` and leave inactive rows out unless sent active=Any. */
const EXPORTS_FILTERED_BY_ACTIVE: ReadonlySet<ServiceTitanResource> = new Set<ServiceTitanResource>(["appointment-assignments"]);

export const SERVICE_TITAN_HOSTS: Readonly<Record<ServiceTitanEnvironment, { auth: string; api: string }>> = {
  production: { auth: "https://auth.servicetitan.io", api: "https://api.servicetitan.io" },
  integration: { auth: "https://auth-integration.servicetitan.io", api: "https://api-integration.servicetitan.io" },
};

/** ServiceTitan allows 60 requests per second per app and tenant; we stay below it. */
export const SERVICE_TITAN_RATE_LIMIT = 60;
export const MAX_LIST_PAGE_SIZE = 5000;
/** The longest Retry-After we honour; longer answers are waited 60 s and retried. */
export const MAX_RETRY_AFTER_MS = 60_000;

export interface ServiceTitanConfig {
  clientId: string;
  clientSecret: string;
  /** The application key, sent as ST-App-Key. Not environment specific. */
  appKey: string;
  /** ServiceTitan's numeric tenant id, as a string. */
  tenantId: string;
  environment: ServiceTitanEnvironment;
  /** Origin of the token endpoint instead of the environment's (tests, proxies). */
  authBaseUrl?: string | null;
  /** Origin of the API instead of the environment's (tests, proxies). */
  apiBaseUrl?: string | null;
  /** Per HTTP request, body included; default 30000. */
  timeoutMs?: number;
  /** Default 50; at most 59 (ServiceTitan's limit is 60). */
  maxRequestsPerSecond?: number;
  /** Attempts per call for retryable failures (429, 5xx, network, timeout, malformed); default 5. */
  maxAttempts?: number;
}

/**
 * Keeps requests under the rate limit: `acquire` resolves when a request may be sent, with the
 * function to call once its answer (or failure) is in.
 */
export interface RequestLimiter {
  acquire(limit: number): Promise<() => void>;
}

export interface ServiceTitanClientOptions {
  /**
   * The limiter for this client's key (API origin | app key | tenant id), given how long a request
   * may hold a slot at most (timeoutMs plus a second). Default: one in-process limiter per key,
   * shared by the clients of this process; the worker passes one kept in PostgreSQL
   * (PgRequestLimiter), shared by every process.
   */
  limiter?: (key: string, holdMs: number) => RequestLimiter;
  /** Waits between attempts (backoff, Retry-After). Default: a real timer. */
  sleep?: (ms: number) => Promise<void>;
  /** Milliseconds since the epoch, for token expiry and Retry-After dates. Default: Date.now. */
  now?: () => number;
  /** In [0, 1), for backoff jitter. Default: Math.random. */
  random?: () => number;
}

export interface ExportPage {
  data: unknown[];
  hasMore: boolean;
  /** Pass back as `from` to continue; store it to resume later. */
  continueFrom: string | null;
}

export interface ListPage {
  data: unknown[];
  hasMore: boolean;
  page: number;
  /** Only when asked for with includeTotal. */
  totalCount: number | null;
}

export interface ListPageQuery {
  /** 1-based. */
  page: number;
  /** 1..5000. */
  pageSize: number;
  /** Only records modified at or after this instant (sent floored to the second). */
  modifiedOnOrAfter?: Date | null;
  includeTotal?: boolean;
}

export interface ExportPageOptions {
  /** ServiceTitan's includeRecentChanges: see changes at once, possibly more than once. Default false. */
  includeRecentChanges?: boolean;
}

export class ServiceTitanError extends Error {
  override readonly name = "ServiceTitanError";
  readonly kind: ServiceTitanErrorKind;
  /** The HTTP status ServiceTitan answered with; null when there was no answer. */
  readonly status: number | null;
  /** True when the same request may succeed later (the caller may retry the job). */
  readonly retryable: boolean;

  constructor(
    message: string,
    details: { kind: ServiceTitanErrorKind; status?: number | null; retryable: boolean; cause?: unknown },
  ) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.kind = details.kind;
    this.status = details.status ?? null;
    this.retryable = details.retryable;
  }
}

// ---------------------------------------------------------------------------------------------
// Small pure helpers (exported for tests)

/** RFC 3339 in UTC, floored to the second: 2026-11-22T07:30:00Z. */
export function formatRfc3339Utc(date: Date): string {
  const ms = date.getTime();
  if (!Number.isFinite(ms)) throw new RangeError("ServiceTitan date filter is not a valid date");
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace(/\.000Z$/, "Z");
}

/**
 * Milliseconds to wait for a Retry-After header (delay-seconds or an HTTP date), capped at
 * MAX_RETRY_AFTER_MS; null when absent or unreadable.
 */
export function parseRetryAfter(value: string | null, nowMs: number): number | null {
  if (value === null) return null;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Math.min(Number(trimmed) * 1000, MAX_RETRY_AFTER_MS);
  const at = Date.parse(trimmed);
  if (Number.isNaN(at)) return null;
  return Math.min(Math.max(0, at - nowMs), MAX_RETRY_AFTER_MS);
}

const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 30_000;

/** Exponential backoff with "equal jitter": half fixed, half random, so it always grows. */
export function backoffDelayMs(attempt: number, random: number): number {
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** (attempt - 1));
  return Math.round(ceiling / 2 + (ceiling / 2) * random);
}

// ---------------------------------------------------------------------------------------------
// Rate limiter, shared by every client of one (API origin, app key, tenant) in this process,
// because ServiceTitan counts per app and tenant, not per client object.
//
// A request holds a slot from the moment we send it until one second after its answer came
// back, and at most `limit` slots are held at once. ServiceTitan receives (counts) each request
// somewhere between those two moments, so any one-second window on its side holds at most
// `limit` requests, however long the network or a cold connection takes. (Counting only from the
// send, as a plain sliding window does, lets a slow first burst and a fast second burst land in
// the same second on ServiceTitan's side.) The price is throughput: a slot is busy for the
// request's latency plus one second.

const WINDOW_MS = 1000;

class SlidingWindowLimiter implements RequestLimiter {
  #inFlight = 0;
  /** When slots of answered requests become free again, ascending. */
  readonly #cooling: number[] = [];
  readonly #queue: Array<{ limit: number; grant: (release: () => void) => void }> = [];
  #timer: NodeJS.Timeout | null = null;

  /** Resolves with a release function, to call once the request's answer (or failure) is in. */
  acquire(limit: number): Promise<() => void> {
    return new Promise((grant) => {
      this.#queue.push({ limit, grant });
      this.#drain();
    });
  }

  #release(): void {
    this.#inFlight -= 1;
    this.#cooling.push(performance.now() + WINDOW_MS);
    this.#drain();
  }

  #drain(): void {
    const now = performance.now();
    while (this.#cooling.length > 0 && (this.#cooling[0] ?? 0) <= now) this.#cooling.shift();
    let head = this.#queue[0];
    while (head && this.#inFlight + this.#cooling.length < head.limit) {
      this.#inFlight += 1;
      this.#queue.shift();
      let released = false;
      head.grant(() => {
        if (released) return;
        released = true;
        this.#release();
      });
      head = this.#queue[0];
    }
    // Blocked by cooling slots: look again when the oldest frees up (an answer also drains).
    const next = this.#cooling[0];
    if (head && this.#timer === null && next !== undefined) {
      this.#timer = setTimeout(
        () => {
          this.#timer = null;
          this.#drain();
        },
        Math.max(1, next - now),
      );
    }
  }
}

const limiters = new Map<string, SlidingWindowLimiter>();

function limiterFor(key: string): SlidingWindowLimiter {
  let limiter = limiters.get(key);
  if (!limiter) {
    limiter = new SlidingWindowLimiter();
    limiters.set(key, limiter);
  }
  return limiter;
}

// ---------------------------------------------------------------------------------------------
// Client

type Attempt = { ok: true; json: unknown } | { ok: false; error: ServiceTitanError; retryAfterMs: number | null };

interface CachedToken {
  value: string;
  /** Client clock (options.now) after which we fetch a new one. */
  refreshAt: number;
}

function originOf(value: string, what: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new Error(`ServiceTitan ${what} "${value}" is not a URL; expected an origin such as https://api.servicetitan.io`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new Error(`ServiceTitan ${what} "${value}" must use http or https`);
  }
  if (url.pathname !== "/" || url.search || url.hash || url.username || url.password) {
    throw new Error(`ServiceTitan ${what} "${value}" must be an origin only (scheme, host, port)`);
  }
  return url.origin;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A short human summary of an error body: RFC 7807 title and errors, OAuth error, or text. */
function describeBody(text: string): string {
  const trimmed = text.trim();
  if (trimmed === "") return "";
  try {
    const body: unknown = JSON.parse(trimmed);
    if (isObject(body)) {
      const parts: string[] = [];
      if (typeof body.error === "string") parts.push(body.error);
      if (typeof body.error_description === "string") parts.push(body.error_description);
      if (typeof body.title === "string") parts.push(body.title);
      if (isObject(body.errors)) {
        for (const [field, messages] of Object.entries(body.errors)) {
          const list = Array.isArray(messages) ? messages.join("; ") : String(messages);
          parts.push(`${field}: ${list}`);
        }
      }
      if (parts.length > 0) return parts.join(" — ");
    }
  } catch {
    // not JSON: fall through to the text
  }
  return trimmed.length > 200 ? `${trimmed.slice(0, 200)}…` : trimmed;
}

function isAbortError(err: unknown, name: "TimeoutError" | "AbortError"): boolean {
  return err instanceof Error && err.name === name;
}

function networkDetail(err: unknown): string {
  const cause = err instanceof Error ? (err.cause as { code?: unknown; message?: unknown } | undefined) : undefined;
  const code = typeof cause?.code === "string" ? cause.code : null;
  const message = typeof cause?.message === "string" ? cause.message : err instanceof Error ? err.message : String(err);
  return code && !message.includes(code) ? `${message} (${code})` : message;
}

export class ServiceTitanClient {
  readonly tenantId: string;
  readonly environment: ServiceTitanEnvironment;
  /** Full URL of the token endpoint. */
  readonly tokenUrl: string;
  /** Origin every API request goes to. */
  readonly apiBaseUrl: string;
  readonly timeoutMs: number;
  readonly maxRequestsPerSecond: number;
  readonly maxAttempts: number;

  readonly #clientId: string;
  readonly #clientSecret: string;
  readonly #appKey: string;
  readonly #sleep: (ms: number) => Promise<void>;
  readonly #now: () => number;
  readonly #random: () => number;
  readonly #limiter: RequestLimiter;
  readonly #closed = new AbortController();
  #token: CachedToken | null = null;
  #tokenInFlight: Promise<string> | null = null;

  constructor(config: ServiceTitanConfig, options: ServiceTitanClientOptions = {}) {
    for (const key of ["clientId", "clientSecret", "appKey"] as const) {
      if (typeof config[key] !== "string" || config[key].trim() === "") {
        throw new Error(`ServiceTitan ${key} is required`);
      }
    }
    if (!/^\d+$/.test(config.tenantId)) {
      throw new Error(`ServiceTitan tenantId must be the numeric tenant id (got "${config.tenantId}")`);
    }
    const hosts = SERVICE_TITAN_HOSTS[config.environment];
    if (!hosts) throw new Error(`ServiceTitan environment must be "production" or "integration" (got "${config.environment}")`);

    const timeoutMs = config.timeoutMs ?? 30_000;
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
      throw new Error(`ServiceTitan timeoutMs must be a positive number (got ${timeoutMs})`);
    }
    const rate = config.maxRequestsPerSecond ?? 50;
    if (!Number.isInteger(rate) || rate < 1 || rate >= SERVICE_TITAN_RATE_LIMIT) {
      throw new Error(
        `ServiceTitan maxRequestsPerSecond must be a whole number from 1 to ${SERVICE_TITAN_RATE_LIMIT - 1} ` +
          `(ServiceTitan allows ${SERVICE_TITAN_RATE_LIMIT} per app and tenant; got ${rate})`,
      );
    }
    const maxAttempts = config.maxAttempts ?? 5;
    if (!Number.isInteger(maxAttempts) || maxAttempts < 1) {
      throw new Error(`ServiceTitan maxAttempts must be a whole number of at least 1 (got ${maxAttempts})`);
    }

    this.tenantId = config.tenantId;
    this.environment = config.environment;
    this.tokenUrl = `${config.authBaseUrl ? originOf(config.authBaseUrl, "authBaseUrl") : hosts.auth}/connect/token`;
    this.apiBaseUrl = config.apiBaseUrl ? originOf(config.apiBaseUrl, "apiBaseUrl") : hosts.api;
    this.timeoutMs = timeoutMs;
    this.maxRequestsPerSecond = rate;
    this.maxAttempts = maxAttempts;
    this.#clientId = config.clientId;
    this.#clientSecret = config.clientSecret;
    this.#appKey = config.appKey;
    this.#sleep = options.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
    this.#now = options.now ?? Date.now;
    this.#random = options.random ?? Math.random;
    const limiterKey = `${this.apiBaseUrl}|${config.appKey}|${config.tenantId}`;
    this.#limiter = options.limiter ? options.limiter(limiterKey, timeoutMs + WINDOW_MS) : limiterFor(limiterKey);
  }

  /**
   * One page of the export feed, active and inactive records; `from` is a saved continueFrom
   * (or null to start at the beginning).
   */
  async exportPage(resource: ServiceTitanResource, from: string | null, options: ExportPageOptions = {}): Promise<ExportPage> {
    const query = new URLSearchParams();
    if (from !== null && from !== "") query.set("from", from);
    query.set("includeRecentChanges", options.includeRecentChanges ? "true" : "false");
    if (EXPORTS_FILTERED_BY_ACTIVE.has(resource)) query.set("active", "Any");
    const path = `/${this.#module(resource)}/v2/tenant/${this.tenantId}/export/${resource}`;
    const { json, describe } = await this.#get(path, query);
    if (!isObject(json) || !Array.isArray(json.data) || typeof json.hasMore !== "boolean") {
      throw this.#shapeError(describe, "an export page ({data, hasMore, continueFrom})");
    }
    const continueFrom = typeof json.continueFrom === "string" && json.continueFrom !== "" ? json.continueFrom : null;
    return { data: json.data, hasMore: json.hasMore, continueFrom };
  }

  /** One page of the list endpoint, active and inactive records (active=Any), ServiceTitan's order. */
  async listPage(resource: ServiceTitanResource, query: ListPageQuery): Promise<ListPage> {
    const { page, pageSize } = query;
    if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > MAX_LIST_PAGE_SIZE) {
      throw new ServiceTitanError(
        `ServiceTitan ${resource} list: pageSize must be a whole number from 1 to ${MAX_LIST_PAGE_SIZE} (got ${pageSize})`,
        { kind: "client", retryable: false },
      );
    }
    if (!Number.isInteger(page) || page < 1) {
      throw new ServiceTitanError(`ServiceTitan ${resource} list: page must be a whole number from 1 (got ${page})`, {
        kind: "client",
        retryable: false,
      });
    }
    const params = new URLSearchParams({ page: String(page), pageSize: String(pageSize), active: "Any" });
    if (query.modifiedOnOrAfter) params.set("modifiedOnOrAfter", formatRfc3339Utc(query.modifiedOnOrAfter));
    if (query.includeTotal) params.set("includeTotal", "true");
    const path = `/${this.#module(resource)}/v2/tenant/${this.tenantId}/${resource}`;
    const { json, describe } = await this.#get(path, params);
    if (!isObject(json) || !Array.isArray(json.data) || typeof json.hasMore !== "boolean") {
      throw this.#shapeError(describe, "a list page ({page, pageSize, hasMore, totalCount, data})");
    }
    return {
      data: json.data,
      hasMore: json.hasMore,
      page: typeof json.page === "number" ? json.page : page,
      totalCount: typeof json.totalCount === "number" ? json.totalCount : null,
    };
  }

  /** Gets a token and reads one technician: proves credentials, app key, tenant and scope. */
  async testConnection(): Promise<void> {
    await this.listPage("technicians", { page: 1, pageSize: 1 });
  }

  /** Drops the cached token and aborts requests in flight; the client cannot be used afterwards. */
  close(): void {
    this.#token = null;
    this.#closed.abort(new Error("ServiceTitanClient was closed"));
  }

  // --- internals ------------------------------------------------------------------------------

  #module(resource: ServiceTitanResource): string {
    const module = SERVICE_TITAN_MODULES[resource];
    if (!module) {
      throw new ServiceTitanError(`Unknown ServiceTitan resource "${String(resource)}"`, { kind: "client", retryable: false });
    }
    return module;
  }

  #shapeError(describe: string, expected: string): ServiceTitanError {
    return new ServiceTitanError(`ServiceTitan ${describe} answered 200 but not with ${expected}`, {
      kind: "malformed",
      status: 200,
      retryable: true,
    });
  }

  #assertOpen(): void {
    if (this.#closed.signal.aborted) throw new Error("ServiceTitanClient was closed");
  }

  /** GET with token, rate limit, retries; one 401 refreshes the token without using an attempt. */
  async #get(path: string, query: URLSearchParams): Promise<{ json: unknown; describe: string }> {
    const url = `${this.apiBaseUrl}${path}?${query.toString()}`;
    const describe = `GET ${path}?${query.toString()}`;
    let refreshedAfter401 = false;
    let attempt = 0;
    for (;;) {
      this.#assertOpen();
      attempt += 1;
      const token = await this.#accessToken();
      const release = await this.#limiter.acquire(this.maxRequestsPerSecond);
      let result: Attempt;
      try {
        this.#assertOpen();
        result = await this.#send(url, describe, {
          method: "GET",
          headers: { accept: "application/json", authorization: `Bearer ${token}`, "ST-App-Key": this.#appKey },
        });
      } finally {
        release();
      }
      if (result.ok) return { json: result.json, describe };
      const { error } = result;
      if (error.status === 401) {
        if (!refreshedAfter401) {
          // The token expired or was revoked mid-sync: fetch a new one and try again, once.
          refreshedAfter401 = true;
          attempt -= 1;
          this.#forgetToken(token);
          continue;
        }
        throw new ServiceTitanError(
          `ServiceTitan ${describe} answered 401 even with a fresh access token: check the app key (ST-App-Key) ` +
            `and that the app is connected to tenant ${this.tenantId}. ${error.message}`,
          { kind: "auth", status: 401, retryable: false, cause: error },
        );
      }
      if (!error.retryable) throw error;
      if (attempt >= this.maxAttempts) throw this.#gaveUp(error, attempt);
      await this.#sleep(result.retryAfterMs ?? backoffDelayMs(attempt, this.#random()));
    }
  }

  #gaveUp(error: ServiceTitanError, attempts: number): ServiceTitanError {
    return new ServiceTitanError(`${error.message} (gave up after ${attempts} attempt${attempts === 1 ? "" : "s"})`, {
      kind: error.kind,
      status: error.status,
      retryable: true,
      cause: error,
    });
  }

  /** One HTTP exchange, classified. Never throws. */
  async #send(url: string, describe: string, init: RequestInit): Promise<Attempt> {
    const signal = AbortSignal.any([AbortSignal.timeout(this.timeoutMs), this.#closed.signal]);
    let response: Response;
    let text: string;
    try {
      response = await fetch(url, { ...init, signal });
      text = await response.text();
    } catch (err) {
      if (this.#closed.signal.aborted) {
        return { ok: false, error: new ServiceTitanError(`ServiceTitan ${describe}: the client was closed`, { kind: "network", retryable: false, cause: err }), retryAfterMs: null };
      }
      if (isAbortError(err, "TimeoutError")) {
        return {
          ok: false,
          error: new ServiceTitanError(`ServiceTitan ${describe} did not answer within ${this.timeoutMs} ms`, {
            kind: "timeout",
            retryable: true,
            cause: err,
          }),
          retryAfterMs: null,
        };
      }
      return {
        ok: false,
        error: new ServiceTitanError(`Could not reach ServiceTitan for ${describe}: ${networkDetail(err)}`, {
          kind: "network",
          retryable: true,
          cause: err,
        }),
        retryAfterMs: null,
      };
    }

    const status = response.status;
    if (status >= 200 && status < 300) {
      try {
        return { ok: true, json: JSON.parse(text) as unknown };
      } catch (err) {
        const sample = text.length > 80 ? `${text.slice(0, 80)}…` : text;
        return {
          ok: false,
          error: new ServiceTitanError(`ServiceTitan ${describe} answered ${status} with a body that is not JSON: ${JSON.stringify(sample)}`, {
            kind: "malformed",
            status,
            retryable: true,
            cause: err,
          }),
          retryAfterMs: null,
        };
      }
    }

    const detail = describeBody(text);
    const answered = `ServiceTitan ${describe} answered ${status}${response.statusText ? ` ${response.statusText}` : ""}${detail ? `: ${detail}` : ""}`;
    if (status === 429) {
      return {
        ok: false,
        error: new ServiceTitanError(answered, { kind: "rate_limited", status, retryable: true }),
        retryAfterMs: parseRetryAfter(response.headers.get("retry-after"), this.#now()),
      };
    }
    if (status >= 500) {
      return { ok: false, error: new ServiceTitanError(answered, { kind: "server", status, retryable: true }), retryAfterMs: null };
    }
    if (status === 408) {
      return { ok: false, error: new ServiceTitanError(answered, { kind: "timeout", status, retryable: true }), retryAfterMs: null };
    }
    if (status === 401) {
      return { ok: false, error: new ServiceTitanError(answered, { kind: "auth", status, retryable: false }), retryAfterMs: null };
    }
    return { ok: false, error: new ServiceTitanError(answered, { kind: "client", status, retryable: false }), retryAfterMs: null };
  }

  // --- OAuth2 client credentials --------------------------------------------------------------

  /** The cached token, or one fetched now; concurrent callers share one token request. */
  async #accessToken(): Promise<string> {
    if (this.#token && this.#now() < this.#token.refreshAt) return this.#token.value;
    if (!this.#tokenInFlight) {
      this.#tokenInFlight = this.#fetchToken().finally(() => {
        this.#tokenInFlight = null;
      });
    }
    return this.#tokenInFlight;
  }

  /** Forgets `token` unless another caller already replaced it. */
  #forgetToken(token: string): void {
    if (this.#token?.value === token) this.#token = null;
  }

  async #fetchToken(): Promise<string> {
    const describe = `token request for tenant ${this.tenantId} to ${this.tokenUrl}`;
    const body = new URLSearchParams({
      grant_type: "client_credentials",
      client_id: this.#clientId,
      client_secret: this.#clientSecret,
    }).toString();
    for (let attempt = 1; ; attempt++) {
      this.#assertOpen();
      const result = await this.#send(this.tokenUrl, describe, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded", accept: "application/json" },
        body,
      });
      let error: ServiceTitanError;
      let retryAfterMs: number | null = null;
      if (result.ok) {
        const json = result.json;
        if (isObject(json) && typeof json.access_token === "string" && json.access_token !== "") {
          const expiresInMs = (typeof json.expires_in === "number" && json.expires_in > 0 ? json.expires_in : 900) * 1000;
          // Refresh shortly before expiry: a tenth of the lifetime, at most a minute (60 s of 900).
          this.#token = { value: json.access_token, refreshAt: this.#now() + expiresInMs - Math.min(60_000, expiresInMs / 10) };
          return json.access_token;
        }
        error = new ServiceTitanError(`ServiceTitan ${describe} answered 200 without an access_token`, {
          kind: "malformed",
          status: 200,
          retryable: true,
        });
      } else {
        error = result.error;
        retryAfterMs = result.retryAfterMs;
        if (error.status === 400 || error.status === 401) {
          throw new ServiceTitanError(
            `ServiceTitan refused the client credentials (${error.message}): check the client id and secret, ` +
              `and that they were issued for the ${this.environment} environment of tenant ${this.tenantId}`,
            { kind: "auth", status: error.status, retryable: false, cause: error },
          );
        }
        if (!error.retryable) throw error;
      }
      if (attempt >= this.maxAttempts) throw this.#gaveUp(error, attempt);
      await this.#sleep(retryAfterMs ?? backoffDelayMs(attempt, this.#random()));
    }
  }
}
