/**
 * ServiceTitan's rate limit kept in PostgreSQL (migration 000021): clients that share nothing but
 * the database — as two worker processes do — stay under the limit together in every second on
 * ServiceTitan's side; a slot of a process that died frees itself when its hold runs out; bad
 * arguments are refused.
 */
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ServiceTitanClient, type RequestLimiter } from "../../src/providers/serviceTitan.ts";
import { pgRequestLimiters } from "../../src/providers/serviceTitanPgLimiter.ts";
import { startFakeServiceTitan, type FakeServiceTitan } from "../fakeServiceTitan.ts";
import { expectSqlError, ownerPool, rootPool } from "../helpers.ts";

const credentials = { clientId: "cid-limit", clientSecret: "secret-limit", appKey: "ak1.limit", tenantId: "4455667" };
let fake: FakeServiceTitan;

beforeAll(async () => {
  fake = await startFakeServiceTitan({ ...credentials, counts: { technicians: 3, locations: 1, jobs: 1, appointments: 1 } });
});
afterAll(async () => {
  await fake?.close();
});

/** A client as another process would have it: its own object, its own limiter from `limiter`. */
function client(limiter: (key: string, holdMs: number) => RequestLimiter): ServiceTitanClient {
  return new ServiceTitanClient(
    { ...credentials, environment: "integration", authBaseUrl: fake.authUrl, apiBaseUrl: fake.apiUrl, maxRequestsPerSecond: 5, timeoutMs: 5000 },
    { limiter },
  );
}

/** The most API requests ServiceTitan received within any one second, since `from` in its log. */
function busiestSecond(from: number): number {
  const times = fake.requests
    .slice(from)
    .filter((r) => r.server === "api")
    .map((r) => r.at)
    .sort((x, y) => x - y);
  let busiest = 0;
  for (const [i, start] of times.entries()) busiest = Math.max(busiest, times.slice(i).filter((t) => t < start + 1000).length);
  return busiest;
}

describe("ServiceTitan request slots in PostgreSQL", () => {
  it("two clients sharing only the database send 30 requests at once and never more than 5 in any second; without a shared limiter the same burst does", async () => {
    // The check can fail: two clients that limit nothing are seen over the limit.
    const unlimited = () => ({ acquire: async () => () => {} });
    let from = fake.requests.length;
    const loose = [client(unlimited), client(unlimited)];
    await Promise.all(Array.from({ length: 30 }, (_, i) => loose[i % 2]!.listPage("technicians", { page: 1, pageSize: 1 })));
    expect(busiestSecond(from)).toBeGreaterThan(5);

    // Each "process" has its own pool and its own limiter objects: only the database is shared.
    const shared = [client(pgRequestLimiters(ownerPool())), client(pgRequestLimiters(rootPool()))];
    from = fake.requests.length;
    const pages = await Promise.all(Array.from({ length: 30 }, (_, i) => shared[i % 2]!.listPage("technicians", { page: 1, pageSize: 1 })));
    expect(pages.every((p) => p.data.length === 1)).toBe(true);
    expect(busiestSecond(from)).toBeLessThanOrEqual(5);
    expect(busiestSecond(from)).toBeGreaterThanOrEqual(3); // it did not crawl either
    // The key is what ServiceTitan counts against: API origin, app key, tenant (the fake's port makes it this run's).
    const { rows } = await rootPool().query("select count(*)::int as n from app_private.service_titan_rate_slots where limiter_key = $1", [
      `${fake.apiUrl}|${credentials.appKey}|${credentials.tenantId}`,
    ]);
    expect(rows[0].n).toBe(5);
    for (const c of [...loose, ...shared]) c.close();
  });

  it("a slot taken by a process that never gives it back frees itself when its hold runs out; a given-back slot is free a second later", async () => {
    const key = `test|rate-slots|${randomBytes(4).toString("hex")}`;
    const take = async (hold: string) =>
      (await rootPool().query<{ slot: number | null; wait_ms: number }>("select * from app_private.st_take_rate_slot($1, 2, $2::interval)", [key, hold])).rows[0]!;
    expect((await take("300 milliseconds")).slot).toBe(0);
    expect((await take("300 milliseconds")).slot).toBe(1);
    const full = await take("300 milliseconds");
    expect(full.slot).toBeNull();
    expect(full.wait_ms).toBeGreaterThanOrEqual(5);
    expect(full.wait_ms).toBeLessThanOrEqual(300);
    await new Promise((r) => setTimeout(r, full.wait_ms + 50));
    const again = await take("300 milliseconds");
    expect(again.slot).not.toBeNull();

    await rootPool().query("select app_private.st_release_rate_slot($1, $2)", [key, again.slot]);
    const { rows } = await rootPool().query(
      "select extract(epoch from busy_until - clock_timestamp()) as s from app_private.service_titan_rate_slots where limiter_key = $1 and slot = $2",
      [key, again.slot],
    );
    expect(Number(rows[0].s)).toBeGreaterThan(0.5);
    expect(Number(rows[0].s)).toBeLessThanOrEqual(1);
  });

  it("a free slot another caller is taking right now is skipped, not waited for: the caller is told to ask again in 5 ms", async () => {
    const key = `test|rate-slots|${randomBytes(4).toString("hex")}`;
    // The limiter's only slot exists and has never been used (free since -infinity).
    await rootPool().query("insert into app_private.service_titan_rate_slots (limiter_key, slot) values ($1, 0)", [key]);
    const [a, b] = [await rootPool().connect(), await rootPool().connect()];
    try {
      await a.query("begin");
      // A takes it and has not committed: the row is locked, still -infinity for everyone else.
      expect((await a.query("select * from app_private.st_take_rate_slot($1, 1, '5 seconds')", [key])).rows[0].slot).toBe(0);
      const { rows } = await b.query("select * from app_private.st_take_rate_slot($1, 1, '5 seconds')", [key]);
      expect(rows[0]).toEqual({ slot: null, wait_ms: 5 });
      await a.query("commit");
      // Committed, it is busy for its hold: now the wait is up to the hold's end (at most a second at a time).
      const { rows: after } = await b.query("select * from app_private.st_take_rate_slot($1, 1, '5 seconds')", [key]);
      expect(after[0].slot).toBeNull();
      expect(after[0].wait_ms).toBe(1000);
    } finally {
      await a.query("rollback").catch(() => {});
      a.release();
      b.release();
    }
  });

  it("refuses a missing key, a limit outside 1 to 59 and a hold that is not positive (22023)", async () => {
    const c = await rootPool().connect();
    try {
      await c.query("begin");
      await expectSqlError(c, "22023", () => c.query("select * from app_private.st_take_rate_slot('', 5, '1 second')"));
      await expectSqlError(c, "22023", () => c.query("select * from app_private.st_take_rate_slot('k', 60, '1 second')"));
      await expectSqlError(c, "22023", () => c.query("select * from app_private.st_take_rate_slot('k', 0, '1 second')"));
      await expectSqlError(c, "22023", () => c.query("select * from app_private.st_take_rate_slot('k', 5, '0 seconds')"));
    } finally {
      await c.query("rollback");
      c.release();
    }
  });
});
