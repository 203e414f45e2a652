/**
 * The routing pool at size (issue 15, point 1): the work of a decision does not grow with the team.
 * Measured in buffers touched, not in time: a decision among 5,000 agents against one among 50.
 * In a database of its own, so that VACUUM can clean up after the bulk load (other test files'
 * open transactions would keep dead row versions, and a decision would walk through them).
 */
import { describe, expect, it } from "vitest";
import { becomeRoot, registerUser, rootPool, useOwnDatabase } from "../helpers.ts";
import { createLead, dropCommittedTenant, routeAsSystem, setRoutingConfig } from "../routing-helpers.ts";

useOwnDatabase("pool_size");

describe("the routing pool at size", () => {
  it("does work that does not grow with the team: a decision among 5,000 agents touches about as many buffers as among 50", { timeout: 180_000 }, async () => {
    // Committed teams, vacuumed and analyzed as a live database would be, so that buffers count pages a decision needs.
    const client = await rootPool().connect();
    const buffers: Record<number, number> = {};
    const examined: Record<number, number> = {};
    const tenants: Array<{ tenantId: string; userId: string }> = [];
    try {
      for (const size of [50, 5000]) {
        const owner = await registerUser(client);
        const t = owner.tenant_id!;
        tenants.push({ tenantId: t, userId: owner.user_id });
        await becomeRoot(client);
        await client.query(
          `create temporary table team as select i, gen_random_uuid() as id from generate_series(1, $1::int) i;
           insert into app_public.agents (id, tenant_id, display_name, routing_weight) select id, $2, 'Agent ' || i, 1 + i % 3 from team;
           insert into app_public.agent_availability (tenant_id, agent_id, status, max_capacity)
             select $2, id, case when i % 10 = 0 then 'offline' else 'available' end, 1000 from team;
           insert into app_public.agent_specializations (tenant_id, agent_id, service_line) select $2, id, 'Line ' || (i % 2) from team;
           insert into app_public.agent_service_areas (tenant_id, agent_id, kind, city, region) select $2, id, 'city', 'City ' || (i % 2), 'TX' from team;
           drop table team;`.replace(/\$1/g, String(size)).replace(/\$2/g, `'${t}'`),
        );
        await setRoutingConfig(client, t, "routing.direct_assignment", "true");
      }
      await client.query(
        `vacuum analyze app_private.routing_pool, app_private.routing_pool_tally, app_public.agents, app_public.agent_availability,
                         app_public.agent_specializations, app_public.agent_service_areas, app_public.agent_routing_credits`,
      );
      for (const [i, size] of [50, 5000].entries()) {
        const t = tenants[i]!.tenantId;
        const leads: string[] = [];
        for (let n = 0; n < 8; n++) leads.push(await createLead(client, t, { service_line: "Line 1", city: "City 1", region: "TX" }));
        // Warm the session's plans, then measure the buffers of the later decisions; the fewest count
        // (a decision that had to plan again, because other tests' writes changed the statistics,
        // also reads the catalogs).
        for (const lead of leads.slice(0, 3)) await routeAsSystem(client, t, lead, "manual");
        let fewest = Infinity;
        for (const lead of leads.slice(3)) {
          const { rows } = await client.query<{ "QUERY PLAN": Array<{ Plan: { "Shared Hit Blocks": number; "Shared Read Blocks": number } }> }>(
            "explain (analyze, buffers, format json) select app_private.route_lead($1, $2, 'manual')",
            [t, lead],
          );
          const plan = rows[0]!["QUERY PLAN"][0]!.Plan;
          fewest = Math.min(fewest, plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]);
        }
        buffers[size] = fewest;
        const { rows: counts } = await client.query("select candidate_counts as c, outcome from app_public.lead_routing_history where lead_id = $1", [leads[7]]);
        expect(counts[0].outcome).toBe("assigned");
        examined[size] = counts[0].c.examined;
        expect(counts[0].c.considered).toBe(size);
      }
    } finally {
      client.release();
      for (const { tenantId, userId } of tenants) await dropCommittedTenant(tenantId, [userId]);
    }
    // Half the team can take the lead (the other half, a tenth of it offline, cannot). The same 10 agents
    // examined; the buffers touched within a small margin (deeper indexes, not more rows).
    expect(examined[5000]).toBe(examined[50]);
    expect(examined[5000]).toBeLessThanOrEqual(10);
    expect(buffers[5000]! / buffers[50]!, `buffers per decision: ${JSON.stringify(buffers)}`).toBeLessThan(1.5);
  });
});
