/**
 * Rate limits on the flows a stranger can call without a token (login, register, accepting an
 * invitation, verifying an address or a change of address, resetting a password) and on the two that
 * check a logged-in user's current password again (changing the password or the address), where a
 * stolen session could otherwise guess it. A flow plugs in by adding its name to AuthFlow and its
 * limits to flowLimitsFrom(), and its mutations to LIMITED_FIELDS in plugins.ts.
 *
 * Why it is shaped this way:
 * - The counters live in PostgreSQL (app_private.rate_limits, created by our migration, written by
 *   rate-limiter-flexible's RateLimiterPostgres through the API's own pool), so every API process
 *   counts together and a restart forgets nothing.
 * - Limits are checked before the SQL function runs (see makeLoginPlugin in plugins.ts): a refused
 *   attempt costs a few indexed upserts, never a bcrypt hash, and writes nothing but the counters.
 * - Nobody can lock someone else out. There is no account lock: one client address gets a few free
 *   attempts on one account, then each further attempt must wait twice as long as the one before
 *   (up to a maximum). A stranger slowing himself down on another address changes nothing for the
 *   real user on theirs. A generous per-account ceiling across all addresses only stops attacks
 *   from many addresses, and it expires with its window; an address the account logged in from in
 *   the last 90 days is not held back by it. Each address also has its own ceiling over all accounts.
 * - The account is counted as a hash of the normalised email, so the table holds no email address.
 */
import { createHash } from "node:crypto";
import { isIPv4, isIPv6 } from "node:net";
import type pg from "pg";
import { SafeError } from "postgraphile/grafast";
import { RateLimiterPostgres, RateLimiterRes } from "rate-limiter-flexible";
import type { RateLimitSettings } from "../config.ts";

/** The flows that take a limit. To add one: name it here, give it limits in flowLimitsFrom(), call attempt()/succeeded(). */
export type AuthFlow = "login" | "register" | "accept_invitation" | "reset_password" | "verify_email" | "change_password";

export interface FlowLimits {
  /** Attempts from one client address per window, whatever the account. */
  perAddress: { points: number; windowSeconds: number };
  /** Attempts on one account per window from all addresses together (needs an account). */
  perAccount?: { points: number; windowSeconds: number };
  /** Per (account, address): `freeAttempts`, then waits of base, 2×base, 4×base… up to max; forgotten after `windowSeconds` or a success. */
  backoff?: { freeAttempts: number; baseSeconds: number; maxSeconds: number; windowSeconds: number };
}

/** How long the per-(account, address) attempt count is remembered without a success. */
export const BACKOFF_MEMORY_SECONDS = 86_400;

/**
 * How long an address stays known for an account after a successful login from it. A known address
 * is not held back by the per-account ceiling, so strangers on many addresses who exhaust it cannot
 * keep the real user out from where they usually log in.
 */
export const KNOWN_ADDRESS_SECONDS = 90 * 86_400;

export function flowLimitsFrom(settings: RateLimitSettings): Partial<Record<AuthFlow, FlowLimits>> {
  const window = settings.windowSeconds;
  return {
    login: {
      perAddress: { points: settings.loginPerAddress, windowSeconds: window },
      perAccount: { points: settings.loginPerAccount, windowSeconds: window },
      backoff: {
        freeAttempts: settings.loginFreeAttempts,
        baseSeconds: settings.loginBackoffBaseSeconds,
        maxSeconds: settings.loginBackoffMaxSeconds,
        windowSeconds: BACKOFF_MEMORY_SECONDS,
      },
    },
    register: { perAddress: { points: settings.registerPerAddress, windowSeconds: window } },
    accept_invitation: { perAddress: { points: settings.acceptInvitationPerAddress, windowSeconds: window } },
    verify_email: { perAddress: { points: settings.verifyEmailPerAddress, windowSeconds: window } },
    reset_password: {
      perAddress: { points: settings.resetPasswordPerAddress, windowSeconds: window },
      perAccount: { points: settings.resetPasswordPerAccount, windowSeconds: window },
    },
    change_password: {
      perAddress: { points: settings.changePasswordPerAddress, windowSeconds: window },
      perAccount: { points: settings.changePasswordPerAccount, windowSeconds: window },
    },
  };
}

/** The wait after the n-th attempt (1-based) on one account from one address, or 0 while it is free. */
export function backoffSeconds(attempt: number, backoff: { freeAttempts: number; baseSeconds: number; maxSeconds: number }): number {
  if (attempt < backoff.freeAttempts) return 0;
  const doublings = Math.min(attempt - backoff.freeAttempts, 30);
  return Math.min(backoff.baseSeconds * 2 ** doublings, backoff.maxSeconds);
}

/** The refusal every limited flow gives: code RATE_LIMITED, HTTP 429, and the seconds to wait. */
export function rateLimitedError(retryAfterSeconds: number): SafeError {
  const seconds = Math.max(1, Math.ceil(retryAfterSeconds));
  return new SafeError(`Too many attempts: try again in ${seconds} second${seconds === 1 ? "" : "s"}.`, {
    code: "RATE_LIMITED",
    retryAfter: seconds,
    statusCode: 429,
  });
}

/** The account's key: a hash of the email as the database compares it (trimmed, case-insensitive). */
export function accountKey(email: unknown): string {
  const normalised = typeof email === "string" ? email.trim().toLowerCase() : "";
  return createHash("sha256").update(normalised).digest("hex").slice(0, 40);
}

function expandIPv6(address: string): string[] | null {
  if (address.includes(".")) return null; // IPv4 embedded in IPv6: keep the address whole
  const [head = "", tail] = address.split("::");
  const left = head ? head.split(":") : [];
  const right = tail ? tail.split(":") : [];
  const missing = 8 - left.length - right.length;
  if (missing < 0 || (tail === undefined && missing !== 0)) return null;
  return [...left, ...Array<string>(missing).fill("0"), ...right].map((g) => g.padStart(4, "0").toLowerCase());
}

/**
 * The address limits count: IPv4 as is (also when written as ::ffff:a.b.c.d), IPv6 by its /64,
 * because anyone with one IPv6 address has a whole /64 to rotate through.
 */
export function normaliseAddress(raw: string): string | null {
  let address = raw.trim().replace(/%.*$/, "");
  if (address.startsWith("[") && address.endsWith("]")) address = address.slice(1, -1);
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped?.[1]) address = mapped[1];
  if (isIPv4(address)) return address;
  if (isIPv6(address)) {
    const groups = expandIPv6(address);
    return groups ? `${groups.slice(0, 4).join(":")}::/64` : address.toLowerCase();
  }
  return null;
}

/**
 * The client's address, as Express's req.ip computes it with `trust proxy` set to a number of hops:
 * with TRUST_PROXY=0 the socket's peer; with n, the address n hops back in X-Forwarded-For (each
 * trusted proxy appends the address it received the request from), never further than the list
 * goes. Entries the trusted proxies did not write can't move it further back than they allow.
 */
export function clientAddress(
  req: { socket?: { remoteAddress?: string | undefined } | undefined; headers?: Record<string, string | string[] | undefined> | undefined },
  trustProxy: number,
): string | null {
  const socketAddress = req.socket?.remoteAddress ? normaliseAddress(req.socket.remoteAddress) : null;
  if (!socketAddress || trustProxy <= 0) return socketAddress;
  const header = req.headers?.["x-forwarded-for"];
  const forwarded = (Array.isArray(header) ? header.join(",") : (header ?? ""))
    .split(",")
    .map((entry) => entry.trim())
    .filter((entry) => entry !== "")
    .reverse();
  let address = socketAddress;
  for (let hop = 0; hop < trustProxy && hop < forwarded.length; hop++) {
    const next = normaliseAddress(forwarded[hop]!);
    if (!next) break; // not an address: a trusted proxy would not have written it
    address = next;
  }
  return address;
}

interface FlowLimiters {
  limits: FlowLimits;
  address: RateLimiterPostgres;
  account: RateLimiterPostgres | null;
  /** Attempts on (account, address) since the last success. */
  pairCount: RateLimiterPostgres | null;
  /** The wait before the next attempt on (account, address): one point, its duration set per attempt. */
  pairWait: RateLimiterPostgres | null;
  /** (account, address) pairs that logged in successfully: exempt from the per-account ceiling. */
  known: RateLimiterPostgres | null;
}

export interface AttemptWho {
  address: string;
  /** The account the attempt is about (the email), for flows that name one. */
  account?: string;
}

function isRefusal(error: unknown): error is RateLimiterRes {
  return error instanceof RateLimiterRes;
}

export class AuthRateLimiter {
  readonly #flows = new Map<AuthFlow, FlowLimiters>();

  constructor(pool: pg.Pool, limits: Partial<Record<AuthFlow, FlowLimits>>) {
    let first = true;
    const make = (keyPrefix: string, points: number, duration: number, memory: { blockWhenRefused?: boolean } = {}) => {
      const limiter = new RateLimiterPostgres({
        storeClient: pool,
        storeType: "pool",
        schemaName: "app_private",
        tableName: "rate_limits",
        tableCreated: true, // the migration creates it, with row-level security and comments
        // One limiter deletes expired rows of the shared table every 5 minutes; the others need not.
        clearExpiredByTimeout: first,
        keyPrefix,
        points,
        duration,
        // Once a key is refused, this process remembers it until the window ends and refuses it again
        // without a query (the table still holds the count, for every process).
        ...(memory.blockWhenRefused ? { inMemoryBlockOnConsumed: points + 1 } : {}),
      });
      first = false;
      return limiter;
    };
    for (const [flow, flowLimits] of Object.entries(limits) as Array<[AuthFlow, FlowLimits]>) {
      this.#flows.set(flow, {
        limits: flowLimits,
        address: make(`${flow}:address`, flowLimits.perAddress.points, flowLimits.perAddress.windowSeconds, { blockWhenRefused: true }),
        account: flowLimits.perAccount ? make(`${flow}:account`, flowLimits.perAccount.points, flowLimits.perAccount.windowSeconds) : null,
        pairCount: flowLimits.backoff ? make(`${flow}:pair`, 1_000_000_000, flowLimits.backoff.windowSeconds) : null,
        pairWait: flowLimits.backoff ? make(`${flow}:wait`, 1, flowLimits.backoff.maxSeconds) : null,
        known: flowLimits.perAccount ? make(`${flow}:known`, 1_000_000_000, KNOWN_ADDRESS_SECONDS) : null,
      });
    }
  }

  #flow(flow: AuthFlow): FlowLimiters {
    const limiters = this.#flows.get(flow);
    if (!limiters) throw new Error(`No rate limits are configured for the flow '${flow}'.`);
    return limiters;
  }

  /**
   * Counts one attempt, or throws the RATE_LIMITED SafeError. Call it before any work: a refused
   * attempt must cost nothing else. An attempt refused by one counter is given back to the ones
   * counted before it, so waiting out a refusal is never made longer by the refusal itself.
   */
  async attempt(flow: AuthFlow, who: AttemptWho): Promise<void> {
    const limiters = this.#flow(flow);
    const account = who.account === undefined ? null : accountKey(who.account);
    const pair = account === null ? null : `${account}:${who.address}`;
    const undo: Array<() => Promise<unknown>> = [];
    const refuse = async (refusal: RateLimiterRes): Promise<never> => {
      await Promise.allSettled(undo.map((step) => step()));
      throw rateLimitedError(refusal.msBeforeNext / 1000);
    };
    try {
      // 1. Per address, over all accounts. First, so that an address over its limit is refused from
      //    memory, without a query, for the rest of the window.
      await limiters.address.consume(who.address, 1);
      undo.push(() => limiters.address.reward(who.address, 1));
      // 2. Per (account, address): free attempts, then growing waits. Decided on the atomic count, so parallel requests can't slip through together.
      const { backoff } = limiters.limits;
      if (pair !== null && backoff && limiters.pairCount && limiters.pairWait) {
        const pairCount = limiters.pairCount;
        const counted = await pairCount.penalty(pair, 1);
        undo.push(() => pairCount.reward(pair, 1));
        const wait = backoffSeconds(counted.consumedPoints, backoff);
        if (counted.consumedPoints > backoff.freeAttempts) {
          // Only one attempt may take the slot after a wait; the slot then blocks for this attempt's wait.
          await limiters.pairWait.consume(pair, 1, { customDuration: wait });
        } else if (wait > 0) {
          // The last free attempt opens the first wait.
          await limiters.pairWait.block(pair, wait);
        }
      }
      // 3. Per account, over all addresses; an address the account logged in from before is let through.
      if (account !== null && limiters.account) {
        try {
          await limiters.account.consume(account, 1);
        } catch (error) {
          const known = pair !== null && limiters.known !== null && (await limiters.known.get(pair)) !== null;
          if (!isRefusal(error) || !known) throw error;
        }
      }
    } catch (error) {
      if (isRefusal(error)) return refuse(error);
      throw error;
    }
  }

  /** After a success: the attempt is given back, and the (account, address) waits are forgotten. */
  async succeeded(flow: AuthFlow, who: AttemptWho): Promise<void> {
    const limiters = this.#flow(flow);
    const account = who.account === undefined ? null : accountKey(who.account);
    const steps: Array<Promise<unknown>> = [limiters.address.reward(who.address, 1)];
    if (account !== null) {
      if (limiters.account) steps.push(limiters.account.reward(account, 1));
      const pair = `${account}:${who.address}`;
      if (limiters.pairCount) steps.push(limiters.pairCount.delete(pair));
      if (limiters.pairWait) steps.push(limiters.pairWait.delete(pair));
      if (limiters.known) steps.push(limiters.known.set(pair, 1, KNOWN_ADDRESS_SECONDS));
    }
    await Promise.all(steps);
  }
}

declare global {
  namespace Grafast {
    interface Context {
      /** The client's address as the rate limits count it (TRUST_PROXY decides whether X-Forwarded-For is read). */
      clientAddress?: string | null;
    }
  }
}
