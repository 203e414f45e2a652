/**
 * Offer lifecycle, the assignment queue and the routing jobs (created in
 * migrations/committed/000004-routing-engine-agents-skills-areas-availability-slots-rules-.sql):
 * accept / reject / expire state machines and who may call them, capacity (a pending offer holds one
 * unit of load; accept keeps it, reject and expire give it back, never below 0, never twice), slot
 * holds and bookings, concurrent responses on parallel connections, queue draining, SLA escalation,
 * expired slot locks, automatic routing of new leads, and the real worker running the tasks.
 *
 * Offers, queue entries and routing decisions are inserted as root, the way route_lead (020) leaves
 * them. Tests whose name starts with [route_lead] also need app_private.route_lead from
 * 020-route-lead.sql (reject and expire re-route the lead at once; draining, inline auto-routing).
 */
import { randomUUID } from "node:crypto";
import type { Runner } from "graphile-worker";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { startWorker } from "../../src/worker/start.ts";
import {
  addMember,
  becomeAnonymous,
  becomeRoot,
  becomeUser,
  db,
  expectSqlError,
  ownerPool,
  registerUser,
  rootPool,
  withRootDb,
  type RegisteredUser,
} from "../helpers.ts";

let runner: Runner | null = null;
afterAll(async () => {
  await runner?.stop();
});

interface World {
  owner: RegisteredUser;
  manager: RegisteredUser;
  agentUser: RegisteredUser;
  otherAgentUser: RegisteredUser;
  tenant: string;
  agent: string;
  otherAgent: string;
  lead: string;
}

async function one<T = Record<string, unknown>>(client: pg.ClientBase, sql: string, params: unknown[] = []): Promise<T> {
  const { rows } = await client.query(sql, params);
  return rows[0] as T;
}

async function newLead(client: pg.ClientBase, tenant: string): Promise<string> {
  const row = await one<{ id: string }>(client, "insert into app_public.leads (tenant_id, first_name, email) values ($1, 'Routed', $2) returning id", [
    tenant,
    `lead-${randomUUID().slice(0, 8)}@example.test`,
  ]);
  return row.id;
}

/** A tenant (owner, manager, two agent members with agent rows and availability) and a lead. As root. */
async function world(client: pg.ClientBase, options: { kind?: string } = {}): Promise<World> {
  await becomeRoot(client);
  const owner = await registerUser(client);
  const tenant = owner.tenant_id!;
  await client.query("select app_private.initialize_tenant($1)", [tenant]);
  const manager = await addMember(client, tenant, "manager");
  const agentUser = await addMember(client, tenant, "agent");
  const otherAgentUser = await addMember(client, tenant, "agent");
  await becomeRoot(client);
  const agent = (
    await one<{ id: string }>(
      client,
      "insert into app_public.agents (tenant_id, user_id, display_name, kind) values ($1, $2, 'Alice', $3) returning id",
      [tenant, agentUser.user_id, options.kind ?? "agent"],
    )
  ).id;
  const otherAgent = (
    await one<{ id: string }>(client, "insert into app_public.agents (tenant_id, user_id, display_name) values ($1, $2, 'Bob') returning id", [
      tenant,
      otherAgentUser.user_id,
    ])
  ).id;
  await client.query(
    "insert into app_public.agent_availability (tenant_id, agent_id, status, current_load, max_capacity) values ($1, $2, 'offline', 0, 5), ($1, $3, 'offline', 0, 5)",
    [tenant, agent, otherAgent],
  );
  const lead = await newLead(client, tenant);
  return { owner, manager, agentUser, otherAgentUser, tenant, agent, otherAgent, lead };
}

/**
 * What route_lead leaves behind for an offer: the decision, the offer, one unit of load reserved
 * and (with a slot) the slot held until the offer expires. As root.
 */
async function offer(
  client: pg.ClientBase,
  w: World,
  options: { expired?: boolean; slot?: string | null; load?: number; lead?: string } = {},
): Promise<string> {
  await becomeRoot(client);
  const lead = options.lead ?? w.lead;
  const times = options.expired
    ? "now() - interval '3 minutes', now() - interval '1 minute'"
    : "now(), now() + interval '2 minutes'";
  await client.query(
    `insert into app_public.lead_routing_history (tenant_id, lead_id, trigger, strategy, chosen_agent_id, outcome)
     values ($1, $2, 'new_lead', 'least_loaded', $3, 'offered')`,
    [w.tenant, lead, w.agent],
  );
  const id = (
    await one<{ id: string }>(
      client,
      `insert into app_public.routing_offers (tenant_id, lead_id, agent_id, slot_id, offered_at, expires_at)
       values ($1, $2, $3, $4, ${times}) returning id`,
      [w.tenant, lead, w.agent, options.slot ?? null],
    )
  ).id;
  await client.query("update app_public.agent_availability set current_load = $3 where tenant_id = $1 and agent_id = $2", [
    w.tenant,
    w.agent,
    options.load ?? 1,
  ]);
  if (options.slot) {
    await client.query(
      "update app_public.availability_slots set locked_by_lead_id = $2, locked_until = (select expires_at from app_public.routing_offers where id = $3) where id = $1",
      [options.slot, lead, id],
    );
  }
  return id;
}

async function slot(client: pg.ClientBase, w: World, agent: string, start: string, end: string, date = "current_date + 30"): Promise<string> {
  await becomeRoot(client);
  return (
    await one<{ id: string }>(
      client,
      `insert into app_public.availability_slots (tenant_id, agent_id, slot_date, start_time, end_time) values ($1, $2, ${date}, $3, $4) returning id`,
      [w.tenant, agent, start, end],
    )
  ).id;
}

const load = async (client: pg.ClientBase, w: World, agent = w.agent) =>
  (await one<{ n: number }>(client, "select current_load as n from app_public.agent_availability where tenant_id = $1 and agent_id = $2", [w.tenant, agent]))
    .n;
const offerRow = (client: pg.ClientBase, id: string) =>
  one<{ status: string; responded_at: Date | null; decline_reason: string | null }>(client, "select * from app_public.routing_offers where id = $1", [id]);
const events = async (client: pg.ClientBase, w: World, lead = w.lead) =>
  (await client.query("select event_type, agent_id, offer_id, data from app_public.routing_events where tenant_id = $1 and lead_id = $2 order by id", [w.tenant, lead]))
    .rows;
const jobsWithKey = async (client: pg.ClientBase, key: string) =>
  (
    await client.query<{ identifier: string; payload: Record<string, string> }>(
      "select t.identifier, j.payload from graphile_worker._private_jobs j join graphile_worker._private_tasks t on t.id = j.task_id where j.key = $1",
      [key],
    )
  ).rows;

async function waitFor(check: () => Promise<boolean>, ms = 30_000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 200));
  }
  return false;
}

describe("accept_offer", () => {
  it("the offered agent accepts: lead assigned with the decision's strategy, load kept, held slot booked, events written", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const held = await slot(client, w, w.agent, "18:00", "23:00");
      const other = await slot(client, w, w.agent, "10:00", "12:00");
      const id = await offer(client, w, { slot: held });
      await becomeUser(client, w.agentUser);
      const accepted = await one<{ status: string; responded_at: Date }>(client, "select * from app_public.accept_offer($1)", [id]);
      expect(accepted.status).toBe("accepted");
      expect(accepted.responded_at).not.toBeNull();
      await becomeRoot(client);
      const lead = await one<{ owner_agent_id: string; owner_user_id: string }>(client, "select * from app_public.leads where id = $1", [w.lead]);
      expect(lead.owner_agent_id).toBe(w.agent);
      expect(lead.owner_user_id).toBe(w.agentUser.user_id);
      const assignment = await one<{ strategy: string; to_user_id: string; reason: string }>(
        client,
        "select * from app_public.lead_assignments where lead_id = $1 order by assigned_at desc limit 1",
        [w.lead],
      );
      expect(assignment.strategy).toBe("least_loaded");
      expect(assignment.to_user_id).toBe(w.agentUser.user_id);
      expect(assignment.reason).toContain(id);
      expect(await load(client, w)).toBe(1); // reserved at offer time, kept
      const booked = await one<{ status: string; booked_lead_id: string; locked_until: Date | null; locked_by_lead_id: string | null }>(
        client,
        "select * from app_public.availability_slots where id = $1",
        [held],
      );
      expect(booked).toMatchObject({ status: "booked", booked_lead_id: w.lead, locked_until: null, locked_by_lead_id: null });
      // Not a DJ: the other slot that day stays free.
      expect((await one<{ status: string }>(client, "select status from app_public.availability_slots where id = $1", [other])).status).toBe("free");
      expect((await events(client, w)).map((e) => e.event_type)).toEqual(["accepted", "assigned"]);
      // The settings used for the history are restored.
      expect(await one(client, "select current_setting('app.assignment_strategy', true) as s")).toEqual({ s: "" });
    });
  });

  it("a DJ's booking blocks the rest of that day's free slots (auto_blocked), not other days or held slots", async () => {
    await withRootDb(async (client) => {
      const w = await world(client, { kind: "dj" });
      const held = await slot(client, w, w.agent, "18:00", "23:00");
      const sameDay = await slot(client, w, w.agent, "10:00", "12:00");
      const otherDay = await slot(client, w, w.agent, "18:00", "23:00", "current_date + 31");
      const id = await offer(client, w, { slot: held });
      await becomeUser(client, w.agentUser);
      await client.query("select app_public.accept_offer($1)", [id]);
      await becomeRoot(client);
      const { rows } = await client.query("select id, status, auto_blocked from app_public.availability_slots where agent_id = $1", [w.agent]);
      const byId = Object.fromEntries(rows.map((r) => [r.id, r]));
      expect(byId[held]).toMatchObject({ status: "booked", auto_blocked: false });
      expect(byId[sameDay]).toMatchObject({ status: "blocked", auto_blocked: true });
      expect(byId[otherDay]).toMatchObject({ status: "free", auto_blocked: false });
    });
  });

  it("managers may accept for the agent; other agents, strangers and other tenants may not", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const id = await offer(client, w);
      await becomeUser(client, w.otherAgentUser);
      const denied = await expectSqlError(client, "42501", () => client.query("select app_public.accept_offer($1)", [id]));
      expect(denied.message).toMatch(/agent the lead was offered to/);
      await expectSqlError(client, "42501", () => client.query("select app_public.reject_offer($1)", [id]));
      await becomeAnonymous(client);
      await expectSqlError(client, "28000", () => client.query("select app_public.accept_offer($1)", [id]));
      // Another tenant's owner: the offer does not exist for them.
      await becomeRoot(client);
      const stranger = await registerUser(client);
      await becomeUser(client, stranger);
      await expectSqlError(client, "P0002", () => client.query("select app_public.accept_offer($1)", [id]));
      await expectSqlError(client, "P0002", () => client.query("select app_public.accept_offer($1)", [randomUUID()]));
      // The visitor cannot reach the internals.
      await expectSqlError(client, "42501", () => client.query("select app_private.expire_offer($1)", [id]));
      await becomeUser(client, w.manager);
      expect((await one<{ status: string }>(client, "select status from app_public.accept_offer($1)", [id])).status).toBe("accepted");
    });
  });

  it("refuses an offer that expired (even before the job ran) or was already answered: 22023, nothing changes", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const expired = await offer(client, w, { expired: true });
      await becomeUser(client, w.agentUser);
      const error = await expectSqlError(client, "22023", () => client.query("select app_public.accept_offer($1)", [expired]));
      expect(error.message).toMatch(/expired/);
      await expectSqlError(client, "22023", () => client.query("select app_public.reject_offer($1)", [expired]));
      await becomeRoot(client);
      expect((await offerRow(client, expired)).status).toBe("pending");
      expect((await one<{ owner_agent_id: string | null }>(client, "select owner_agent_id from app_public.leads where id = $1", [w.lead])).owner_agent_id).toBeNull();
      await client.query("update app_public.routing_offers set status = 'cancelled' where id = $1", [expired]);
      const second = await offer(client, w);
      await becomeUser(client, w.agentUser);
      await client.query("select app_public.accept_offer($1)", [second]);
      const again = await expectSqlError(client, "22023", () => client.query("select app_public.accept_offer($1)", [second]));
      expect(again.message).toMatch(/already accepted/);
      await expectSqlError(client, "22023", () => client.query("select app_public.reject_offer($1)", [second]));
    });
  });
});

describe("reject_offer and expire_offer", () => {
  it("[route_lead] reject: status rejected with the reason, load back down, slot released, event, and the lead routed again", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const held = await slot(client, w, w.agent, "18:00", "23:00");
      const id = await offer(client, w, { slot: held });
      await becomeUser(client, w.agentUser);
      const rejected = await one<{ status: string; decline_reason: string }>(client, "select * from app_public.reject_offer($1, '  Too far away ')", [id]);
      expect(rejected).toMatchObject({ status: "rejected", decline_reason: "Too far away" });
      await becomeRoot(client);
      expect(await load(client, w)).toBe(0);
      expect(await one(client, "select status, locked_until, locked_by_lead_id from app_public.availability_slots where id = $1", [held])).toEqual({
        status: "free",
        locked_until: null,
        locked_by_lead_id: null,
      });
      const types = (await events(client, w)).map((e) => e.event_type);
      expect(types[0]).toBe("rejected");
      const rerouted = await client.query("select outcome, chosen_agent_id from app_public.lead_routing_history where lead_id = $1 and trigger = 'offer_rejected'", [w.lead]);
      expect(rerouted.rows).toHaveLength(1);
      // The rejecter is never offered the lead again.
      expect(rerouted.rows[0].chosen_agent_id).not.toBe(w.agent);
    });
  });

  it("expire_offer does nothing for an offer that has not expired, was answered, or does not exist", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const id = await offer(client, w);
      expect((await one<{ e: boolean }>(client, "select app_private.expire_offer($1) as e", [id])).e).toBe(false);
      expect((await offerRow(client, id)).status).toBe("pending");
      expect(await load(client, w)).toBe(1);
      expect(await events(client, w)).toEqual([]);
      expect((await one<{ e: boolean }>(client, "select app_private.expire_offer($1) as e", [randomUUID()])).e).toBe(false);
      await becomeUser(client, w.agentUser);
      await client.query("select app_public.accept_offer($1)", [id]);
      await becomeRoot(client);
      await client.query("update app_public.routing_offers set expires_at = now() - interval '1 second', offered_at = now() - interval '1 minute' where id = $1", [id]);
      expect((await one<{ e: boolean }>(client, "select app_private.expire_offer($1) as e", [id])).e).toBe(false);
      expect((await offerRow(client, id)).status).toBe("accepted");
      expect(await load(client, w)).toBe(1);
    });
  });

  it("[route_lead] expire_offer: expired once (load down once, never below 0, slot released, event, re-routed), then false", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const held = await slot(client, w, w.agent, "18:00", "23:00");
      const id = await offer(client, w, { expired: true, slot: held, load: 0 }); // load already 0: must stay 0
      expect((await one<{ e: boolean }>(client, "select app_private.expire_offer($1) as e", [id])).e).toBe(true);
      expect((await offerRow(client, id)).status).toBe("expired");
      expect(await load(client, w)).toBe(0);
      expect((await one<{ locked_by_lead_id: string | null }>(client, "select locked_by_lead_id from app_public.availability_slots where id = $1", [held])).locked_by_lead_id).toBeNull();
      expect((await events(client, w))[0]!.event_type).toBe("expired");
      const rerouted = await client.query("select 1 from app_public.lead_routing_history where lead_id = $1 and trigger = 'offer_expired'", [w.lead]);
      expect(rerouted.rows).toHaveLength(1);
      expect((await one<{ e: boolean }>(client, "select app_private.expire_offer($1) as e", [id])).e).toBe(false);
      expect((await events(client, w)).filter((e) => e.event_type === "expired")).toHaveLength(1);
    });
  });
});

describe("concurrent responses (10 parallel connections, committed data)", () => {
  async function committedWorld(): Promise<World> {
    const client = await rootPool().connect();
    try {
      return await world(client);
    } finally {
      client.release();
    }
  }

  /** Opens n connections, each in a transaction as `who(i)`; then runs `call(i)` on all at once and commits. */
  async function race(n: number, who: (i: number) => RegisteredUser | null, call: (i: number) => string, params: unknown[]) {
    const clients = await Promise.all(
      Array.from({ length: n }, async () => {
        const c = new pg.Client({ connectionString: db.rootUrl });
        await c.connect();
        return c;
      }),
    );
    try {
      await Promise.all(
        clients.map(async (c, i) => {
          await c.query("begin");
          const user = who(i);
          if (user) await becomeUser(c, user);
        }),
      );
      return await Promise.all(
        clients.map(async (c, i) => {
          try {
            const { rows } = await c.query(call(i), params);
            await c.query("commit");
            return { ok: true as const, value: rows[0]?.v as unknown };
          } catch (error) {
            await c.query("rollback");
            return { ok: false as const, code: (error as pg.DatabaseError).code };
          }
        }),
      );
    } finally {
      await Promise.all(clients.map((c) => c.end()));
    }
  }

  it("10 accepts (agent and manager) and expire_offer calls at once: exactly one accept, load unchanged", async () => {
    const w = await committedWorld();
    const client = await rootPool().connect();
    let id: string;
    try {
      id = await offer(client, w);
    } finally {
      client.release();
    }
    const results = await race(
      10,
      (i) => (i < 4 ? w.agentUser : i < 8 ? w.manager : null),
      (i) => (i < 8 ? "select (app_public.accept_offer($1)).status as v" : "select app_private.expire_offer($1) as v"),
      [id],
    );
    const accepts = results.slice(0, 8);
    expect(accepts.filter((r) => r.ok)).toHaveLength(1);
    expect(accepts.filter((r) => !r.ok).map((r) => (r as { code: string }).code)).toEqual(Array(7).fill("22023"));
    expect(results.slice(8).map((r) => r.ok && r.value)).toEqual([false, false]);
    const root = rootPool();
    expect((await offerRow(root as unknown as pg.ClientBase, id)).status).toBe("accepted");
    expect(await load(root as unknown as pg.ClientBase, w)).toBe(1);
    const ev = await events(root as unknown as pg.ClientBase, w);
    expect(ev.map((e) => e.event_type)).toEqual(["accepted", "assigned"]);
  });

  it("[route_lead] accepts, rejects and expire_offer at once on a pending offer: exactly one transition", async () => {
    const w = await committedWorld();
    const client = await rootPool().connect();
    let id: string;
    try {
      id = await offer(client, w);
    } finally {
      client.release();
    }
    const results = await race(
      10,
      (i) => (i < 8 ? (i % 2 ? w.agentUser : w.manager) : null),
      (i) =>
        i < 4
          ? "select (app_public.accept_offer($1)).status as v"
          : i < 8
            ? "select (app_public.reject_offer($1, 'busy')).status as v"
            : "select app_private.expire_offer($1) as v",
      [id],
    );
    expect(results.slice(0, 8).filter((r) => r.ok)).toHaveLength(1);
    expect(results.slice(0, 8).filter((r) => !r.ok).every((r) => (r as { code: string }).code === "22023")).toBe(true);
    const root = rootPool() as unknown as pg.ClientBase;
    const status = (await offerRow(root, id)).status;
    expect(["accepted", "rejected"]).toContain(status);
    // Accepted keeps the reserved unit; rejected gives it back exactly once.
    expect(await load(root, w)).toBe(status === "accepted" ? 1 : 0);
    const ev = (await events(root, w)).filter((e) => e.offer_id === id).map((e) => e.event_type);
    expect(ev).toEqual(status === "accepted" ? ["accepted", "assigned"] : ["rejected"]);
  });

  it("[route_lead] 10 expire_offer calls at once on an expired offer: one true, load released exactly once", async () => {
    const w = await committedWorld();
    const client = await rootPool().connect();
    let id: string;
    try {
      id = await offer(client, w, { expired: true, load: 2 });
    } finally {
      client.release();
    }
    const results = await race(10, () => null, () => "select app_private.expire_offer($1) as v", [id]);
    expect(results.every((r) => r.ok)).toBe(true);
    expect(results.filter((r) => r.ok && r.value === true)).toHaveLength(1);
    const root = rootPool() as unknown as pg.ClientBase;
    expect((await offerRow(root, id)).status).toBe("expired");
    expect(await load(root, w)).toBe(1);
    expect((await events(root, w)).filter((e) => e.event_type === "expired")).toHaveLength(1);
  });
});

describe("the queue", () => {
  async function enqueue(client: pg.ClientBase, w: World, lead: string, priority: number, age: string, queue = "waiting") {
    await becomeRoot(client);
    return (
      await one<{ id: string }>(
        client,
        `insert into app_public.assignment_queue (tenant_id, lead_id, queue_type, priority, enqueued_at, sla_expires_at)
         values ($1, $2, $5, $3, now() - $4::interval, now() + interval '1 hour') returning id`,
        [w.tenant, lead, priority, age, queue],
      )
    ).id;
  }

  it("capacity appearing enqueues one routing__drain_queue job per tenant, only when leads are waiting", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const key = `routing_drain:${w.tenant}`;
      // Nobody waiting: no job.
      await client.query("update app_public.agent_availability set status = 'available' where agent_id = $1", [w.agent]);
      expect(await jobsWithKey(client, key)).toEqual([]);
      await client.query("update app_public.agent_availability set status = 'offline' where agent_id = $1", [w.agent]);
      await enqueue(client, w, w.lead, 0, "1 minute");
      // The agent sets their own status to available.
      await becomeUser(client, w.agentUser);
      await client.query("update app_public.agent_availability set status = 'available' where agent_id = $1", [w.agent]);
      await becomeRoot(client);
      expect(await jobsWithKey(client, key)).toEqual([{ identifier: "routing__drain_queue", payload: { tenant_id: w.tenant } }]);
      await client.query("delete from graphile_worker._private_jobs where key = $1", [key]);
      // Load going up does nothing; going down does.
      await client.query("update app_public.agent_availability set current_load = 2 where agent_id = $1", [w.agent]);
      expect(await jobsWithKey(client, key)).toEqual([]);
      await client.query("update app_public.agent_availability set current_load = 1 where agent_id = $1", [w.agent]);
      expect(await jobsWithKey(client, key)).toHaveLength(1);
      await client.query("delete from graphile_worker._private_jobs where key = $1", [key]);
      // A busy (not available) agent's load dropping does nothing.
      await client.query("update app_public.agent_availability set status = 'in_call' where agent_id = $1", [w.agent]);
      await client.query("update app_public.agent_availability set current_load = 0 where agent_id = $1", [w.agent]);
      expect(await jobsWithKey(client, key)).toEqual([]);
      // A slot becoming free (lock released), or a new free slot.
      const s = await slot(client, w, w.otherAgent, "09:00", "10:00");
      expect(await jobsWithKey(client, key)).toHaveLength(1);
      await client.query("delete from graphile_worker._private_jobs where key = $1", [key]);
      await client.query("update app_public.availability_slots set locked_by_lead_id = $2, locked_until = now() + interval '1 minute' where id = $1", [s, w.lead]);
      expect(await jobsWithKey(client, key)).toEqual([]);
      await client.query("update app_public.availability_slots set locked_by_lead_id = null, locked_until = null where id = $1", [s]);
      expect(await jobsWithKey(client, key)).toHaveLength(1);
    });
  });

  it("drain_routing_queue stops at once when no available agent has capacity (the entries keep their place)", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const entry = await enqueue(client, w, w.lead, 5, "5 minutes");
      expect((await one<{ n: number }>(client, "select app_private.drain_routing_queue($1) as n", [w.tenant])).n).toBe(0);
      await client.query("update app_public.agent_availability set status = 'available', current_load = 5 where agent_id = $1", [w.agent]);
      expect((await one<{ n: number }>(client, "select app_private.drain_routing_queue($1) as n", [w.tenant])).n).toBe(0);
      expect(await one(client, "select dequeued_at from app_public.assignment_queue where id = $1", [entry])).toEqual({ dequeued_at: null });
      expect(await client.query("select 1 from app_public.lead_routing_history where lead_id = $1", [w.lead]).then((r) => r.rows)).toEqual([]);
    });
  });

  it("[route_lead] drain_routing_queue routes waiting leads by priority, then age, until capacity runs out", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      // One agent with room for two leads; the other stays offline.
      await client.query("update app_public.agent_availability set status = 'available', current_load = 0, max_capacity = 2 where agent_id = $1", [w.agent]);
      const young = await newLead(client, w.tenant);
      const old = await newLead(client, w.tenant);
      const low = await newLead(client, w.tenant);
      await enqueue(client, w, low, 0, "1 hour");
      await enqueue(client, w, young, 10, "1 minute");
      await enqueue(client, w, old, 10, "10 minutes");
      await client.query("delete from app_public.leads where id = $1", [w.lead]); // not part of this test
      const routed = (await one<{ n: number }>(client, "select app_private.drain_routing_queue($1) as n", [w.tenant])).n;
      expect(routed).toBe(2);
      const offered = await client.query("select lead_id from app_public.routing_offers where tenant_id = $1 and status = 'pending' order by offered_at, lead_id", [w.tenant]);
      expect(offered.rows.map((r) => r.lead_id).sort()).toEqual([old, young].sort());
      const queue = await client.query("select lead_id, dequeue_reason from app_public.assignment_queue where tenant_id = $1", [w.tenant]);
      const byLead = Object.fromEntries(queue.rows.map((r) => [r.lead_id, r.dequeue_reason]));
      expect(byLead).toEqual({ [old]: "routed", [young]: "routed", [low]: null });
      expect(await load(client, w)).toBe(2);
      // The histories were made in queue order with the agent_available trigger.
      const order = await client.query("select lead_id from app_public.lead_routing_history where tenant_id = $1 and trigger = 'agent_available' order by id", [w.tenant]);
      expect(order.rows.map((r) => r.lead_id)).toEqual([old, young]); // low was never tried: no capacity left
    });
  });

  it("escalation: an entry past its SLA moves to the reassignment queue with higher priority and a new SLA, once", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      await client.query(
        `insert into app_public.system_config (tenant_id, key, value, value_type) values ($1, 'routing.sla_seconds.reassignment', '900', 'number')
         on conflict (tenant_id, key) do update set value = excluded.value, value_type = excluded.value_type`,
        [w.tenant],
      );
      const entry = (
        await one<{ id: string }>(
          client,
          `insert into app_public.assignment_queue (tenant_id, lead_id, queue_type, priority, enqueued_at, sla_expires_at)
           values ($1, $2, 'hot', 50, now() - interval '10 minutes', now() - interval '1 second') returning id`,
          [w.tenant, w.lead],
        )
      ).id;
      const other = await newLead(client, w.tenant);
      await client.query(
        "insert into app_public.assignment_queue (tenant_id, lead_id, queue_type, sla_expires_at) values ($1, $2, 'waiting', now() + interval '1 hour')",
        [w.tenant, other],
      );
      const n = (await one<{ n: number }>(client, "select app_private.escalate_expired_queue_entries() as n")).n;
      expect(n).toBeGreaterThanOrEqual(1);
      const old = await one<{ escalated_at: Date; dequeue_reason: string }>(client, "select * from app_public.assignment_queue where id = $1", [entry]);
      expect(old.escalated_at).not.toBeNull();
      expect(old.dequeue_reason).toBe("escalated");
      const moved = await client.query(
        `select queue_type, priority, enqueued_at = now() - interval '10 minutes' as kept_age,
                sla_expires_at = now() + interval '900 seconds' as new_sla, escalated_at, dequeue_reason
           from app_public.assignment_queue where lead_id = $1 and id <> $2`,
        [w.lead, entry],
      );
      expect(moved.rows).toHaveLength(1);
      // Without an available agent the lead waits in the reassignment queue (route_lead, when present, queues it again).
      expect(moved.rows[0]).toMatchObject({ queue_type: "reassignment", priority: 60, kept_age: true, new_sla: true, escalated_at: null });
      const escalated = (await events(client, w)).filter((e) => e.event_type === "escalated");
      expect(escalated).toHaveLength(1);
      expect(escalated[0].data).toMatchObject({ from_queue: "hot", to_queue: "reassignment", priority: 60, waited_seconds: 600 });
      // The other entry is within its SLA; a second run changes nothing for this tenant.
      await client.query("select app_private.escalate_expired_queue_entries()");
      expect((await events(client, w)).filter((e) => e.event_type === "escalated")).toHaveLength(1);
      expect((await one<{ n: number }>(client, "select count(*)::int as n from app_public.assignment_queue where lead_id = $1", [other])).n).toBe(1);
    });
  });
});

describe("expired slot locks", () => {
  it("release_expired_slot_locks clears only expired locks, with a lock_expired event each", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const expired = await slot(client, w, w.agent, "09:00", "10:00");
      const live = await slot(client, w, w.agent, "11:00", "12:00");
      await client.query("update app_public.availability_slots set locked_by_lead_id = $2, locked_until = now() - interval '1 second' where id = $1", [expired, w.lead]);
      await client.query("update app_public.availability_slots set locked_by_lead_id = $2, locked_until = now() + interval '5 minutes' where id = $1", [live, w.lead]);
      expect((await one<{ n: number }>(client, "select app_private.release_expired_slot_locks() as n")).n).toBeGreaterThanOrEqual(1);
      expect(await one(client, "select locked_until, locked_by_lead_id from app_public.availability_slots where id = $1", [expired])).toEqual({
        locked_until: null,
        locked_by_lead_id: null,
      });
      expect((await one<{ locked_by_lead_id: string }>(client, "select locked_by_lead_id from app_public.availability_slots where id = $1", [live])).locked_by_lead_id).toBe(w.lead);
      const ev = (await events(client, w)).filter((e) => e.event_type === "lock_expired");
      expect(ev).toHaveLength(1);
      expect(ev[0]).toMatchObject({ agent_id: w.agent, data: { slot_id: expired } });
      await client.query("select app_private.release_expired_slot_locks()");
      expect((await events(client, w)).filter((e) => e.event_type === "lock_expired")).toHaveLength(1);
    });
  });
});

describe("automatic routing of new leads (system_config routing.auto_route)", () => {
  const setMode = (client: pg.ClientBase, tenant: string, value: unknown, type = "string") =>
    client.query(
      `insert into app_public.system_config (tenant_id, key, value, value_type) values ($1, 'routing.auto_route', $2, $3)
       on conflict (tenant_id, key) do update set value = excluded.value, value_type = excluded.value_type`,
      [tenant, JSON.stringify(value), type],
    );

  it("refuses a bad value (22023), also for owners through the API role", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      for (const [value, type] of [["sometimes", "string"], [1, "number"], [true, "boolean"], ["INLINE", "string"]] as const) {
        const error = await expectSqlError(client, "22023", () => setMode(client, w.tenant, value, type));
        expect(error.message).toMatch(/routing\.auto_route/);
      }
      await becomeUser(client, w.owner);
      await expectSqlError(client, "22023", () => setMode(client, w.tenant, "always"));
      await setMode(client, w.tenant, "job");
      await setMode(client, w.tenant, "off");
    });
  });

  it("off (the default) does nothing; job enqueues lead__route {lead_id} with key lead_route:<lead_id>", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const quiet = await newLead(client, w.tenant);
      expect(await jobsWithKey(client, `lead_route:${quiet}`)).toEqual([]);
      await setMode(client, w.tenant, "job");
      await becomeUser(client, w.manager);
      const lead = (await one<{ id: string }>(client, "insert into app_public.leads (first_name, email) values ('Job', 'job@example.test') returning id")).id;
      await becomeRoot(client);
      expect(await jobsWithKey(client, `lead_route:${lead}`)).toEqual([{ identifier: "lead__route", payload: { lead_id: lead } }]);
      expect((await client.query("select 1 from app_public.lead_routing_history where lead_id = $1", [lead])).rows).toEqual([]);
    });
  });

  it("[route_lead] inline routes the lead in the inserting transaction (trigger new_lead)", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      await setMode(client, w.tenant, "inline");
      await becomeUser(client, w.manager);
      const lead = (await one<{ id: string }>(client, "insert into app_public.leads (first_name, email) values ('Inline', 'inline@example.test') returning id")).id;
      await becomeRoot(client);
      const { rows } = await client.query("select trigger from app_public.lead_routing_history where lead_id = $1", [lead]);
      expect(rows).toEqual([{ trigger: "new_lead" }]);
    });
  });
});

describe("the worker runs the routing tasks", () => {
  const TASKS = ["routing__expire_offer", "routing__drain_queue", "routing__escalate", "routing__release_locks", "lead__route"];

  async function committed<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await rootPool().connect();
    try {
      return await fn(client);
    } finally {
      client.release();
    }
  }

  it("routing__release_locks, routing__escalate and routing__drain_queue (payload checks included)", async () => {
    const { w, s, entry } = await committed(async (client) => {
      const w = await world(client);
      const s = await slot(client, w, w.agent, "09:00", "10:00");
      await client.query("update app_public.availability_slots set locked_by_lead_id = $2, locked_until = now() - interval '1 second' where id = $1", [s, w.lead]);
      const entry = (
        await one<{ id: string }>(
          client,
          "insert into app_public.assignment_queue (tenant_id, lead_id, queue_type, sla_expires_at) values ($1, $2, 'waiting', now() - interval '1 second') returning id",
          [w.tenant, w.lead],
        )
      ).id;
      await client.query("select app_private.add_job('routing__release_locks')");
      await client.query("select app_private.add_job('routing__escalate')");
      await client.query("select app_private.add_job('routing__drain_queue', json_build_object('tenant_id', $1::uuid))", [w.tenant]);
      await client.query("select app_private.add_job('routing__drain_queue', '{\"tenant_id\": \"nope\"}', max_attempts => 1, job_key => $1)", [`bad-drain-${w.tenant}`]);
      return { w, s, entry };
    });
    runner ??= await startWorker(ownerPool(), 2, { only: TASKS });
    const root = rootPool();
    expect(
      await waitFor(async () => (await root.query("select locked_until is null as done from app_public.availability_slots where id = $1", [s])).rows[0].done),
    ).toBe(true);
    expect(
      await waitFor(async () => (await root.query("select escalated_at is not null as done from app_public.assignment_queue where id = $1", [entry])).rows[0].done),
    ).toBe(true);
    // The malformed payload fails with a clear error and is not retried.
    expect(
      await waitFor(async () => {
        const { rows } = await root.query("select last_error from graphile_worker._private_jobs where key = $1", [`bad-drain-${w.tenant}`]);
        return rows[0]?.last_error?.includes("needs a payload {tenant_id: uuid}") ?? false;
      }),
    ).toBe(true);
  });

  it("[route_lead] routing__expire_offer expires a due offer and routes the lead again; lead__route routes a new lead", async () => {
    const { w, id, jobLead } = await committed(async (client) => {
      const w = await world(client);
      const id = await offer(client, w, { expired: true });
      await client.query("select app_private.add_job('routing__expire_offer', json_build_object('offer_id', $1::uuid), job_key => 'routing_offer:' || $1)", [id]);
      await setModeCommitted(client, w.tenant);
      const jobLead = await newLead(client, w.tenant);
      return { w, id, jobLead };
    });
    runner ??= await startWorker(ownerPool(), 2, { only: TASKS });
    const root = rootPool();
    expect(await waitFor(async () => (await root.query("select status from app_public.routing_offers where id = $1", [id])).rows[0].status === "expired")).toBe(true);
    expect(
      await waitFor(async () => (await root.query("select 1 from app_public.lead_routing_history where lead_id = $1 and trigger = 'offer_expired'", [w.lead])).rows.length === 1),
    ).toBe(true);
    expect(
      await waitFor(async () => (await root.query("select 1 from app_public.lead_routing_history where lead_id = $1 and trigger = 'new_lead'", [jobLead])).rows.length === 1),
    ).toBe(true);
  });

  async function setModeCommitted(client: pg.ClientBase, tenant: string) {
    await client.query(
      `insert into app_public.system_config (tenant_id, key, value, value_type) values ($1, 'routing.auto_route', '"job"', 'string')
       on conflict (tenant_id, key) do update set value = excluded.value, value_type = excluded.value_type`,
      [tenant],
    );
  }
});
