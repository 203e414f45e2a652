/**
 * Lead scoring: the formula of calculate_lead_score on known inputs (exact numbers), per-tenant
 * weights in system_config (validated), recalculation through jobs only (enqueued by triggers, with a
 * job key, never for irrelevant changes), and the real worker writing the score.
 */
import type { Runner } from "graphile-worker";
import type pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import scoreTask from "../../tasks/lead__score.ts";
import { startWorker } from "../../src/worker/start.ts";
import { addMember, becomeRoot, becomeUser, db, expectSqlError, ownerPool, registerUser, rootPool, withRootDb, type RegisteredUser } from "../helpers.ts";

interface Factors {
  qualification: number;
  engagement: number;
  intent: number;
  demographic: number;
  total: number;
}
interface Score {
  score: number;
  factors: Factors;
}

const DEFAULT_WEIGHTS = { qualification: 40, engagement: 30, intent: 20, demographic: 10 };
const ONLY = (factor: keyof typeof DEFAULT_WEIGHTS) => ({ qualification: 0, engagement: 0, intent: 0, demographic: 0, [factor]: 100 });

let runner: Runner | null = null;
afterAll(async () => {
  await runner?.stop();
});

/** Scores an in-memory lead of the tenant (a fresh id, so it has no recorded activity). */
async function scoreOf(client: pg.ClientBase, tenantId: string, lead: Record<string, unknown>): Promise<Score> {
  const { rows } = await client.query<Score>(
    `select (r).score, (r).factors
       from (select app_public.calculate_lead_score(jsonb_populate_record(null::app_public.leads,
               jsonb_build_object('id', gen_random_uuid(), 'tenant_id', $1::uuid, 'attributes', '{}'::jsonb) || $2::jsonb)) as r) s`,
    [tenantId, JSON.stringify(lead)],
  );
  return rows[0]!;
}

/** The value of an SQL expression as text (times and dates relative to the database's now()). */
async function sqlValue(client: pg.ClientBase, expression: string): Promise<string> {
  const { rows } = await client.query<{ v: string }>(`select (${expression})::text as v`);
  return rows[0]!.v;
}

/** Sets the tenant's scoring.weights as root (null removes it; the validation trigger still runs). */
async function setWeights(client: pg.ClientBase, tenantId: string, weights: Record<string, unknown> | null): Promise<void> {
  if (weights === null) {
    await client.query("delete from app_public.system_config where tenant_id = $1 and key = 'scoring.weights'", [tenantId]);
    return;
  }
  await client.query(
    `insert into app_public.system_config (tenant_id, key, value, value_type, description) values ($1, 'scoring.weights', $2, 'json', 'test')
     on conflict (tenant_id, key) do update set value = excluded.value, value_type = excluded.value_type`,
    [tenantId, JSON.stringify(weights)],
  );
}

async function jobsWithKey(client: pg.ClientBase, key: string) {
  const { rows } = await client.query<{ identifier: string; payload: Record<string, string> }>(
    `select t.identifier, j.payload from graphile_worker._private_jobs j join graphile_worker._private_tasks t on t.id = j.task_id where j.key = $1`,
    [key],
  );
  return rows;
}

async function completeLead(client: pg.ClientBase): Promise<Record<string, unknown>> {
  return {
    first_name: "Ann",
    last_name: "Lee",
    phone: "+13125550100",
    email: "ann@example.test",
    address: "1 Main St",
    status: "hot",
    last_contact_at: await sqlValue(client, "now() - interval '2 hours'"),
    urgency: "emergency",
    estimated_value: 12000,
    appointment_at: await sqlValue(client, "now() + interval '1 day'"),
    event_date: await sqlValue(client, "current_date + 30"),
    problem_description: "Burst pipe",
    city: "Chicago",
    region: "IL",
    postal_code: "60601",
    language: "en",
    customer_segment: "residential",
  };
}

describe("calculate_lead_score", () => {
  it("gives exact points on known inputs with the default weights (40/30/20/10)", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const t = owner.tenant_id!;
      // Raw: qualification 100, engagement 50 (contact 2 hours ago, no activity), intent 100, demographic 85.
      expect(await scoreOf(client, t, await completeLead(client))).toEqual({
        score: 84,
        factors: { qualification: 40, engagement: 15, intent: 20, demographic: 9, total: 84 },
      });
      // Raw: qualification 15 (phone), demographic 15 (service area unknown): 6 + 2 (1.5 rounds up).
      expect(await scoreOf(client, t, { phone: "+13125550101", status: "new", urgency: "low", language: "und" })).toEqual({
        score: 8,
        factors: { qualification: 6, engagement: 0, intent: 0, demographic: 2, total: 8 },
      });
      // Raw: qualification 45, engagement 30 (5 days), intent 20, demographic 45.
      expect(
        await scoreOf(client, t, {
          first_name: "Bo",
          email: "bo@example.test",
          status: "contacted",
          last_contact_at: await sqlValue(client, "now() - interval '5 days'"),
          urgency: "normal",
          estimated_value: 1500,
          event_date: await sqlValue(client, "current_date + 100"),
          problem_description: "   ",
          region: "TX",
          language: "es",
        }),
      ).toEqual({ score: 36, factors: { qualification: 18, engagement: 9, intent: 4, demographic: 5, total: 36 } });
    });
  });

  it("scores each factor's parts exactly (one factor weighted 100 shows its raw points)", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const t = owner.tenant_id!;
      const base = { phone: "+13125550102", status: "new", urgency: "low", language: "und" };
      const raw = async (factor: keyof typeof DEFAULT_WEIGHTS, lead: Record<string, unknown>) => {
        const result = await scoreOf(client, t, { ...base, ...lead });
        expect(result.score).toBe(result.factors[factor]);
        return result.score;
      };

      await setWeights(client, t, ONLY("qualification"));
      const statuses: Record<string, number> = { new: 0, cold: 5, contacted: 15, nurturing: 15, qualified: 30, hot: 40, won: 40, recruited: 40, lost: 0, dnc: 0 };
      for (const [status, points] of Object.entries(statuses)) expect(await raw("qualification", { status }), status).toBe(15 + points);
      expect(await raw("qualification", { phone: null, email: "x@example.test" })).toBe(15);
      expect(await raw("qualification", { last_name: "Only", address: "2 Elm St" })).toBe(45);
      expect(await raw("qualification", { first_name: "  ", address: "" })).toBe(15);

      await setWeights(client, t, ONLY("engagement"));
      const recency: Array<[string, number]> = [
        ["now() + interval '1 hour'", 50],
        ["now() - interval '12 hours'", 50],
        ["now() - interval '2 days'", 40],
        ["now() - interval '5 days'", 30],
        ["now() - interval '10 days'", 20],
        ["now() - interval '20 days'", 10],
        ["now() - interval '40 days'", 0],
      ];
      for (const [at, points] of recency) expect(await raw("engagement", { last_contact_at: await sqlValue(client, at) }), at).toBe(points);
      expect(await raw("engagement", { last_contact_at: null })).toBe(0);

      await setWeights(client, t, ONLY("intent"));
      for (const [urgency, points] of Object.entries({ low: 0, normal: 10, high: 20, emergency: 30 })) {
        expect(await raw("intent", { urgency }), urgency).toBe(points);
      }
      const values: Array<[number | null, number]> = [[null, 0], [0, 0], [499.99, 5], [500, 10], [1999.99, 10], [2000, 15], [9999.99, 15], [10000, 20]];
      for (const [value, points] of values) expect(await raw("intent", { estimated_value: value }), String(value)).toBe(points);
      expect(await raw("intent", { appointment_at: await sqlValue(client, "now() + interval '3 days'") })).toBe(20);
      for (const [offset, points] of [[-1, 0], [0, 15], [90, 15], [91, 0]] as const) {
        expect(await raw("intent", { event_date: await sqlValue(client, `current_date + ${offset}`) }), `event in ${offset} days`).toBe(points);
      }
      expect(await raw("intent", { problem_description: "No hot water" })).toBe(15);

      await setWeights(client, t, ONLY("demographic"));
      expect(await raw("demographic", {})).toBe(15); // service area unknown: half of 30
      expect(await raw("demographic", { city: "Austin" })).toBe(35);
      expect(await raw("demographic", { region: "TX", postal_code: "73301", language: "en", customer_segment: "commercial" })).toBe(85);
      // Service area: Chicago, 25 miles. Evanston (~12 miles) is inside, Milwaukee (~81 miles) outside.
      const evanston = { attributes: { latitude: 42.0451, longitude: -87.6877 } };
      const milwaukee = { attributes: { latitude: 43.0389, longitude: -87.9065 } };
      expect(await raw("demographic", evanston)).toBe(15); // the tenant has no coordinates yet
      await client.query("update app_public.tenants set business_latitude = 41.8781, business_longitude = -87.6298, service_area_radius = 25 where id = $1", [t]);
      expect(await raw("demographic", evanston)).toBe(30);
      expect(await raw("demographic", milwaukee)).toBe(0);
      expect(await raw("demographic", { attributes: { latitude: "42.0451", longitude: -87.6877 } })).toBe(15); // not numbers: unknown
      await client.query("update app_public.tenants set service_area_radius = 100 where id = $1", [t]);
      expect(await raw("demographic", milwaukee)).toBe(30);
    });
  });

  it("counts status changes and field changes of the last 30 days as engagement, capped at 50", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const t = owner.tenant_id!;
      await setWeights(client, t, ONLY("engagement"));
      const { rows } = await client.query<{ id: string }>(
        "insert into app_public.leads (tenant_id, first_name, phone) values ($1, 'Active', '+13125550103') returning id",
        [t],
      );
      const leadId = rows[0]!.id;
      const current = async () => {
        const { rows: r } = await client.query<{ score: number }>("select (app_public.calculate_lead_score(l)).score from app_public.leads l where l.id = $1", [leadId]);
        return r[0]!.score;
      };
      // Whatever the history triggers recorded for the insert is the baseline (no contact yet, so no recency points).
      const baseline = await current();
      await client.query(
        `insert into app_public.lead_status_history (tenant_id, lead_id, from_status, to_status, trigger_type, changed_at) values
           ($1, $2, null, 'new', 'manual', now()),                            -- creation: not a change
           ($1, $2, 'new', 'contacted', 'manual', now()),                     -- 10
           ($1, $2, 'contacted', 'qualified', 'manual', now() - interval '29 days'), -- 10
           ($1, $2, 'qualified', 'hot', 'manual', now() - interval '31 days')`, // too old
        [t, leadId],
      );
      await client.query(
        `insert into app_public.lead_audit_log (tenant_id, lead_id, field_name, old_value, new_value, change_source, changed_at) values
           ($1, $2, 'email', null, '"a@example.test"', 'manual', now()),       -- 5
           ($1, $2, 'status', '"new"', '"contacted"', 'manual', now()),        -- counted as a status change already
           ($1, $2, 'lead_score', '0', '40', 'system', now()),                 -- the score itself is not activity
           ($1, $2, 'lead_score_factors', '{}', '{}', 'system', now()),
           ($1, $2, 'updated_at', null, null, 'system', now()),
           ($1, $2, '*created*', null, null, 'manual', now()),
           ($1, $2, 'city', null, '"Chicago"', 'manual', now() - interval '31 days')`,
        [t, leadId],
      );
      expect(await current()).toBe(Math.min(50, baseline + 25));
      await client.query(
        `insert into app_public.lead_status_history (tenant_id, lead_id, from_status, to_status, trigger_type)
         select $1, $2, 'contacted', 'nurturing', 'manual' from generate_series(1, 6)`,
        [t, leadId],
      );
      expect(await current()).toBe(50);
      await client.query("update app_public.leads set last_contact_at = now() where id = $1", [leadId]);
      expect(await current()).toBe(100);
    });
  });

  it("tenant weights change the result, and removing them restores the defaults", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const other = await registerUser(client);
      const lead = await completeLead(client);
      await becomeUser(client, owner);
      await client.query(
        "insert into app_public.system_config (key, value, value_type) values ('scoring.weights', '{\"qualification\": 10, \"engagement\": 10, \"intent\": 70, \"demographic\": 10}', 'json')",
      );
      await becomeRoot(client);
      expect(await scoreOf(client, owner.tenant_id!, lead)).toEqual({
        score: 94,
        factors: { qualification: 10, engagement: 5, intent: 70, demographic: 9, total: 94 },
      });
      // Another tenant keeps the defaults.
      expect((await scoreOf(client, other.tenant_id!, lead)).score).toBe(84);
      // Weights given as 40.0 are whole numbers too.
      await setWeights(client, owner.tenant_id!, { qualification: 100.0, engagement: 0, intent: 0, demographic: 0 });
      expect((await scoreOf(client, owner.tenant_id!, lead)).factors).toEqual({ qualification: 100, engagement: 0, intent: 0, demographic: 0, total: 100 });
      await setWeights(client, owner.tenant_id!, null);
      expect((await scoreOf(client, owner.tenant_id!, lead)).score).toBe(84);
    });
  });

  it("refuses bad scoring.weights with 22023 and writes nothing (no row, no rescoring job)", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const agent = await addMember(client, owner.tenant_id!, "agent");
      const key = `lead_score_tenant:${owner.tenant_id}`;
      await becomeUser(client, owner);
      const insert = (value: string, valueType = "json") =>
        client.query("insert into app_public.system_config (key, value, value_type) values ('scoring.weights', $1::jsonb, $2)", [value, valueType]);
      const bad: Array<[string, string, RegExp]> = [
        ['{"qualification": 40, "engagement": 30, "intent": 20, "demographic": 9}', "json", /must add up to 100 \(they add up to 99\)/],
        ['{"qualification": 50, "engagement": 30, "intent": 20}', "json", /exactly the keys qualification, engagement, intent and demographic/],
        ['{"qualification": 40, "engagement": 30, "intent": 20, "demographic": 10, "recency": 0}', "json", /exactly the keys/],
        ['{"qualification": -10, "engagement": 60, "intent": 40, "demographic": 10}', "json", /scoring\.weights\.qualification must be a whole number of points, 0 or more/],
        ['{"qualification": 40.5, "engagement": 29.5, "intent": 20, "demographic": 10}', "json", /must be a whole number/],
        ['{"qualification": "40", "engagement": 30, "intent": 20, "demographic": 10}', "json", /must be a whole number/],
        ['{"qualification": null, "engagement": 30, "intent": 20, "demographic": 50}', "json", /must be a whole number/],
        ["[40, 30, 20, 10]", "json", /must be a JSON object/],
        ["100", "number", /must have value_type json/],
        ['"40/30/20/10"', "string", /must have value_type json/],
      ];
      for (const [value, valueType, message] of bad) {
        const error = await expectSqlError(client, "22023", () => insert(value, valueType));
        expect(error.message, value).toMatch(message);
      }
      await becomeRoot(client);
      const none = await client.query("select count(*)::int as n from app_public.system_config where tenant_id = $1 and key = 'scoring.weights'", [owner.tenant_id]);
      expect(none.rows[0].n).toBe(0);
      expect(await jobsWithKey(client, key)).toEqual([]);

      // Agents can't change weights at all.
      await becomeUser(client, agent);
      await expectSqlError(client, "42501", () => insert('{"qualification": 40, "engagement": 30, "intent": 20, "demographic": 10}'));

      // A valid value is stored and queues one rescoring of the tenant.
      await becomeUser(client, owner);
      await insert('{"qualification": 40, "engagement": 30, "intent": 20, "demographic": 10}');
      const update = (value: string) => client.query("update app_public.system_config set value = $1::jsonb where key = 'scoring.weights'", [value]);
      const error = await expectSqlError(client, "22023", () => update('{"qualification": 100, "engagement": 30, "intent": 20, "demographic": 10}'));
      expect(error.message).toMatch(/add up to 100 \(they add up to 160\)/);
      await update('{"qualification": 25, "engagement": 25, "intent": 25, "demographic": 25}');
      await becomeRoot(client);
      const stored = await client.query("select value from app_public.system_config where tenant_id = $1 and key = 'scoring.weights'", [owner.tenant_id]);
      expect(stored.rows[0].value).toEqual({ qualification: 25, engagement: 25, intent: 25, demographic: 25 });
      expect(await jobsWithKey(client, key)).toEqual([{ identifier: "lead__score_tenant", payload: { tenant_id: owner.tenant_id } }]);
    });
  });

  it("the request role may calculate (a computed field) but not refresh stored scores", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const other = await registerUser(client);
      await client.query("insert into app_public.system_config (tenant_id, key, value, value_type) values ($1, 'scoring.weights', $2, 'json')", [
        other.tenant_id,
        JSON.stringify(ONLY("qualification")),
      ]);
      await becomeUser(client, owner);
      const { rows } = await client.query<{ id: string }>("insert into app_public.leads (first_name, phone) values ('Vi', '+13125550104') returning id");
      const score = await client.query("select (app_public.calculate_lead_score(l)).* from app_public.leads l where l.id = $1", [rows[0]!.id]);
      expect(score.rows[0].score).toBeGreaterThan(0);
      // Another tenant's weights are invisible to this tenant: they read as the defaults.
      const weights = await client.query("select app_hidden.lead_scoring_weights($1) as w", [other.tenant_id]);
      expect(weights.rows[0].w).toEqual(DEFAULT_WEIGHTS);
      await expectSqlError(client, "42501", () => client.query("select app_private.refresh_lead_score($1)", [rows[0]!.id]));
      await expectSqlError(client, "42501", () => client.query("update app_public.leads set lead_score = 99 where id = $1", [rows[0]!.id]));
    });
  });

  it("keeps scores between 0 and 100 (equal to the sum of factors, each within its weight) for random leads and weights", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const t = owner.tenant_id!;
      await client.query("update app_public.tenants set business_latitude = 30.2672, business_longitude = -97.7431 where id = $1", [t]);
      const pick = <T,>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)]!;
      const maybe = <T,>(x: T): T | null => (Math.random() < 0.5 ? x : null);
      const leads = Array.from({ length: 300 }, () => ({
        id: crypto.randomUUID(),
        tenant_id: t,
        first_name: maybe("Zed"),
        last_name: maybe("Ray"),
        phone: maybe("+13125550105"),
        email: maybe("z@example.test"),
        address: maybe("3 Oak"),
        city: maybe("Austin"),
        region: maybe("TX"),
        postal_code: maybe("78701"),
        status: pick(["new", "contacted", "nurturing", "cold", "qualified", "hot", "won", "recruited", "lost", "dnc"]),
        urgency: pick(["low", "normal", "high", "emergency"]),
        estimated_value: maybe(Math.round(Math.random() * 50000) / 100),
        last_contact_at: maybe(new Date(Date.now() - Math.random() * 60 * 86400e3).toISOString()),
        appointment_at: maybe(new Date().toISOString()),
        event_date: maybe(new Date(Date.now() + (Math.random() * 200 - 50) * 86400e3).toISOString().slice(0, 10)),
        problem_description: maybe("Leak"),
        language: pick(["en", "es", "und"]),
        customer_segment: maybe("residential"),
        attributes: Math.random() < 0.5 ? { latitude: 30 + Math.random(), longitude: -98 + Math.random() } : {},
      }));
      const weightSets: Array<Record<string, number>> = [DEFAULT_WEIGHTS, ONLY("qualification"), ONLY("engagement"), ONLY("intent"), ONLY("demographic")];
      for (let n = 0; n < 5; n++) {
        const cuts = [0, ...Array.from({ length: 3 }, () => Math.floor(Math.random() * 101)).sort((a, b) => a - b), 100];
        weightSets.push({ qualification: cuts[1]! - cuts[0]!, engagement: cuts[2]! - cuts[1]!, intent: cuts[3]! - cuts[2]!, demographic: cuts[4]! - cuts[3]! });
      }
      for (const weights of weightSets) {
        await setWeights(client, t, weights);
        const { rows } = await client.query<Score>(
          "select (r).score, (r).factors from (select app_public.calculate_lead_score(jsonb_populate_record(null::app_public.leads, x)) as r from jsonb_array_elements($1::jsonb) x) s",
          [JSON.stringify(leads)],
        );
        expect(rows).toHaveLength(leads.length);
        for (const { score, factors } of rows) {
          expect(score).toBeGreaterThanOrEqual(0);
          expect(score).toBeLessThanOrEqual(100);
          expect(factors.total).toBe(score);
          expect(factors.qualification + factors.engagement + factors.intent + factors.demographic).toBe(score);
          for (const f of ["qualification", "engagement", "intent", "demographic"] as const) {
            expect(factors[f]).toBeGreaterThanOrEqual(0);
            expect(factors[f]).toBeLessThanOrEqual(weights[f]!);
          }
        }
      }
    });
  });
});

describe("lead score jobs", () => {
  it("enqueues lead__score for the new leads of an insert (one job per 500), and with key lead_score:<id> on changes to scoring inputs only", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      await becomeUser(client, owner);
      const { rows } = await client.query<{ id: string }>("insert into app_public.leads (first_name, phone) values ('Jo', '+13125550106') returning id");
      const leadId = rows[0]!.id;
      const key = `lead_score:${leadId}`;
      const insertJobs = async (ids: string[]) => {
        await becomeRoot(client);
        const { rows: jobs } = await client.query<{ identifier: string; key: string | null; ids: string[] }>(
          `select t.identifier, j.key, array(select json_array_elements_text(j.payload -> 'lead_ids') order by 1) as ids
             from graphile_worker._private_jobs j join graphile_worker._private_tasks t on t.id = j.task_id
            where j.payload -> 'lead_ids' is not null and (j.payload ->> 'lead_ids')::jsonb ?| $1::text[]
            order by j.id`,
          [ids],
        );
        await becomeUser(client, owner);
        return jobs;
      };
      expect(await insertJobs([leadId])).toEqual([{ identifier: "lead__score", key: null, ids: [leadId] }]);
      // One statement creating 1,001 leads: three jobs of at most 500, each lead in exactly one.
      const many = await client.query<{ id: string }>(
        "insert into app_public.leads (first_name, phone) select 'Many', '+1312666' || lpad(g::text, 4, '0') from generate_series(1, 1001) g returning id",
      );
      const manyIds = many.rows.map((r) => r.id);
      const manyJobs = await insertJobs(manyIds);
      expect(manyJobs.map((j) => j.ids.length).sort((a, b) => a - b)).toEqual([1, 500, 500]);
      expect(manyJobs.flatMap((j) => j.ids).sort()).toEqual([...manyIds].sort());
      await becomeRoot(client);
      await client.query("delete from graphile_worker._private_jobs where payload -> 'lead_ids' is not null");
      await becomeUser(client, owner);
      const takeJobs = async () => {
        await becomeRoot(client);
        const jobs = await jobsWithKey(client, key);
        await client.query("delete from graphile_worker._private_jobs where key = $1", [key]);
        await becomeUser(client, owner);
        return jobs;
      };
      expect(await takeJobs()).toEqual([]);

      // Nothing is scored inline: the stored score waits for the job.
      const stored = await client.query("select lead_score, lead_score_factors from app_public.leads where id = $1", [leadId]);
      expect(stored.rows[0]).toEqual({ lead_score: 0, lead_score_factors: {} });

      const irrelevant = [
        "tags = '{vip}'",
        "source = 'referral'",
        "job_type = 'water_heater'",
        "event_type = 'wedding'",
        "service_line = 'home'",
        "ai_analysis = '{\"summary\": \"x\"}'",
        "lost_reason = 'n/a'",
        "conversion_value = 10",
        "attributes = '{\"note\": \"call after 5\"}'",
        "timezone = 'America/Chicago'",
        "urgency = urgency, status = status, first_name = first_name",
      ];
      for (const set of irrelevant) {
        await client.query(`update app_public.leads set ${set} where id = $1`, [leadId]);
        expect(await takeJobs(), set).toEqual([]);
      }
      // The score itself (written by the job) doesn't queue another job.
      await becomeRoot(client);
      await client.query("update app_public.leads set lead_score = 55, lead_score_factors = '{\"total\": 55}' where id = $1", [leadId]);
      expect(await takeJobs()).toEqual([]);

      const relevant = [
        "first_name = 'Joanne'",
        "email = 'jo@example.test'",
        "address = '4 Pine St'",
        "city = 'Chicago'",
        "postal_code = '60601'",
        "status = 'contacted'",
        "last_contact_at = now()",
        "urgency = 'high'",
        "estimated_value = 800",
        "event_date = current_date + 10",
        "appointment_at = now() + interval '1 day'",
        "problem_description = 'Clogged drain'",
        "customer_segment = 'commercial'",
        "language = 'es'",
        "attributes = '{\"note\": \"call after 5\", \"latitude\": 41.9, \"longitude\": -87.6}'",
      ];
      for (const set of relevant) {
        await client.query(`update app_public.leads set ${set} where id = $1`, [leadId]);
        expect(await takeJobs(), set).toEqual([{ identifier: "lead__score", payload: { lead_id: leadId } }]);
      }
      // Several changes before the job runs make one job (the key replaces the pending one).
      await client.query("update app_public.leads set urgency = 'emergency' where id = $1", [leadId]);
      await client.query("update app_public.leads set urgency = 'low' where id = $1", [leadId]);
      expect(await takeJobs()).toHaveLength(1);
    });
  });

  it("a change of the tenant's service area queues lead__score_tenant", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const key = `lead_score_tenant:${owner.tenant_id}`;
      await becomeUser(client, owner);
      await client.query("update app_public.tenants set business_name = 'Renamed' where id = $1", [owner.tenant_id]);
      await becomeRoot(client);
      expect(await jobsWithKey(client, key)).toEqual([]);
      await becomeUser(client, owner);
      await client.query("update app_public.tenants set service_area_radius = 40 where id = $1", [owner.tenant_id]);
      await becomeRoot(client);
      expect(await jobsWithKey(client, key)).toEqual([{ identifier: "lead__score_tenant", payload: { tenant_id: owner.tenant_id } }]);
    });
  });

  it("refresh_lead_score writes only when the score changes, freezes final statuses and deleted leads, and rescoring a tenant walks it in batches", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const t = owner.tenant_id!;
      // Distinct phones (random ones met once in CI: one phone is one live lead).
      let serial = 0;
      const insert = async (status: string) => {
        const { rows } = await client.query<{ id: string }>(
          "insert into app_public.leads (tenant_id, first_name, phone, email, status, urgency, region) values ($1, 'Fay', $2, 'fay@example.test', $3, 'high', 'IL') returning id",
          [t, `+1312555${String(1000 + ++serial)}`, status],
        );
        return rows[0]!.id;
      };
      const state = async (id: string) => {
        const { rows } = await client.query<{ lead_score: number; lead_score_factors: Factors; ctid: string; calc: number }>(
          "select l.lead_score, l.lead_score_factors, l.ctid::text, (app_public.calculate_lead_score(l)).score as calc from app_public.leads l where l.id = $1",
          [id],
        );
        return rows[0]!;
      };
      const refresh = async (id: string) => (await client.query<{ s: number | null }>("select app_private.refresh_lead_score($1) as s", [id])).rows[0]!.s;

      // Engagement weighted 0 here, so whatever the history triggers record doesn't move the numbers.
      await setWeights(client, t, { qualification: 40, engagement: 0, intent: 40, demographic: 20 });
      const hot = await insert("hot");
      const first = await refresh(hot);
      let s = await state(hot);
      // Raw: qualification 45 + 40, intent 20, demographic 45 (region 20, language en by default 10, service area unknown 15).
      expect(s.lead_score_factors).toEqual({ qualification: 34, engagement: 0, intent: 8, demographic: 9, total: 51 });
      expect([first, s.lead_score, s.calc]).toEqual([51, 51, 51]);
      // Unchanged: no write at all (the row version stays the same).
      expect(await refresh(hot)).toBe(51);
      expect((await state(hot)).ctid).toBe(s.ctid);

      // A final status freezes the score it had while open.
      await client.query("update app_public.leads set status = 'lost' where id = $1", [hot]);
      s = await state(hot);
      expect(s.calc).toBe(35);
      expect(await refresh(hot)).toBe(51);
      expect((await state(hot)).lead_score).toBe(51);
      // Reopened, it is scored again.
      await client.query("update app_public.leads set status = 'contacted' where id = $1", [hot]);
      expect(await refresh(hot)).toBe(41);
      // A lead that arrives already final (e.g. imported history) is scored once.
      const won = await insert("won");
      expect(await refresh(won)).toBe(51);
      // Soft-deleted leads keep their score; unknown leads give null.
      await client.query("update app_public.leads set deleted_at = now(), urgency = 'low' where id = $1", [hot]);
      expect(await refresh(hot)).toBe(41);
      expect(await refresh("00000000-0000-4000-8000-000000000000")).toBeNull();

      // Rescoring the tenant after a weights change, 2 leads per batch.
      const more = [await insert("new"), await insert("qualified"), await insert("cold")];
      await setWeights(client, t, ONLY("intent"));
      let cursor: string | null = null;
      let batches = 0;
      do {
        const { rows }: { rows: Array<{ last: string | null }> } = await client.query("select app_private.refresh_tenant_lead_scores($1, $2, 2) as last", [t, cursor]);
        cursor = rows[0]!.last;
        if (cursor) batches += 1;
      } while (cursor);
      expect(batches).toBe(2); // 4 live leads: the deleted one is skipped
      for (const id of more) expect((await state(id)).lead_score).toBe(20); // intent: high urgency
      expect((await state(won)).lead_score).toBe(51); // final: frozen
      expect((await state(hot)).lead_score).toBe(41); // deleted: kept
    });
  });

  it("rescoring a tenant doesn't wait for a lead locked by another transaction: that lead gets its own lead__score job", async () => {
    let owner: RegisteredUser | null = null;
    const root = await rootPool().connect();
    const holder = await rootPool().connect();
    try {
      owner = await registerUser(root, { businessName: "Scoring Lock Co" });
      const t = owner.tenant_id!;
      const ids: string[] = [];
      for (let n = 0; n < 2; n++) {
        const { rows } = await root.query<{ id: string }>(
          "insert into app_public.leads (tenant_id, first_name, phone, urgency) values ($1, 'Lock', $2, 'emergency') returning id",
          [t, `+1773555020${n}`],
        );
        ids.push(rows[0]!.id);
      }
      const [locked, free] = ids as [string, string];
      await holder.query("begin");
      await holder.query("select 1 from app_public.leads where id = $1 for update", [locked]);
      await root.query("begin");
      try {
        await root.query("set local statement_timeout = '5s'");
        const { rows } = await root.query<{ last: string | null }>("select app_private.refresh_tenant_lead_scores($1, null, 10) as last", [t]);
        expect(rows[0]!.last).toBe([...ids].sort().at(-1));
        const scores = await root.query<{ id: string; scored: boolean }>(
          "select id, lead_score_factors <> '{}' as scored from app_public.leads where id = any($1::uuid[])",
          [ids],
        );
        expect(Object.fromEntries(scores.rows.map((r) => [r.id, r.scored]))).toEqual({ [locked]: false, [free]: true });
        // While the lock is held no worker can finish that job, so it is certainly still there.
        expect(await jobsWithKey(root, `lead_score:${locked}`)).toContainEqual({ identifier: "lead__score", payload: { lead_id: locked } });
        await root.query("commit");
      } catch (error) {
        await root.query("rollback");
        throw error;
      }
    } finally {
      await holder.query("rollback").catch(() => {});
      holder.release();
      try {
        if (owner) {
          await root.query("delete from app_public.tenants where id = $1", [owner.tenant_id]);
          await root.query("delete from app_public.users where id = $1", [owner.user_id]);
        }
      } finally {
        root.release();
      }
    }
  });

  it("a lead__score job of new leads scores them all though one is locked by another transaction, which gets its own job", async () => {
    let owner: RegisteredUser | null = null;
    const root = await rootPool().connect();
    const holder = await rootPool().connect();
    try {
      owner = await registerUser(root, { businessName: "Scoring Batch Lock Co" });
      const { rows } = await root.query<{ id: string }>(
        "insert into app_public.leads (tenant_id, first_name, phone, urgency) select $1, 'Batch', '+177355503' || lpad(n::text, 2, '0'), 'emergency' from generate_series(1, 5) n returning id",
        [owner.tenant_id],
      );
      const ids = rows.map((r) => r.id).sort();
      const locked = ids[1]!;
      await holder.query("begin");
      await holder.query("select 1 from app_public.leads where id = $1 for update", [locked]);
      await root.query(`set role ${db.roles.owner}`);
      const helpers = {
        withPgClient: <T>(fn: (c: pg.PoolClient) => Promise<T>) => fn(root),
        logger: { debug() {}, info() {}, warn() {}, error() {} },
      } as unknown as Parameters<typeof scoreTask>[1];
      await root.query("set statement_timeout = '5s'");
      await scoreTask({ lead_ids: ids }, helpers);
      await root.query("reset statement_timeout");
      await root.query("reset role");
      const scored = await root.query<{ id: string; scored: boolean }>(
        "select id, lead_score_factors <> '{}' as scored from app_public.leads where id = any($1::uuid[])",
        [ids],
      );
      expect(Object.fromEntries(scored.rows.map((r) => [r.id, r.scored]))).toEqual(Object.fromEntries(ids.map((id) => [id, id !== locked])));
      expect(await jobsWithKey(root, `lead_score:${locked}`)).toEqual([{ identifier: "lead__score", payload: { lead_id: locked } }]);
      await expect(scoreTask({ lead_ids: [] }, helpers)).rejects.toThrow(/lead_ids/);
      await expect(scoreTask({ lead_ids: ["x'; drop table app_public.leads; --"] }, helpers)).rejects.toThrow(/lead_ids/);
      await expect(scoreTask({ lead_ids: Array.from({ length: 501 }, () => ids[0]) }, helpers)).rejects.toThrow(/lead_ids/);
    } finally {
      await holder.query("rollback").catch(() => {});
      holder.release();
      try {
        await root.query("reset role");
        if (owner) {
          await root.query("delete from graphile_worker._private_jobs where key like 'lead_score:%' and payload->>'lead_id' in (select id::text from app_public.leads where tenant_id = $1)", [owner.tenant_id]);
          await root.query("delete from app_public.tenants where id = $1", [owner.tenant_id]);
          await root.query("delete from app_public.users where id = $1", [owner.user_id]);
        }
      } finally {
        root.release();
      }
    }
  });

  it("the real worker computes the score of a new lead, and rescores the tenant when its weights change", async () => {
    let owner: RegisteredUser | null = null;
    const root = await rootPool().connect();
    try {
      owner = await registerUser(root, { businessName: "Scoring Worker Co" });
      const t = owner.tenant_id!;
      // Three leads in one statement: one lead__score {lead_ids} job scores them.
      const { rows: inserted } = await root.query<{ id: string }>(
        `insert into app_public.leads (tenant_id, first_name, phone, email, address, status, urgency, estimated_value, problem_description,
                                       city, postal_code, customer_segment)
         select $1, 'Wanda', '+1773555010' || n, 'wanda@example.test', '1 Main St', 'qualified', 'high', 2500, 'Leaking water heater', 'Chicago', '60601', 'residential'
           from generate_series(0, 2) n
         returning id`,
        [t],
      );
      const ids = inserted.map((r) => r.id);
      // This test's jobs go first: the queue also holds the scoring jobs of every lead the other test
      // files inserted (thousands in a full run), which the worker would otherwise work through first.
      const putFirst = (keys: string[]) =>
        root.query(
          `select graphile_worker.reschedule_jobs(array(select j.id from graphile_worker._private_jobs j
                                                          where j.key = any($1::text[]) or (j.payload -> 'lead_ids')::jsonb ?| $1::text[]),
                                                  null, -100, null, null)`,
          [keys],
        );
      const { rows: insertJobs } = await root.query<{ n: number }>(
        "select count(*)::int as n from graphile_worker._private_jobs j where (j.payload -> 'lead_ids')::jsonb ?| $1::text[]",
        [ids],
      );
      expect(insertJobs[0]!.n).toBe(1);
      await putFirst(ids);
      runner = await startWorker(ownerPool(), 2, { only: ["lead__score", "lead__score_tenant"] });

      const waitFor = async (what: string, check: () => Promise<boolean>) => {
        const deadline = Date.now() + 30_000;
        while (Date.now() < deadline) {
          if (await check()) return;
          await new Promise((r) => setTimeout(r, 200));
        }
        throw new Error(`timed out waiting for ${what}`);
      };
      const stored = async () =>
        (
          await root.query<{ lead_score: number; lead_score_factors: Factors; calc: Score }>(
            `select l.lead_score, l.lead_score_factors, to_jsonb(app_public.calculate_lead_score(l)) as calc
               from app_public.leads l where l.id = any($1::uuid[]) order by l.id`,
            [ids],
          )
        ).rows;

      await waitFor("the lead__score jobs", async () => (await stored()).every((r) => r.lead_score_factors.total !== undefined));
      for (const r of await stored()) {
        // Raw: qualification 90, intent 50, demographic 85 (engagement depends on recorded activity).
        expect(r.lead_score_factors).toMatchObject({ qualification: 36, intent: 10, demographic: 9 });
        expect(r.lead_score).toBe(r.lead_score_factors.total);
        expect(r.lead_score_factors).toEqual(r.calc.factors);
      }

      await root.query("insert into app_public.system_config (tenant_id, key, value, value_type) values ($1, 'scoring.weights', $2, 'json')", [
        t,
        JSON.stringify({ qualification: 10, engagement: 0, intent: 80, demographic: 10 }),
      ]);
      await putFirst([`lead_score_tenant:${t}`]);
      await waitFor("the lead__score_tenant job", async () => (await stored()).every((r) => r.lead_score_factors.intent === 40));
      for (const r of await stored()) {
        expect(r.lead_score_factors).toEqual({ qualification: 9, engagement: 0, intent: 40, demographic: 9, total: 58 });
        expect(r.lead_score).toBe(58);
      }
    } finally {
      await runner?.stop();
      runner = null;
      try {
        if (owner) {
          await root.query("delete from app_public.tenants where id = $1", [owner.tenant_id]);
          await root.query("delete from app_public.users where id = $1", [owner.user_id]);
        }
      } finally {
        root.release();
      }
    }
  });
});
