/**
 * Test helpers in the spirit of graphile/starter: a superuser ("root") connection to the test
 * database, acting as a user of a tenant or as an anonymous visitor, each test in a transaction
 * that is rolled back at the end.
 */
import { randomBytes, randomUUID } from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll, expect, inject } from "vitest";
import { withDatabase } from "../src/config.ts";
import { makePool } from "../src/db/pools.ts";
import { dropDatabase, runAfterReset } from "../src/db/bootstrap.ts";
import { migrateDatabase } from "../src/db/migrate.ts";

/** The test database of this file: the shared one, unless the file called useOwnDatabase. */
export const db = { ...inject("db") };

const pools = new Map<string, pg.Pool>();
export function poolFor(url: string, max = 8): pg.Pool {
  let pool = pools.get(url);
  if (!pool) {
    // makePool logs the errors of clients whose connection the server ends (a database dropped
    // with force, a restart): without listeners they would crash the test process.
    pool = makePool(url, max, "test", 0);
    pools.set(url, pool);
  }
  return pool;
}
export const rootPool = () => poolFor(db.rootUrl);
export const ownerPool = () => poolFor(db.ownerUrl);
export const authPool = () => poolFor(db.authUrl);

afterAll(async () => {
  await Promise.all([...pools.values()].map((p) => p.end()));
  pools.clear();
});

/**
 * Gives this test file a database of its own: created and migrated before the file's tests, dropped
 * after them; db (and so rootPool, ownerPool, startTestServer) points at it. For files that run a
 * graphile-worker: a worker takes every job of its tasks from the queue it polls, so two files with
 * workers for the same task in one database would take each other's jobs (and send them through the
 * other file's fake provider). Call it at the top of the file, before any other hook connects.
 */
export function useOwnDatabase(label: string): void {
  const shared = { ...db };
  const name = `${shared.databaseName}_${label}_${randomBytes(3).toString("hex")}`;
  beforeAll(async () => {
    const root = new pg.Client({ connectionString: shared.serverRootUrl });
    await root.connect();
    try {
      await root.query(`create database ${pg.escapeIdentifier(name)} owner ${pg.escapeIdentifier(shared.roles.owner)} encoding 'UTF8' template template0`);
    } finally {
      await root.end();
    }
    await runAfterReset(withDatabase(shared.serverRootUrl, name), name, shared.roles);
    await migrateDatabase({
      ownerUrl: withDatabase(shared.ownerUrl, name),
      rootUrl: withDatabase(shared.serverRootUrl, "template1"),
      databaseName: name,
      roles: shared.roles,
      includeCurrent: true,
    });
    Object.assign(db, {
      databaseName: name,
      rootUrl: withDatabase(shared.serverRootUrl, name),
      ownerUrl: withDatabase(shared.ownerUrl, name),
      authUrl: withDatabase(shared.authUrl, name),
    });
  }, 180_000);
  afterAll(async () => {
    for (const url of [db.rootUrl, db.ownerUrl, db.authUrl]) {
      await pools.get(url)?.end();
      pools.delete(url);
    }
    await dropDatabase(shared.serverRootUrl, name);
  }, 60_000);
}

/** Runs fn in a transaction on a superuser connection, always rolled back. */
export async function withRootDb<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await rootPool().connect();
  await client.query("begin");
  try {
    return await fn(client);
  } finally {
    await client.query("rollback");
    client.release();
  }
}

export interface Session {
  user_id: string;
  tenant_id: string | null;
  session_id: string;
}

export interface RegisteredUser extends Session {
  email: string;
  password: string;
}

export const uniqueEmail = (label = "user") => `${label}-${randomUUID().slice(0, 8)}@example.test`;
export const PASSWORD = "correct-horse-9";

/** Registers a user with a new tenant (as root; app_public.register is SECURITY DEFINER). */
export async function registerUser(
  client: pg.ClientBase,
  options: { email?: string; businessName?: string | null; timezone?: string; postalAddress?: string | null } = {},
): Promise<RegisteredUser> {
  const email = options.email ?? uniqueEmail();
  const { rows } = await client.query<Session>(
    "select t.user_id, t.tenant_id, t.session_id from app_public.register($1, $2, $3, $4, $5, $6) t",
    [email, PASSWORD, options.businessName === undefined ? "Test Plumbing" : options.businessName, "Test", "User", options.timezone ?? "America/Chicago"],
  );
  // A real business has a postal address, which its marketing email must carry (CAN-SPAM); null: none.
  const postalAddress = options.postalAddress === undefined ? "100 Main Street, Springfield, IL 62701" : options.postalAddress;
  if (rows[0]!.tenant_id && postalAddress !== null) {
    await client.query("update app_public.tenants set business_address = $2 where id = $1", [rows[0]!.tenant_id, postalAddress]);
  }
  return { ...rows[0]!, email, password: PASSWORD };
}

/**
 * Marks a user's email address verified, as verifyEmail does with the emailed token (root only; for
 * tests whose subject is not verification itself, e.g. an owner buying numbers).
 */
export async function markEmailVerified(client: pg.ClientBase, userId: string): Promise<void> {
  await client.query("update app_public.users set email_verified_at = coalesce(email_verified_at, now()) where id = $1", [userId]);
}

/** Adds an existing user to a tenant with a role, and opens a session for them in that tenant (root only). */
export async function addMember(client: pg.ClientBase, tenantId: string, role: "owner" | "admin" | "manager" | "agent"): Promise<RegisteredUser> {
  await becomeRoot(client);
  const other = await registerUser(client);
  await client.query("insert into app_public.memberships (tenant_id, user_id, role) values ($1, $2, $3)", [tenantId, other.user_id, role]);
  await client.query("update app_public.user_sessions set tenant_id = $1 where id = $2", [tenantId, other.session_id]);
  return { ...other, tenant_id: tenantId };
}

async function setSettings(client: pg.ClientBase, settings: Record<string, string>): Promise<void> {
  for (const [key, value] of Object.entries(settings)) {
    await client.query("select set_config($1, $2, true)", [key, value]);
  }
}

/** From here on in this transaction, act as the visitor role with this session. */
export async function becomeUser(client: pg.ClientBase, session: Session): Promise<void> {
  await becomeRoot(client);
  await client.query(`set local role ${pg.escapeIdentifier(db.roles.visitor)}`);
  await setSettings(client, {
    "app.current_user_id": session.user_id,
    "app.current_tenant_id": session.tenant_id ?? "",
    "app.current_session_id": session.session_id,
  });
}

export async function becomeAnonymous(client: pg.ClientBase): Promise<void> {
  await becomeRoot(client);
  await client.query(`set local role ${pg.escapeIdentifier(db.roles.visitor)}`);
}

export async function becomeApiKey(client: pg.ClientBase, apiKey: string): Promise<void> {
  await becomeRoot(client);
  await client.query(`set local role ${pg.escapeIdentifier(db.roles.visitor)}`);
  await setSettings(client, { "app.current_api_key": apiKey });
}

export async function becomeRoot(client: pg.ClientBase): Promise<void> {
  await client.query("reset role");
  await setSettings(client, {
    "app.current_user_id": "",
    "app.current_tenant_id": "",
    "app.current_session_id": "",
    "app.current_api_key": "",
  });
}

/** Runs fn inside a savepoint that is rolled back, so an expected error doesn't abort the test's transaction. */
export async function inSavepoint<T>(client: pg.ClientBase, fn: () => Promise<T>): Promise<T> {
  await client.query("savepoint test_step");
  try {
    return await fn();
  } finally {
    await client.query("rollback to savepoint test_step");
  }
}

/** Expects the statement to fail with this SQLSTATE; returns the error for further checks. */
export async function expectSqlError(client: pg.ClientBase, code: string, fn: () => Promise<unknown>): Promise<pg.DatabaseError> {
  let caught: unknown = null;
  await inSavepoint(client, async () => {
    try {
      await fn();
    } catch (error) {
      caught = error;
    }
  });
  expect(caught, `expected SQLSTATE ${code}`).toBeInstanceOf(Error);
  expect((caught as pg.DatabaseError).code, (caught as Error).message).toBe(code);
  return caught as pg.DatabaseError;
}

/** Polls check until it returns something truthy (returned), or fails naming what it waited for after ms. */
export async function waitFor<T>(what: string, check: () => Promise<T | null | undefined | false>, ms = 30_000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * Records, as the database's own roles may, that the person at this number consented to marketing texts
 * from the business (a marketing or nurture text needs it: issue 17). Tests of other rules call it for
 * the numbers they text; the tests of consent itself go through recordConsent.
 */
export async function consentToMarketingTexts(client: pg.ClientBase | pg.Pool, tenantId: string, phone: string, leadId: string | null = null): Promise<void> {
  await client.query(
    `insert into app_public.consent_records (tenant_id, lead_id, channel, phone, purpose, method, disclosure, given_at, evidence_hash)
     select $1::uuid, $2::uuid, 'sms', $3::text, 'marketing', 'api', 'I agree to receive marketing texts from this business. Reply STOP to stop.', now(), repeat('0', 64)
      where not exists (select 1 from app_public.consent_records c
                         where c.tenant_id = $1::uuid and c.phone = $3::text and c.channel = 'sms' and c.purpose = 'marketing' and c.revoked_at is null)`,
    [tenantId, leadId, phone],
  );
}
