/**
 * The ServiceTitan client (src/providers/serviceTitan.ts) against the fake ServiceTitan
 * (test/fakeServiceTitan.ts): tokens, export feeds and list paging, appointment assignments and
 * changes made between pages (add, modify, deactivate, remove), retries and their waits,
 * permanent errors, and the per-(app, tenant) rate limiter. No database is needed.
 *
 * Waits between attempts go through an injected sleep that returns at once and records the
 * delay; only the rate-limiter test and the request timeouts use real time.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  backoffDelayMs,
  formatRfc3339Utc,
  parseRetryAfter,
  SERVICE_TITAN_MODULES,
  SERVICE_TITAN_RESOURCES,
  ServiceTitanClient,
  ServiceTitanError,
  type ExportPageOptions,
  type ServiceTitanConfig,
  type ServiceTitanClientOptions,
  type ServiceTitanResource,
} from "../../src/providers/serviceTitan.ts";
import { startFakeServiceTitan, type FakeServiceTitan, type FakeServiceTitanOptions } from "../fakeServiceTitan.ts";

const credentials = {
  clientId: "cid.fake0123456789",
  clientSecret: "cs1.fake-secret-0123456789",
  appKey: "ak1.fake-app-key",
  tenantId: "1561207974",
};

let fake: FakeServiceTitan;
let sleeps: number[];
let nowMs: number;
const clients: ServiceTitanClient[] = [];

async function startFake(options: Partial<FakeServiceTitanOptions> = {}): Promise<FakeServiceTitan> {
  fake = await startFakeServiceTitan({ ...credentials, ...options });
  return fake;
}

function makeClient(config: Partial<ServiceTitanConfig> = {}, options: ServiceTitanClientOptions = {}): ServiceTitanClient {
  const client = new ServiceTitanClient(
    { ...credentials, environment: "integration", authBaseUrl: fake.authUrl, apiBaseUrl: fake.apiUrl, ...config },
    {
      sleep: async (ms) => {
        sleeps.push(ms);
      },
      now: () => nowMs,
      random: () => 0.5,
      ...options,
    },
  );
  clients.push(client);
  return client;
}

const apiRequests = () => fake.requests.filter((r) => r.server === "api");
const ids = (records: unknown[]) => records.map((r) => (r as { id: number }).id);
const sorted = (values: number[]) => [...values].sort((a, b) => a - b);

async function errorFrom(promise: Promise<unknown>): Promise<ServiceTitanError> {
  const err = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ServiceTitanError);
  return err as ServiceTitanError;
}

/** A token straight from the fake's token endpoint, for requests the client would not make. */
async function rawToken(): Promise<string> {
  const response = await fetch(`${fake.authUrl}/connect/token`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ grant_type: "client_credentials", client_id: credentials.clientId, client_secret: credentials.clientSecret }),
  });
  return ((await response.json()) as { access_token: string }).access_token;
}

async function exportAll(
  client: ServiceTitanClient,
  resource: ServiceTitanResource,
  from: string | null = null,
  options: ExportPageOptions = {},
) {
  const records: unknown[] = [];
  let token = from;
  let pages = 0;
  for (;;) {
    const page = await client.exportPage(resource, token, options);
    pages += 1;
    records.push(...page.data);
    token = page.continueFrom;
    if (!page.hasMore) return { records, token, pages };
  }
}

beforeEach(async () => {
  sleeps = [];
  nowMs = Date.UTC(2026, 10, 22, 7, 30, 0);
  await startFake({ counts: { locations: 23, jobs: 30, appointments: 40, technicians: 6 }, exportPageSize: 7 });
});

afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  await fake.close();
});

describe("configuration", () => {
  it("uses ServiceTitan's hosts for each environment unless overridden", () => {
    const production = new ServiceTitanClient({ ...credentials, environment: "production" });
    const integration = new ServiceTitanClient({ ...credentials, environment: "integration" });
    expect([production.tokenUrl, production.apiBaseUrl]).toEqual([
      "https://auth.servicetitan.io/connect/token",
      "https://api.servicetitan.io",
    ]);
    expect([integration.tokenUrl, integration.apiBaseUrl]).toEqual([
      "https://auth-integration.servicetitan.io/connect/token",
      "https://api-integration.servicetitan.io",
    ]);
    expect(makeClient().tokenUrl).toBe(`${fake.authUrl}/connect/token`);
  });

  it("refuses a rate above ServiceTitan's limit, a non-numeric tenant and a base URL with a path", () => {
    expect(() => makeClient({ maxRequestsPerSecond: 60 })).toThrow(/maxRequestsPerSecond must be a whole number from 1 to 59/);
    expect(() => makeClient({ tenantId: "acme" })).toThrow(/numeric tenant id/);
    expect(() => makeClient({ apiBaseUrl: `${fake.apiUrl}/v2` })).toThrow(/must be an origin only/);
    expect(makeClient({ maxRequestsPerSecond: 59 }).maxRequestsPerSecond).toBe(59);
  });

  it("formats dates as RFC 3339 UTC floored to the second, and reads Retry-After both ways", () => {
    expect(formatRfc3339Utc(new Date("2026-11-22T07:30:00.999Z"))).toBe("2026-11-22T07:30:00Z");
    const now = Date.UTC(2026, 10, 22, 7, 30, 0);
    expect(parseRetryAfter("7", now)).toBe(7000);
    expect(parseRetryAfter(new Date(now + 12_000).toUTCString(), now)).toBe(12_000);
    expect(parseRetryAfter("86400", now)).toBe(60_000);
    expect(parseRetryAfter("soon", now)).toBeNull();
    expect(parseRetryAfter(null, now)).toBeNull();
  });
});

describe("tokens", () => {
  it("fetches one token and reuses it, sending it with the app key", async () => {
    const client = makeClient();
    await client.testConnection();
    await client.listPage("jobs", { page: 1, pageSize: 5 });
    await client.exportPage("locations", null);
    expect(fake.tokenRequests()).toBe(1);
    expect(apiRequests().map((r) => r.status)).toEqual([200, 200, 200]);
  });

  it("concurrent first calls share one token request", async () => {
    const client = makeClient();
    await Promise.all(["locations", "jobs", "appointments", "technicians"].map((r) => client.exportPage(r as ServiceTitanResource, null)));
    expect(fake.tokenRequests()).toBe(1);
  });

  it("fetches a new token shortly before the old one expires", async () => {
    const client = makeClient();
    await client.testConnection();
    nowMs += 839_000; // 900 s tokens are refreshed 60 s early
    await client.testConnection();
    expect(fake.tokenRequests()).toBe(1);
    nowMs += 2_000;
    await client.testConnection();
    expect(fake.tokenRequests()).toBe(2);
  });

  it("a token that expires mid-sync is replaced once and the page fetched again", async () => {
    const client = makeClient();
    const first = await client.exportPage("jobs", null);
    fake.expireTokensNow();
    const second = await client.exportPage("jobs", first.continueFrom);
    expect(second.data.length).toBeGreaterThan(0);
    expect(fake.tokenRequests()).toBe(2);
    expect(apiRequests().map((r) => r.status)).toEqual([200, 401, 200]);
    expect(sleeps).toEqual([]);
  });

  it("a wrong client secret is a permanent auth error after one token request", async () => {
    const client = makeClient({ clientSecret: "wrong" });
    const err = await errorFrom(client.exportPage("jobs", null));
    expect(err).toMatchObject({ kind: "auth", status: 400, retryable: false });
    expect(err.message).toMatch(/refused the client credentials.*invalid_client.*client id and secret/);
    expect(fake.tokenRequests()).toBe(1);
    expect(apiRequests()).toHaveLength(0);
    expect(sleeps).toEqual([]);
  });

  it("a wrong app key is a permanent auth error after one token refresh", async () => {
    const client = makeClient({ appKey: "ak1.not-ours" });
    const err = await errorFrom(client.testConnection());
    expect(err).toMatchObject({ kind: "auth", status: 401, retryable: false });
    expect(err.message).toMatch(/ST-App-Key/);
    expect(fake.tokenRequests()).toBe(2);
    expect(apiRequests()).toHaveLength(2);
  });
});

describe("export feeds", () => {
  it("a full walk returns every record exactly once, inactive ones included", async () => {
    const client = makeClient();
    for (const resource of SERVICE_TITAN_RESOURCES) {
      const { records, pages } = await exportAll(client, resource);
      const expected = fake.records(resource);
      expect(ids(records).sort((a, b) => a - b)).toEqual(ids(expected));
      expect(expected.some((r) => !r.active)).toBe(true);
      expect(pages).toBe(Math.ceil(expected.length / 7));
    }
    const paths = new Set(apiRequests().map((r) => r.path));
    expect(paths).toEqual(
      new Set([
        `/crm/v2/tenant/${credentials.tenantId}/export/locations`,
        `/jpm/v2/tenant/${credentials.tenantId}/export/jobs`,
        `/jpm/v2/tenant/${credentials.tenantId}/export/appointments`,
        `/settings/v2/tenant/${credentials.tenantId}/export/technicians`,
        `/dispatch/v2/tenant/${credentials.tenantId}/export/appointment-assignments`,
      ]),
    );
  });

  it("resumes from a saved continueFrom with a new client and ends where the walk ends", async () => {
    const first = makeClient();
    const page1 = await first.exportPage("jobs", null);
    const page2 = await first.exportPage("jobs", page1.continueFrom);
    first.close();
    const saved = page2.continueFrom;
    expect(saved).toEqual(expect.any(String));

    const second = makeClient();
    const rest = await exportAll(second, "jobs", saved);
    const all = [...page1.data, ...page2.data, ...rest.records];
    expect(ids(all).sort((a, b) => a - b)).toEqual(ids(fake.records("jobs")));
    expect(new Set(ids(all)).size).toBe(all.length);

    // Nothing new: the saved end token yields an empty page that keeps the position.
    const again = await second.exportPage("jobs", rest.token);
    expect(again).toMatchObject({ data: [], hasMore: false });
    expect(again.continueFrom).toBe(rest.token);
  });

  it("changes appear after the saved token, at once only with includeRecentChanges", async () => {
    const client = makeClient();
    const { token } = await exportAll(client, "technicians");
    const technician = fake.records("technicians")[0];
    if (!technician) throw new Error("no technicians");
    fake.modify("technicians", technician.id, { team: "Night Shift" });

    const held = await client.exportPage("technicians", token);
    expect(held.data).toEqual([]);
    const recent = await client.exportPage("technicians", token, { includeRecentChanges: true });
    expect(recent.data).toEqual([expect.objectContaining({ id: technician.id, team: "Night Shift" })]);
    expect(apiRequests().at(-1)?.query.includeRecentChanges).toBe("true");
  });

  it("a corrupted continuation token is a permanent client error, not retried", async () => {
    const client = makeClient();
    const err = await errorFrom(client.exportPage("jobs", "not-a-token"));
    expect(err).toMatchObject({ kind: "client", status: 400, retryable: false });
    expect(err.message).toMatch(/GET \/jpm\/v2\/tenant\/\d+\/export\/jobs\?from=not-a-token.*answered 400.*Invalid continuation token/);
    expect(apiRequests()).toHaveLength(1);
  });
});

describe("list endpoints", () => {
  it("pages through every record, active or not, with active=Any", async () => {
    const client = makeClient();
    const collected: unknown[] = [];
    for (let page = 1; ; page++) {
      const result = await client.listPage("appointments", { page, pageSize: 9, includeTotal: page === 1 });
      collected.push(...result.data);
      expect(result.page).toBe(page);
      if (page === 1) expect(result.totalCount).toBe(40);
      if (!result.hasMore) break;
    }
    expect(ids(collected)).toEqual(ids(fake.records("appointments")));
    expect(apiRequests().every((r) => r.query.active === "Any")).toBe(true);
  });

  it("modifiedOnOrAfter returns only what changed since, deactivations included", async () => {
    const client = makeClient();
    const since = new Date();
    const [a, b] = fake.records("jobs");
    if (!a || !b) throw new Error("no jobs");
    fake.modify("jobs", a.id, { jobStatus: "Completed" });
    fake.deactivate("jobs", b.id);

    const page = await client.listPage("jobs", { page: 1, pageSize: 50, modifiedOnOrAfter: since });
    expect(ids(page.data).sort((x, y) => x - y)).toEqual([a.id, b.id].sort((x, y) => x - y));
    expect(page.data).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ id: a.id, jobStatus: "Completed" }),
        expect.objectContaining({ id: b.id, active: false }),
      ]),
    );
    expect(apiRequests()[0]?.query.modifiedOnOrAfter).toBe(formatRfc3339Utc(since));
    expect(apiRequests()[0]?.query.modifiedOnOrAfter).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/);
  });

  it("refuses pageSize above 5000 (or below 1) before any request", async () => {
    const client = makeClient();
    for (const pageSize of [5001, 0, 2.5]) {
      const err = await errorFrom(client.listPage("jobs", { page: 1, pageSize }));
      expect(err).toMatchObject({ kind: "client", status: null, retryable: false });
      expect(err.message).toMatch(/pageSize must be a whole number from 1 to 5000/);
    }
    expect(fake.requests).toHaveLength(0);
  });

  it("the fake answers 400 like ServiceTitan for pageSize over 5000 and an unreadable date", async () => {
    const token = await (async () => {
      const response = await fetch(`${fake.authUrl}/connect/token`, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ grant_type: "client_credentials", client_id: credentials.clientId, client_secret: credentials.clientSecret }),
      });
      return ((await response.json()) as { access_token: string }).access_token;
    })();
    const get = (query: string) =>
      fetch(`${fake.apiUrl}/jpm/v2/tenant/${credentials.tenantId}/jobs?${query}`, {
        headers: { authorization: `Bearer ${token}`, "ST-App-Key": credentials.appKey },
      });
    const tooBig = await get("pageSize=5001");
    expect(tooBig.status).toBe(400);
    expect(await tooBig.json()).toMatchObject({ status: 400, errors: { pageSize: [expect.stringMatching(/5000/)] } });
    const badDate = await get("modifiedOnOrAfter=22%2F11%2F2026");
    expect(badDate.status).toBe(400);
    expect((await get("pageSize=5000")).status).toBe(200);
    const noKey = await fetch(`${fake.apiUrl}/jpm/v2/tenant/${credentials.tenantId}/jobs`, { headers: { authorization: `Bearer ${token}` } });
    expect(noKey.status).toBe(401);
  });
});

describe("appointment assignments (Dispatch API)", () => {
  type Assignment = {
    id: number;
    technicianId: number;
    technicianName: string;
    appointmentId: number;
    jobId: number;
    status: string;
    active: boolean;
    createdOn: string;
    modifiedOn: string;
  };
  const resource = "appointment-assignments";
  const exportPath = `/dispatch/v2/tenant/${credentials.tenantId}/export/appointment-assignments`;
  const recent = { includeRecentChanges: true };

  /** Fields of a new assignment of technician number `index` to the first appointment. */
  function newAssignment(index: number) {
    const appointment = fake.records("appointments")[0];
    const technician = fake.records("technicians")[index];
    if (!appointment || !technician) throw new Error("no appointments or technicians");
    return {
      technicianId: technician.id,
      technicianName: technician.name,
      assignedById: 7,
      assignedOn: new Date().toISOString(),
      status: "Scheduled",
      isPaused: false,
      jobId: appointment.jobId,
      appointmentId: appointment.id,
    };
  }

  it("is the fifth resource, in the dispatch module", () => {
    expect(SERVICE_TITAN_RESOURCES).toEqual(["locations", "jobs", "appointments", "technicians", "appointment-assignments"]);
    expect(SERVICE_TITAN_MODULES["appointment-assignments"]).toBe("dispatch");
  });

  it("exports ServiceTitan's fields, pointing at real appointments, jobs and technicians, inactive rows included", async () => {
    const client = makeClient();
    const assignments = (await exportAll(client, resource)).records as Assignment[];
    expect(apiRequests().every((r) => r.path === exportPath && r.query.active === "Any")).toBe(true);
    expect(sorted(ids(assignments))).toEqual(ids(fake.records(resource)));

    const appointments = new Map(fake.records("appointments").map((a) => [a.id, a]));
    const technicians = new Map(fake.records("technicians").map((t) => [t.id, t]));
    // Every appointment has one technician, some a second one (a different technician).
    expect(new Set(assignments.map((a) => a.appointmentId))).toEqual(new Set(appointments.keys()));
    expect(assignments.length).toBeGreaterThan(appointments.size);
    expect(assignments.length).toBeLessThan(appointments.size * 1.5);
    const pairs = new Set(assignments.map((a) => `${a.appointmentId}/${a.technicianId}`));
    expect(pairs.size).toBe(assignments.length);
    expect(assignments.some((a) => !a.active)).toBe(true);

    const fields = ["id", "technicianId", "technicianName", "assignedById", "assignedOn", "status", "isPaused", "jobId", "appointmentId"];
    for (const assignment of assignments) {
      expect(Object.keys(assignment).sort()).toEqual([...fields, "active", "createdOn", "modifiedOn"].sort());
      expect(assignment).toMatchObject({
        assignedById: expect.any(Number),
        assignedOn: expect.stringMatching(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/),
        status: expect.stringMatching(/^(Scheduled|Dispatched|Working|Done)$/),
        isPaused: expect.any(Boolean),
        active: expect.any(Boolean),
      });
      expect(appointments.get(assignment.appointmentId)?.jobId).toBe(assignment.jobId);
      expect(technicians.get(assignment.technicianId)?.name).toBe(assignment.technicianName);
    }
  });

  it("the fake, like ServiceTitan, exports only active assignments unless asked for others", async () => {
    const token = await rawToken();
    const walk = async (query: string) => {
      const found: Assignment[] = [];
      for (let from = ""; ; ) {
        const response = await fetch(`${fake.apiUrl}${exportPath}?${query}&from=${encodeURIComponent(from)}`, {
          headers: { authorization: `Bearer ${token}`, "ST-App-Key": credentials.appKey },
        });
        expect(response.status).toBe(200);
        const page = (await response.json()) as { data: Assignment[]; hasMore: boolean; continueFrom: string };
        found.push(...page.data);
        from = page.continueFrom;
        if (!page.hasMore) return sorted(ids(found));
      }
    };
    const stored = fake.records(resource);
    expect(await walk("includeRecentChanges=false")).toEqual(ids(stored.filter((a) => a.active)));
    expect(await walk("active=False")).toEqual(ids(stored.filter((a) => !a.active)));
    expect(await walk("active=any")).toEqual(ids(stored));
  });

  it("add, modify and deactivate after the last page show up when continuing from its continueFrom", async () => {
    const client = makeClient();
    const first = await exportAll(client, resource);
    const before = first.records as Assignment[];
    const [changed, unassigned] = before.filter((a) => a.active);
    if (!changed || !unassigned) throw new Error("no active assignments");

    const fields = newAssignment(1);
    const added = fake.add(resource, fields);
    expect(added.id).toBeGreaterThan(Math.max(...ids(before)));
    expect(added).toMatchObject({ active: true, createdOn: expect.any(String), modifiedOn: added.createdOn });
    fake.modify(resource, changed.id, { status: "Working" });
    fake.deactivate(resource, unassigned.id);

    // Held back for 15 minutes by default, at once with includeRecentChanges, in change order.
    expect((await client.exportPage(resource, first.token)).data).toEqual([]);
    const rest = await exportAll(client, resource, first.token, recent);
    expect(rest.records).toEqual([
      { ...fields, id: added.id, active: true, createdOn: added.createdOn, modifiedOn: added.modifiedOn },
      expect.objectContaining({ id: changed.id, status: "Working", active: true }),
      expect.objectContaining({ id: unassigned.id, active: false }),
    ]);
    const stamps = (rest.records as Assignment[]).map((a) => Date.parse(a.modifiedOn));
    expect(stamps).toEqual(sorted(stamps));
    expect(stamps[0]).toBeGreaterThan(Math.max(...before.map((a) => Date.parse(a.modifiedOn))));

    // Nothing further: the new end token gives an empty page.
    expect(await client.exportPage(resource, rest.token, recent)).toMatchObject({ data: [], hasMore: false });
    // The list endpoint sees them too.
    const listed = await client.listPage(resource, { page: 1, pageSize: 5000 });
    expect(listed.data).toEqual(expect.arrayContaining([expect.objectContaining({ id: added.id })]));
  });

  it("changes made mid-walk come after the token already handed out, none lost", async () => {
    const client = makeClient();
    const page1 = await client.exportPage(resource, null, recent);
    const seen = page1.data as Assignment[];
    const [early] = seen;
    if (!early) throw new Error("empty first page");
    // One already delivered moves to the end; a new one joins the end.
    fake.modify(resource, early.id, { isPaused: true, status: "Working" });
    const added = fake.add(resource, { ...newAssignment(2), id: 99_000_001, active: false });

    const rest = (await exportAll(client, resource, page1.continueFrom, recent)).records as Assignment[];
    expect(rest.slice(-2).map((a) => a.id)).toEqual([early.id, added.id]);
    expect(rest.at(-2)).toMatchObject({ isPaused: true, status: "Working" });
    expect(rest.at(-1)).toMatchObject({ id: 99_000_001, active: false });
    const all = [...seen, ...rest];
    expect(sorted([...new Set(ids(all))])).toEqual(ids(fake.records(resource)));
    expect(all).toHaveLength(fake.records(resource).length + 1); // `early` twice: before and after its change
  });

  it("a removed assignment is gone from a new full export and from the list, with nothing left behind", async () => {
    const client = makeClient();
    const first = await exportAll(client, resource);
    const [gone] = first.records as Assignment[];
    if (!gone) throw new Error("no assignments");
    const removed = fake.remove(resource, gone.id);
    expect(removed.id).toBe(gone.id);
    expect(() => fake.remove(resource, gone.id)).toThrow(/no appointment-assignments record/);
    expect(() => fake.modify(resource, gone.id)).toThrow(/no appointment-assignments record/);

    const again = await exportAll(client, resource, null, recent);
    expect(ids(again.records)).not.toContain(gone.id);
    expect(sorted(ids(again.records))).toEqual(ids(fake.records(resource)));
    expect(again.records).toHaveLength(first.records.length - 1);
    // A hard delete bumps nothing: continuing from the old end token finds no change.
    expect((await client.exportPage(resource, first.token, recent)).data).toEqual([]);
    const listed = await client.listPage(resource, { page: 1, pageSize: 5000, includeTotal: true });
    expect(ids(listed.data)).not.toContain(gone.id);
    expect(listed.totalCount).toBe(first.records.length - 1);
    // A new record never gets a removed (or any used) id back.
    const last = fake.records(resource).at(-1);
    fake.remove(resource, last?.id ?? 0);
    expect(fake.add(resource, newAssignment(0)).id).toBe((last?.id ?? 0) + 1);
  });

  it("pages through the list endpoint, active or not, and filters by modifiedOnOrAfter", async () => {
    const client = makeClient();
    const collected: unknown[] = [];
    const total = fake.records(resource).length;
    for (let page = 1; ; page++) {
      const result = await client.listPage(resource, { page, pageSize: 9, includeTotal: page === 1 });
      collected.push(...result.data);
      if (page === 1) expect(result.totalCount).toBe(total);
      if (!result.hasMore) break;
    }
    expect(ids(collected)).toEqual(ids(fake.records(resource)));
    expect(new Set(apiRequests().map((r) => r.path))).toEqual(new Set([`/dispatch/v2/tenant/${credentials.tenantId}/appointment-assignments`]));
    expect(apiRequests().every((r) => r.query.active === "Any")).toBe(true);

    const since = new Date();
    const [a, b] = fake.records(resource);
    if (!a || !b) throw new Error("no assignments");
    fake.modify(resource, a.id, { status: "Done" });
    fake.deactivate(resource, b.id);
    const changed = await client.listPage(resource, { page: 1, pageSize: 50, modifiedOnOrAfter: since });
    expect(sorted(ids(changed.data))).toEqual(sorted([a.id, b.id]));
  });
});

describe("fake ServiceTitan at scale", () => {
  it("walks 20,000 jobs in pages of 5000 in (modifiedOn, id) order, each once", async () => {
    await fake.close();
    await startFake({ counts: { jobs: 20_000 }, exportPageSize: 5000 });
    const client = makeClient();
    const { records, pages } = await exportAll(client, "jobs");
    expect(pages).toBe(4);
    const keys = (records as Array<{ id: number; modifiedOn: string }>).map((r) => [Date.parse(r.modifiedOn), r.id] as const);
    for (let i = 1; i < keys.length; i++) {
      const [m0, id0] = keys[i - 1] ?? [0, 0];
      const [m1, id1] = keys[i] ?? [0, 0];
      expect(m0 < m1 || (m0 === m1 && id0 < id1)).toBe(true);
    }
    expect(sorted(ids(records))).toEqual(ids(fake.records("jobs")));
  });

  it("refuses an export page size over 5000 and counts it cannot generate", async () => {
    await expect(startFakeServiceTitan({ ...credentials, exportPageSize: 5001 })).rejects.toThrow(
      /exportPageSize must be a whole number from 1 to 5000/,
    );
    await expect(startFakeServiceTitan({ ...credentials, counts: { technicians: 0, "appointment-assignments": 3 } })).rejects.toThrow(
      /need at least one appointment and one technician/,
    );
  });
});

describe("retries", () => {
  it("honours Retry-After on a 429, then succeeds", async () => {
    const client = makeClient();
    fake.failNext(1, "429", 7);
    const page = await client.exportPage("locations", null);
    expect(page.data).toHaveLength(7);
    expect(sleeps).toEqual([7000]);
    expect(apiRequests().map((r) => r.status)).toEqual([429, 200]);
  });

  it("caps a long Retry-After at 60 s and backs off when there is none", async () => {
    const client = makeClient();
    fake.failNext(1, "429", 3600);
    fake.failNext(1, "429");
    await client.testConnection();
    expect(sleeps).toEqual([60_000, backoffDelayMs(2, 0.5)]);
  });

  it("retries 500s with growing backoff, then succeeds", async () => {
    const client = makeClient({ maxAttempts: 5 });
    fake.failNext(3, "500");
    const page = await client.listPage("technicians", { page: 1, pageSize: 2 });
    expect(page.data).toHaveLength(2);
    expect(apiRequests().map((r) => r.status)).toEqual([500, 500, 500, 200]);
    expect(sleeps).toHaveLength(3);
    expect(sleeps[0]).toBeGreaterThan(0);
    expect(sleeps[1]).toBeGreaterThan(sleeps[0] ?? Infinity);
    expect(sleeps[2]).toBeGreaterThan(sleeps[1] ?? Infinity);
  });

  it("gives up after maxAttempts with a retryable server error", async () => {
    const client = makeClient({ maxAttempts: 3 });
    fake.failNext(10, "500");
    const err = await errorFrom(client.exportPage("jobs", null));
    expect(err).toMatchObject({ kind: "server", status: 500, retryable: true });
    expect(err.message).toMatch(/GET \/jpm\/v2\/tenant\/\d+\/export\/jobs.*answered 500.*gave up after 3 attempts/);
    expect(apiRequests()).toHaveLength(3);
    expect(sleeps).toHaveLength(2);
  });

  it("retries a request that times out", async () => {
    const client = makeClient({ timeoutMs: 200 });
    fake.failNext(1, "timeout");
    const page = await client.exportPage("appointments", null);
    expect(page.data).toHaveLength(7);
    expect(apiRequests().map((r) => r.status)).toEqual([null, 200]);
    expect(sleeps).toHaveLength(1);
  });

  it("a request that always times out ends as a retryable timeout error", async () => {
    const client = makeClient({ timeoutMs: 100, maxAttempts: 2 });
    fake.failNext(2, "timeout");
    const err = await errorFrom(client.testConnection());
    expect(err).toMatchObject({ kind: "timeout", status: null, retryable: true });
    expect(err.message).toMatch(/did not answer within 100 ms/);
  });

  it("retries malformed JSON, then reports it as malformed when it persists", async () => {
    const client = makeClient({ maxAttempts: 3 });
    fake.failNext(1, "malformed");
    const page = await client.exportPage("technicians", null);
    expect(page.data).toHaveLength(6);
    expect(sleeps).toHaveLength(1);

    fake.failNext(3, "malformed");
    const err = await errorFrom(client.exportPage("technicians", null));
    expect(err).toMatchObject({ kind: "malformed", status: 200, retryable: true });
    expect(err.message).toMatch(/not JSON/);
    expect(apiRequests()).toHaveLength(2 + 3);
  });

  it("a network failure is retried and reported as network when the host is gone", async () => {
    const client = makeClient({ maxAttempts: 2 });
    await client.testConnection();
    await fake.close();
    const err = await errorFrom(client.testConnection());
    expect(err).toMatchObject({ kind: "network", status: null, retryable: true });
    expect(err.message).toMatch(/Could not reach ServiceTitan/);
    expect(sleeps).toHaveLength(1);
  });
});

describe("rate limiter", () => {
  it("keeps 120 concurrent requests under maxRequestsPerSecond in every 1-second window", async () => {
    // Two clients of the same app and tenant share one limiter; real time here (2 to 3 s).
    const a = makeClient({ maxRequestsPerSecond: 50 }, { sleep: undefined, now: undefined });
    const b = makeClient({ maxRequestsPerSecond: 50 }, { sleep: undefined, now: undefined });
    const started = Date.now();
    const results = await Promise.all(
      Array.from({ length: 120 }, (_, i) => (i % 2 === 0 ? a : b).listPage("technicians", { page: 1, pageSize: 1 })),
    );
    const elapsed = Date.now() - started;
    expect(results.every((r) => r.data.length === 1)).toBe(true);

    const times = apiRequests()
      .map((r) => r.at)
      .sort((x, y) => x - y);
    expect(times).toHaveLength(120);
    let busiest = 0;
    for (const [i, start] of times.entries()) {
      const inWindow = times.slice(i).filter((t) => t < start + 1000).length;
      busiest = Math.max(busiest, inWindow);
    }
    expect(busiest).toBeLessThanOrEqual(50);
    expect(busiest).toBeGreaterThanOrEqual(40); // it did not crawl either
    expect(elapsed).toBeGreaterThanOrEqual(2000);
    expect(fake.tokenRequests()).toBe(2); // one per client
  });
});
