/**
 * When agents work (issue 15): weekly working hours in the agent's time zone, time off, and the
 * business's holidays decide who is on duty; routing's schedule check says why someone is not; an
 * agent coming back gets no burst of leads. Bad input (overlapping or inverted hours, a weekday 8,
 * inverted time off, another tenant's agent) gives clear errors and writes nothing, also when two
 * managers add overlapping hours at the same moment; agents cannot change their own schedule.
 */
import pg from "pg";
import { describe, expect, it } from "vitest";
import { addMember, becomeRoot, becomeUser, db, expectSqlError, registerUser, withRootDb, type RegisteredUser } from "../helpers.ts";
import { committedTenant, createAgent, createLead, dropCommittedTenant, inParallel, routeAsSystem, type HistoryRow } from "../routing-helpers.ts";

/** A fixed-offset zone where it is now between 10:00 and 13:59, so "now ± 2 hours" stays within today. */
async function middayZone(client: pg.ClientBase): Promise<{ zone: string; weekday: number; from: string; to: string }> {
  const { rows } = await client.query(
    `select name as zone, extract(isodow from now() at time zone name)::int as weekday,
            to_char(now() at time zone name - interval '2 hours', 'HH24:MI') as from,
            to_char(now() at time zone name + interval '2 hours', 'HH24:MI') as to
       from pg_timezone_names
      where name ~ '^Etc/GMT[+-][0-9]+$' and extract(hour from now() at time zone name) between 10 and 13
      order by name limit 1`,
  );
  return rows[0];
}

const check = (h: HistoryRow, name: string) => h.candidates.find((c) => c.name === name)!;

describe("working hours, time off and holidays", () => {
  it("working hours in the agent's time zone decide who is on duty, and the explanation says why", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const t = owner.tenant_id!;
      await becomeRoot(client);
      const { zone, weekday, from, to } = await middayZone(client);
      const day = await createAgent(client, t, { name: "Day" });
      const night = await createAgent(client, t, { name: "Night" });
      await createAgent(client, t, { name: "Any" });
      await client.query("update app_public.agents set timezone = $2 where tenant_id = $1", [t, zone]);
      await client.query("insert into app_public.agent_working_hours (tenant_id, agent_id, weekday, starts_at, ends_at) values ($1, $2, $3, $4, $5)", [t, day, weekday, from, to]);
      await client.query("insert into app_public.agent_working_hours (tenant_id, agent_id, weekday, starts_at, ends_at) values ($1, $2, $3, '00:00', '06:00'), ($1, $2, $4, '18:00', '24:00')", [
        t,
        night,
        weekday,
        (weekday % 7) + 1,
      ]);

      const h = await routeAsSystem(client, t, await createLead(client, t));
      expect(check(h, "Day").checks.schedule).toBe(true);
      expect(check(h, "Any").checks.schedule).toBe(true);
      expect(check(h, "Night").checks.schedule).toBe(false);
      expect(check(h, "Night").reasons.schedule).toMatch(new RegExp(`^outside working hours \\(\\w{3} \\d{2}:\\d{2} in ${zone.replace("+", "\\+")}\\)$`));
      expect(check(h, "Night").eligible).toBe(false);
      expect(["Day", "Any"]).toContain(h.candidates.find((c) => c.agent_id === h.chosen_agent_id)!.name);
    });
  });

  it("time off and the business's holidays take agents off duty, with the reason", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const t = owner.tenant_id!;
      await becomeRoot(client);
      const away = await createAgent(client, t, { name: "Away" });
      const here = await createAgent(client, t, { name: "Here" });
      await client.query(
        "insert into app_public.agent_time_off (tenant_id, agent_id, starts_at, ends_at, reason) values ($1, $2, now() - interval '1 day', now() + interval '3 days', 'vacation')",
        [t, away],
      );
      const h = await routeAsSystem(client, t, await createLead(client, t));
      expect(check(h, "Away").reasons.schedule).toMatch(/^out of office until \d{4}-\d{2}-\d{2} \d{2}:\d{2} \(vacation\)$/);
      expect(h.chosen_agent_id).toBe(here);

      // A holiday on the agents' local date (the business's time zone here): nobody is on duty.
      await client.query(
        "insert into app_public.holidays (tenant_id, day, name) select $1, (now() at time zone bs.timezone)::date, 'Founders day' from app_public.business_settings bs where bs.tenant_id = $1",
        [t],
      );
      const closed = await routeAsSystem(client, t, await createLead(client, t));
      expect(closed.outcome).toBe("queued");
      expect(check(closed, "Here").reasons.schedule).toBe("holiday: Founders day");
      expect(closed.reason).toMatch(/failed checks: 2 schedule/);
    });
  });

  it("an agent back from time off gets no burst: round robin goes on from where the others are", { timeout: 60_000 }, async () => {
    const s = await committedTenant("Back from vacation", (i) => ({ name: `R${i}`, capacity: 10_000 }), 3);
    try {
      await withRootDb(async (client) => {
        await client.query(
          "insert into app_public.system_config (tenant_id, key, value, value_type) values ($1, 'routing.direct_assignment', 'true', 'boolean') on conflict (tenant_id, key) do update set value = excluded.value",
          [s.tenantId],
        );
        const [a, b, c] = s.agents as [string, string, string];
        await client.query("insert into app_public.agent_time_off (tenant_id, agent_id, starts_at, ends_at) values ($1, $2, now() - interval '1 hour', now() + interval '1 day')", [s.tenantId, c]);
        const picks: string[] = [];
        for (let i = 0; i < 30; i++) picks.push((await routeAsSystem(client, s.tenantId, await createLead(client, s.tenantId))).chosen_agent_id!);
        expect(picks.filter((p) => p === a)).toHaveLength(15);
        expect(picks.filter((p) => p === b)).toHaveLength(15);
        // Back: the time off ends now.
        await client.query("update app_public.agent_time_off set ends_at = now() - interval '1 second' where agent_id = $1", [c]);
        const after: string[] = [];
        for (let i = 0; i < 12; i++) after.push((await routeAsSystem(client, s.tenantId, await createLead(client, s.tenantId))).chosen_agent_id!);
        // A fair share of the next 12 (4 each, give or take one), not the 15 the others had meanwhile.
        expect(after.filter((p) => p === c).length).toBeGreaterThanOrEqual(3);
        expect(after.filter((p) => p === c).length).toBeLessThanOrEqual(5);
      });
    } finally {
      await dropCommittedTenant(s.tenantId, [s.owner.user_id, s.manager.user_id]);
    }
  });

  it("leads queued while nobody was on duty are routed as soon as someone starts: working hours beginning, time off ending", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const t = owner.tenant_id!;
      await becomeRoot(client);
      const { zone, weekday } = await middayZone(client);
      const ana = await createAgent(client, t, { name: "Ana" });
      await client.query("update app_public.agents set timezone = $2 where id = $1", [ana, zone]);
      await client.query("insert into app_public.agent_time_off (tenant_id, agent_id, starts_at, ends_at) values ($1, $2, now() - interval '1 day', now() + interval '1 day')", [t, ana]);
      const lead = await createLead(client, t);
      expect((await routeAsSystem(client, t, lead)).outcome).toBe("queued");
      const drains = async () =>
        (await client.query("select count(*)::int as n from graphile_worker._private_jobs where key = 'routing_drain:' || $1", [t])).rows[0].n as number;
      await client.query("delete from graphile_worker._private_jobs where key = 'routing_drain:' || $1", [t]);

      // Still away: nothing to do.
      await client.query("select app_private.drain_queues_coming_on_duty(now() - interval '1 minute', now())");
      expect(await drains()).toBe(0);
      // The time off ends: a drain is queued, and it routes the lead to Ana.
      await client.query("update app_public.agent_time_off set ends_at = now() - interval '5 seconds' where agent_id = $1", [ana]);
      await client.query("select app_private.drain_queues_coming_on_duty(now() - interval '1 minute', now())");
      expect(await drains()).toBe(1);
      await client.query("delete from graphile_worker._private_jobs where key = 'routing_drain:' || $1", [t]);
      expect((await client.query("select app_private.drain_routing_queue($1) as n", [t])).rows[0].n).toBe(1);
      const { rows } = await client.query("select agent_id from app_public.routing_offers where lead_id = $1", [lead]);
      expect(rows[0].agent_id).toBe(ana);

      // Working hours that begin this minute (Ana's local time) do the same for a lead queued before.
      await client.query("update app_public.agent_availability set current_load = 0 where agent_id = $1", [ana]);
      await client.query("delete from app_public.routing_offers where lead_id = $1", [lead]);
      const later = await createLead(client, t);
      await client.query(
        "insert into app_public.agent_working_hours (tenant_id, agent_id, weekday, starts_at, ends_at) values ($1, $2, $3, '00:00', '01:00')",
        [t, ana, weekday],
      );
      expect((await routeAsSystem(client, t, later)).outcome).toBe("queued");
      await client.query("delete from graphile_worker._private_jobs where key = 'routing_drain:' || $1", [t]);
      await client.query(
        "insert into app_public.agent_working_hours (tenant_id, agent_id, weekday, starts_at, ends_at) values ($1, $2, $3, date_trunc('minute', now() at time zone $4)::time, '23:59')",
        [t, ana, weekday, zone],
      );
      await client.query("select app_private.drain_queues_coming_on_duty(now() - interval '70 seconds', now())");
      expect(await drains()).toBe(1);
    });
  });

  it("bad input gives clear errors and writes nothing: overlapping or inverted hours, weekday 8, inverted time off, another tenant's agent, an agent changing their own schedule", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const t = owner.tenant_id!;
      const manager = await addMember(client, t, "manager");
      const agentUser = await addMember(client, t, "agent");
      const other = await registerUser(client);
      await becomeRoot(client);
      const ana = await createAgent(client, t, { name: "Ana", userId: agentUser.user_id });
      const stranger = await createAgent(client, other.tenant_id!, { name: "Stranger" });

      await becomeUser(client, manager);
      const insert = (agent: string, weekday: number, from: string, to: string) =>
        client.query("insert into app_public.agent_working_hours (agent_id, weekday, starts_at, ends_at) values ($1, $2, $3, $4)", [agent, weekday, from, to]);
      await insert(ana, 1, "09:00", "12:00");
      const overlap = await expectSqlError(client, "22023", () => insert(ana, 1, "11:00", "13:00"));
      expect(overlap.message).toBe("Working hours overlap on Monday: 09:00–12:00 and 11:00–13:00");
      await insert(ana, 1, "12:00", "17:00"); // touching is not overlapping
      await insert(ana, 2, "11:00", "13:00"); // another day
      const inverted = await expectSqlError(client, "23514", () => insert(ana, 3, "17:00", "09:00"));
      expect(inverted.constraint).toBe("agent_working_hours_must_start_before_they_end");
      const weekday = await expectSqlError(client, "23514", () => insert(ana, 8, "09:00", "17:00"));
      expect(weekday.constraint).toBe("agent_working_hours_weekday_must_be_1_monday_to_7_sunday");
      const foreign = await expectSqlError(client, "23503", () => insert(stranger, 4, "09:00", "17:00"));
      expect(foreign.constraint).toBe("agent_working_hours_agent_must_exist");
      const backwards = await expectSqlError(client, "23514", () =>
        client.query("insert into app_public.agent_time_off (agent_id, starts_at, ends_at) values ($1, now(), now() - interval '1 day')", [ana]),
      );
      expect(backwards.constraint).toBe("agent_time_off_must_start_before_it_ends");
      // Moving an interval onto another is an overlap too.
      await expectSqlError(client, "22023", () => client.query("update app_public.agent_working_hours set weekday = 1 where agent_id = $1 and weekday = 2", [ana]));

      await becomeUser(client, agentUser);
      await expectSqlError(client, "42501", () => insert(ana, 5, "09:00", "17:00"));
      await expectSqlError(client, "42501", () =>
        client.query("insert into app_public.agent_time_off (agent_id, starts_at, ends_at) values ($1, now(), now() + interval '1 year')", [ana]),
      );
      await becomeRoot(client);
      const { rows } = await client.query("select weekday, starts_at::text, ends_at::text from app_public.agent_working_hours where agent_id = $1 order by 1, 2", [ana]);
      expect(rows).toEqual([
        { weekday: 1, starts_at: "09:00:00", ends_at: "12:00:00" },
        { weekday: 1, starts_at: "12:00:00", ends_at: "17:00:00" },
        { weekday: 2, starts_at: "11:00:00", ends_at: "13:00:00" },
      ]);
      const { rows: off } = await client.query("select count(*)::int as n from app_public.agent_time_off where agent_id = $1", [ana]);
      expect(off[0].n).toBe(0);
    });
  });

  it("two managers adding overlapping hours at the same moment: exactly one is kept", { timeout: 30_000 }, async () => {
    const s = await committedTenant("Overlap race", (i) => ({ name: `O${i}` }), 1);
    try {
      const agent = s.agents[0]!;
      const results = await inParallel(s.manager, 8, async (c, w) => {
        await c.query("begin");
        try {
          await c.query(`set local role ${pg.escapeIdentifier(db.roles.visitor)}`);
          await asManager(c, s.manager);
          await c.query("insert into app_public.agent_working_hours (agent_id, weekday, starts_at, ends_at) values ($1, 3, $2, $3)", [
            agent,
            `${String(8 + (w % 2)).padStart(2, "0")}:00`,
            `${String(12 + (w % 2)).padStart(2, "0")}:00`,
          ]);
          await c.query("commit");
          return "kept";
        } catch (error) {
          await c.query("rollback");
          return (error as pg.DatabaseError).code;
        }
      });
      expect(results.filter((r) => r === "kept")).toHaveLength(1);
      expect(results.filter((r) => r === "22023")).toHaveLength(7);
    } finally {
      await dropCommittedTenant(s.tenantId, [s.owner.user_id, s.manager.user_id]);
    }
  });
});

async function asManager(client: pg.ClientBase, manager: RegisteredUser): Promise<void> {
  await client.query(
    "select set_config('app.current_user_id', $1, true), set_config('app.current_tenant_id', $2, true), set_config('app.current_session_id', $3, true)",
    [manager.user_id, manager.tenant_id, manager.session_id],
  );
}
