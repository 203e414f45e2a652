/**
 * From the adversarial review of issue 18's events and webhooks (000084–000086), kept as regression
 * tests: each of the first group failed on 000086 and passes since 000087 (a bulk update's events
 * planned by nested loop, a claim reading the whole backlog, a concurrent endpoint delete failing a
 * write, a claim pushing back a due job, a dead receiver holding worker slots, replays piling up,
 * failed deliveries left after turning an endpoint on again, URLs the sender cannot parse,
 * IPv4-compatible IPv6 addresses); the "controls" passed from the start.
 *
 * Own database: one test runs a graphile-worker (webhook__deliver), which takes every job of that task
 * from the queue it polls.
 */
import { createServer, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Runner } from "graphile-worker";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { postWebhook, privateAddressReason } from "../../src/providers/webhookPoster.ts";
import { LocalAiResponder } from "../../src/providers/aiLocal.ts";
import { LocalEmailProvider } from "../../src/providers/emailLocal.ts";
import { LocalNumberProvisioner } from "../../src/providers/numbersLocal.ts";
import { LocalSmsProvider } from "../../src/providers/smsLocal.ts";
import { setServices } from "../../src/worker/services.ts";
import { startWorker } from "../../src/worker/start.ts";
import { becomeUser, ownerPool, registerUser, rootPool, useOwnDatabase, waitFor, withRootDb } from "../helpers.ts";

useOwnDatabase("review_webhooks");

const SECRET = "whsec_" + Buffer.alloc(32, 7).toString("base64");

async function newTenant(client: pg.ClientBase) {
  return registerUser(client);
}

/** An endpoint written directly (as root), with a secret, as createWebhookEndpoint would. */
async function newEndpoint(client: pg.ClientBase, tenantId: string, url: string, extra: { enabled?: boolean; eventTypes?: string[] } = {}): Promise<string> {
  const { rows } = await client.query<{ id: string }>(
    "insert into app_public.webhook_endpoints (tenant_id, url, enabled, event_types) values ($1, $2, $3, $4) returning id",
    [tenantId, url, extra.enabled ?? true, extra.eventTypes ?? []],
  );
  await client.query("insert into app_private.webhook_secrets (tenant_id, endpoint_id, secret) values ($1, $2, $3)", [tenantId, rows[0]!.id, SECRET]);
  return rows[0]!.id;
}

/**
 * Runs fn with auto_explain on for nested statements (superuser: LOAD), and returns the JSON plans
 * of the statements fn ran whose query text contains `match`.
 */
async function nestedPlans(client: pg.ClientBase, match: string, fn: () => Promise<unknown>): Promise<any[]> {
  const messages: string[] = [];
  const listener = (n: { message?: string }) => messages.push(n.message ?? "");
  client.on("notice", listener);
  await client.query("load 'auto_explain'");
  await client.query(
    "set auto_explain.log_min_duration = 0; set auto_explain.log_nested_statements = on; set auto_explain.log_analyze = on; set auto_explain.log_format = json; set client_min_messages = log",
  );
  try {
    await fn();
  } finally {
    await client.query("set auto_explain.log_min_duration = -1; set client_min_messages = notice");
    client.off("notice", listener);
  }
  return messages
    .map((m) => m.replace(/^duration: [0-9.]+ ms\s+plan:\s*/, ""))
    .filter((m) => m.startsWith("{"))
    .map((m) => JSON.parse(m))
    .filter((p) => String(p["Query Text"]).includes(match));
}

function nodes(plan: any): any[] {
  const out = [plan];
  for (const child of plan.Plans ?? []) out.push(...nodes(child));
  return out;
}

/** The largest number of rows any scan node of the plan read (rows returned + rows removed by its filter). */
function maxRowsScanned(statement: any): number {
  return Math.max(
    0,
    ...nodes(statement.Plan)
      .filter((n) => /Scan/.test(n["Node Type"]))
      .map((n) => (n["Actual Rows"] ?? 0) * (n["Actual Loops"] ?? 1) + (n["Rows Removed by Filter"] ?? 0)),
  );
}

describe("review: cost", () => {
  it("an update of many leads writes its events without joining every new row to every old one, also on a connection that ran single-lead updates before (generic plan)", async () => {
    const N = 2000;
    await withRootDb(async (client) => {
      const owner = await newTenant(client);
      await client.query(
        "insert into app_public.leads (tenant_id, first_name, email) select $1, 'L' || i, gen_random_uuid() || '@example.test' from generate_series(1, $2) i",
        [owner.tenant_id, N],
      );
      const { rows: [one] } = await client.query("select id from app_public.leads where tenant_id = $1 limit 1", [owner.tenant_id]);
      // What a pooled connection of the API or the worker has done before: single-lead updates.
      for (let i = 0; i < 8; i++) await client.query("update app_public.leads set city = $2 where id = $1", [one.id, `City ${i}`]);
      const plans = await nestedPlans(client, "'lead.updated'", () =>
        client.query("update app_public.leads set city = 'Bulk' where tenant_id = $1", [owner.tenant_id]),
      );
      expect(plans.length).toBe(1);
      const removedByJoinFilter = nodes(plans[0].Plan).reduce((sum, n) => sum + (n["Rows Removed by Join Filter"] ?? 0), 0);
      // Linear would be a few times N; a nested loop of every new row against every old one is 2 × N².
      expect(removedByJoinFilter, `rows removed by join filters for an update of ${N} leads`).toBeLessThan(10 * N);
    });
  }, 120_000);

  it("a claim of 8 deliveries reads about 8 rows, not the endpoint's whole due backlog", async () => {
    const BACKLOG = 20_000;
    const root = await rootPool().connect();
    try {
      const owner = await newTenant(root);
      const endpoint = await newEndpoint(root, owner.tenant_id!, "https://hooks.example.com/backlog");
      // One committed transaction writing BACKLOG events (an import, or a replay): BACKLOG due deliveries.
      await root.query("select app_private.record_event($1, 'lead.created', null, '{}') from generate_series(1, $2)", [owner.tenant_id, BACKLOG]);
      expect((await root.query("select count(*)::int as n from app_public.webhook_deliveries where endpoint_id = $1 and status = 'pending'", [endpoint])).rows[0].n).toBe(BACKLOG);
      await root.query("analyze app_public.webhook_deliveries");
      await root.query("begin");
      const plans = await nestedPlans(root, "with due as", () => root.query("select * from app_private.claim_webhook_deliveries($1, 8, 15)", [endpoint]));
      await root.query("rollback");
      await root.query("delete from app_public.webhook_endpoints where id = $1", [endpoint]);
      expect(plans.length).toBe(1);
      expect(maxRowsScanned(plans[0]), "rows a claim of 8 read").toBeLessThan(1000);
    } finally {
      root.release();
    }
  }, 120_000);

  it("[control, passed] the minute sweep does not read the pending deliveries of turned-off endpoints (they never drain)", async () => {
    const BACKLOG = 20_000;
    const root = await rootPool().connect();
    try {
      const owner = await newTenant(root);
      const endpoint = await newEndpoint(root, owner.tenant_id!, "https://hooks.example.com/off");
      await root.query("select app_private.record_event($1, 'lead.created', null, '{}') from generate_series(1, $2)", [owner.tenant_id, BACKLOG]);
      // Turned off (by a member, or automatically for failing): its deliveries stay pending until it is turned on again.
      await root.query("update app_public.webhook_endpoints set enabled = false where id = $1", [endpoint]);
      await root.query("analyze app_public.webhook_deliveries");
      let swept = -1;
      await root.query("begin");
      const plans = await nestedPlans(root, "select distinct d.endpoint_id", async () => {
        swept = (await root.query("select app_private.sweep_webhook_deliveries() as n")).rows[0].n;
      });
      await root.query("rollback");
      await root.query("delete from app_public.webhook_endpoints where id = $1", [endpoint]);
      expect(swept).toBe(0);
      expect(plans.length).toBe(1);
      expect(maxRowsScanned(plans[0]), "rows one sweep read to find nothing to do").toBeLessThan(1000);
    } finally {
      root.release();
    }
  }, 120_000);
});

describe("review: URL checks and SSRF", () => {
  it("what the database accepts as a webhook URL the sender can parse; a port above 65535 and impossible IPv4 literals are refused", async () => {
    for (const url of ["https://hooks.example.com:99999/x", "https://hooks.example.com:0/x", "http://999.1.1.1/x", "http://1.2.3.4.5/x", "http://hooks.0x7f/x", "http://1.2.3/x"]) {
      const { rows } = await rootPool().query<{ problem: string | null }>("select app_hidden.webhook_url_problem($1) as problem", [url]);
      expect(rows[0]!.problem, url).not.toBeNull();
    }
    for (const url of ["https://hooks.example.com:8443/x?a=1", "http://93.184.216.34/x", "https://a-b.example.co.uk/", "http://[2606:4700::1111]:8080/x"]) {
      const { rows } = await rootPool().query<{ problem: string | null }>("select app_hidden.webhook_url_problem($1) as problem", [url]);
      expect(rows[0]!.problem, url).toBeNull();
      expect(() => new URL(url), url).not.toThrow();
    }
  });

  it("IPv4-compatible IPv6 forms of loopback and of the metadata address are refused like their IPv4-mapped forms", async () => {
    // The URL parser writes [::127.0.0.1] as [::7f00:1], which is what the poster checks.
    expect(new URL("http://[::127.0.0.1]/").hostname).toBe("[::7f00:1]");
    expect(privateAddressReason("::ffff:7f00:1")).not.toBeNull(); // mapped: refused
    const reasons = Object.fromEntries(["::7f00:1", "::a9fe:a9fe", "::a00:1"].map((a) => [a, privateAddressReason(a)]));
    expect(reasons).toEqual({ "::7f00:1": expect.any(String), "::a9fe:a9fe": expect.any(String), "::a00:1": expect.any(String) });
  });

  it("the poster does not even try to connect to [::127.0.0.1] or [::169.254.169.254]", async () => {
    const errors: Record<string, string | null> = {};
    for (const url of ["http://[::127.0.0.1]:9/x", "http://[::169.254.169.254]/latest/meta-data/"]) {
      errors[url] = (await postWebhook({ url, id: "msg_1", payload: "{}", secrets: [SECRET], timeoutMs: 500, allowPrivateTargets: false })).error;
    }
    for (const [url, error] of Object.entries(errors)) expect(error, url).toMatch(/SSRF/);
  });
});

describe("review: replay as an amplifier", () => {
  it("a replay is refused while more than 1000 deliveries of the endpoint still wait: replays cannot pile up sends faster than the receiver takes them", async () => {
    const EVENTS = 3_000;
    const root = await rootPool().connect();
    const owner = await newTenant(root);
    await root.query("select app_private.record_event($1, 'lead.created', null, '{}') from generate_series(1, $2)", [owner.tenant_id, EVENTS]);
    const endpoint = await newEndpoint(root, owner.tenant_id!, "https://victim.example.com/");
    root.release();
    await withRootDb(async (client) => {
      await becomeUser(client, owner);
      const { rows } = await client.query<{ n: number }>("select app_public.replay_webhook_events($1, 0, 10000) as n", [endpoint]);
      expect(rows[0]!.n).toBe(EVENTS);
      await client.query("savepoint again");
      const refused = await client.query("select app_public.replay_webhook_events($1, 0, 10000) as n", [endpoint]).then(() => null, (e: pg.DatabaseError) => e);
      await client.query("rollback to savepoint again");
      expect(refused?.code).toBe("55000");
      expect(refused?.message).toMatch(/More than 1000 deliveries to this endpoint are still waiting/);
      // Once the receiver took them, a replay is allowed again: at the receiver's pace, no faster.
      await client.query("reset role");
      await client.query("update app_public.webhook_deliveries set status = 'delivered', delivered_at = now() where endpoint_id = $1", [endpoint]);
      await becomeUser(client, owner);
      expect((await client.query<{ n: number }>("select app_public.replay_webhook_events($1, 0, 10) as n", [endpoint])).rows[0]!.n).toBe(10);
    });
    await rootPool().query("delete from app_public.webhook_endpoints where id = $1", [endpoint]);
  }, 120_000);
});

describe("review: races at the commit", () => {
  it("deleting a webhook endpoint does not make a concurrent change of the business (a new lead) fail", async () => {
    const setup = await rootPool().connect();
    const owner = await newTenant(setup);
    const endpoint = await newEndpoint(setup, owner.tenant_id!, "https://hooks.example.com/deleted");
    setup.release();
    const deleter = await rootPool().connect();
    const writer = await rootPool().connect();
    try {
      await deleter.query("begin");
      await deleter.query("delete from app_public.webhook_endpoints where id = $1", [endpoint]);
      // A member adds a lead meanwhile (autocommit): its commit numbers the event and fans it out to the endpoint it still sees.
      const write = writer
        .query("insert into app_public.leads (tenant_id, first_name, email) values ($1, 'Racer', gen_random_uuid() || '@example.test')", [owner.tenant_id])
        .then(() => null, (error: pg.DatabaseError) => `${error.code}: ${error.message}`);
      await new Promise((r) => setTimeout(r, 500));
      await deleter.query("commit");
      expect(await write, "the lead insert").toBeNull();
    } finally {
      deleter.release();
      writer.release();
    }
  });

  it("a claim that finds nothing due does not push back the job of deliveries a concurrent commit just made due", async () => {
    const setup = await rootPool().connect();
    const owner = await newTenant(setup);
    // The endpoint is turned off while the data is prepared, so no job runs in between (no worker runs here anyway).
    const endpoint = await newEndpoint(setup, owner.tenant_id!, "https://hooks.example.com/late");
    // One delivery waiting for a retry in 6 hours.
    await setup.query("select app_private.record_event($1, 'lead.created', null, '{}')", [owner.tenant_id]);
    await setup.query("update app_public.webhook_deliveries set attempts = 13, next_attempt_at = now() + interval '6 hours' where endpoint_id = $1", [endpoint]);
    setup.release();
    const writer = await rootPool().connect();
    const worker = await rootPool().connect();
    try {
      // A transaction writes an event; its numbering and fan-out are done (here made to run before the commit to open the window the commit itself has).
      await writer.query("begin");
      await writer.query("set constraints app_private._900_number immediate");
      await writer.query("select app_private.record_event($1, 'lead.created', null, '{}')", [owner.tenant_id]);
      // The worker's run finds nothing due (the new delivery is not committed yet) and schedules the endpoint's job for the retry.
      const claim = worker.query("select * from app_private.claim_webhook_deliveries($1, 8, 15)", [endpoint]);
      await new Promise((r) => setTimeout(r, 500));
      await writer.query("commit");
      expect((await claim).rows).toEqual([]);
      const { rows: [state] } = await worker.query(
        `select (select count(*)::int from app_public.webhook_deliveries d where d.endpoint_id = $1 and d.status = 'pending' and d.next_attempt_at <= now()) as due_now,
                (select extract(epoch from j.run_at - now())::int from graphile_worker.jobs j where j.key = 'webhook_endpoint:' || $1) as job_in_seconds`,
        [endpoint],
      );
      expect(state.due_now).toBe(1);
      expect(state.job_in_seconds, "seconds until the job of an endpoint with a delivery due now runs").toBeLessThan(5);
    } finally {
      writer.release();
      worker.release();
      await rootPool().query("delete from app_public.webhook_endpoints where id = $1", [endpoint]);
    }
  });
});

describe("re-reading: a paused endpoint", () => {
  it("an event for an endpoint paused after failures enqueues its job for the end of the pause, not now", async () => {
    const root = await rootPool().connect();
    const owner = await newTenant(root);
    const endpoint = await newEndpoint(root, owner.tenant_id!, "https://hooks.example.com/paused");
    try {
      await root.query("update app_public.webhook_endpoints set paused_until = app_hidden.clock_now(tenant_id) + interval '1 hour' where id = $1", [endpoint]);
      await root.query("select app_private.record_event($1, 'lead.created', null, '{}')", [owner.tenant_id]);
      const { rows: [job] } = await root.query<{ run_in: number }>(
        "select extract(epoch from j.run_at - now())::int as run_in from graphile_worker.jobs j where j.key = 'webhook_endpoint:' || $1",
        [endpoint],
      );
      expect(job!.run_in).toBeGreaterThan(3500);
      // And a null event type is refused like an unknown one.
      const refused = await root.query("update app_public.webhook_endpoints set event_types = array[null]::text[] where id = $1", [endpoint]).then(() => null, (e: pg.DatabaseError) => e);
      expect(refused?.code).toBe("22023");
      expect(refused?.message).toMatch(/Unknown event type null/);
    } finally {
      await root.query("delete from app_public.webhook_endpoints where id = $1", [endpoint]);
      root.release();
    }
  });
});

describe("review: turned off for failing", () => {
  it("with the default settings, turning an endpoint on again (as the owners are told to) sends every event it failed to get, not only the last two days", async () => {
    const root = await rootPool().connect();
    const owner = await newTenant(root);
    const tenant = owner.tenant_id!;
    const endpoint = await newEndpoint(root, tenant, "https://hooks.example.com/down"); // disable_after_seconds: the default, 5 days
    try {
      const attempt = async (): Promise<string[]> => {
        const { rows } = await root.query<{ delivery_id: string }>("select * from app_private.claim_webhook_deliveries($1, 8, 15)", [endpoint]);
        const results: string[] = [];
        for (const r of rows) results.push((await root.query("select app_private.record_webhook_attempt($1, 503, null, 5, 'down') as r", [r.delivery_id])).rows[0].r);
        return results;
      };
      const untilDue = async (): Promise<void> => {
        const { rows } = await root.query<{ wait: string | null }>(
          "select (min(next_attempt_at) - app_hidden.clock_now($2) + interval '1 second')::text as wait from app_public.webhook_deliveries where endpoint_id = $1 and status = 'pending'",
          [endpoint, tenant],
        );
        if (rows[0]!.wait && !rows[0]!.wait.startsWith("-")) await root.query("select app_private.advance_clock($1, $2::interval)", [tenant, rows[0]!.wait]);
      };
      const elapsedHours = async (): Promise<number> =>
        Number((await root.query("select extract(epoch from app_hidden.clock_now($1) - w.failing_since) / 3600 as h from app_public.webhook_endpoints w where w.id = $2", [tenant, endpoint])).rows[0].h);

      // Day 0: a lead; the receiver is down from then on.
      await root.query("select app_private.record_event($1, 'lead.created', null, '{\"n\": 1}')", [tenant]);
      const first: string[] = [];
      for (let i = 0; i < 20; i++) {
        first.push(...(await attempt()));
        if (i < 19) await untilDue();
      }
      expect(first.at(-1)).toBe("failed"); // given up after 20 attempts (about two days), endpoint still on
      const hours = await elapsedHours();
      expect(hours).toBeGreaterThan(45);
      expect(hours).toBeLessThan(50);
      // Day 4: another lead; day 5: its retry fails and the endpoint is turned off, the owners told.
      await root.query("select app_private.advance_clock($1, interval '52 hours')", [tenant]);
      await root.query("select app_private.record_event($1, 'lead.created', null, '{\"n\": 2}')", [tenant]);
      expect(await attempt()).toEqual(["retry"]);
      await root.query("select app_private.advance_clock($1, interval '21 hours')", [tenant]);
      expect(await attempt()).toEqual(["disabled"]);
      const { rows: [notice] } = await root.query("select body from app_public.notifications where tenant_id = $1 and kind = 'webhook_endpoint_disabled'", [tenant]);
      expect(notice.body).toMatch(/turn it on again .* to deliver what waits, and replayWebhookEvents for what came while it was off/);
      // The owner does exactly that: the receiver is fixed, the endpoint turned on (nothing came while it was off).
      await root.query("update app_public.webhook_endpoints set enabled = true where id = $1", [endpoint]);
      const { rows } = await root.query(
        "select e.data->>'n' as n, d.status from app_public.events e join app_public.webhook_deliveries d on d.event_id = e.id and d.endpoint_id = $2 where e.tenant_id = $1 order by e.seq",
        [tenant, endpoint],
      );
      expect(rows).toEqual([
        { n: "1", status: "pending" },
        { n: "2", status: "pending" },
      ]);
    } finally {
      await root.query("delete from app_public.webhook_endpoints where id = $1", [endpoint]);
      root.release();
    }
  });
});

describe("review: privileges (controls, expected to pass)", () => {
  it("an agent and another business's admin see and change nothing of the webhooks and events; no request reaches app_private", async () => {
    await withRootDb(async (client) => {
      const owner = await newTenant(client);
      const other = await newTenant(client);
      const endpoint = await newEndpoint(client, owner.tenant_id!, "https://hooks.example.com/priv");
      await client.query("set constraints app_private._900_number immediate");
      await client.query("select app_private.record_event($1, 'lead.created', null, '{}')", [owner.tenant_id]);
      const { rows: [d] } = await client.query("select id from app_public.webhook_deliveries where endpoint_id = $1", [endpoint]);
      await client.query("select app_private.record_webhook_attempt($1, 500, null, 1, 'x')", [d.id]);
      const { addMember } = await import("../helpers.ts");
      const agent = await addMember(client, owner.tenant_id!, "agent");
      for (const who of [agent, other]) {
        await becomeUser(client, who);
        for (const t of ["app_public.events", "app_public.webhook_endpoints", "app_public.webhook_deliveries", "app_public.webhook_delivery_attempts"]) {
          expect((await client.query(`select count(*)::int as n from ${t}`)).rows[0].n, t).toBe(0);
        }
        expect((await client.query("update app_public.webhook_endpoints set url = 'https://evil.example/' where id = $1", [endpoint])).rowCount).toBe(0);
        expect((await client.query("delete from app_public.webhook_endpoints where id = $1", [endpoint])).rowCount).toBe(0);
        for (const sql of [
          "select * from app_private.webhook_secrets",
          "select * from app_private.event_counters",
          "select * from app_private.event_batches",
          `select app_private.record_event('${owner.tenant_id}', 'lead.created', null, '{}')`,
          `select * from app_private.claim_webhook_deliveries('${endpoint}', 8, 15)`,
          `update app_public.webhook_endpoints set tenant_id = '${who.tenant_id}'`,
          `insert into app_public.events (tenant_id, type) values ('${owner.tenant_id}', 'lead.created')`,
        ]) {
          await client.query("savepoint p");
          let code: string | undefined;
          try {
            await client.query(sql);
          } catch (error) {
            code = (error as pg.DatabaseError).code;
          }
          await client.query("rollback to savepoint p");
          expect(code, sql).toBe("42501");
        }
        for (const sql of [`select * from app_public.events_after(0, 10)`, `select app_public.replay_webhook_events('${endpoint}', 0, 10)`, `select app_public.rotate_webhook_secret('${endpoint}')`]) {
          await client.query("savepoint p");
          let outcome: string;
          try {
            outcome = `${(await client.query(sql)).rowCount} row(s)`;
            if (sql.includes("events_after")) outcome = outcome === "0 row(s)" ? "nothing" : outcome;
          } catch (error) {
            outcome = (error as pg.DatabaseError).code ?? "error";
          }
          await client.query("rollback to savepoint p");
          expect(["42501", "P0002", "nothing"], sql).toContain(outcome);
        }
      }
    });
  });
});

describe("review: worker slots", () => {
  const hanging: ServerResponse[] = [];
  let receiver: Server;
  let base: string;
  const arrivals: { path: string; at: number }[] = [];
  let runner: Runner | null = null;

  beforeAll(async () => {
    receiver = createServer((req, res) => {
      req.resume();
      req.on("end", () => {
        arrivals.push({ path: req.url ?? "/", at: Date.now() });
        if ((req.url ?? "").startsWith("/tarpit")) hanging.push(res);
        else res.end("ok");
      });
    });
    await new Promise<void>((r) => receiver.listen(0, "127.0.0.1", r));
    base = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
    setServices({
      sms: new LocalSmsProvider(ownerPool(), "unused", -1),
      ai: new LocalAiResponder(),
      numbers: new LocalNumberProvisioner(),
      email: new LocalEmailProvider(ownerPool()),
      emailFrom: { name: "Switchboard", address: "no-reply@switchboard.localhost" },
      publicUrl: () => "http://127.0.0.1",
      // Production: WEBHOOK_TIMEOUT_MS 10000; 1000 here keeps the test short (the run budget is 60 s either way).
      webhooks: { timeoutMs: 1000, concurrency: 8, allowPrivateTargets: true },
    });
    // WORKER_CONCURRENCY defaults to 4, shared by every task (texts, emails, routing, nurture, webhooks).
    runner = await startWorker(ownerPool(), 4, { only: ["webhook__deliver"] });
  });

  afterAll(async () => {
    await runner?.stop();
    setServices(null);
    for (const res of hanging) res.destroy();
    await new Promise((r) => receiver?.close(r));
  });

  it("a receiver that never answers pauses its endpoint after one batch, so it does not hold worker slots while another business's webhook waits", async () => {
    const root = await rootPool().connect();
    try {
      const attacker = await newTenant(root);
      const tarpits: string[] = [];
      for (let i = 0; i < 4; i++) tarpits.push(await newEndpoint(root, attacker.tenant_id!, `${base}/tarpit/${i}`));
      await root.query("select app_private.record_event($1, 'lead.created', null, '{}') from generate_series(1, 400)", [attacker.tenant_id]);
      // Each endpoint gets one batch (8 requests), which times out; then it is paused.
      const paused = await waitFor("the four endpoints paused after their first batch", async () => {
        const { rows } = await root.query<{ n: number }>(
          "select count(*)::int as n from app_public.webhook_endpoints where id = any($1) and paused_until > app_hidden.clock_now(tenant_id)",
          [tarpits],
        );
        return rows[0]!.n === 4;
      }, 30_000, 100);
      expect(paused).toBe(true);
      const victim = await newTenant(root);
      await newEndpoint(root, victim.tenant_id!, `${base}/victim`);
      await root.query("select app_private.record_event($1, 'lead.created', null, '{}')", [victim.tenant_id]);
      await waitFor("the victim's delivery", async () => arrivals.find((a) => a.path === "/victim"), 30_000, 100);
      // While paused, a tarpit got its first batch and nothing more (without the pause, each run keeps
      // claiming the next due batch: 100 deliveries per endpoint).
      const { rows: [state] } = await root.query<{ paused: number }>(
        "select count(*)::int as paused from app_public.webhook_endpoints where id = any($1) and paused_until > app_hidden.clock_now(tenant_id)",
        [tarpits],
      );
      if (state!.paused === 4) for (let i = 0; i < 4; i++) expect(arrivals.filter((a) => a.path === `/tarpit/${i}`).length, `requests to tarpit ${i}`).toBe(8);
      const { rows: [attempts] } = await root.query<{ max: number }>(
        "select max(attempts)::int as max from app_public.webhook_deliveries where endpoint_id = any($1)",
        [tarpits],
      );
      expect(attempts!.max).toBeLessThanOrEqual(2);
    } finally {
      root.release();
    }
  }, 90_000);
});

describe("review: controls (expected to pass)", () => {
  it("events of a rolled-back savepoint, a savepoint around an early numbering, and two businesses in one transaction: numbers stay gap-free", async () => {
    const root = await rootPool().connect();
    try {
      const a = (await newTenant(root)).tenant_id!;
      const b = (await newTenant(root)).tenant_id!;
      const [first, second] = [a, b].sort();
      await root.query("begin");
      await root.query("select app_private.record_event($1, 'lead.created', null, '{\"n\": 1}')", [second]);
      await root.query("savepoint s1");
      await root.query("select app_private.record_event($1, 'lead.created', null, '{\"n\": \"rolled\"}')", [first]);
      await root.query("rollback to savepoint s1");
      await root.query("savepoint s2");
      await root.query("set constraints app_private._900_number immediate");
      await root.query("select app_private.record_event($1, 'lead.created', null, '{\"n\": 2}')", [first]);
      await root.query("rollback to savepoint s2");
      await root.query("select app_private.record_event($1, 'lead.created', null, '{\"n\": 3}')", [first]);
      await root.query("commit");
      const { rows } = await root.query("select tenant_id = $1 as is_first, seq::int, data->>'n' as n from app_public.events where tenant_id in ($1, $2) order by tenant_id = $1 desc, seq", [first, second]);
      expect(rows).toEqual([
        { is_first: true, seq: 1, n: "3" },
        { is_first: false, seq: 1, n: "1" },
      ]);
      const { rows: left } = await root.query("select count(*)::int as n from app_private.event_batches");
      expect(left[0].n).toBe(0);
    } finally {
      root.release();
    }
  });
});
