/**
 * Rate limits on login, register, acceptInvitation, verifyEmail, the password reset and the password checks of
 * changePassword and requestEmailChange, attacked over real HTTP against servers in production mode.
 *
 * Client addresses: each request's socket is bound to its own loopback address (http.request's
 * localAddress, 127.0.0.2 and up; Linux routes all of 127.0.0.0/8 to lo), so the server sees distinct
 * peers without trusting any header (TRUST_PROXY stays 0, its default). One test turns TRUST_PROXY
 * on to check X-Forwarded-For is read only then, and only as far as the trusted hops go.
 *
 * Time: waits are never slept through. "Later" is made by expiring the wait counters in the table
 * (as app_private.advance_clock does for tenants), so no assertion depends on the wall clock.
 * The file has its own database: the counters of other files' servers (on 127.0.0.1) can't mix in.
 */
import { request } from "node:http";
import { afterAll, describe, expect, it } from "vitest";
import { backoffSeconds, clientAddress, normaliseAddress } from "../../src/api/rateLimit.ts";
import { ownerPool, PASSWORD, uniqueEmail, useOwnDatabase } from "../helpers.ts";
import { startTestServer, type TestServer } from "../server.ts";

useOwnDatabase("rate_limits");

const servers: TestServer[] = [];
afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()));
});

async function server(env: Record<string, string>): Promise<TestServer> {
  const s = await startTestServer({ NODE_ENV: "production", ...env });
  servers.push(s);
  return s;
}

interface Reply {
  status: number;
  body: { data?: any; errors?: Array<{ message: string; extensions?: Record<string, unknown> }> };
}

/** POST /graphql from a chosen loopback address. */
function post(s: TestServer, payload: unknown, from: string, headers: Record<string, string> = {}): Promise<Reply> {
  const url = new URL(`${s.url}/graphql`);
  const body = JSON.stringify(payload);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port: url.port,
        path: url.pathname,
        method: "POST",
        localAddress: from,
        headers: { "content-type": "application/json", accept: "application/json", "content-length": Buffer.byteLength(body), ...headers },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          try {
            resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString("utf8")) });
          } catch (error) {
            reject(error);
          }
        });
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

const LOGIN = `mutation ($email: String!, $password: String!) { login(input: { email: $email, password: $password }) { result } }`;
const REGISTER = `mutation ($email: String!) { register(input: { email: $email, password: "${PASSWORD}", businessName: "Limited Co", timezone: "America/New_York" }) { result } }`;

const login = (s: TestServer, email: string, password: string, from: string, headers: Record<string, string> = {}) =>
  post(s, { query: LOGIN, variables: { email, password } }, from, headers);

async function registerVia(s: TestServer, from: string): Promise<string> {
  const email = uniqueEmail("limited");
  const r = await post(s, { query: REGISTER, variables: { email } }, from);
  expect(r.body.errors).toBeUndefined();
  return email;
}

const code = (r: Reply) => r.body.errors?.[0]?.extensions?.code;

async function failedAttemptsInDb(email: string): Promise<number> {
  const { rows } = await ownerPool().query<{ n: number }>(
    "select s.failed_login_attempts as n from app_private.user_secrets s join app_public.users u on u.id = s.user_id where u.email = $1",
    [email],
  );
  return rows[0]!.n;
}

async function countersMentioning(text: string): Promise<number> {
  const { rows } = await ownerPool().query<{ n: string }>("select count(*) as n from app_private.rate_limits where key like '%' || $1 || '%'", [text]);
  return Number(rows[0]!.n);
}

/** "Later": every wait of this flow is over (the counters' windows are left as they are). */
async function waitsAreOver(): Promise<void> {
  await ownerPool().query("update app_private.rate_limits set expire = 0 where key like 'login:wait:%'");
}

describe("login and register rate limits over HTTP (production mode)", () => {
  it("a stranger's failures from another address are limited, and the real user still logs in from theirs", async () => {
    const s = await server({ LOGIN_FREE_ATTEMPTS: "3", LOGIN_BACKOFF_BASE_SECONDS: "60", LOGIN_LIMIT_PER_ADDRESS: "50" });
    const victim = await registerVia(s, "127.0.0.2");
    const replies: Reply[] = [];
    for (let i = 0; i < 10; i++) replies.push(await login(s, victim, `guess-${i}-wrong`, "127.0.0.3"));
    expect(replies.slice(0, 3).map(code)).toEqual(["28P01", "28P01", "28P01"]);
    for (const refused of replies.slice(3)) {
      expect(refused.status).toBe(429);
      expect(code(refused)).toBe("RATE_LIMITED");
      expect(refused.body.errors?.[0]?.extensions?.retryAfter).toBeGreaterThan(0);
    }
    // Only the three allowed attempts reached the SQL function (and its bcrypt): the refusals wrote nothing there.
    expect(await failedAttemptsInDb(victim)).toBe(3);
    // The stranger, in parallel, can't slip more attempts through together.
    const burst = await Promise.all(Array.from({ length: 8 }, (_, i) => login(s, victim, `burst-${i}`, "127.0.0.3")));
    expect(burst.map(code)).toEqual(Array(8).fill("RATE_LIMITED"));
    expect(await failedAttemptsInDb(victim)).toBe(3);

    const real = await login(s, victim, PASSWORD, "127.0.0.2");
    expect(real.body.errors).toBeUndefined();
    expect(real.body.data.login.result).toBeTypeOf("string");
    // …and the stranger is still waiting.
    expect(code(await login(s, victim, PASSWORD, "127.0.0.3"))).toBe("RATE_LIMITED");
  });

  it("strangers on many addresses who exhaust the per-account ceiling don't keep the real user out from an address they logged in from", async () => {
    const s = await server({ LOGIN_FREE_ATTEMPTS: "3", LOGIN_LIMIT_PER_ACCOUNT: "4", LOGIN_LIMIT_PER_ADDRESS: "50" });
    const victim = await registerVia(s, "127.0.0.20");
    expect((await login(s, victim, PASSWORD, "127.0.0.20")).body.errors).toBeUndefined();
    // Four wrong guesses from two addresses (within each address's free attempts) use up the account's ceiling…
    for (const from of ["127.0.0.21", "127.0.0.21", "127.0.0.22", "127.0.0.22"]) {
      expect(code(await login(s, victim, "wrong-guess", from))).toBe("28P01");
    }
    // …so a third address is refused before any password check,
    expect(code(await login(s, victim, "wrong-guess", "127.0.0.23"))).toBe("RATE_LIMITED");
    expect(await failedAttemptsInDb(victim)).toBe(4);
    // and so is the real user on an address the account never logged in from,
    expect(code(await login(s, victim, PASSWORD, "127.0.0.24"))).toBe("RATE_LIMITED");
    // but from the address they logged in from before, the real user gets in.
    const real = await login(s, victim, PASSWORD, "127.0.0.20");
    expect(real.body.errors).toBeUndefined();
    expect(real.body.data.login.result).toBeTypeOf("string");
  });

  it("refuses 8 aliased logins in one request (and logins through fragments, and batches), counting nothing", async () => {
    const s = await server({ LOGIN_FREE_ATTEMPTS: "3", LOGIN_LIMIT_PER_ADDRESS: "5" });
    const victim = await registerVia(s, "127.0.0.4");
    const aliased = `mutation ($email: String!) { ${Array.from({ length: 8 }, (_, i) => `a${i}: login(input: { email: $email, password: "guess-${i}" }) { result }`).join(" ")} }`;
    const r = await post(s, { query: aliased, variables: { email: victim } }, "127.0.0.5");
    expect(r.status).toBe(400);
    expect(code(r)).toBe("LOGIN_REPEATED");
    expect(r.body.errors?.[0]?.message).toMatch(/holds 8/);

    const viaFragments = `mutation ($email: String!) { ...First ... on Mutation { login(input: { email: $email, password: "b" }) { result } } }
      fragment First on Mutation { x: login(input: { email: $email, password: "a" }) { result } }`;
    const f = await post(s, { query: viaFragments, variables: { email: victim } }, "127.0.0.5");
    expect(code(f)).toBe("LOGIN_REPEATED");
    const mixed = await post(
      s,
      {
        query: `mutation ($email: String!) {
          register(input: { email: $email, password: "${PASSWORD}", businessName: "Mixed Co", timezone: "America/New_York" }) { result }
          login(input: { email: $email, password: "${PASSWORD}" }) { result }
        }`,
        variables: { email: uniqueEmail("mixed") },
      },
      "127.0.0.5",
    );
    expect(code(mixed)).toBe("LOGIN_REPEATED");

    const batch = await post(s, Array.from({ length: 8 }, (_, i) => ({ query: LOGIN, variables: { email: victim, password: `batch-${i}` } })), "127.0.0.5");
    expect(batch.status).toBe(400);
    expect(batch.body.data ?? null).toBeNull();

    // Nothing was counted: no counter for this address, no failed attempt, and the limits are whole.
    expect(await countersMentioning("127.0.0.5")).toBe(0);
    expect(await failedAttemptsInDb(victim)).toBe(0);
    const replies: Reply[] = [];
    for (let i = 0; i < 3; i++) replies.push(await login(s, victim, `single-${i}`, "127.0.0.5"));
    expect(replies.map(code)).toEqual(["28P01", "28P01", "28P01"]);
  });

  it("repeated wrong passwords from one address wait longer each time, with retryAfter; a success starts afresh", async () => {
    const s = await server({ LOGIN_FREE_ATTEMPTS: "2", LOGIN_BACKOFF_BASE_SECONDS: "30", LOGIN_BACKOFF_MAX_SECONDS: "120" });
    const user = await registerVia(s, "127.0.0.6");
    const from = "127.0.0.7";
    expect(code(await login(s, user, "wrong-1", from))).toBe("28P01");
    expect(code(await login(s, user, "wrong-2", from))).toBe("28P01");
    const waits: number[] = [];
    for (let round = 0; round < 4; round++) {
      const refused = await login(s, user, "wrong-again", from);
      expect(refused.status).toBe(429);
      expect(code(refused)).toBe("RATE_LIMITED");
      const retryAfter = refused.body.errors?.[0]?.extensions?.retryAfter as number;
      expect(refused.body.errors?.[0]?.message).toBe(`Too many attempts: try again in ${retryAfter} seconds.`);
      // Asking again during the wait doesn't make it longer.
      const again = await login(s, user, "wrong-again", from);
      expect(again.body.errors?.[0]?.extensions?.retryAfter).toBeLessThanOrEqual(retryAfter);
      waits.push(retryAfter);
      await waitsAreOver();
      expect(code(await login(s, user, "wrong-after-waiting", from))).toBe("28P01");
    }
    // 30 s, then 60, 120, and 120 (the maximum); a second can pass between the write and the read.
    expect(waits.map((w) => Math.round(w / 10) * 10)).toEqual([30, 60, 120, 120]);
    // The right password during a wait is refused too (the guesser can't tell it was right)…
    expect(code(await login(s, user, PASSWORD, from))).toBe("RATE_LIMITED");
    await waitsAreOver();
    // …and after it, it logs in and forgets this address's waits on the account.
    expect((await login(s, user, PASSWORD, from)).body.data?.login?.result).toBeTypeOf("string");
    expect(code(await login(s, user, "wrong-3", from))).toBe("28P01");
    expect(code(await login(s, user, "wrong-4", from))).toBe("28P01");
    expect(code(await login(s, user, "wrong-5", from))).toBe("RATE_LIMITED");
  });

  it("two API servers on the same database count together", async () => {
    const env = { LOGIN_LIMIT_PER_ADDRESS: "4", LOGIN_FREE_ATTEMPTS: "100" };
    const [a, b] = [await server(env), await server(env)];
    const from = "127.0.0.8";
    const replies: Reply[] = [];
    for (let i = 0; i < 6; i++) replies.push(await login(i % 2 === 0 ? a : b, uniqueEmail("nobody"), "whatever-1", from));
    expect(replies.map(code)).toEqual(["28P01", "28P01", "28P01", "28P01", "RATE_LIMITED", "RATE_LIMITED"]);
    expect(replies[4]!.body.errors?.[0]?.extensions?.retryAfter).toBeGreaterThan(0);
    // Another address is not affected, on either server.
    expect(code(await login(a, uniqueEmail("nobody"), "whatever-1", "127.0.0.9"))).toBe("28P01");
  });

  it("register is limited per client address, and a refused registration writes nothing", async () => {
    const s = await server({ REGISTER_LIMIT_PER_ADDRESS: "3" });
    for (let i = 0; i < 3; i++) await registerVia(s, "127.0.0.10");
    const email = uniqueEmail("limited");
    const refused = await post(s, { query: REGISTER, variables: { email } }, "127.0.0.10");
    expect(refused.status).toBe(429);
    expect(code(refused)).toBe("RATE_LIMITED");
    expect(refused.body.errors?.[0]?.extensions?.retryAfter).toBeGreaterThan(0);
    const { rows } = await ownerPool().query("select 1 from app_public.users where email = $1", [email]);
    expect(rows).toEqual([]);
    // Someone else, elsewhere, registers as usual.
    await registerVia(s, "127.0.0.11");
  });

  it("acceptInvitation and verifyEmail are limited per client address; a refused attempt writes nothing; one per request", async () => {
    const s = await server({ ACCEPT_INVITATION_LIMIT_PER_ADDRESS: "2", VERIFY_EMAIL_LIMIT_PER_ADDRESS: "2" });
    const email = await registerVia(s, "127.0.0.20");
    const login = await post(s, { query: LOGIN, variables: { email, password: PASSWORD } }, "127.0.0.20");
    const token: string = login.body.data.login.result;
    const auth = { authorization: `Bearer ${token}` };
    const accept = (from: string) =>
      post(s, { query: `mutation { acceptInvitation(input: { token: "sbi_guess" }) { result } }` }, from, auth);
    expect([code(await accept("127.0.0.21")), code(await accept("127.0.0.21"))]).toEqual(["P0002", "P0002"]);
    const refusedAccept = await accept("127.0.0.21");
    expect(refusedAccept.status).toBe(429);
    expect(code(refusedAccept)).toBe("RATE_LIMITED");
    expect(code(await accept("127.0.0.22"))).toBe("P0002"); // another address is not affected

    const verify = (from: string, value: string) =>
      post(s, { query: `mutation ($t: String!) { verifyEmail(input: { token: $t }) { result } }`, variables: { t: value } }, from);
    expect([code(await verify("127.0.0.23", "sbv_guess")), code(await verify("127.0.0.23", "sbv_guess"))]).toEqual(["P0002", "P0002"]);
    // Even the right token is not tried once the address is over its limit: the account stays unverified.
    const { rows } = await ownerPool().query<{ body_text: string }>(
      "select body_text from app_public.email_messages where tenant_id is null and to_email = $1 and body_text like '%sbv_%'",
      [email],
    );
    const real = /sbv_[0-9a-f]{64}/.exec(rows[0]!.body_text)![0];
    const refusedVerify = await verify("127.0.0.23", real);
    expect(refusedVerify.status).toBe(429);
    expect(code(refusedVerify)).toBe("RATE_LIMITED");
    const still = await ownerPool().query("select email_verified_at from app_public.users where email = $1", [email]);
    expect(still.rows[0].email_verified_at).toBeNull();
    // Many guesses in one request are refused before any is tried.
    const batched = await post(
      s,
      { query: `mutation { a: verifyEmail(input: { token: "sbv_1" }) { result } b: verifyEmail(input: { token: "sbv_2" }) { result } }` },
      "127.0.0.24",
    );
    expect(code(batched)).toBe("LOGIN_REPEATED");
    expect(code(await verify("127.0.0.24", real))).toBeUndefined(); // elsewhere the right token works
  });

  it("requestPasswordReset is limited per client address and per address asked about, so nobody floods one mailbox from many addresses", async () => {
    const s = await server({ RESET_PASSWORD_LIMIT_PER_ADDRESS: "3", RESET_PASSWORD_LIMIT_PER_ACCOUNT: "2" });
    const victim = await registerVia(s, "127.0.0.30");
    const ask = (email: string, from: string) =>
      post(s, { query: `mutation ($e: String!) { requestPasswordReset(input: { email: $e }) { result } }`, variables: { e: email } }, from);
    expect((await ask(victim, "127.0.0.31")).body.data.requestPasswordReset.result).toBe(true);
    expect((await ask(victim.toUpperCase(), "127.0.0.32")).body.data.requestPasswordReset.result).toBe(true);
    const refused = await ask(` ${victim}`, "127.0.0.33"); // a third address, the same account however it is written
    expect(refused.status).toBe(429);
    expect(code(refused)).toBe("RATE_LIMITED");
    // Per client address, whatever the accounts: an unknown address counts the same as a real one.
    for (let i = 0; i < 3; i++) expect(code(await ask(uniqueEmail("nobody"), "127.0.0.34"))).toBeUndefined();
    expect(code(await ask(uniqueEmail("nobody"), "127.0.0.34"))).toBe("RATE_LIMITED");
    const reset = (from: string) =>
      post(s, { query: `mutation { resetPassword(input: { token: "sbr_guess", newPassword: "guessed-pass-1" }) { result } }` }, from);
    expect(code(await reset("127.0.0.34"))).toBe("RATE_LIMITED"); // the same flow shares the address's count
    expect(code(await reset("127.0.0.35"))).toBe("P0002");
    // Junk tokens from one address use up nobody else's count: the owner's real token works from theirs.
    const s2 = await server({ RESET_PASSWORD_LIMIT_PER_ADDRESS: "3", RESET_PASSWORD_LIMIT_PER_ACCOUNT: "2" });
    for (let i = 0; i < 3; i++) expect(code(await post(s2, { query: `mutation { resetPassword(input: { token: "sbr_junk${i}", newPassword: "guessed-pass-1" }) { result } }` }, "127.0.0.37"))).toBe("P0002");
    const realToken = /sbr_[0-9a-f]{64}/.exec(
      (await ownerPool().query<{ body_text: string }>("select body_text from app_public.email_messages where tenant_id is null and to_email = $1 and subject = 'Reset your Switchboard password'", [victim])).rows[0]!.body_text,
    )![0];
    const real = await post(s2, { query: `mutation ($t: String!) { resetPassword(input: { token: $t, newPassword: "owner-new-pass-1" }) { result } }`, variables: { t: realToken } }, "127.0.0.38");
    expect(real.body.errors).toBeUndefined();
    const aliased = await post(
      s,
      { query: `mutation { a: resetPassword(input: { token: "sbr_1", newPassword: "guessed-pass-1" }) { result } b: resetPassword(input: { token: "sbr_2", newPassword: "guessed-pass-1" }) { result } }` },
      "127.0.0.36",
    );
    expect(code(aliased)).toBe("LOGIN_REPEATED");
  });

  it("a stolen session guessing the current password through changePassword or requestEmailChange is limited per account, from every address", async () => {
    const s = await server({ CHANGE_PASSWORD_LIMIT_PER_ADDRESS: "100", CHANGE_PASSWORD_LIMIT_PER_ACCOUNT: "3" });
    const email = await registerVia(s, "127.0.0.40");
    const token: string = (await login(s, email, PASSWORD, "127.0.0.40")).body.data.login.result;
    const auth = { authorization: `Bearer ${token}` };
    const guess = (i: number, from: string) =>
      post(
        s,
        i % 2 === 0
          ? { query: `mutation ($c: String!) { changePassword(input: { currentPassword: $c, newPassword: "attacker-pass-1" }) { result } }`, variables: { c: `guess-${i}-x` } }
          : { query: `mutation ($c: String!) { requestEmailChange(input: { newEmail: "thief@example.test", password: $c }) { result } }`, variables: { c: `guess-${i}-x` } },
        from,
        auth,
      );
    expect([code(await guess(0, "127.0.0.41")), code(await guess(1, "127.0.0.42")), code(await guess(2, "127.0.0.43"))]).toEqual(["28P01", "28P01", "28P01"]);
    // The fourth guess, and even the right password, from yet another address: refused before any check.
    expect(code(await guess(3, "127.0.0.44"))).toBe("RATE_LIMITED");
    const right = await post(
      s,
      { query: `mutation { changePassword(input: { currentPassword: "${PASSWORD}", newPassword: "attacker-pass-1" }) { result } }` },
      "127.0.0.45",
      auth,
    );
    expect(code(right)).toBe("RATE_LIMITED");
    expect(code(await login(s, email, PASSWORD, "127.0.0.40"))).toBeUndefined(); // the password is unchanged, and the owner still logs in
    // A revoked session's token (its signature still verifies) only uses up its own count: the owner's
    // current session changes the password.
    const current: string = (await login(s, email, PASSWORD, "127.0.0.47")).body.data.login.result;
    await post(s, { query: `mutation { revokeOtherSessions(input: {}) { result } }` }, "127.0.0.47", { authorization: `Bearer ${current}` });
    expect(code(await guess(4, "127.0.0.48"))).toBe("RATE_LIMITED"); // the revoked token, already over its count
    const owner = await post(
      s,
      { query: `mutation { changePassword(input: { currentPassword: "${PASSWORD}", newPassword: "owner-pass-777" }) { result } }` },
      "127.0.0.47",
      { authorization: `Bearer ${current}` },
    );
    expect(owner.body.errors).toBeUndefined();
    // Another account is not affected.
    const other = await registerVia(s, "127.0.0.46");
    const otherToken: string = (await login(s, other, PASSWORD, "127.0.0.46")).body.data.login.result;
    const mine = await post(
      s,
      { query: `mutation { changePassword(input: { currentPassword: "${PASSWORD}", newPassword: "my-new-pass-12" }) { result } }` },
      "127.0.0.44",
      { authorization: `Bearer ${otherToken}` },
    );
    expect(mine.body.errors).toBeUndefined();
  });

  it("X-Forwarded-For is ignored unless TRUST_PROXY says how many proxies wrote it", async () => {
    const direct = await server({ LOGIN_LIMIT_PER_ADDRESS: "2", LOGIN_FREE_ATTEMPTS: "100" });
    const codes: unknown[] = [];
    for (let i = 0; i < 3; i++) {
      codes.push(code(await login(direct, uniqueEmail("nobody"), "x-wrong-1", "127.0.0.12", { "x-forwarded-for": `198.51.100.${i + 1}` })));
    }
    expect(codes).toEqual(["28P01", "28P01", "RATE_LIMITED"]); // rotating the header changes nothing

    const proxied = await server({ LOGIN_LIMIT_PER_ADDRESS: "2", LOGIN_FREE_ATTEMPTS: "100", TRUST_PROXY: "1" });
    const viaProxy = (forwarded: string) => login(proxied, uniqueEmail("nobody"), "x-wrong-1", "127.0.0.13", { "x-forwarded-for": forwarded });
    // Behind one proxy: the address it appended counts, whatever the client wrote before it.
    expect(code(await viaProxy("10.9.9.1, 203.0.113.5"))).toBe("28P01");
    expect(code(await viaProxy("10.9.9.2, 203.0.113.5"))).toBe("28P01");
    expect(code(await viaProxy("10.9.9.3, 203.0.113.5"))).toBe("RATE_LIMITED");
    expect(code(await viaProxy("203.0.113.6"))).toBe("28P01");
  });
});

describe("rate limit building blocks", () => {
  it("waits double after the free attempts, up to the maximum", () => {
    const b = { freeAttempts: 3, baseSeconds: 2, maxSeconds: 20 };
    expect([1, 2, 3, 4, 5, 6, 7, 50].map((n) => backoffSeconds(n, b))).toEqual([0, 0, 2, 4, 8, 16, 20, 20]);
  });

  it("client addresses: the socket unless proxies are trusted; IPv4-mapped and IPv6 /64 normalised", () => {
    const req = (remoteAddress: string, xff?: string) => ({ socket: { remoteAddress }, headers: xff ? { "x-forwarded-for": xff } : {} });
    expect(clientAddress(req("::ffff:127.0.0.2", "1.2.3.4"), 0)).toBe("127.0.0.2");
    expect(clientAddress(req("10.0.0.1", "6.6.6.6, 1.2.3.4"), 1)).toBe("1.2.3.4");
    expect(clientAddress(req("10.0.0.1", "6.6.6.6, 1.2.3.4, 10.0.0.2"), 2)).toBe("1.2.3.4");
    expect(clientAddress(req("10.0.0.1", "1.2.3.4"), 3)).toBe("1.2.3.4"); // never further than the list goes
    expect(clientAddress(req("10.0.0.1", "not-an-ip"), 1)).toBe("10.0.0.1");
    expect(clientAddress(req("10.0.0.1"), 1)).toBe("10.0.0.1");
    expect(normaliseAddress("2001:db8:1:2:3:4:5:6")).toBe("2001:0db8:0001:0002::/64");
    expect(normaliseAddress("2001:db8:1:2::9")).toBe(normaliseAddress("2001:db8:1:2:ffff::1"));
    expect(normaliseAddress("::1")).toBe("0000:0000:0000:0000::/64");
    expect(normaliseAddress("garbage")).toBeNull();
  });
});
