/**
 * Issue 14, point 5: numbers, as an attacker. A tracking number is one of the tenant's own active
 * phone_numbers, assigned only through assign_tracking_number; another tenant's number (active or
 * released) gets exactly the error of a number nobody has; requests cannot write phone columns;
 * buying numbers is for owners, within a per-tenant limit. Over real HTTP (GraphQL) and as the
 * visitor role in SQL, with parallel connections for the race.
 */
import { randomBytes } from "node:crypto";
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  addMember,
  becomeRoot,
  becomeUser,
  expectSqlError,
  markEmailVerified,
  registerUser,
  rootPool,
  useOwnDatabase,
  withRootDb,
  type RegisteredUser,
} from "../helpers.ts";
import { startTestServer, type TestServer } from "../server.ts";

// request_phone_number queues provisioning jobs: a database of its own keeps other files' workers away from them.
useOwnDatabase("numbers");

const hex = () => randomBytes(16).toString("hex");
const randomPhone = (area: string) => `+1${area}${String(Math.floor(Math.random() * 1e7)).padStart(7, "0")}`;
const NEUTRAL = "Not one of your numbers: a tracking number must be an active phone number of this business (request one with requestPhoneNumber)";

let server: TestServer;
let ownerA: RegisteredUser;
let ownerB: RegisteredUser;
let agentA: string;
let agentB: string;

async function tokenFor(user: RegisteredUser): Promise<string> {
  const answer = await server.gql(`mutation ($email: String!, $password: String!) { login(input: { email: $email, password: $password }) { result } }`, {
    email: user.email,
    password: user.password,
  });
  return answer.data.login.result;
}

/** A number bought for the tenant, as the provisioning job records it. */
async function provisioned(tenantId: string | null, status = "active"): Promise<{ id: string; phone: string }> {
  const phone = randomPhone("305");
  const { rows } = await rootPool().query<{ id: string }>(
    `insert into app_public.phone_numbers (tenant_id, phone_number, phone_number_sid, area_code, status, date_provisioned)
     values ($1, $2, $3, '305', $4, now()) returning id`,
    [tenantId, phone, `PN${hex()}`, status],
  );
  return { id: rows[0]!.id, phone };
}

async function newAgent(tenantId: string | null): Promise<string> {
  const { rows } = await rootPool().query<{ id: string }>(
    "insert into app_public.agents (tenant_id, display_name, phone) values ($1, 'Agent', $2) returning id",
    [tenantId, randomPhone("786")],
  );
  return rows[0]!.id;
}

const ASSIGN = `mutation ($agentId: UUID!, $phone: String!) { assignTrackingNumber(input: { agentId: $agentId, phone: $phone }) { result { rowId phone isActive } } }`;

async function trackingRowsFor(phone: string): Promise<Array<{ tenant_id: string; is_active: boolean }>> {
  return (await rootPool().query("select tenant_id, is_active from app_public.tracking_numbers where phone = $1", [phone])).rows;
}

beforeAll(async () => {
  server = await startTestServer();
  const root = await rootPool().connect();
  try {
    ownerA = await registerUser(root, { businessName: "Alpha Plumbing" });
    ownerB = await registerUser(root, { businessName: "Bravo Plumbing" });
    // Buying numbers needs a verified email address (tested in test/db/sms-outbox.test.ts).
    for (const owner of [ownerA, ownerB]) await markEmailVerified(root, owner.user_id);
  } finally {
    root.release();
  }
  agentA = await newAgent(ownerA.tenant_id);
  agentB = await newAgent(ownerB.tenant_id);
}, 60_000);

afterAll(async () => {
  await server?.close();
});

describe("tracking numbers", () => {
  it("tenant B cannot claim tenant A's number, active or released: the same error as an unknown number, byte for byte, and nothing is written", async () => {
    const tokenA = await tokenFor(ownerA);
    const tokenB = await tokenFor(ownerB);
    const numberA = await provisioned(ownerA.tenant_id);

    const unknown = await server.gql(ASSIGN, { agentId: agentB, phone: randomPhone("212") }, tokenB);
    expect(unknown.errors?.[0]?.message).toBe(NEUTRAL);
    expect(unknown.errors?.[0]?.extensions).toEqual({ code: "P0002" });

    const stolen = await server.gql(ASSIGN, { agentId: agentB, phone: numberA.phone }, tokenB);
    expect(JSON.stringify(stolen.errors)).toBe(JSON.stringify(unknown.errors));
    expect(await trackingRowsFor(numberA.phone)).toEqual([]);

    // The owner can (positive control), and B still cannot while A uses it.
    const mine = await server.gql(ASSIGN, { agentId: agentA, phone: numberA.phone }, tokenA);
    expect(mine.errors, JSON.stringify(mine.errors)).toBeUndefined();
    expect(mine.data.assignTrackingNumber.result).toMatchObject({ phone: numberA.phone, isActive: true });
    const whileUsed = await server.gql(ASSIGN, { agentId: agentB, phone: numberA.phone }, tokenB);
    expect(JSON.stringify(whileUsed.errors)).toBe(JSON.stringify(unknown.errors));

    // A releases the number: its tracking number stops, and B still gets the same neutral error.
    await rootPool().query("update app_public.phone_numbers set status = 'released', date_released = now() where id = $1", [numberA.id]);
    expect(await trackingRowsFor(numberA.phone)).toEqual([{ tenant_id: ownerA.tenant_id, is_active: false }]);
    const afterRelease = await server.gql(ASSIGN, { agentId: agentB, phone: numberA.phone }, tokenB);
    expect(JSON.stringify(afterRelease.errors)).toBe(JSON.stringify(unknown.errors));
    expect(await trackingRowsFor(numberA.phone)).toEqual([{ tenant_id: ownerA.tenant_id, is_active: false }]);
    // Nor does a released number reach anyone through the webhooks' lookup.
    expect((await rootPool().query("select tenant_id from app_private.number_owner($1)", [numberA.phone])).rows[0].tenant_id).toBeNull();
  });

  it("the request role cannot write phone columns directly (42501): tracking_numbers, phone_numbers, business_settings.forward_to_phone", async () => {
    await withRootDb(async (client) => {
      const numberB = await provisioned(ownerB.tenant_id);
      const numberA = await provisioned(ownerA.tenant_id);
      await becomeUser(client, ownerB);
      await expectSqlError(client, "42501", () =>
        client.query("insert into app_public.tracking_numbers (agent_id, phone) values ($1, $2)", [agentB, numberA.phone]),
      );
      await expectSqlError(client, "42501", () =>
        client.query("insert into app_public.tracking_numbers (agent_id, phone) values ($1, $2)", [agentB, numberB.phone]),
      );
      const { rows } = await client.query<{ id: string }>("select (app_public.assign_tracking_number($1, $2)).id", [agentB, numberB.phone]);
      await expectSqlError(client, "42501", () => client.query("update app_public.tracking_numbers set phone = $2 where id = $1", [rows[0]!.id, numberA.phone]));
      await expectSqlError(client, "42501", () =>
        client.query("update app_public.tracking_numbers set phone_number_id = $2 where id = $1", [rows[0]!.id, numberA.id]),
      );
      await expectSqlError(client, "42501", () =>
        client.query("insert into app_public.phone_numbers (phone_number, phone_number_sid, area_code, status) values ($1, 'PNx', '305', 'active')", [
          randomPhone("305"),
        ]),
      );
      await expectSqlError(client, "42501", () => client.query("update app_public.business_settings set forward_to_phone = $1", [numberA.phone]));
      // Its own number is refused as a forwarding phone (a loop); an outside phone is accepted through the function.
      await expectSqlError(client, "22023", () => client.query("select app_public.set_forward_to_phone($1)", [numberB.phone]));
      const outside = randomPhone("786");
      const set = await client.query("select (app_public.set_forward_to_phone($1)).forward_to_phone", [outside]);
      expect(set.rows[0].forward_to_phone).toBe(outside);
    });
  });

  it("SQL as the visitor: the error for another tenant's number is byte-identical to an unknown number's, and deactivating then reactivating a released number is refused the same way", async () => {
    await withRootDb(async (client) => {
      const numberA = await provisioned(ownerA.tenant_id);
      await becomeUser(client, ownerB);
      const unknown = await expectSqlError(client, "P0002", () => client.query("select app_public.assign_tracking_number($1, $2)", [agentB, randomPhone("212")]));
      const stolen = await expectSqlError(client, "P0002", () => client.query("select app_public.assign_tracking_number($1, $2)", [agentB, numberA.phone]));
      expect(stolen.message).toBe(unknown.message);
      expect(stolen.message).toBe(NEUTRAL);
      expect([stolen.detail, stolen.hint, stolen.constraint]).toEqual([unknown.detail, unknown.hint, unknown.constraint]);

      const numberB = await provisioned(ownerB.tenant_id);
      await becomeUser(client, ownerB);
      const { rows } = await client.query<{ id: string }>("select (app_public.assign_tracking_number($1, $2)).id", [agentB, numberB.phone]);
      await client.query("update app_public.tracking_numbers set is_active = false where id = $1", [rows[0]!.id]);
      await becomeRoot(client);
      await client.query("update app_public.phone_numbers set status = 'released' where id = $1", [numberB.id]);
      await becomeUser(client, ownerB);
      const reactivate = await expectSqlError(client, "P0002", () => client.query("update app_public.tracking_numbers set is_active = true where id = $1", [rows[0]!.id]));
      expect(reactivate.message).toBe(NEUTRAL);
    });
  });

  it("two tenants claiming the same number at once on parallel connections: only its owner gets it; the other sees the neutral error", async () => {
    for (let round = 0; round < 10; round++) {
      const number = await provisioned(ownerA.tenant_id);
      const claim = async (who: RegisteredUser, agent: string) => {
        const client = await rootPool().connect();
        try {
          await client.query("begin");
          await becomeUser(client, who);
          await client.query("select app_public.assign_tracking_number($1, $2)", [agent, number.phone]);
          await client.query("commit");
          return { ok: true as const };
        } catch (error) {
          await client.query("rollback");
          const e = error as pg.DatabaseError;
          return { ok: false as const, code: e.code, message: e.message };
        } finally {
          client.release();
        }
      };
      const [a, b] = await Promise.all([claim(ownerA, agentA), claim(ownerB, agentB)]);
      expect(a).toEqual({ ok: true });
      expect(b).toEqual({ ok: false, code: "P0002", message: NEUTRAL });
      expect(await trackingRowsFor(number.phone)).toEqual([{ tenant_id: ownerA.tenant_id, is_active: true }]);
    }
  });

  it("two agents of one tenant claiming the same number at once: exactly one gets it", async () => {
    const number = await provisioned(ownerA.tenant_id);
    const agents = await Promise.all(Array.from({ length: 6 }, () => newAgent(ownerA.tenant_id)));
    const results = await Promise.all(
      agents.map(async (agent) => {
        const client = await rootPool().connect();
        try {
          await client.query("begin");
          await becomeUser(client, ownerA);
          await client.query("select app_public.assign_tracking_number($1, $2)", [agent, number.phone]);
          await client.query("commit");
          return "ok";
        } catch (error) {
          await client.query("rollback");
          return (error as pg.DatabaseError).code;
        } finally {
          client.release();
        }
      }),
    );
    expect(results.filter((r) => r === "ok")).toHaveLength(1);
    expect(results.filter((r) => r !== "ok")).toEqual(Array(5).fill("23505"));
  });
});

describe("buying numbers", () => {
  const jobsFor = async (tenantId: string | null) =>
    Number(
      (
        await rootPool().query(
          `select count(*) from graphile_worker._private_jobs j join app_public.phone_numbers p on j.key = 'provision:' || p.id
           where p.tenant_id = $1`,
          [tenantId],
        )
      ).rows[0].count,
    );
  const numbersOf = async (tenantId: string | null) =>
    Number((await rootPool().query("select count(*) from app_public.phone_numbers where tenant_id = $1", [tenantId])).rows[0].count);

  it("a new tenant's owner may hold 3 numbers: the fourth request is refused with 55000 and nothing is queued", async () => {
    const root = await rootPool().connect();
    let fresh: RegisteredUser;
    try {
      fresh = await registerUser(root, { businessName: "Fresh Signup" });
      await markEmailVerified(root, fresh.user_id);
    } finally {
      root.release();
    }
    const token = await tokenFor(fresh);
    const REQUEST = `mutation { requestPhoneNumber(input: { areaCode: "415" }) { result { rowId status } } }`;
    for (let i = 0; i < 3; i++) {
      const ok = await server.gql(REQUEST, {}, token);
      expect(ok.errors, JSON.stringify(ok.errors)).toBeUndefined();
    }
    expect(await jobsFor(fresh.tenant_id)).toBe(3);
    const refused = await server.gql(REQUEST, {}, token);
    expect(refused.errors?.[0]?.extensions).toEqual({ code: "55000" });
    expect(refused.errors?.[0]?.message).toMatch(/already has 3 phone numbers/);
    expect(await jobsFor(fresh.tenant_id)).toBe(3);
    expect(await numbersOf(fresh.tenant_id)).toBe(3);

    // A failed purchase frees its place; a released one too.
    await rootPool().query("update app_public.phone_numbers set status = 'failed' where id = (select id from app_public.phone_numbers where tenant_id = $1 limit 1)", [
      fresh.tenant_id,
    ]);
    const again = await server.gql(REQUEST, {}, token);
    expect(again.errors, JSON.stringify(again.errors)).toBeUndefined();
  });

  it("the limit comes from system_config limits.phone_numbers, which the tenant itself cannot write", async () => {
    await withRootDb(async (client) => {
      const fresh = await registerUser(client, { businessName: "Limited" });
      await markEmailVerified(client, fresh.user_id);
      await client.query(
        "insert into app_public.system_config (tenant_id, key, value, value_type) values ($1, 'limits.phone_numbers', '1', 'number')",
        [fresh.tenant_id],
      );
      await becomeUser(client, fresh);
      await client.query("select app_public.request_phone_number('305')");
      await expectSqlError(client, "55000", () => client.query("select app_public.request_phone_number('305')"));
      await expectSqlError(client, "42501", () =>
        client.query("insert into app_public.system_config (key, value, value_type) values ('limits.phone_numbers_x', '50', 'number')"),
      );
      const raised = await client.query("update app_public.system_config set value = '50' where key = 'limits.phone_numbers'");
      expect(raised.rowCount).toBe(0);
      await expectSqlError(client, "55000", () => client.query("select app_public.request_phone_number('305')"));
    });
  });

  it("concurrent requests cannot pass the limit together", async () => {
    const root = await rootPool().connect();
    let fresh: RegisteredUser;
    try {
      fresh = await registerUser(root, { businessName: "Racing Signup" });
      await markEmailVerified(root, fresh.user_id);
    } finally {
      root.release();
    }
    const results = await Promise.all(
      Array.from({ length: 8 }, async () => {
        const client = await rootPool().connect();
        try {
          await client.query("begin");
          await becomeUser(client, fresh);
          await client.query("select app_public.request_phone_number('305')");
          await client.query("commit");
          return "ok";
        } catch (error) {
          await client.query("rollback");
          return (error as pg.DatabaseError).code;
        } finally {
          client.release();
        }
      }),
    );
    expect(results.filter((r) => r === "ok")).toHaveLength(3);
    expect(results.filter((r) => r !== "ok")).toEqual(Array(5).fill("55000"));
    expect(await numbersOf(fresh.tenant_id)).toBe(3);
  });

  it("admins, managers and agents cannot buy numbers (42501), and nothing is queued", async () => {
    await withRootDb(async (client) => {
      for (const role of ["admin", "manager", "agent"] as const) {
        const member = await addMember(client, ownerA.tenant_id!, role);
        const before = Number((await client.query("select count(*) from app_public.phone_numbers where tenant_id = $1", [ownerA.tenant_id])).rows[0].count);
        await becomeUser(client, member);
        await expectSqlError(client, "42501", () => client.query("select app_public.request_phone_number('305')"));
        await becomeRoot(client);
        const after = Number((await client.query("select count(*) from app_public.phone_numbers where tenant_id = $1", [ownerA.tenant_id])).rows[0].count);
        expect(after).toBe(before);
      }
    });
  });
});
