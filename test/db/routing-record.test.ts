/**
 * The compact decision record (issue 15): whatever the size of the team, lead_routing_history keeps
 * the candidates examined in full (at most 10, plus the chosen one and those that changed while
 * routing) and counts everyone else at their first failing check, and explain_routing says it in
 * words. In a team of more than 10 agents routing reads only the first ready agents of the lead's
 * line and area from the routing pool: a decision among 1,000 agents examines 10, explains the
 * chosen one and counts the rest exactly from the pool; its row stays small.
 */
import { describe, expect, it } from "vitest";
import { addMember, becomeRoot, becomeUser, expectSqlError, registerUser, withRootDb } from "../helpers.ts";
import { createAgent, createLead, routeAsSystem } from "../routing-helpers.ts";

describe("compact decision records", () => {
  it("a decision among 1,000 agents examines 10, explains the chosen one and counts the other 990 at their first failing check", { timeout: 60_000 }, async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const t = owner.tenant_id!;
      await becomeRoot(client);
      // 400 who can take the lead, 300 without the skill, 200 offline, 100 serving another city.
      await client.query(
        `create temporary table team on commit drop as
           select i, gen_random_uuid() as id,
                  case when i <= 400 then 'ok' when i <= 700 then 'skill' when i <= 900 then 'offline' else 'area' end as kind
             from generate_series(1, 1000) i;
         insert into app_public.agents (id, tenant_id, display_name, languages) select id, '${t}', 'Agent ' || lpad(i::text, 4, '0'), '{en,es}' from team;
         insert into app_public.agent_availability (tenant_id, agent_id, status, max_capacity)
           select '${t}', id, case when kind = 'offline' then 'offline' else 'available' end, 10 from team;
         insert into app_public.agent_specializations (tenant_id, agent_id, service_line)
           select '${t}', id, case when kind = 'skill' then 'home' else 'auto' end from team;
         insert into app_public.agent_service_areas (tenant_id, agent_id, kind, city, region)
           select '${t}', id, 'city', case when kind = 'area' then 'Tampa' else 'Miami' end, 'FL' from team;`,
      );
      const lead = await createLead(client, t, { service_line: "auto", city: "Miami", region: "FL" });
      const h = await routeAsSystem(client, t, lead);

      expect(h.outcome).toBe("offered");
      expect(h.candidates).toHaveLength(10);
      expect(h.candidates.every((c) => c.eligible)).toBe(true);
      expect(h.candidates.map((c) => c.rank)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      expect(h.candidates.map((c) => c.agent_id)).toContain(h.chosen_agent_id);
      const { rows } = await client.query(
        "select candidate_counts as counts, pg_column_size(h.*) as bytes from app_public.lead_routing_history h where lead_id = $1",
        [lead],
      );
      expect(rows[0].counts).toEqual({
        considered: 1000,
        examined: 10,
        listed: 10,
        eligible_not_listed: 0,
        ready_not_examined: 390,
        failed: {
          skill: { n: 300, reason: "no specialization in auto licensed for FL" },
          availability: { n: 200, reason: "not available" },
          area: { n: 100, reason: "outside the service areas (lead in Miami, FL)" },
        },
      });
      expect(rows[0].bytes).toBeLessThan(4096);

      await becomeUser(client, owner);
      const { rows: explained } = await client.query("select summary, candidate_lines, candidate_counts from app_public.explain_routing($1)", [lead]);
      await becomeRoot(client);
      expect(explained[0].summary).toMatch(/Of 1000 agents, 10 were examined and 10 eligible\.$/);
      const lines: string[] = explained[0].candidate_lines;
      expect(lines).toHaveLength(14);
      expect(lines.filter((l) => l.endsWith(", chosen"))).toHaveLength(1);
      expect(lines.slice(10)).toEqual([
        "300 more agents: not eligible, failed skill (no specialization in auto licensed for FL)",
        "200 more agents: not eligible, failed availability (not available)",
        "100 more agents: not eligible, failed area (outside the service areas (lead in Miami, FL))",
        "390 more agents ready in the line and area of the lead, not examined: the first that could take the lead came earlier in the weighted round robin order",
      ]);
      expect(explained[0].candidate_counts.considered).toBe(1000);
    });
  });

  it("with no eligible agent among many, the queue reason counts the agents per failing check, and nobody is read one by one", { timeout: 60_000 }, async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const t = owner.tenant_id!;
      await becomeRoot(client);
      // 30 offline without the lead's skill, 20 offline with it.
      await client.query(
        `with a as (insert into app_public.agents (tenant_id, display_name) select '${t}', 'Off ' || lpad(i::text, 3, '0') from generate_series(1, 50) i returning id, display_name)
         , av as (insert into app_public.agent_availability (tenant_id, agent_id, status) select '${t}', id, 'offline' from a)
         insert into app_public.agent_specializations (tenant_id, agent_id, service_line) select '${t}', id, 'auto' from a where display_name > 'Off 030'`,
      );
      const lead = await createLead(client, t, { service_line: "auto" });
      const h = await routeAsSystem(client, t, lead);
      expect(h.outcome).toBe("queued");
      // Each agent counted once, at its first failing check (skill comes before availability).
      expect(h.reason).toMatch(/^No eligible agent among 50 considered \(failed checks: 30 skill, 20 availability\)/);
      expect(h.candidates).toHaveLength(0);
      const { rows } = await client.query("select candidate_counts as counts from app_public.lead_routing_history where lead_id = $1", [lead]);
      expect(rows[0].counts).toMatchObject({ considered: 50, examined: 0, listed: 0, eligible_not_listed: 0, ready_not_examined: 0 });
      expect(rows[0].counts.failed).toEqual({
        skill: { n: 30, reason: "no specialization in auto" },
        availability: { n: 20, reason: "not available" },
      });
    });
  });

  it("a decision records the version of its rule; the explanation names the rule as it was, after it changed or was deleted", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const t = owner.tenant_id!;
      const manager = await addMember(client, t, "manager");
      await becomeRoot(client);
      await createAgent(client, t, { name: "Ana" });
      await becomeUser(client, manager);
      const { rows: rule } = await client.query(
        `insert into app_public.routing_rules (name, priority, conditions, action, strategy) values ('VIP', 1, '{"tags_any": ["vip"]}', 'use_strategy', 'least_loaded') returning id, version`,
      );
      expect(rule[0].version).toBe(1);
      await becomeRoot(client);
      const first = await createLead(client, t, { tags: ["vip"] });
      await routeAsSystem(client, t, first);

      await becomeUser(client, manager);
      // What the rule does changes: version 2. A rename of nothing (same values) is no new version.
      await client.query("update app_public.routing_rules set name = 'VIP (weekend)', strategy = 'best_match' where id = $1", [rule[0].id]);
      await client.query("update app_public.routing_rules set name = 'VIP (weekend)' where id = $1", [rule[0].id]);
      // Nobody writes the version or the versions kept.
      await expectSqlError(client, "42501", () => client.query("update app_public.routing_rules set version = 99 where id = $1", [rule[0].id]));
      await expectSqlError(client, "42501", () =>
        client.query("insert into app_public.routing_rule_versions (rule_id, version, name, priority, is_active, conditions, action, agent_ids, strategy_params) values ($1, 3, 'x', 1, true, '{}', 'use_strategy', '{}', '{}')", [rule[0].id]),
      );
      const { rows: versions } = await client.query("select version, name, strategy from app_public.routing_rule_versions where rule_id = $1 order by version", [rule[0].id]);
      expect(versions).toEqual([
        { version: 1, name: "VIP", strategy: "least_loaded" },
        { version: 2, name: "VIP (weekend)", strategy: "best_match" },
      ]);
      await becomeRoot(client);
      const second = await createLead(client, t, { tags: ["vip"] });
      await routeAsSystem(client, t, second);
      const { rows: recorded } = await client.query("select lead_id, rule_version from app_public.lead_routing_history where lead_id = any($1) order by routed_at", [[first, second]]);
      expect(recorded.map((r) => r.rule_version)).toEqual([1, 2]);

      // Deleted: the old decisions still say which rule, as it was.
      await client.query("delete from app_public.routing_rules where id = $1", [rule[0].id]);
      await becomeUser(client, owner);
      const { rows: explained } = await client.query("select rule_name, rule_version, summary from app_public.explain_routing($1)", [first]);
      await becomeRoot(client);
      expect(explained[0]).toMatchObject({ rule_name: "VIP", rule_version: 1 });
      expect(explained[0].summary).toContain('Rule "VIP" (version 1) matched.');
    });
  });
});
