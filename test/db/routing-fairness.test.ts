/**
 * Weighted round-robin fairness at size (migrations/fixtures/routing/route_lead.sql): 10,000
 * sequential decisions among agents weighted 1:2:3 on committed data, then an agent that comes back
 * from offline. A load test: about a minute of decisions alone, so scripts/test.ts runs it after the
 * suite, on its own (under the suite's parallel files on 2 cores it once went past its timeout).
 */
import { describe, expect, it } from "vitest";
import { rootPool } from "../helpers.ts";
import { committedTenant, dropCommittedTenant } from "../routing-helpers.ts";

describe("weighted round robin fairness", () => {
  it("10,000 leads with weights 1:2:3 get shares within 2% of 1/6, 2/6, 3/6; an agent back from offline gets no burst", { timeout: 120_000 }, async () => {
    const s = await committedTenant("Fairness", (i) => ({ name: `W${i + 1}`, weight: i + 1, capacity: 100_000 }), 3);
    const t = s.tenantId;
    const agents = s.agents;
    const root = await rootPool().connect();
    try {
      // Per-lead job triggers are not what is measured here.
      await root.query("begin");
      await root.query("set local session_replication_role = replica");
      await root.query(
        `insert into app_public.leads (tenant_id, first_name, email, service_line, attributes)
         select $1, 'Fair', 'fair' || g || '@example.test', 'auto', jsonb_build_object('n', g) from generate_series(1, 10360) g`,
        [t],
      );
      await root.query("commit");
      await root.query("analyze app_public.leads");
      // Sequential routing in SQL loops, 250 leads per transaction.
      const routeBatch = async (from: number, to: number) => {
        for (let start = from; start <= to; start += 250) {
          await root.query(
            `do $$ declare r record; begin
               for r in select id from app_public.leads where tenant_id = '${t}' and (attributes->>'n')::int between ${start} and ${Math.min(to, start + 249)}
                        order by (attributes->>'n')::int loop
                 perform app_private.route_lead('${t}', r.id, 'new_lead');
               end loop; end $$`,
          );
        }
      };
      const mark = async () => (await root.query("select coalesce(max(id), 0)::int as id from app_public.lead_routing_history where tenant_id = $1", [t])).rows[0].id as number;
      const shares = async (since: number) => {
        const { rows } = await root.query<{ agent_id: string; n: number }>(
          "select chosen_agent_id as agent_id, count(*)::int as n from app_public.lead_routing_history where tenant_id = $1 and id > $2 group by 1",
          [t, since],
        );
        return agents.map((a) => rows.find((r) => r.agent_id === a)?.n ?? 0);
      };
      await routeBatch(1, 10000);
      const counts = await shares(0);
      expect(counts.reduce((x, y) => x + y, 0)).toBe(10000);
      counts.forEach((n, i) => expect(Math.abs(n / 10000 - (i + 1) / 6)).toBeLessThan(0.02));

      // W3 offline for 300 leads, then back: its share stays at its weight (no saved-up credit).
      await root.query("update app_public.agent_availability set status = 'offline' where agent_id = $1", [agents[2]]);
      const m1 = await mark();
      await routeBatch(10001, 10300);
      const whileOff = await shares(m1);
      expect(whileOff[2]).toBe(0);
      expect(whileOff[0]! + whileOff[1]!).toBe(300);
      await root.query("update app_public.agent_availability set status = 'available' where agent_id = $1", [agents[2]]);
      const m2 = await mark();
      await routeBatch(10301, 10306);
      const firstSix = await shares(m2);
      expect(firstSix[2]).toBeLessThanOrEqual(4);
      await routeBatch(10307, 10360);
      const after = await shares(m2);
      expect(after.reduce((x, y) => x + y, 0)).toBe(60);
      expect(Math.abs(after[2]! - 30)).toBeLessThanOrEqual(2);
    } finally {
      root.release();
      await dropCommittedTenant(t, [s.owner.user_id, s.manager.user_id]);
    }
  });
});
