/**
 * The ServiceTitan cache end to end: settings saved and tested through GraphQL (the secret encrypted,
 * never readable), syncs run by the real worker against a fake ServiceTitan on loopback (full,
 * incremental, faults, a crash resumed from its token, concurrent runs, a failing tenant), and the
 * technicians it brings in receiving leads from route_lead when they are free.
 */
import { randomBytes } from "node:crypto";
import type { Runner } from "graphile-worker";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalAiResponder } from "../../src/providers/aiLocal.ts";
import { LocalEmailProvider } from "../../src/providers/emailLocal.ts";
import { LocalNumberProvisioner } from "../../src/providers/numbersLocal.ts";
import { ServiceTitanClient } from "../../src/providers/serviceTitan.ts";
import { closeServiceTitanClients } from "../../src/providers/serviceTitanConnections.ts";
import { pgRequestLimiters } from "../../src/providers/serviceTitanPgLimiter.ts";
import { LocalSmsProvider } from "../../src/providers/smsLocal.ts";
import { setServices } from "../../src/worker/services.ts";
import { startWorker } from "../../src/worker/start.ts";
import { startFakeServiceTitan, type FakeServiceTitan } from "../fakeServiceTitan.ts";
import { addMember, becomeUser, expectSqlError, ownerPool, registerUser, rootPool, useOwnDatabase, waitFor, type RegisteredUser } from "../helpers.ts";
import { startTestServer, type TestServer } from "../server.ts";

useOwnDatabase("servicetitan");

const TABLES = ["st_technicians", "st_locations", "st_jobs", "st_appointments", "st_appointment_assignments"] as const;
const RESOURCE: Record<(typeof TABLES)[number], "technicians" | "locations" | "jobs" | "appointments" | "appointment-assignments"> = {
  st_technicians: "technicians",
  st_locations: "locations",
  st_jobs: "jobs",
  st_appointments: "appointments",
  st_appointment_assignments: "appointment-assignments",
};
const credentials = { clientId: "cid-switchboard", clientSecret: `secret-${randomBytes(8).toString("hex")}`, appKey: "ak1.switchboard", tenantId: "9012345" };
/** The mutation's input for these credentials. */
const settings = { clientId: credentials.clientId, clientSecret: credentials.clientSecret, appKey: credentials.appKey, serviceTitanTenantId: credentials.tenantId, environment: "integration" };

let fake: FakeServiceTitan;
let server: TestServer;
let runner: Runner;
let owner: RegisteredUser;
let token: string;

async function login(user: RegisteredUser): Promise<string> {
  const answer = await server.gql(`mutation ($email: String!, $password: String!) { login(input: { email: $email, password: $password }) { result } }`, {
    email: user.email,
    password: user.password,
  });
  return answer.data.login.result;
}

const SAVE = `mutation ($input: SaveServiceTitanConnectionInput!) {
  saveServiceTitanConnection(input: $input) { ok error connection { clientId serviceTitanTenantId environment status lastTestError } }
}`;

async function syncState(tenant: string, table: string) {
  return (await rootPool().query("select * from raw.sync_state where tenant_id = $1 and table_name = $2", [tenant, table])).rows[0];
}

async function count(table: string, tenant: string, where = "true"): Promise<number> {
  return (await rootPool().query(`select count(*)::int as n from raw.${table} where tenant_id = $1 and ${where}`, [tenant])).rows[0].n;
}

/** Enqueues a sync as the API does and waits until sync_state shows it completed after `since`. */
async function syncAndWait(tenant: string, table: string, mode: "full" | "incremental", ms = 60_000): Promise<void> {
  const since = (await rootPool().query("select now() as t")).rows[0].t as Date;
  await rootPool().query("select app_private.st_schedule_syncs($1, $2, $3)", [mode, tenant, table]);
  const column = mode === "full" ? "last_full_sync" : "last_incremental_sync";
  await waitFor(`${mode} sync of ${table}`, async () => {
    const state = await syncState(tenant, table);
    return state?.[column] && state[column] >= since && state.run_mode === null;
  }, ms);
}

beforeAll(async () => {
  fake = await startFakeServiceTitan({
    ...credentials,
    counts: { technicians: 8, locations: 60, jobs: 150, appointments: 90 },
    exportPageSize: 40,
  });
  server = await startTestServer({
    SERVICETITAN_AUTH_BASE_URL: fake.authUrl,
    SERVICETITAN_API_BASE_URL: fake.apiUrl,
    SERVICETITAN_TIMEOUT_MS: "1000",
  });
  setServices({
    sms: new LocalSmsProvider(ownerPool(), "unused", -1),
    ai: new LocalAiResponder(),
    numbers: new LocalNumberProvisioner(),
    email: new LocalEmailProvider(ownerPool()),
    emailFrom: { name: null, address: "no-reply@switchboard.localhost" },
    publicUrl: () => server.url,
    serviceTitan: server.config.serviceTitan,
    serviceTitanLimiter: pgRequestLimiters(ownerPool()),
  });
  const root = await rootPool().connect();
  try {
    owner = await registerUser(root, { businessName: "Desert Air & Plumbing" });
  } finally {
    root.release();
  }
  token = await login(owner);
  runner = await startWorker(ownerPool(), 4, { only: ["servicetitan__sync", "servicetitan__schedule"] });
}, 120_000);

afterAll(async () => {
  await runner?.stop();
  closeServiceTitanClients();
  setServices(null);
  await server?.close();
  await fake?.close();
});

describe("ServiceTitan connection settings", () => {
  it("bad settings are refused or saved as failed with ServiceTitan's reason; the secret is stored encrypted and never readable", async () => {
    const bad = await server.gql(SAVE, { input: { ...settings, serviceTitanTenantId: "12ab" } }, token);
    expect(bad.errors?.[0]?.extensions?.code).toBe("22023");
    expect(bad.errors?.[0]?.message).toMatch(/serviceTitanTenantId must be ServiceTitan's numeric tenant id/);
    const env = await server.gql(SAVE, { input: { ...settings, environment: "staging" } }, token);
    expect(env.errors?.[0]?.extensions?.code).toBe("22023");

    const wrong = await server.gql(SAVE, { input: { ...settings, clientSecret: "not-the-secret" } }, token);
    expect(wrong.errors).toBeUndefined();
    expect(wrong.data.saveServiceTitanConnection.ok).toBe(false);
    expect(wrong.data.saveServiceTitanConnection.connection).toMatchObject({ status: "failed", clientId: credentials.clientId });
    expect(wrong.data.saveServiceTitanConnection.error).toMatch(/invalid_client|credentials|token/i);
    // A failed connection is not synced.
    const sync = await server.gql(`mutation { requestServiceTitanSync(input: {}) { result } }`, {}, token);
    expect(sync.errors?.[0]?.extensions?.code).toBe("55000");

    const { rows } = await rootPool().query("select client_secret_encrypted from app_private.service_titan_credentials where tenant_id = $1", [owner.tenant_id]);
    expect(Buffer.from(rows[0].client_secret_encrypted).includes(Buffer.from("not-the-secret"))).toBe(false);
    // Nothing in the GraphQL schema can read it back.
    const introspection = await server.gql(`{ __type(name: "ServiceTitanConnection") { fields { name } } }`, {}, token);
    const fields = (introspection.data?.__type?.fields ?? []).map((f: { name: string }) => f.name).join(" ");
    expect(fields).not.toMatch(/secret|appKey/i);
  });

  it("only owners and admins may save settings (42501), managers may read them", async () => {
    const client = await rootPool().connect();
    try {
      await client.query("begin");
      const manager = await addMember(client, owner.tenant_id!, "manager");
      await becomeUser(client, manager);
      await expectSqlError(client, "42501", () =>
        client.query("select app_hidden.save_service_titan_connection('c', '\\x00'::bytea, 'f', 'a', '1', 'production')"),
      );
      await client.query("rollback");
    } finally {
      client.release();
    }
  });

  it("working settings are tested, saved, and start a full sync of every table: typed columns, full records, inactive rows kept and marked", async () => {
    const saved = await server.gql(SAVE, { input: settings }, token);
    expect(saved.errors).toBeUndefined();
    expect(saved.data.saveServiceTitanConnection).toMatchObject({ ok: true, error: null, connection: { status: "connected", lastTestError: null } });
    const t = owner.tenant_id!;
    for (const table of TABLES) {
      await waitFor(`first full sync of ${table}`, async () => (await syncState(t, table))?.last_full_sync, 60_000);
      const expected = fake.records(RESOURCE[table]);
      const state = await syncState(t, table);
      expect(state).toMatchObject({ records_synced: String(expected.length), last_error: null, run_mode: null, consecutive_failures: 0 });
      expect(await count(table, t)).toBe(expected.length);
      expect(await count(table, t, "not active")).toBe(expected.filter((r) => !r.active).length);
      expect(await count(table, t, "not active")).toBeGreaterThan(0);
    }
    // The worker's requests took their turns in the slots shared by every process (50 per second).
    const { rows: slots } = await rootPool().query("select count(*)::int as n from app_private.service_titan_rate_slots where limiter_key = $1", [
      `${fake.apiUrl}|${credentials.appKey}|${credentials.tenantId}`,
    ]);
    expect(slots[0].n).toBe(50);
    const job = fake.records("jobs")[7]!;
    const { rows } = await rootPool().query("select * from raw.st_jobs where tenant_id = $1 and id = $2", [t, job.id]);
    expect(rows[0]).toMatchObject({ job_status: job.jobStatus, location_id: String(job.locationId), priority: job.priority, summary: job.summary });
    expect(rows[0].full_data).toEqual(job);
    // The GIN index answers containment queries on the full record.
    const { rows: urgent } = await rootPool().query(`select count(*)::int as n from raw.st_jobs where tenant_id = $1 and full_data @> '{"priority":"Urgent"}'`, [t]);
    expect(urgent[0].n).toBe(fake.records("jobs").filter((j) => j.priority === "Urgent").length);

    // Members read their caches through GraphQL, under RLS.
    const read = await server.gql(`{ allRawStJobs(first: 5) { totalCount nodes { id jobStatus fullData } } allRawSyncStates { nodes { tableName recordsSynced lastFullSync } } }`, {}, token);
    expect(read.errors).toBeUndefined();
    expect(read.data.allRawStJobs.totalCount).toBe(fake.records("jobs").length);
    expect(read.data.allRawSyncStates.nodes).toHaveLength(TABLES.length);

    // Freshness operations can alert on: nothing is stale right after the syncs; a cache whose newest
    // completed sync is an hour old is, by the default 30 minutes, but not when asked about 2 hours.
    const STALE = `{ allRawSyncStates { nodes { tableName stale withinTwoHours: stale(olderThan: { hours: 2 }) } } }`;
    const fresh = await server.gql(STALE, {}, token);
    expect(fresh.errors).toBeUndefined();
    expect(fresh.data.allRawSyncStates.nodes.filter((n: { stale: boolean }) => n.stale)).toEqual([]);
    await rootPool().query(
      "update raw.sync_state set last_full_sync = now() - interval '1 hour', last_incremental_sync = null where tenant_id = $1 and table_name = 'st_locations'",
      [t],
    );
    const behind = await server.gql(STALE, {}, token);
    expect(behind.data.allRawSyncStates.nodes.filter((n: { stale: boolean }) => n.stale)).toEqual([{ tableName: "st_locations", stale: true, withinTwoHours: false }]);
    const negative = await server.gql(`{ allRawSyncStates { nodes { stale(olderThan: { minutes: -5 }) } } }`, {}, token);
    expect(negative.errors?.[0]?.extensions?.code).toBe("22023");
    expect(negative.errors?.[0]?.message).toMatch(/olderThan must be a positive length of time/);
  });

  it("an incremental sync picks up changes, deactivations and new records; a full sync marks what ServiceTitan deleted", async () => {
    const t = owner.tenant_id!;
    const [a, b, c] = fake.records("jobs").filter((j) => j.active);
    fake.modify("jobs", a!.id, { jobStatus: "Completed", summary: "Fixed the water heater" });
    fake.deactivate("jobs", b!.id);
    const added = fake.add("jobs", { jobStatus: "Scheduled", summary: "New install", locationId: 0, customerId: 0, priority: "High" });
    const requested = await server.gql(`mutation { requestServiceTitanSync(input: { tableName: "st_jobs" }) { result } }`, {}, token);
    expect(requested.data.requestServiceTitanSync.result).toBe(1);
    await waitFor("the incremental sync", async () => (await syncState(t, "st_jobs"))?.last_incremental_sync);
    const job = async (id: number) => (await rootPool().query("select * from raw.st_jobs where tenant_id = $1 and id = $2", [t, id])).rows[0];
    expect(await job(a!.id)).toMatchObject({ job_status: "Completed", summary: "Fixed the water heater" });
    expect((await job(b!.id)).active).toBe(false);
    expect(await job(added.id)).toMatchObject({ job_status: "Scheduled", priority: "High", deleted_at: null });
    // Only the changes travelled: the incremental sync applied a handful of records, not the table.
    expect(Number((await syncState(t, "st_jobs")).records_synced)).toBeLessThan(10);

    fake.remove("jobs", c!.id);
    const [, , , d, e] = fake.records("jobs").filter((j) => j.active);
    fake.modify("jobs", e!.id, { summary: "Changed before the nightly sync" });
    const version = async (id: number) => (await rootPool().query("select xmin::text as v from raw.st_jobs where tenant_id = $1 and id = $2", [t, id])).rows[0].v;
    const [unchangedBefore, changedBefore] = [await version(d!.id), await version(e!.id)];
    await syncAndWait(t, "st_jobs", "full");
    expect((await job(c!.id)).deleted_at).not.toBeNull();
    expect((await job(a!.id)).deleted_at).toBeNull();
    expect(await count("st_jobs", t, "deleted_at is null")).toBe(fake.records("jobs").length);
    // The full sync rewrote the changed record only: an unchanged one keeps its row version.
    expect(await version(d!.id)).toBe(unchangedBefore);
    expect(await version(e!.id)).not.toBe(changedBefore);
    expect((await job(e!.id)).summary).toBe("Changed before the nightly sync");
    // What the run saw is forgotten once it ends.
    expect((await rootPool().query("select count(*)::int as n from app_private.st_sync_seen where tenant_id = $1", [t])).rows[0].n).toBe(0);
  });
});

describe("ServiceTitan sync runs", () => {
  it("429 with Retry-After, 500s, a timeout, malformed JSON and a token expiring mid-sync: the client retries, the job retries when the client gives up, and the sync ends with every record once", async () => {
    const t = owner.tenant_id!;
    const before = fake.requests.length;
    fake.expireTokensNow();
    fake.failNext(1, "429", 1);
    fake.failNext(2, "500");
    fake.failNext(1, "timeout");
    fake.failNext(1, "malformed");
    const since = (await rootPool().query("select now() as t")).rows[0].t as Date;
    await rootPool().query("select app_private.st_schedule_syncs('full', $1, 'st_locations')", [t]);
    // The first attempt gives up on its fifth failure and says so; the job's retry (seconds later) resumes the run.
    const failed = await waitFor("the failed attempt", async () => (await syncState(t, "st_locations"))?.last_error, 60_000);
    expect(failed).toMatch(/not JSON.*gave up after 5 attempts/);
    await waitFor("the retried sync", async () => {
      const s = await syncState(t, "st_locations");
      return s?.last_full_sync >= since && s.run_mode === null;
    }, 90_000);
    const state = await syncState(t, "st_locations");
    const trail = JSON.stringify({ state, requests: fake.requests.slice(before).map((r) => [r.at, r.server, r.path, r.query.from ?? null, r.status]) });
    expect(state, trail).toMatchObject({ last_error: null, records_synced: String(fake.records("locations").length) });
    expect(await count("st_locations", t, "deleted_at is null")).toBe(fake.records("locations").length);
    const log = fake.requests.slice(before);
    // The expired token is refused first (401, then a new token), then every fault is served in order:
    // five failures in a row use up the client's five attempts, so the job fails once and its retry
    // resumes the run.
    expect(log[0]).toMatchObject({ server: "api", status: 401 });
    expect(log.filter((r) => r.fault).map((r) => r.fault)).toEqual(["429", "500", "500", "timeout", "malformed"]);
    const limited = log.findIndex((r) => r.status === 429);
    expect(limited).toBeGreaterThanOrEqual(0);
    const next = log.slice(limited + 1).find((r) => r.server === "api");
    expect(next!.at - log[limited]!.at).toBeGreaterThanOrEqual(950);
    expect(log.filter((r) => r.status === 500).length).toBeGreaterThanOrEqual(2);
    expect(log.filter((r) => r.server === "auth").length).toBeGreaterThanOrEqual(1);
  });

  it("a sync whose worker died midway resumes from its stored continuation token, and ends with every record exactly once", async () => {
    const t = owner.tenant_id!;
    const root = rootPool();
    // A worker claims a full sync of appointments, applies two pages, and dies (no st_fail_sync).
    const { rows } = await root.query("select * from app_private.st_begin_sync($1, 'st_appointments', 'full')", [t]);
    const client = new ServiceTitanClient({ ...credentials, environment: "integration", authBaseUrl: fake.authUrl, apiBaseUrl: fake.apiUrl });
    let cursor: string | null = null;
    for (let i = 0; i < 2; i++) {
      const page = await client.exportPage("appointments", cursor, { includeRecentChanges: true });
      await root.query("select app_private.st_apply_page($1, $2::jsonb, $3, $4)", [rows[0].run_id, JSON.stringify(page.data), page.continueFrom, page.hasMore]);
      cursor = page.continueFrom;
    }
    client.close();
    const stored = await syncState(t, "st_appointments");
    expect(stored).toMatchObject({ run_mode: "full", run_cursor: cursor, run_pages: 2 });

    // While its claim is fresh, nobody else may run this table: the job ends without a request.
    const before = fake.requests.length;
    await root.query("select app_private.st_schedule_syncs('full', $1, 'st_appointments')", [t]);
    await waitFor("the job to give up", async () =>
      (await root.query("select count(*)::int as n from graphile_worker.jobs where task_identifier = 'servicetitan__sync'")).rows[0].n === 0);
    expect(fake.requests.slice(before).filter((r) => r.path.endsWith("/export/appointments"))).toEqual([]);

    // Its lease runs out: the next run continues from the stored token instead of starting over.
    await root.query("update raw.sync_state set run_heartbeat_at = now() - interval '16 minutes' where tenant_id = $1 and table_name = 'st_appointments'", [t]);
    const resumedFrom = fake.requests.length;
    await syncAndWait(t, "st_appointments", "full");
    const exports = fake.requests.slice(resumedFrom).filter((r) => r.path.endsWith("/export/appointments"));
    expect(exports[0]!.query.from).toBe(cursor);
    const state = await syncState(t, "st_appointments");
    expect(state.records_synced).toBe(String(fake.records("appointments").length));
    expect(await count("st_appointments", t, "deleted_at is null")).toBe(fake.records("appointments").length);
  });

  it("two claims of the same tenant and table at the same moment: exactly one wins, the other gets 55P03", async () => {
    const t = owner.tenant_id!;
    const clients = await Promise.all([0, 1, 2, 3].map(() => rootPool().connect()));
    try {
      const results = await Promise.allSettled(
        clients.map((c) => c.query("select run_id from app_private.st_begin_sync($1, 'st_technicians', 'incremental')", [t])),
      );
      expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
      for (const r of results.filter((r) => r.status === "rejected")) expect(((r as PromiseRejectedResult).reason as pg.DatabaseError).code).toBe("55P03");
      const winner = (results.find((r) => r.status === "fulfilled") as PromiseFulfilledResult<pg.QueryResult>).value.rows[0].run_id;
      await clients[0]!.query("select app_private.st_apply_page($1, '[]'::jsonb, null, false)", [winner]);
      // A run that lost its claim cannot write.
      await expect(clients[1]!.query("select app_private.st_apply_page($1, '[]'::jsonb, null, false)", [winner])).rejects.toMatchObject({ code: "55000" });
    } finally {
      for (const c of clients) c.release();
    }
  });

  it("the scheduled incremental sync: a tenant whose ServiceTitan refuses it records the error and does not stop another tenant's sync", async () => {
    const root = rootPool();
    const other = await (async () => {
      const c = await root.connect();
      try {
        return await registerUser(c, { businessName: "Wrong Tenant HVAC" });
      } finally {
        c.release();
      }
    })();
    const otherToken = await login(other);
    // Credentials the fake accepts, but for a ServiceTitan tenant they do not belong to: 403 on every call.
    const saved = await server.gql(SAVE, { input: { ...settings, serviceTitanTenantId: "777" } }, otherToken);
    expect(saved.data.saveServiceTitanConnection.ok).toBe(false);
    // Force a sync of it anyway (as if the test had passed and ServiceTitan changed its mind later).
    await root.query("update app_public.service_titan_connections set status = 'connected' where tenant_id = $1", [other.tenant_id]);
    // What the crontab does every 5 minutes: the schedule task queues every table of every connection.
    await root.query(`select app_private.add_job('servicetitan__schedule', '{"mode":"incremental"}')`);
    await waitFor("the failing tenant's error", async () => (await syncState(other.tenant_id!, "st_jobs"))?.last_error);
    expect((await syncState(other.tenant_id!, "st_jobs")).last_error).toMatch(/403|tenant/i);
    await waitFor("the good tenant's incremental syncs", async () => {
      const { rows } = await root.query("select count(*)::int as n from raw.sync_state where tenant_id = $1 and last_incremental_sync is not null and last_error is null", [owner.tenant_id]);
      return rows[0].n === TABLES.length;
    });
  });
});

describe("technicians receive leads", () => {
  it("technicians become agents with skills; route_lead offers a service lead to a technician free at the requested time, not to one on an appointment", async () => {
    const t = owner.tenant_id!;
    const root = rootPool();
    await root.query("insert into app_public.service_titan_skill_lines (tenant_id, skill_name, service_line) values ($1, 'Plumbing Service', 'plumbing')", [t]);
    // Exactly two active technicians do plumbing.
    const active = fake.records("technicians").filter((r) => r.active);
    const [busyTech, freeTech] = active;
    for (const tech of active) {
      const plumber = tech === busyTech || tech === freeTech;
      fake.modify("technicians", tech.id, { skills: plumber ? [{ id: 302, name: "Plumbing Service" }, { id: 305, name: "EPA 608 Certified" }] : [{ id: 303, name: "Electrical" }] });
    }
    // The first one has an appointment tomorrow 14:00-16:00 UTC.
    const start = new Date(Date.now() + 86_400_000);
    start.setUTCHours(14, 0, 0, 0);
    const job = fake.records("jobs")[0]!;
    const appointment = fake.add("appointments", {
      jobId: job.id, appointmentNumber: `${job.id}-9`, start: start.toISOString(), end: new Date(start.getTime() + 2 * 3_600_000).toISOString(),
      arrivalWindowStart: start.toISOString(), arrivalWindowEnd: new Date(start.getTime() + 4 * 3_600_000).toISOString(), status: "Scheduled", customerId: job.customerId, isConfirmed: true,
    });
    fake.add("appointment-assignments", {
      technicianId: busyTech!.id, technicianName: busyTech!.name, assignedById: 1, assignedOn: new Date().toISOString(), status: "Scheduled",
      isPaused: false, jobId: job.id, appointmentId: appointment.id,
    });
    for (const table of ["st_technicians", "st_appointments", "st_appointment_assignments"]) await syncAndWait(t, table, "incremental");

    const { rows: agents } = await root.query(
      `select a.external_id, a.is_active, a.kind, array_agg(s.service_line order by s.service_line) filter (where s.id is not null) as lines
         from app_public.agents a left join app_public.agent_specializations s on s.agent_id = a.id and s.source = 'servicetitan'
        where a.tenant_id = $1 and a.external_source = 'servicetitan' group by a.id`,
      [t],
    );
    expect(agents).toHaveLength(fake.records("technicians").length);
    const byId = new Map(agents.map((a) => [a.external_id, a]));
    expect(byId.get(String(busyTech!.id))).toMatchObject({ kind: "technician", is_active: true, lines: ["epa_608_certified", "plumbing"] });
    const inactive = fake.records("technicians").find((r) => !r.active)!;
    expect(byId.get(String(inactive.id))!.is_active).toBe(false);
    const busyAgent = (await root.query("select id from app_public.agents where tenant_id = $1 and external_id = $2", [t, String(busyTech!.id)])).rows[0].id;
    const freeAgent = (await root.query("select id from app_public.agents where tenant_id = $1 and external_id = $2", [t, String(freeTech!.id)])).rows[0].id;
    const { rows: busy } = await root.query("select lower(during) as s, upper(during) as e from app_public.agent_busy_periods where agent_id = $1 and external_ref = $2", [busyAgent, `appointment:${appointment.id}`]);
    expect(busy).toEqual([{ s: start, e: new Date(start.getTime() + 2 * 3_600_000) }]);

    // A plumbing lead for 15:00 goes to the free plumber; the busy one is skipped, saying why.
    const lead = async (at: Date) =>
      (await root.query(
        "insert into app_public.leads (tenant_id, first_name, phone, service_line, appointment_at) values ($1, 'Pat', $2, 'plumbing', $3) returning id",
        [t, `+1602555${String(Math.floor(Math.random() * 10000)).padStart(4, "0")}`, at],
      )).rows[0].id;
    const first = await lead(new Date(start.getTime() + 3_600_000));
    const route = async (id: string) => {
      const { rows } = await root.query("select app_private.route_lead($1, $2, 'manual') as id", [t, id]);
      return (await root.query("select * from app_public.lead_routing_history where id = $1", [rows[0].id])).rows[0];
    };
    const routed = await route(first);
    const { rows: offers } = await root.query("select agent_id from app_public.routing_offers where lead_id = $1 and status = 'pending'", [first]);
    expect(offers).toEqual([{ agent_id: freeAgent }]);
    const candidates = routed.candidates as Array<{ agent_id: string; reasons: Record<string, string> }>;
    expect(candidates.find((c) => c.agent_id === busyAgent)?.reasons.free).toMatch(/busy at/);

    // A second plumbing lead at the same time: the free plumber now holds an offer then, so nobody is free.
    const second = await lead(new Date(start.getTime() + 3_600_000 + 30 * 60_000));
    const secondRouted = await route(second);
    expect(secondRouted.outcome).not.toBe("offered");
    expect((await root.query("select count(*)::int as n from app_public.routing_offers where lead_id = $1", [second])).rows[0].n).toBe(0);
    // At 18:00 both plumbers are free.
    const later = await route(await lead(new Date(start.getTime() + 4 * 3_600_000)));
    const eligible = (later.candidates as Array<{ agent_id: string; eligible: boolean }>).filter((c) => c.eligible).map((c) => c.agent_id).sort();
    expect(eligible).toEqual([busyAgent, freeAgent].sort());

    // The appointment is canceled at ServiceTitan: after the next sync the technician is free at 15:00 again.
    fake.modify("appointments", appointment.id, { status: "Canceled" });
    await syncAndWait(t, "st_appointments", "incremental");
    expect((await root.query("select count(*)::int as n from app_public.agent_busy_periods where agent_id = $1 and external_ref = $2", [busyAgent, `appointment:${appointment.id}`])).rows[0].n).toBe(0);
    const again = await route(await lead(new Date(start.getTime() + 30 * 60_000)));
    expect((again.candidates as Array<{ agent_id: string; reasons: Record<string, string> }>).find((c) => c.agent_id === busyAgent)?.reasons.free).toBeUndefined();
  });
});
