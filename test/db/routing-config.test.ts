/**
 * Routing configuration (created in
 * migrations/committed/000004-routing-engine-agents-skills-areas-availability-slots-rules-.sql):
 * rule validation (lead filter,
 * agents of the tenant, strategy parameters), experiments (lifecycle, variants locked while running,
 * sticky deterministic assignment, the split, results with a two-proportion z-test), agent
 * performance metrics, city event statistics, and the nightly tasks through the real worker.
 */
import pg from "pg";
import { describe, expect, it } from "vitest";
import { startWorker } from "../../src/worker/start.ts";
import {
  addMember, becomeRoot, becomeUser, db, expectSqlError, ownerPool, registerUser, rootPool, withRootDb, type RegisteredUser,
} from "../helpers.ts";

interface Tenant {
  owner: RegisteredUser;
  manager: RegisteredUser;
  agent: RegisteredUser;
  agents: string[];
}

/** A tenant with an owner, a manager, an agent member and `agentCount` agents (inserted as root; ends as root). */
async function setupTenant(client: pg.ClientBase, agentCount = 2, businessName = "Routing Config"): Promise<Tenant> {
  const owner = await registerUser(client, { businessName });
  const manager = await addMember(client, owner.tenant_id!, "manager");
  const agent = await addMember(client, owner.tenant_id!, "agent");
  await becomeRoot(client);
  const agents: string[] = [];
  for (let i = 0; i < agentCount; i++) {
    const { rows } = await client.query<{ id: string }>(
      "insert into app_public.agents (tenant_id, display_name) values ($1, $2) returning id", [owner.tenant_id, `Agent ${i + 1}`]);
    agents.push(rows[0]!.id);
  }
  return { owner, manager, agent, agents };
}

/** Inserts `count` leads as root with reproducible ids (md5 of prefix and number); returns the ids. */
async function insertLeads(client: pg.ClientBase, tenantId: string, count: number, prefix: string, extra: Record<string, unknown> = {}): Promise<string[]> {
  const { rows } = await client.query<{ id: string }>(
    `insert into app_public.leads (id, tenant_id, first_name, email, status, city, region, event_type, estimated_value)
     select md5($3::text || ':' || i)::uuid, $1, 'Lead ' || i, $3::text || '-' || i || '@example.test',
            coalesce(x->>'status', 'new'), x->>'city', x->>'region', x->>'event_type', (x->>'estimated_value')::numeric
       from generate_series(1, $2::int) i, (select $4::jsonb as x) p
     returning id`,
    [tenantId, count, prefix, JSON.stringify(extra)],
  );
  return rows.map((r) => r.id);
}

async function createExperiment(
  client: pg.ClientBase, name: string, variants: { name: string; allocation: number; control?: boolean; strategy?: string; parameters?: object }[],
): Promise<{ id: string; variants: Record<string, string> }> {
  const { rows } = await client.query<{ id: string }>("insert into app_public.routing_experiments (name) values ($1) returning id", [name]);
  const id = rows[0]!.id;
  const ids: Record<string, string> = {};
  for (const v of variants) {
    const r = await client.query<{ id: string }>(
      `insert into app_public.routing_experiment_variants (experiment_id, name, strategy, parameters, traffic_allocation, is_control)
       values ($1, $2, $3, $4, $5, $6) returning id`,
      [id, v.name, v.strategy ?? "weighted_round_robin", JSON.stringify(v.parameters ?? {}), v.allocation, v.control ?? false],
    );
    ids[v.name] = r.rows[0]!.id;
  }
  return { id, variants: ids };
}

const count = async (client: pg.ClientBase, sql: string, params: unknown[] = []) =>
  (await client.query<{ n: number }>(`select count(*)::int as n from ${sql}`, params)).rows[0]!.n;

/** Removes a committed tenant made by a test, its user and the jobs its leads enqueued. */
async function cleanup(root: pg.ClientBase, owner: RegisteredUser): Promise<void> {
  await root.query(
    `delete from graphile_worker._private_jobs
      where payload->>'tenant_id' = $1::text
         or (key like 'lead_score:%' and payload->>'lead_id' in (select id::text from app_public.leads where tenant_id = $1::uuid))`,
    [owner.tenant_id]);
  await root.query("delete from app_public.tenants where id = $1", [owner.tenant_id]);
  await root.query("delete from app_public.users where id = $1", [owner.user_id]);
}

// ---------------------------------------------------------------------------------------------
// Rule validation
// ---------------------------------------------------------------------------------------------

describe("routing rule validation", () => {
  it("refuses unknown filter fields, foreign or unknown agents and bad strategy parameters, writing nothing", async () => {
    await withRootDb(async (client) => {
      const t = await setupTenant(client);
      const other = await setupTenant(client, 1, "Other Tenant");
      const foreignAgent = other.agents[0]!;
      await becomeUser(client, t.manager);
      const insert = `insert into app_public.routing_rules (name, conditions, action, agent_ids, strategy, strategy_params)
                      values ($1, $2, $3, $4, $5, $6) returning id`;

      const unknownField = await expectSqlError(client, "22023", () =>
        client.query(insert, ["r1", { colour: "red" }, "use_strategy", [], "least_loaded", {}]));
      expect(unknownField.message).toMatch(/^Unknown filter field 'colour'\. Allowed: status, /);
      const badStatus = await expectSqlError(client, "22023", () =>
        client.query(insert, ["r1", { status: ["nope"] }, "use_strategy", [], "least_loaded", {}]));
      expect(badStatus.message).toMatch(/Unknown status 'nope'/);

      const unknownId = "00000000-0000-4000-8000-000000000001";
      const unknownAgent = await expectSqlError(client, "22023", () =>
        client.query(insert, ["r2", {}, "route_to_agents", [t.agents[0], unknownId], null, {}]));
      expect(unknownAgent.message).toBe(`Unknown agent ${unknownId} in agent_ids: every agent must be an agent of this tenant`);
      const foreign = await expectSqlError(client, "22023", () =>
        client.query(insert, ["r2", {}, "route_to_agent", [foreignAgent], null, {}]));
      expect(foreign.message).toContain(foreignAgent);
      await expectSqlError(client, "22023", () => client.query(insert, ["r2", {}, "route_to_agents", [t.agents[0], t.agents[0]], null, {}]));

      for (const [strategy, params, pattern] of [
        ["score_tiered", { hot_threshold: 150 }, /'hot_threshold' in strategy_params must be a whole number from 0 to 100/],
        ["score_tiered", { hot_threshold: "80" }, /'hot_threshold'/],
        ["score_tiered", { hot_threshold: 70.5 }, /'hot_threshold'/],
        ["score_tiered", { hot: 80 }, /^Unknown parameter 'hot' in strategy_params for strategy score_tiered\. Allowed: hot_threshold$/],
        ["least_loaded", { x: 1 }, /This strategy takes no parameters/],
        ["best_match", { min_proficiency: 3 }, /^Unknown parameter 'min_proficiency' in strategy_params for strategy best_match\. This strategy takes no parameters\.$/],
      ] as const) {
        const error = await expectSqlError(client, "22023", () => client.query(insert, ["r3", {}, "use_strategy", [], strategy, params]));
        expect(error.message, JSON.stringify(params)).toMatch(pattern);
      }
      await expectSqlError(client, "22023", () => client.query(insert, ["r3", {}, "route_to_queue", [], null, { x: 1 }]));
      expect(await count(client, "app_public.routing_rules")).toBe(0);

      // Valid rules are saved; a bad update is refused and leaves the rule as it was.
      const ok = await client.query<{ id: string }>(insert,
        ["Hot FL", { status: ["hot", "qualified"], score_min: 60, region: "FL" }, "use_strategy", [], "score_tiered", { hot_threshold: 80 }]);
      await client.query(insert, ["Team", {}, "route_to_agents", t.agents, "least_loaded", {}]);
      await client.query(insert, ["Best", {}, "use_strategy", [], "best_match", {}]);
      const id = ok.rows[0]!.id;
      await expectSqlError(client, "22023", () => client.query("update app_public.routing_rules set conditions = '{\"bogus\": 1}' where id = $1", [id]));
      await expectSqlError(client, "22023", () =>
        client.query("update app_public.routing_rules set action = 'route_to_agent', agent_ids = $2 where id = $1", [id, [foreignAgent]]));
      await expectSqlError(client, "22023", () =>
        client.query("update app_public.routing_rules set strategy_params = '{\"hot_threshold\": -1}' where id = $1", [id]));
      const { rows } = await client.query("select conditions, action, agent_ids, strategy_params from app_public.routing_rules where id = $1", [id]);
      expect(rows[0]).toEqual({
        conditions: { status: ["hot", "qualified"], score_min: 60, region: "FL" }, action: "use_strategy", agent_ids: [],
        strategy_params: { hot_threshold: 80 },
      });
      expect(await count(client, "app_public.routing_rules")).toBe(3);
    });
  });

  it("agents may not configure rules or experiments (42501), nor reach the private assignment function", async () => {
    await withRootDb(async (client) => {
      const t = await setupTenant(client);
      await becomeUser(client, t.manager);
      const exp = await createExperiment(client, "E", [{ name: "a", allocation: 50, control: true }, { name: "b", allocation: 50 }]);
      const [lead] = await insertLeadsAsRoot(client, t, 1, "perm");
      await becomeUser(client, t.agent);
      const denied = await expectSqlError(client, "42501", () =>
        client.query("insert into app_public.routing_rules (name, action, strategy) values ('x', 'use_strategy', 'least_loaded')"));
      expect(denied.message).toBe("Only owners, admins and managers can change routing rules");
      await expectSqlError(client, "42501", () => client.query("insert into app_public.routing_experiments (name) values ('x')"));
      await expectSqlError(client, "42501", () => client.query("update app_public.routing_experiment_variants set traffic_allocation = 10"));
      for (const call of [
        "select app_public.start_routing_experiment($1)",
        "select app_public.stop_routing_experiment($1)",
      ]) {
        const e = await expectSqlError(client, "42501", () => client.query(call, [exp.id]));
        expect(e.message).toMatch(/^Only managers, admins and owners can /);
      }
      await expectSqlError(client, "42501", () =>
        client.query("select app_public.declare_routing_experiment_winner($1, $2)", [exp.id, exp.variants.a]));
      await expectSqlError(client, "42501", () =>
        client.query("select app_private.experiment_variant_for_lead($1, $2)", [t.owner.tenant_id, lead]));
      await becomeRoot(client);
      expect((await client.query("select status from app_public.routing_experiments where id = $1", [exp.id])).rows[0].status).toBe("draft");
    });
  });
});

async function insertLeadsAsRoot(client: pg.ClientBase, t: Tenant, n: number, prefix: string, extra: Record<string, unknown> = {}): Promise<string[]> {
  await becomeRoot(client);
  return insertLeads(client, t.owner.tenant_id!, n, `${prefix}-${t.owner.tenant_id}`, extra);
}

// ---------------------------------------------------------------------------------------------
// Experiment lifecycle
// ---------------------------------------------------------------------------------------------

describe("routing experiments", () => {
  it("start checks the variants and that no other experiment runs; variants are locked while running", async () => {
    await withRootDb(async (client) => {
      const t = await setupTenant(client);
      await becomeUser(client, t.manager);
      const state = async (id: string) =>
        (await client.query("select status, started_at is not null as started, stopped_at is not null as stopped, winner_variant_id from app_public.routing_experiments where id = $1", [id])).rows[0];
      const start = (id: string) => client.query("select * from app_public.start_routing_experiment($1)", [id]);

      const e1 = await createExperiment(client, "Ninety", [{ name: "control", allocation: 50, control: true }, { name: "b", allocation: 40 }]);
      const ninety = await expectSqlError(client, "22023", () => start(e1.id));
      expect(ninety.message).toBe("Traffic allocations add up to 90, they must add up to 100");
      expect(await state(e1.id)).toEqual({ status: "draft", started: false, stopped: false, winner_variant_id: null });
      await client.query("update app_public.routing_experiment_variants set traffic_allocation = 50.5 where id = $1", [e1.variants.b]);
      expect((await expectSqlError(client, "22023", () => start(e1.id))).message).toBe("Traffic allocations add up to 100.5, they must add up to 100");

      const noControl = await createExperiment(client, "No control", [{ name: "a", allocation: 50 }, { name: "b", allocation: 50 }]);
      expect((await expectSqlError(client, "22023", () => start(noControl.id))).message).toMatch(/exactly one control/);
      const single = await createExperiment(client, "Single", [{ name: "a", allocation: 100, control: true }]);
      expect((await expectSqlError(client, "22023", () => start(single.id))).message).toMatch(/at least two variants/);
      await expectSqlError(client, "22023", () =>
        client.query(`insert into app_public.routing_experiment_variants (experiment_id, name, strategy, parameters, traffic_allocation)
                      values ($1, 'bad', 'score_tiered', '{"bogus": 1}', 10)`, [single.id]));
      await expectSqlError(client, "P0002", () => start("00000000-0000-4000-8000-000000000002"));

      await client.query("update app_public.routing_experiment_variants set traffic_allocation = 50 where id = $1", [e1.variants.b]);
      const started = await start(e1.id);
      expect(started.rows[0]).toMatchObject({ status: "running", stopped_at: null });
      expect(started.rows[0].started_at).toBeInstanceOf(Date);
      await expectSqlError(client, "22023", () => start(e1.id));

      // Locked while running.
      const locked = await expectSqlError(client, "22023", () =>
        client.query("update app_public.routing_experiment_variants set traffic_allocation = 60 where id = $1", [e1.variants.b]));
      expect(locked.message).toBe('The variants of experiment "Ninety" cannot be changed while it is running; stop it first');
      await expectSqlError(client, "22023", () => client.query("delete from app_public.routing_experiment_variants where id = $1", [e1.variants.b]));
      await expectSqlError(client, "22023", () =>
        client.query("insert into app_public.routing_experiment_variants (experiment_id, name, strategy, traffic_allocation) values ($1, 'c', 'least_loaded', 1)", [e1.id]));

      // Only one running experiment per tenant.
      const e2 = await createExperiment(client, "Second", [{ name: "control", allocation: 20, control: true }, { name: "b", allocation: 80, strategy: "least_loaded" }]);
      const twice = await expectSqlError(client, "23505", () => start(e2.id));
      expect(twice.message).toBe('Experiment "Ninety" is already running; only one experiment can run at a time, stop it first');
      expect(await state(e2.id)).toMatchObject({ status: "draft", started: false });

      // Stop, then the other one may start; the winner must be one of the experiment's variants.
      await expectSqlError(client, "22023", () => client.query("select app_public.stop_routing_experiment($1)", [e2.id]));
      await client.query("select app_public.stop_routing_experiment($1)", [e1.id]);
      expect(await state(e1.id)).toMatchObject({ status: "stopped", started: true, stopped: true });
      await start(e2.id);
      const notMine = await expectSqlError(client, "22023", () =>
        client.query("select app_public.declare_routing_experiment_winner($1, $2)", [e1.id, e2.variants.b]));
      expect(notMine.message).toBe(`Variant ${e2.variants.b} is not a variant of experiment "Ninety"`);
      await client.query("select app_public.declare_routing_experiment_winner($1, $2)", [e1.id, e1.variants.b]);
      expect(await state(e1.id)).toEqual({ status: "completed", started: true, stopped: true, winner_variant_id: e1.variants.b });
      await expectSqlError(client, "22023", () => client.query("select app_public.declare_routing_experiment_winner($1, $2)", [e1.id, e1.variants.b]));
      await expectSqlError(client, "22023", () => client.query("select app_public.declare_routing_experiment_winner($1, $2)", [noControl.id, noControl.variants.a]));
      // Declaring a winner of a running experiment also stops it.
      await client.query("select app_public.declare_routing_experiment_winner($1, $2)", [e2.id, e2.variants.control]);
      expect(await state(e2.id)).toMatchObject({ status: "completed", stopped: true });
      // Variants of an experiment no longer running can be edited again.
      await client.query("update app_public.routing_experiment_variants set name = 'renamed' where id = $1", [e1.variants.b]);

      // Another tenant cannot start this tenant's experiments.
      const other = await setupTenant(client, 0, "Other");
      await becomeUser(client, other.manager);
      await expectSqlError(client, "P0002", () => start(noControl.id));
    });
  });

  it("assigns leads stickily and reproducibly, splitting 50/50 and 20/80 within a few percent over 2,000 leads", async () => {
    await withRootDb(async (client) => {
      const t = await setupTenant(client);
      const tenantId = t.owner.tenant_id!;
      const variantOf = async (leads: string[]) => {
        const { rows } = await client.query<{ lead_id: string; variant_id: string | null; strategy: string | null; experiment_id: string | null }>(
          `select l.id as lead_id, (c).variant_id, (c).strategy, (c).experiment_id
             from unnest($2::uuid[]) l(id), app_private.experiment_variant_for_lead($1, l.id) c`, [tenantId, leads]);
        return new Map(rows.map((r) => [r.lead_id, r]));
      };

      // No experiment running: null, nothing recorded.
      const early = await insertLeadsAsRoot(client, t, 5, "early");
      expect([...(await variantOf(early)).values()].every((r) => r.variant_id === null)).toBe(true);
      expect(await count(client, "app_public.lead_experiment_assignments")).toBe(0);

      await becomeUser(client, t.manager);
      const half = await createExperiment(client, "Half", [
        { name: "control", allocation: 50, control: true },
        { name: "tiered", allocation: 50, strategy: "score_tiered", parameters: { hot_threshold: 75 } },
      ]);
      await client.query("select app_public.start_routing_experiment($1)", [half.id]);
      const leads = await insertLeadsAsRoot(client, t, 2000, "half");
      const first = await variantOf(leads);
      const shares = (m: Map<string, { variant_id: string | null }>, variantId: string) =>
        [...m.values()].filter((r) => r.variant_id === variantId).length / m.size;
      expect(Math.abs(shares(first, half.variants.control!) - 0.5)).toBeLessThan(0.04);
      expect(Math.abs(shares(first, half.variants.tiered!) - 0.5)).toBeLessThan(0.04);
      const tiered = [...first.values()].find((r) => r.variant_id === half.variants.tiered)!;
      expect(tiered).toMatchObject({ strategy: "score_tiered", experiment_id: half.id });
      expect(await count(client, "app_public.lead_experiment_assignments where experiment_id = $1", [half.id])).toBe(2000);

      // Sticky: asking again gives the same variant and writes nothing.
      const again = await variantOf(leads);
      expect([...again.entries()].every(([id, r]) => r.variant_id === first.get(id)!.variant_id)).toBe(true);
      expect(await count(client, "app_public.lead_experiment_assignments")).toBe(2000);
      // Reproducible: forgetting the assignments and assigning again gives the same split, lead by lead.
      await client.query("savepoint forget");
      await client.query("delete from app_public.lead_experiment_assignments");
      const replay = await variantOf(leads);
      expect([...replay.entries()].every(([id, r]) => r.variant_id === first.get(id)!.variant_id)).toBe(true);
      await client.query("rollback to savepoint forget");

      // Stopped: no variant any more, for assigned leads and new ones alike.
      await becomeUser(client, t.manager);
      await client.query("select app_public.stop_routing_experiment($1)", [half.id]);
      await becomeRoot(client);
      expect([...(await variantOf(leads.slice(0, 20))).values()].every((r) => r.variant_id === null)).toBe(true);

      // 20/80 on fresh leads.
      await becomeUser(client, t.manager);
      const skewed = await createExperiment(client, "Skewed", [
        { name: "control", allocation: 20, control: true },
        { name: "loaded", allocation: 80, strategy: "least_loaded" },
      ]);
      await client.query("select app_public.start_routing_experiment($1)", [skewed.id]);
      const more = await insertLeadsAsRoot(client, t, 2000, "skewed");
      const split = await variantOf(more);
      expect(Math.abs(shares(split, skewed.variants.control!) - 0.2)).toBeLessThan(0.03);
      expect(Math.abs(shares(split, skewed.variants.loaded!) - 0.8)).toBeLessThan(0.03);
      // Leads of the stopped experiment do not join the new one (one assignment per lead).
      expect([...(await variantOf(leads.slice(0, 20))).values()].every((r) => r.variant_id === null)).toBe(true);
      await expectSqlError(client, "P0002", () =>
        client.query("select app_private.experiment_variant_for_lead($1, $2)", [tenantId, "00000000-0000-4000-8000-000000000003"]));
    });
  });

  it("10 parallel connections assigning the same lead agree on one variant and write one row", async () => {
    const root = await rootPool().connect();
    let owner: RegisteredUser | null = null;
    const clients: pg.Client[] = [];
    try {
      owner = await registerUser(root, { businessName: "Parallel Experiments" });
      const tenantId = owner.tenant_id!;
      const exp = await root.query<{ id: string }>("insert into app_public.routing_experiments (tenant_id, name) values ($1, 'P') returning id", [tenantId]);
      for (const [name, allocation, control] of [["a", 34, true], ["b", 33, false], ["c", 33, false]] as const) {
        await root.query(
          `insert into app_public.routing_experiment_variants (tenant_id, experiment_id, name, strategy, traffic_allocation, is_control)
           values ($1, $2, $3, 'least_loaded', $4, $5)`, [tenantId, exp.rows[0]!.id, name, allocation, control]);
      }
      await root.query("update app_public.routing_experiments set status = 'running', started_at = now() where id = $1", [exp.rows[0]!.id]);
      const [lead] = await insertLeads(root, tenantId, 1, `parallel-${tenantId}`);

      for (let i = 0; i < 10; i++) {
        const c = new pg.Client({ connectionString: db.ownerUrl });
        await c.connect();
        clients.push(c);
      }
      const results = await Promise.all(clients.map(async (c) => {
        await c.query("begin");
        const { rows } = await c.query<{ variant_id: string }>("select (app_private.experiment_variant_for_lead($1, $2)).variant_id", [tenantId, lead]);
        await c.query("select pg_sleep(0.05)");
        await c.query("commit");
        return rows[0]!.variant_id;
      }));
      expect(new Set(results).size).toBe(1);
      expect(results[0]).toMatch(/^[0-9a-f-]{36}$/);
      const { rows } = await root.query("select variant_id from app_public.lead_experiment_assignments where lead_id = $1", [lead]);
      expect(rows).toEqual([{ variant_id: results[0] }]);
    } finally {
      await Promise.all(clients.map((c) => c.end().catch(() => {})));
      try {
        if (owner) await cleanup(root, owner);
      } finally {
        root.release();
      }
    }
  });

  it("results count contacted, qualified and converted leads per variant with the z-test p-value against the control", async () => {
    await withRootDb(async (client) => {
      const t = await setupTenant(client);
      const tenantId = t.owner.tenant_id!;
      await becomeUser(client, t.manager);
      const exp = await createExperiment(client, "Results", [
        { name: "control", allocation: 40, control: true },
        { name: "b", allocation: 40, strategy: "least_loaded" },
        { name: "empty", allocation: 20, strategy: "best_match" },
      ]);
      await becomeRoot(client);
      const assign = async (variant: string, n: number, prefix: string, status: string) => {
        const ids = await insertLeads(client, tenantId, n, `${prefix}-${tenantId}`, { status });
        await client.query(
          `insert into app_public.lead_experiment_assignments (tenant_id, lead_id, experiment_id, variant_id)
           select $1, id, $2, $3 from unnest($4::uuid[]) id`, [tenantId, exp.id, exp.variants[variant], ids]);
        return ids;
      };
      // Control, 100 leads: 10 won, 15 qualified, 20 contacted, 5 contacted then lost, 50 new.
      await assign("control", 10, "c-won", "won");
      await assign("control", 15, "c-qualified", "qualified");
      await assign("control", 20, "c-contacted", "contacted");
      const lost = await assign("control", 5, "c-lost", "contacted");
      await client.query("update app_public.leads set status = 'lost' where id = any ($1)", [lost]);
      await assign("control", 50, "c-new", "new");
      // b, 100 leads: 20 won, 10 hot, 10 nurturing, 60 new; one more won lead that was deleted (left out).
      await assign("b", 20, "b-won", "won");
      await assign("b", 10, "b-hot", "hot");
      await assign("b", 10, "b-nurturing", "nurturing");
      await assign("b", 60, "b-new", "new");
      const deleted = await assign("b", 1, "b-deleted", "won");
      await client.query("update app_public.leads set deleted_at = now() where id = any ($1)", [deleted]);

      await becomeUser(client, t.manager);
      const { rows } = await client.query(
        `select r.* from app_public.routing_experiments e, app_public.routing_experiment_results(e) r where e.id = $1`, [exp.id]);
      expect(rows.map((r) => r.variant_name)).toEqual(["control", "b", "empty"]);
      const [control, b, empty] = rows;
      expect(control).toMatchObject({
        is_control: true, strategy: "weighted_round_robin", leads: 100, contacted: 50, qualified: 25, converted: 10,
        contact_rate: "0.5000", qualification_rate: "0.2500", conversion_rate: "0.1000", p_value: null,
      });
      expect(b).toMatchObject({
        is_control: false, leads: 100, contacted: 40, qualified: 30, converted: 20,
        contact_rate: "0.4000", qualification_rate: "0.3000", conversion_rate: "0.2000",
      });
      // By hand: pooled p = 30/200 = 0.15; se = sqrt(0.15 * 0.85 * (1/100 + 1/100)) = 0.0504975;
      // z = (0.2 - 0.1) / se = 1.980295; two-sided p = 2 (1 - Phi(1.980295)) = 0.047670.
      expect(b.p_value).toBeCloseTo(0.04767, 4);
      expect(empty).toMatchObject({ leads: 0, contacted: 0, converted: 0, conversion_rate: null, p_value: null });

      // The normal tail approximation, against reference values of erfc.
      const erfc = async (x: number) => (await client.query<{ v: number }>("select app_hidden.erfc($1) as v", [x])).rows[0]!.v;
      for (const [x, expected] of [[0, 1], [0.5, 0.4795001221869535], [1, 0.15729920705028513], [-1, 1.8427007929497148],
        [2, 0.004677734981047266], [3, 2.209049699858544e-5], [6, 2.1519736712498913e-17]] as const) {
        expect(Math.abs((await erfc(x)) - expected) / expected, `erfc(${x})`).toBeLessThan(2e-7);
      }

      // Another tenant sees nothing of it.
      const other = await setupTenant(client, 0, "Other");
      await becomeUser(client, other.manager);
      expect((await client.query(
        `select r.* from app_public.routing_experiments e, app_public.routing_experiment_results(e) r where e.id = $1`, [exp.id])).rows).toEqual([]);
    });
  });
});

// ---------------------------------------------------------------------------------------------
// Metrics and city statistics
// ---------------------------------------------------------------------------------------------

describe("agent performance metrics", () => {
  it("counts assigned and converted leads, conversion by tier at assignment, and handling time, per period", async () => {
    await withRootDb(async (client) => {
      const t = await setupTenant(client);
      const tenantId = t.owner.tenant_id!;
      const [a, b] = t.agents as [string, string];
      const lead = async (name: string, status: string) => (await insertLeads(client, tenantId, 1, `${name}-${tenantId}`, { status }))[0]!;
      const score = (id: string, value: number, at: string) =>
        client.query(`insert into app_public.lead_score_history (tenant_id, lead_id, score, factors, calculated_at) values ($1, $2, $3, '{}', ${at})`, [tenantId, id, value]);
      const assignTo = (id: string, agent: string, at: string) =>
        client.query(`insert into app_public.lead_assignments (tenant_id, lead_id, to_agent_id, strategy, assigned_at) values ($1, $2, $3, 'least_loaded', ${at})`, [tenantId, id, agent]);

      const l1 = await lead("hot-won", "won");
      const l2 = await lead("hot-open", "contacted");
      const l3 = await lead("warm-won", "won");
      const l4 = await lead("cold-open", "new");
      const l6 = await lead("cold-then-hot", "qualified");
      await score(l1, 80, "now() - interval '2 hours'");
      await score(l2, 75, "now() - interval '2 hours'");
      await score(l3, 90, "now() - interval '3 hours'");
      await score(l3, 50, "now() - interval '2 hours'"); // the latest before the assignment counts
      await score(l6, 30, "now() - interval '2 hours'");
      await score(l6, 95, "now() + interval '1 hour'"); // after the assignment: ignored
      for (const id of [l1, l2, l3, l4, l6]) await assignTo(id, a, "now()");
      await assignTo(l1, a, "now()"); // the same lead twice counts once
      // Agent b: a won cold lead in the previous month.
      const l5 = await lead("last-month", "won");
      await assignTo(l5, b, "(date_trunc('month', now() at time zone 'America/Chicago') - interval '10 days') at time zone 'America/Chicago'");
      // Offer handling of agent a: 30 s and 90 s to accept; a rejected offer does not count.
      for (const [secs, status] of [[30, "accepted"], [90, "accepted"], [5, "rejected"]] as const) {
        await client.query(
          `insert into app_public.routing_offers (tenant_id, lead_id, agent_id, status, offered_at, expires_at, responded_at)
           values ($1, $2, $3, $4, now() - interval '10 minutes', now() + interval '1 hour', now() - interval '10 minutes' + $5 * interval '1 second')`,
          [tenantId, l1, a, status, secs]);
      }

      const refresh = async () =>
        (await client.query<{ n: number }>("select app_private.refresh_agent_performance_metrics($1) as n", [tenantId])).rows[0]!.n;
      expect(await refresh()).toBe(2 * 6); // 2 agents × (2 days, 2 weeks, 2 months)
      const month = `date_trunc('month', now() at time zone 'America/Chicago')::date`;
      const metrics = async (agent: string, start: string) =>
        (await client.query(
          `select leads_assigned, leads_converted, conversion_rate_hot, conversion_rate_warm, conversion_rate_cold, avg_handling_seconds
             from app_public.agent_performance_metrics where tenant_id = $1 and agent_id = $2 and period = 'month' and period_start = ${start}`,
          [tenantId, agent])).rows[0];
      expect(await metrics(a, month)).toEqual({
        leads_assigned: 5, leads_converted: 2, conversion_rate_hot: "0.5000", conversion_rate_warm: "1.0000",
        conversion_rate_cold: "0.0000", avg_handling_seconds: 60,
      });
      expect(await metrics(b, `(${month} - interval '1 month')::date`)).toEqual({
        leads_assigned: 1, leads_converted: 1, conversion_rate_hot: null, conversion_rate_warm: null,
        conversion_rate_cold: "1.0000", avg_handling_seconds: null,
      });
      expect(await metrics(b, month)).toEqual({
        leads_assigned: 0, leads_converted: 0, conversion_rate_hot: null, conversion_rate_warm: null,
        conversion_rate_cold: null, avg_handling_seconds: null,
      });
      const week = await client.query(
        `select leads_assigned from app_public.agent_performance_metrics
          where agent_id = $1 and period = 'week' and period_start = date_trunc('week', now() at time zone 'America/Chicago')::date`, [a]);
      expect(week.rows).toEqual([{ leads_assigned: 5 }]);

      // Idempotent: a second run updates the same rows; a lead won since then is counted.
      await client.query("update app_public.leads set status = 'won' where id = $1", [l4]);
      expect(await refresh()).toBe(12);
      expect(await count(client, "app_public.agent_performance_metrics where tenant_id = $1", [tenantId])).toBe(12);
      expect((await metrics(a, month)).leads_converted).toBe(3);
      expect((await metrics(a, month)).conversion_rate_cold).toBe("0.5000");

      // Members read them.
      await becomeUser(client, t.agent);
      expect(await count(client, "app_public.agent_performance_metrics")).toBe(12);
    });
  });
});

describe("city event statistics", () => {
  it("counts leads, bookings and average value per city, region, event type and month", async () => {
    await withRootDb(async (client) => {
      const t = await setupTenant(client, 0);
      const tenantId = t.owner.tenant_id!;
      await insertLeads(client, tenantId, 1, `m1-${tenantId}`, { city: "Miami", region: "FL", event_type: "wedding", estimated_value: 1000, status: "won" });
      await insertLeads(client, tenantId, 1, `m2-${tenantId}`, { city: " miami ", region: "fl", event_type: "Wedding", estimated_value: 2000 });
      await insertLeads(client, tenantId, 1, `m3-${tenantId}`, { city: "MIAMI", region: "FL", event_type: "wedding" });
      await insertLeads(client, tenantId, 2, `o-${tenantId}`, { city: "Orlando", region: "FL", event_type: "birthday", estimated_value: 300, status: "recruited" });
      await insertLeads(client, tenantId, 1, `none-${tenantId}`, { city: "Tampa", region: "FL" }); // no event type
      const [gone] = await insertLeads(client, tenantId, 1, `gone-${tenantId}`, { city: "Tampa", region: "FL", event_type: "wedding" });
      await client.query("update app_public.leads set deleted_at = now() where id = $1", [gone]);
      // A row no lead supports any more is removed.
      await client.query(
        "insert into app_public.city_event_stats (tenant_id, city, region, event_type, period_start, leads) values ($1, 'Tampa', 'FL', 'wedding', '2020-01-01', 9)", [tenantId]);

      const refresh = async () => (await client.query<{ n: number }>("select app_private.refresh_city_event_stats($1) as n", [tenantId])).rows[0]!.n;
      expect(await refresh()).toBe(2);
      const stats = async () => (await client.query(
        `select city, region, event_type, period_start = date_trunc('month', now() at time zone 'America/Chicago')::date as this_month,
                leads, booked, avg_estimated_value
           from app_public.city_event_stats where tenant_id = $1 order by city`, [tenantId])).rows;
      expect(await stats()).toEqual([
        { city: "Miami", region: "FL", event_type: "wedding", this_month: true, leads: 3, booked: 1, avg_estimated_value: "1500.00" },
        { city: "Orlando", region: "FL", event_type: "birthday", this_month: true, leads: 2, booked: 2, avg_estimated_value: "300.00" },
      ]);
      // Idempotent.
      expect(await refresh()).toBe(2);
      expect((await stats()).length).toBe(2);
    });
  });
});

// ---------------------------------------------------------------------------------------------
// Nightly tasks through the worker
// ---------------------------------------------------------------------------------------------

describe("nightly routing tasks", () => {
  it("routing__refresh_metrics and routing__refresh_city_stats run through the worker", async () => {
    const root = await rootPool().connect();
    let owner: RegisteredUser | null = null;
    try {
      owner = await registerUser(root, { businessName: "Nightly Routing" });
      const tenantId = owner.tenant_id!;
      const agent = (await root.query<{ id: string }>(
        "insert into app_public.agents (tenant_id, display_name) values ($1, 'Night Agent') returning id", [tenantId])).rows[0]!.id;
      const [lead] = await insertLeads(root, tenantId, 1, `nightly-${tenantId}`, { city: "Austin", region: "TX", event_type: "wedding", status: "won" });
      await root.query("insert into app_public.lead_assignments (tenant_id, lead_id, to_agent_id, strategy) values ($1, $2, $3, 'least_loaded')",
        [tenantId, lead, agent]);
      await root.query("select app_private.add_job('routing__refresh_metrics', json_build_object('tenant_id', $1::uuid))", [tenantId]);
      await root.query("select app_private.add_job('routing__refresh_city_stats', json_build_object('tenant_id', $1::uuid))", [tenantId]);

      const runner = await startWorker(ownerPool(), 1, { only: ["routing__refresh_metrics", "routing__refresh_city_stats"] });
      try {
        const deadline = Date.now() + 30_000;
        let done = false;
        while (Date.now() < deadline && !done) {
          await new Promise((r) => setTimeout(r, 250));
          const { rows } = await root.query(
            `select (select count(*)::int from app_public.agent_performance_metrics where tenant_id = $1 and period = 'month' and leads_converted = 1) as metrics,
                    (select count(*)::int from app_public.city_event_stats where tenant_id = $1 and city = 'Austin' and booked = 1) as stats,
                    (select count(*)::int from graphile_worker._private_jobs j join graphile_worker._private_tasks k on k.id = j.task_id
                      where k.identifier like 'routing__refresh_%' and j.payload->>'tenant_id' = $1::text) as jobs`, [tenantId]);
          done = rows[0].metrics === 1 && rows[0].stats === 1 && rows[0].jobs === 0;
        }
        expect(done).toBe(true);
      } finally {
        await runner.stop();
      }
    } finally {
      try {
        if (owner) await cleanup(root, owner);
      } finally {
        root.release();
      }
    }
  });
});
