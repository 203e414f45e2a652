/**
 * Daily and weekly caps per agent (issue 15): an agent receives at most agents.daily_cap leads a day
 * and weekly_cap a week, offered or assigned, counted in the agent's time zone (else the business's).
 * Proved with real parallel connections on committed data (32 connections against caps of 5: nobody
 * receives a sixth), across days and weeks, with offers declined, and against bad input and
 * attackers (an agent raising their own cap, a manager writing the counters).
 */
import pg from "pg";
import { describe, expect, it } from "vitest";
import { addMember, becomeRoot, becomeUser, expectSqlError, registerUser, rootPool, withRootDb } from "../helpers.ts";
import {
  committedTenant,
  createAgent,
  createLead,
  createLeads,
  dropCommittedTenant,
  inParallel,
  routeAsSystem,
  routeInTransaction,
  setRoutingConfig,
} from "../routing-helpers.ts";

async function counts(client: pg.ClientBase, tenantId: string): Promise<Array<{ name: string; day: number; week: number; load: number }>> {
  const { rows } = await client.query(
    `select a.display_name as name, av.cap_day_count as day, av.cap_week_count as week, av.current_load as load
       from app_public.agents a join app_public.agent_availability av on av.tenant_id = a.tenant_id and av.agent_id = a.id
      where a.tenant_id = $1 order by a.display_name`,
    [tenantId],
  );
  return rows;
}

describe("daily and weekly caps", () => {
  it("32 connections routing 64 leads into 10 agents with a daily cap of 5: each receives exactly 5, nobody a sixth", { timeout: 60_000 }, async () => {
    const s = await committedTenant("Capped", (i) => ({ name: `Agent ${String(i).padStart(2, "0")}`, capacity: 1000, weight: 1 + (i % 3) }), 10);
    try {
      await rootPool().query("update app_public.agents set daily_cap = 5 where tenant_id = $1", [s.tenantId]);
      const leads = await createLeads(s.tenantId, 64);
      const results = await inParallel(s.manager, 32, async (c, w) => [
        await routeInTransaction(c, s.manager, leads[2 * w]!),
        await routeInTransaction(c, s.manager, leads[2 * w + 1]!),
      ]);
      const all = results.flat();
      expect(all.filter((r) => r.outcome === "offered")).toHaveLength(50);
      expect(all.filter((r) => r.outcome === "queued")).toHaveLength(14);
      const { rows } = await rootPool().query(
        `select agent_id, count(*)::int as n from app_public.routing_offers where tenant_id = $1 group by agent_id`,
        [s.tenantId],
      );
      expect(rows.map((r) => r.n)).toEqual(Array(10).fill(5));
      expect((await counts(rootPool() as unknown as pg.ClientBase, s.tenantId)).every((c) => c.day === 5 && c.week === 5 && c.load === 5)).toBe(true);
      // The queued leads say why: every agent at its cap when the candidates were read, or reaching it
      // while this routing waited for its lock.
      for (const queued of all.filter((r) => r.outcome === "queued")) {
        expect(queued.reason).toMatch(/No eligible agent among 10 considered \(failed checks: 10 cap\)|all \d+ eligible agents became busy or unavailable while routing/);
      }
    } finally {
      await dropCommittedTenant(s.tenantId, [s.owner.user_id, s.manager.user_id]);
    }
  });

  it("counts per day and per week in the agent's time zone; a new day or week starts afresh; the explanation names the cap", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const t = owner.tenant_id!;
      await becomeRoot(client);
      await setRoutingConfig(client, t, "routing.direct_assignment", "true");
      const far = await createAgent(client, t, { name: "Kiri", capacity: 100 });
      await client.query("update app_public.agents set timezone = 'Pacific/Kiritimati', daily_cap = 2, weekly_cap = 3 where id = $1", [far]);

      let lastLead = "";
      const route = async () => routeAsSystem(client, t, (lastLead = await createLead(client, t)));
      expect((await route()).chosen_agent_id).toBe(far);
      expect((await route()).chosen_agent_id).toBe(far);
      const third = await route();
      expect(third.outcome).toBe("queued");
      const kiri = third.candidates.find((c) => c.name === "Kiri")!;
      expect(kiri.checks.cap).toBe(false);
      expect(kiri.reasons.cap).toBe("daily cap reached (2 of 2)");
      const { rows: day } = await client.query(
        "select cap_day = (now() at time zone 'Pacific/Kiritimati')::date as local_day, cap_week = date_trunc('week', now() at time zone 'Pacific/Kiritimati')::date as local_week from app_public.agent_availability where agent_id = $1",
        [far],
      );
      expect(day[0]).toEqual({ local_day: true, local_week: true });
      await becomeUser(client, owner);
      const { rows: lines } = await client.query("select candidate_lines from app_public.explain_routing($1) order by routed_at desc limit 1", [lastLead]);
      await becomeRoot(client);
      expect(lines[0].candidate_lines[0]).toMatch(/Kiri: not eligible, failed cap \(daily cap reached \(2 of 2\)\)/);

      // The next day (same week): one more, then the weekly cap.
      await client.query("update app_public.agent_availability set cap_day = cap_day - 1 where agent_id = $1", [far]);
      expect((await route()).chosen_agent_id).toBe(far);
      await client.query("update app_public.agent_availability set cap_day = cap_day - 1 where agent_id = $1", [far]);
      const capped = await route();
      expect(capped.candidates.find((c) => c.name === "Kiri")!.reasons.cap).toBe("weekly cap reached (3 of 3)");
      // A new week.
      await client.query("update app_public.agent_availability set cap_day = cap_day - 7, cap_week = cap_week - 7 where agent_id = $1", [far]);
      expect((await route()).chosen_agent_id).toBe(far);
      expect((await counts(client, t))[0]).toMatchObject({ day: 1, week: 1 });
      // A cap of 0 receives nothing; null is no cap.
      await client.query("update app_public.agents set daily_cap = 0, weekly_cap = null where id = $1", [far]);
      expect((await route()).outcome).toBe("queued");
      await client.query("update app_public.agents set daily_cap = null where id = $1", [far]);
      expect((await route()).chosen_agent_id).toBe(far);
    });
  });

  it("a declined offer is not a lead received: it gives its place under the cap back", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const t = owner.tenant_id!;
      const manager = await addMember(client, t, "manager");
      await becomeRoot(client);
      const solo = await createAgent(client, t, { name: "Solo", capacity: 10 });
      await client.query("update app_public.agents set daily_cap = 1 where id = $1", [solo]);
      const firstLead = await createLead(client, t);
      const first = await routeAsSystem(client, t, firstLead);
      expect(first.outcome).toBe("offered");
      expect((await counts(client, t))[0]).toMatchObject({ day: 1, load: 1 });
      const { rows: offer } = await client.query("select id from app_public.routing_offers where lead_id = $1", [firstLead]);
      await becomeUser(client, manager);
      await client.query("select app_public.reject_offer($1, 'not mine')", [offer[0].id]);
      await becomeRoot(client);
      // The rejected lead was routed again at once (Solo is left out for it); Solo's place is free for another lead.
      expect((await counts(client, t))[0]).toMatchObject({ day: 0, load: 0 });
      expect((await routeAsSystem(client, t, await createLead(client, t))).chosen_agent_id).toBe(solo);
    });
  });

  it("bad input and attackers: negative caps, an unknown time zone, an agent raising their own cap, anyone writing the counters", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const t = owner.tenant_id!;
      const manager = await addMember(client, t, "manager");
      const agentUser = await addMember(client, t, "agent");
      await becomeRoot(client);
      const own = await createAgent(client, t, { name: "Own", userId: agentUser.user_id });
      await client.query("update app_public.agents set daily_cap = 3 where id = $1", [own]);

      await becomeUser(client, manager);
      const negative = await expectSqlError(client, "23514", () => client.query("update app_public.agents set daily_cap = -1 where id = $1", [own]));
      expect(negative.constraint).toBe("agents_daily_cap_must_not_be_negative");
      const weekly = await expectSqlError(client, "23514", () => client.query("update app_public.agents set weekly_cap = -5 where id = $1", [own]));
      expect(weekly.constraint).toBe("agents_weekly_cap_must_not_be_negative");
      const zone = await expectSqlError(client, "22023", () => client.query("update app_public.agents set timezone = 'Mars/Olympus_Mons' where id = $1", [own]));
      expect(zone.message).toMatch(/time ?zone/i);
      await expectSqlError(client, "42501", () => client.query("update app_public.agent_availability set cap_day_count = 0 where agent_id = $1", [own]));
      await becomeUser(client, agentUser);
      await expectSqlError(client, "42501", () => client.query("update app_public.agents set daily_cap = 100 where id = $1", [own]));
      await becomeRoot(client);
      const { rows } = await client.query("select daily_cap, weekly_cap, timezone from app_public.agents where id = $1", [own]);
      expect(rows[0]).toEqual({ daily_cap: 3, weekly_cap: null, timezone: null });
    });
  });
});
