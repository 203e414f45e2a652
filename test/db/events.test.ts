/**
 * The domain event log (issue 18): every change writes its event in its own transaction, numbered
 * without gaps per business when that transaction commits (in commit order, so a cursor never skips
 * one), never rewritten, read by owners and admins only through eventsAfter.
 */
import pg from "pg";
import { describe, expect, it } from "vitest";
import { addMember, becomeRoot, db, becomeUser, expectSqlError, registerUser, rootPool, withRootDb } from "../helpers.ts";

/** Number the statement's events now instead of at the commit, so a rolled-back test sees them. */
const numberNow = (client: pg.ClientBase) => client.query("set constraints app_private._900_number immediate");

async function eventsOf(client: pg.ClientBase, tenantId: string): Promise<{ seq: string; type: string; lead_id: string | null; data: Record<string, unknown> }[]> {
  const { rows } = await client.query("select seq, type, lead_id, data from app_public.events where tenant_id = $1 order by seq", [tenantId]);
  return rows;
}

describe("domain events", () => {
  it("a lead's life writes lead.created, lead.updated, lead.status_changed and lead.assigned, numbered 1, 2, 3, … in the order written", async () => {
    await withRootDb(async (client) => {
      await numberNow(client);
      const owner = await registerUser(client);
      const { rows: [lead] } = await client.query("insert into app_public.leads (tenant_id, first_name, phone, source) values ($1, 'Ann', '+12125550101', 'web') returning id", [owner.tenant_id]);
      await client.query("update app_public.leads set city = 'Austin', problem_description = 'leak' where id = $1", [lead.id]);
      await client.query("update app_public.leads set status = 'contacted' where id = $1", [lead.id]);
      const { rows: [agent] } = await client.query("insert into app_public.agents (tenant_id, display_name) values ($1, 'Bo') returning id", [owner.tenant_id]);
      await client.query("update app_public.leads set owner_agent_id = $2 where id = $1", [lead.id, agent.id]);
      const events = await eventsOf(client, owner.tenant_id!);
      const types = events.map((e) => e.type);
      expect(types.slice(0, 3)).toEqual(["lead.created", "lead.updated", "lead.status_changed"]);
      expect(types).toContain("lead.assigned");
      expect(events.map((e) => Number(e.seq))).toEqual(events.map((_, i) => i + 1));
      expect(events[0]!.data).toMatchObject({ id: lead.id, first_name: "Ann", phone: "+12125550101", source: "web", status: "new" });
      expect(events[1]!.data).toEqual({ id: lead.id, changes: { city: "Austin", problem_description: "leak" } });
      expect(events[2]!.data).toEqual({ id: lead.id, from: "new", to: "contacted" });
      const assigned = events.find((e) => e.type === "lead.assigned")!;
      expect(assigned.lead_id).toBe(lead.id);
      expect(assigned.data).toMatchObject({ lead_id: lead.id, to_agent_id: agent.id });
      // An update that changes nothing tells nothing.
      const before = events.length;
      await client.query("update app_public.leads set city = 'Austin' where id = $1", [lead.id]);
      expect((await eventsOf(client, owner.tenant_id!)).length).toBe(before);
    });
  });

  it("texts, consent, opt-outs and nurture write their events", async () => {
    await withRootDb(async (client) => {
      await numberNow(client);
      const owner = await registerUser(client);
      const t = owner.tenant_id!;
      const { rows: [lead] } = await client.query("insert into app_public.leads (tenant_id, first_name, phone) values ($1, 'Cy', '+12125550102') returning id", [t]);
      await client.query(
        `insert into app_public.messages (tenant_id, lead_id, direction, sender, purpose, from_phone, to_phone, body, status)
         values ($1, $2, 'inbound', 'customer', 'conversation', '+12125550102', '+12125550999', 'Is Tuesday ok?', 'received')`,
        [t, lead.id],
      );
      await client.query(
        `insert into app_public.consent_records (tenant_id, lead_id, channel, phone, purpose, method, disclosure, given_at, evidence_hash)
         values ($1, $2, 'sms', '+12125550102', 'marketing', 'api', 'I agree to receive marketing texts from this business. Reply STOP to stop.', now(), repeat('0', 64))`,
        [t, lead.id],
      );
      await client.query("select app_private.record_opt_out($1, '+12125550102', '+12125550999', 'STOP', null)", [t]);
      const types = (await eventsOf(client, t)).map((e) => e.type);
      expect(types).toContain("message.received");
      expect(types.filter((x) => x === "consent.changed").length).toBeGreaterThanOrEqual(1);
      expect(types).toContain("consent.opt_out");
      const received = (await eventsOf(client, t)).find((e) => e.type === "message.received")!;
      expect(received.data).toMatchObject({ body: "Is Tuesday ok?", from_phone: "+12125550102", lead_id: lead.id });
    });
  });

  it("an event is history: nobody rewrites or deletes it, not even the owner role, and requests cannot write one", async () => {
    await withRootDb(async (client) => {
      await numberNow(client);
      const owner = await registerUser(client);
      await client.query("insert into app_public.leads (tenant_id, first_name, email) values ($1, 'Di', 'di@example.test')", [owner.tenant_id]);
      await client.query(`set local role ${pg.escapeIdentifier(db.roles.owner)}`);
      await expectSqlError(client, "55000", () => client.query("update app_public.events set data = '{}' where tenant_id = $1", [owner.tenant_id]));
      await expectSqlError(client, "55000", () => client.query("update app_public.events set seq = seq + 100 where tenant_id = $1", [owner.tenant_id]));
      await expectSqlError(client, "55000", () => client.query("delete from app_public.events where tenant_id = $1", [owner.tenant_id]));
      await expectSqlError(client, "55000", () => client.query("truncate app_public.events cascade"));
      await becomeUser(client, owner);
      await expectSqlError(client, "42501", () =>
        client.query("insert into app_public.events (tenant_id, type, data) values ($1, 'lead.created', '{}')", [owner.tenant_id]),
      );
      // The whole business goes, its events with it.
      await becomeRoot(client);
      await client.query("delete from app_public.tenants where id = $1", [owner.tenant_id]);
      expect((await eventsOf(client, owner.tenant_id!)).length).toBe(0);
    });
  });

  it("a rolled-back change leaves no event and no hole in the numbers", async () => {
    const pool = rootPool();
    const root = await pool.connect();
    let tenant: string;
    try {
      tenant = (await registerUser(root)).tenant_id!;
      await root.query("begin");
      await root.query("insert into app_public.leads (tenant_id, first_name, email) values ($1, 'Rolled', gen_random_uuid() || '@example.test')", [tenant]);
      await root.query("rollback");
      await root.query("insert into app_public.leads (tenant_id, first_name, email) values ($1, 'Kept', gen_random_uuid() || '@example.test')", [tenant]);
      await root.query("begin");
      await root.query("insert into app_public.leads (tenant_id, first_name, email) values ($1, 'Also rolled', gen_random_uuid() || '@example.test')", [tenant]);
      await root.query("set constraints app_private._900_number immediate");
      await root.query("rollback");
      await root.query("insert into app_public.leads (tenant_id, first_name, email) values ($1, 'Kept too', gen_random_uuid() || '@example.test')", [tenant]);
      const events = await eventsOf(root, tenant);
      expect(events.map((e) => [Number(e.seq), e.type, e.data.first_name])).toEqual([
        [1, "lead.created", "Kept"],
        [2, "lead.created", "Kept too"],
      ]);
    } finally {
      root.release();
    }
  });

  it("concurrent writers of one business get numbers without gaps or repeats, and a reader following the cursor meanwhile sees each event exactly once", async () => {
    const pool = rootPool();
    const tenant = await (async () => {
      const c = await pool.connect();
      try {
        return (await registerUser(c)).tenant_id!;
      } finally {
        c.release();
      }
    })();
    const WRITERS = 6;
    const TRANSACTIONS = 15;
    let writing = true;
    const seen: number[] = [];
    const reader = (async () => {
      const c = await pool.connect();
      try {
        let cursor = 0;
        for (;;) {
          const stillWriting = writing;
          const { rows } = await c.query<{ seq: string }>(
            "select seq from app_public.events where tenant_id = $1 and seq > $2 order by seq limit 50",
            [tenant, cursor],
          );
          for (const row of rows) seen.push(Number(row.seq));
          if (rows.length > 0) cursor = Number(rows[rows.length - 1]!.seq);
          else if (!stillWriting) return;
        }
      } finally {
        c.release();
      }
    })();
    await Promise.all(
      Array.from({ length: WRITERS }, async (_, w) => {
        const c = await pool.connect();
        try {
          for (let i = 0; i < TRANSACTIONS; i++) {
            await c.query("begin");
            // Two events per transaction (lead.created, then lead.updated), and a random pause before the commit.
            const { rows: [lead] } = await c.query("insert into app_public.leads (tenant_id, first_name, email) values ($1, $2, gen_random_uuid() || '@example.test') returning id", [tenant, `W${w}-${i}`]);
            await c.query("update app_public.leads set city = 'Reno' where id = $1", [lead.id]);
            await new Promise((r) => setTimeout(r, Math.random() * 5));
            await c.query("commit");
          }
        } finally {
          c.release();
        }
      }),
    );
    writing = false;
    await reader;
    const total = WRITERS * TRANSACTIONS * 2;
    expect(seen).toEqual(Array.from({ length: total }, (_, i) => i + 1));
    // And within each transaction its two events are consecutive, in the order written.
    const { rows } = await pool.query<{ lead_id: string; seqs: string[] }>(
      "select lead_id, array_agg(seq order by seq)::text[] as seqs from app_public.events where tenant_id = $1 group by lead_id",
      [tenant],
    );
    for (const row of rows) expect(Number(row.seqs[1]) - Number(row.seqs[0])).toBe(1);
  }, 60_000);

  it("eventsAfter pages through the feed by cursor and type, for owners and admins of the business only", async () => {
    await withRootDb(async (client) => {
      await numberNow(client);
      const owner = await registerUser(client);
      const other = await registerUser(client);
      for (let i = 0; i < 5; i++) {
        const { rows: [lead] } = await client.query("insert into app_public.leads (tenant_id, first_name, email) values ($1, $2, gen_random_uuid() || '@example.test') returning id", [owner.tenant_id, `L${i}`]);
        await client.query("update app_public.leads set status = 'contacted' where id = $1", [lead.id]);
      }
      await client.query("insert into app_public.leads (tenant_id, first_name, email) values ($1, 'Theirs', gen_random_uuid() || '@example.test')", [other.tenant_id]);
      const admin = await addMember(client, owner.tenant_id!, "admin");
      const agent = await addMember(client, owner.tenant_id!, "agent");

      await becomeUser(client, admin);
      const page1 = await client.query("select seq, type from app_public.events_after(0, 4)");
      expect(page1.rows.map((r) => Number(r.seq))).toEqual([1, 2, 3, 4]);
      const page2 = await client.query("select seq from app_public.events_after(4, 100)");
      expect(page2.rows.map((r) => Number(r.seq))).toEqual([5, 6, 7, 8, 9, 10]);
      const created = await client.query("select seq, type from app_public.events_after(0, 3, '{lead.created}')");
      expect(created.rows).toEqual([{ seq: "1", type: "lead.created" }, { seq: "3", type: "lead.created" }, { seq: "5", type: "lead.created" }]);
      const both = await client.query("select seq from app_public.events_after(2, 3, '{lead.status_changed,lead.created}')");
      expect(both.rows.map((r) => Number(r.seq))).toEqual([3, 4, 5]);
      // Never another business's, whatever the cursor.
      const all = await client.query("select distinct tenant_id from app_public.events_after(0, 1000)");
      expect(all.rows).toEqual([{ tenant_id: owner.tenant_id }]);
      expect((await client.query("select count(*)::int as n from app_public.events")).rows[0].n).toBe(10);

      for (const [args, message] of [
        ["-1, 10", /afterSeq/],
        ["0, 0", /maxCount/],
        ["0, 1001", /maxCount/],
        ["0, 10, '{lead.exploded}'", /Unknown event type 'lead.exploded'/],
        ["0, 10, '{}'", /types/],
        ["0, 10, array[null]::text[]", /Unknown event type null/],
      ] as const) {
        const error = await expectSqlError(client, "22023", () => client.query(`select * from app_public.events_after(${args})`));
        expect(error.message).toMatch(message);
      }

      await becomeUser(client, agent);
      await expectSqlError(client, "42501", () => client.query("select * from app_public.events_after(0, 10)"));
      expect((await client.query("select count(*)::int as n from app_public.events")).rows[0].n).toBe(0);
    });
  });
});
