/**
 * The SMS outbox rules, in SQL: do-not-contact refusal (SB001), quiet hours and per-state caps for
 * marketing only, idempotency keys, status only moving forward, the claim that prevents duplicate
 * sends, opt-out / opt-in / HELP handling, and what the API lets a member do (queue_sms,
 * send_conversation_reply, request_phone_number).
 */
import pg from "pg";
import { describe, expect, it } from "vitest";
import { addMember, becomeRoot, db, becomeUser, expectSqlError, markEmailVerified, rootPool, withRootDb, registerUser, type RegisteredUser } from "../helpers.ts";

let serial = 0;
/** A unique E.164 number in an area code (global uniqueness matters for phone_numbers). */
function phone(area = "305"): string {
  serial += 1;
  return `+1${area}${String(Date.now() % 1000).padStart(3, "0")}${String((process.pid * 7 + serial) % 10000).padStart(4, "0")}`;
}

interface World {
  owner: RegisteredUser;
  tenant: string;
  business: string;
}

async function world(client: pg.ClientBase): Promise<World> {
  const owner = await registerUser(client, { businessName: "Ace Plumbing" });
  const business = phone("786");
  await client.query(
    `insert into app_public.phone_numbers (tenant_id, phone_number, phone_number_sid, area_code, status, date_provisioned)
     values ($1, $2, 'PN' || md5(random()::text), '786', 'active', now())`,
    [owner.tenant_id, business],
  );
  return { owner, tenant: owner.tenant_id!, business };
}

const sid = (prefix: string) => `${prefix}${[...crypto.getRandomValues(new Uint8Array(16))].map((b) => b.toString(16).padStart(2, "0")).join("")}`;

async function lead(client: pg.ClientBase, w: World, to: string, region = "FL"): Promise<string> {
  const { rows } = await client.query("insert into app_public.leads (tenant_id, phone, region, source) values ($1, $2, $3, 'test') returning id", [
    w.tenant,
    to,
    region,
  ]);
  return rows[0].id;
}

async function queue(client: pg.ClientBase, w: World, to: string, purpose: string, at: string | null = null, key: string | null = null) {
  const { rows } = await client.query(
    "select * from app_private.queue_message($1, $2, $3, 'Hello there', $4, 'system', null, null, $5, $6::timestamptz)",
    [w.tenant, to, w.business, purpose, key, at],
  );
  return rows[0];
}

describe("the outbox guard", () => {
  it("refuses any text to a number on the do-not-contact list with SB001, but lets the opt-out confirmation and HELP replies through", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const to = phone();
      await client.query("insert into app_public.dnc_list (tenant_id, phone, source) values ($1, $2, 'manual')", [w.tenant, to]);
      for (const purpose of ["conversation", "auto_response", "marketing", "nurture", "notification"]) {
        const error = await expectSqlError(client, "SB001", () => queue(client, w, to, purpose));
        expect(error.message).toContain("do-not-contact list");
      }
      expect((await queue(client, w, to, "opt_out_confirmation")).status).toBe("queued");
      expect((await queue(client, w, to, "help")).status).toBe("queued");
    });
  });

  it("holds marketing to the recipient's legal hours (Florida 8:00-20:00 local) but sends conversation replies at once", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const to = phone("305");
      await lead(client, w, to, "FL");
      // 21:30 in Miami on a Tuesday.
      const late = "2026-11-24 21:30:00 America/New_York";
      const marketing = await queue(client, w, to, "marketing", late);
      const { rows } = await client.query("select $1::timestamptz at time zone 'America/New_York' as local", [marketing.scheduled_for]);
      expect(rows[0].local.toISOString().slice(0, 19)).toBe("2026-11-25T08:00:00");
      const reply = await queue(client, w, to, "conversation", late);
      expect(new Date(reply.scheduled_for).getTime()).toBe(new Date("2026-11-25T02:30:00Z").getTime());
    });
  });

  it("keeps a Florida number at 3 marketing texts in any 24 hours: the 4th waits until the 1st is 24 hours old", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const to = phone("305");
      await lead(client, w, to, "FL");
      const times = ["2026-11-24 10:00", "2026-11-24 11:00", "2026-11-24 12:00", "2026-11-24 13:00"].map((t) => `${t} America/New_York`);
      const queued = [];
      for (const t of times) queued.push(await queue(client, w, to, "marketing", t));
      expect(new Date(queued[2].scheduled_for).getTime()).toBe(new Date("2026-11-24T17:00:00Z").getTime());
      expect(new Date(queued[3].scheduled_for).getTime()).toBe(new Date("2026-11-25T15:00:00Z").getTime());
      // A Texas number has no cap: four in a row go as asked.
      const tx = phone("512");
      await lead(client, w, tx, "TX");
      for (const t of times) await queue(client, w, tx, "marketing", t);
      const { rows } = await client.query("select count(*)::int as n from app_public.messages where to_phone = $1 and scheduled_for < '2026-11-25'", [tx]);
      expect(rows[0].n).toBe(4);
    });
  });

  it("the same idempotency key returns the first message instead of a second one", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const to = phone();
      const a = await queue(client, w, to, "conversation", null, "order-42");
      const b = await queue(client, w, to, "conversation", null, "order-42");
      expect(b.id).toBe(a.id);
      const { rows } = await client.query("select count(*)::int as n from app_public.messages where tenant_id = $1 and idempotency_key = 'order-42'", [w.tenant]);
      expect(rows[0].n).toBe(1);
    });
  });

  it("rejects a body over 1600 characters, an empty body and a number that is not E.164 with 22023", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const call = (to: string, body: string) =>
        client.query("select app_private.queue_message($1, $2, $3, $4, 'conversation', 'system')", [w.tenant, to, w.business, body]);
      expect((await expectSqlError(client, "22023", () => call(phone(), "x".repeat(1601)))).message).toContain("at most 1600");
      await expectSqlError(client, "22023", () => call(phone(), "   "));
      expect((await expectSqlError(client, "22023", () => call("305-555-0100", "hi"))).message).toContain("E.164");
    });
  });
});

describe("concurrency", () => {
  it("10 connections queuing one idempotency key make one message; 6 connections queuing marketing to one Florida number keep the cap", async () => {
    const setup = await rootPool().connect();
    let w: World;
    const to = phone("305");
    try {
      w = await world(setup);
      await lead(setup, w, to, "FL");
    } finally {
      setup.release();
    }
    const pool = new pg.Pool({ connectionString: db.rootUrl, max: 10 });
    const clients = await Promise.all(Array.from({ length: 10 }, () => pool.connect()));
    try {
      await Promise.all(clients.map((c) => c.query("begin")));
      // Each commits as soon as its call returns: the later ones wait for the first to commit.
      await Promise.all(clients.map(async (c) => {
        await queue(c, w, to, "conversation", null, "same-key");
        await c.query("commit");
      }));
      await Promise.all(clients.slice(0, 6).map((c) => c.query("begin")));
      const at = "2026-11-24 10:00 America/New_York";
      await Promise.all(clients.slice(0, 6).map(async (c) => {
        await queue(c, w, to, "marketing", at);
        await c.query("commit");
      }));
      const root = rootPool();
      const { rows: keyed } = await root.query("select count(*)::int as n from app_public.messages where tenant_id = $1 and idempotency_key = 'same-key'", [w.tenant]);
      expect(keyed[0].n).toBe(1);
      const { rows: windows } = await root.query(
        `select max((select count(*) from app_public.messages o where o.to_phone = m.to_phone and o.purpose = 'marketing'
                      and o.scheduled_for >= m.scheduled_for and o.scheduled_for < m.scheduled_for + interval '24 hours'))::int as worst
           from app_public.messages m where m.to_phone = $1 and m.purpose = 'marketing'`,
        [to],
      );
      expect(windows[0].worst).toBe(3);
    } finally {
      await Promise.all(clients.map((c) => c.query("rollback").catch(() => undefined)));
      clients.forEach((c) => c.release());
      await pool.end();
    }
  });
});

describe("a status callback racing the worker", () => {
  it("a delivery report that arrives while the worker is recording the provider id waits for it and is applied, not lost", async () => {
    const setup = await rootPool().connect();
    let w: World;
    let id: string;
    try {
      w = await world(setup);
      id = (await queue(setup, w, phone(), "conversation")).id;
      await setup.query("select app_private.claim_outbound_message($1)", [id]);
    } finally {
      setup.release();
    }
    const providerSid = sid("SM");
    const pool = new pg.Pool({ connectionString: db.rootUrl, max: 2 });
    const worker = await pool.connect();
    try {
      // The worker records the provider id in a transaction that has not committed yet...
      await worker.query("begin");
      await worker.query("select app_private.record_message_sent($1, $2, 'queued')", [id, providerSid]);
      // ...when the provider's "delivered" report arrives (it names our message in the callback URL).
      const report = pool.query("select app_private.apply_message_status($1, $2, 'delivered') as applied", [id, providerSid]);
      await new Promise((r) => setTimeout(r, 200));
      await worker.query("commit");
      expect((await report).rows[0].applied).toBe(true);
      const { rows } = await pool.query("select status, message_sid from app_public.messages where id = $1", [id]);
      expect(rows[0]).toEqual({ status: "delivered", message_sid: providerSid });
    } finally {
      await worker.query("rollback").catch(() => undefined);
      worker.release();
      await pool.query("delete from graphile_worker._private_jobs where key = 'sms_send:' || $1", [id!]);
      await pool.query("delete from app_public.tenants where id = $1", [w!.tenant]);
      await pool.end();
    }
  });
});

describe("the send lifecycle", () => {
  it("only one claim succeeds; a number that joins the list before sending is canceled at the claim", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const a = await queue(client, w, phone(), "conversation");
      const first = await client.query("select * from app_private.claim_outbound_message($1)", [a.id]);
      expect(first.rows[0].status).toBe("sending");
      const second = await client.query("select (app_private.claim_outbound_message($1)).id", [a.id]);
      expect(second.rows[0].id).toBeNull();
      const to = phone();
      const b = await queue(client, w, to, "conversation");
      await client.query("insert into app_public.dnc_list (tenant_id, phone, source) values ($1, $2, 'manual')", [w.tenant, to]);
      expect((await client.query("select (app_private.claim_outbound_message($1)).id", [b.id])).rows[0].id).toBeNull();
      const { rows } = await client.query("select status, error_message from app_public.messages where id = $1", [b.id]);
      expect(rows[0].status).toBe("canceled");
      expect(rows[0].error_message).toContain("do-not-contact");
    });
  });

  it("status only moves forward: delivered is never overwritten by a late sent; unknown statuses are 22023", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const m = await queue(client, w, phone(), "conversation");
      const s = sid("SM");
      await client.query("select app_private.claim_outbound_message($1)", [m.id]);
      await client.query("select app_private.record_message_sent($1, $2, 'queued')", [m.id, s]);
      expect((await client.query("select app_private.apply_message_status(null, $1, 'delivered') as c", [s])).rows[0].c).toBe(true);
      expect((await client.query("select app_private.apply_message_status(null, $1, 'sent') as c", [s])).rows[0].c).toBe(false);
      expect((await client.query("select app_private.apply_message_status(null, $1, 'failed') as c", [s])).rows[0].c).toBe(false);
      expect((await client.query("select status from app_public.messages where id = $1", [m.id])).rows[0].status).toBe("delivered");
      await expectSqlError(client, "22023", () => client.query("select app_private.apply_message_status(null, $1, 'exploded')", [s]));
      await expectSqlError(client, "P0002", () => client.query("select app_private.apply_message_status(null, $1, 'sent')", [sid("SM")]));
    });
  });

  it("reconciliation takes the provider's id when the provider has the message, and queues it again when it has none", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const a = await queue(client, w, phone(), "conversation");
      const b = await queue(client, w, phone(), "conversation");
      await client.query("select app_private.claim_outbound_message($1), app_private.claim_outbound_message($2)", [a.id, b.id]);
      const s = sid("SM");
      expect((await client.query("select app_private.reconcile_message($1, $2, 'delivered') as r", [a.id, s])).rows[0].r).toBe("delivered");
      expect((await client.query("select app_private.reconcile_message($1, null, null) as r", [b.id])).rows[0].r).toBe("queued");
      expect((await client.query("select app_private.reconcile_message($1, null, null) as r", [a.id])).rows[0].r).toBe("delivered");
    });
  });
});

describe("inbound keywords", () => {
  async function inbound(client: pg.ClientBase, w: World, from: string, body: string) {
    const { rows } = await client.query("select * from app_private.record_inbound_message($1, $2, $3, $4)", [sid("SM"), from, w.business, body]);
    return rows[0];
  }

  it("STOP puts the number on the list, cancels what is queued, ends the conversation and sends one confirmation; START brings it back", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const from = phone();
      await inbound(client, w, from, "Hi, my sink is clogged");
      const pending = await queue(client, w, from, "conversation");
      await inbound(client, w, from, "Stop please!");
      await inbound(client, w, from, "STOP");
      const { rows: dnc } = await client.query("select source from app_public.dnc_list where tenant_id = $1 and phone = $2", [w.tenant, from]);
      expect(dnc).toEqual([{ source: "sms_opt_out" }]);
      expect((await client.query("select status from app_public.messages where id = $1", [pending.id])).rows[0].status).toBe("canceled");
      const { rows: confirmations } = await client.query(
        "select body from app_public.messages where to_phone = $1 and purpose = 'opt_out_confirmation'",
        [from],
      );
      expect(confirmations).toHaveLength(1);
      expect(confirmations[0].body).toContain("Ace Plumbing");
      expect((await client.query("select status, ai_active from app_public.conversations where customer_phone = $1", [from])).rows[0]).toEqual({
        status: "opted_out",
        ai_active: false,
      });
      const { rows: events } = await client.query("select event, source, keyword from app_public.sms_consent_events where phone = $1 order by occurred_at", [from]);
      expect(events.map((e) => e.keyword)).toEqual(["STOP PLEASE!", "STOP"]);

      await inbound(client, w, from, "start");
      expect((await client.query("select count(*)::int as n from app_public.dnc_list where phone = $1", [from])).rows[0].n).toBe(0);
      expect((await client.query("select count(*)::int as n from app_public.messages where to_phone = $1 and purpose = 'opt_in_confirmation'", [from])).rows[0].n).toBe(1);
    });
  });

  it("START does not lift a block a manager set, and YES from a number that never opted out is an ordinary answer", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const blocked = phone();
      await client.query("insert into app_public.dnc_list (tenant_id, phone, source) values ($1, $2, 'manual')", [w.tenant, blocked]);
      await inbound(client, w, blocked, "START");
      expect((await client.query("select count(*)::int as n from app_public.dnc_list where phone = $1", [blocked])).rows[0].n).toBe(1);
      const other = phone();
      const yes = await inbound(client, w, other, "Yes");
      expect(yes.keyword).toBe("opt_in");
      expect((await client.query("select count(*)::int as n from app_public.messages where to_phone = $1", [other])).rows[0].n).toBe(0);
      expect((await client.query("select count(*)::int as n from app_public.leads where phone = $1", [other])).rows[0].n).toBe(1);
    });
  });

  it("HELP gets the help text of the tenant, even from an opted-out number", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const from = phone();
      await inbound(client, w, from, "STOP");
      await inbound(client, w, from, "help");
      const { rows } = await client.query("select body from app_public.messages where to_phone = $1 and purpose = 'help'", [from]);
      expect(rows[0].body).toMatch(/^Ace Plumbing: .*Reply STOP to opt out\.$/);
    });
  });
});

describe("the API", () => {
  it("queue_sms: members text a lead from the business number; SB001 for a listed number; 22023 without an active number", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const agent = await addMember(client, w.tenant, "agent");
      const to = phone();
      const id = await lead(client, w, to, "TX");
      await becomeUser(client, agent);
      const { rows } = await client.query("select * from app_public.queue_sms($1, 'Spring tune-up special', 'marketing')", [id]);
      expect(rows[0]).toMatchObject({ from_phone: w.business, to_phone: to, sender: "human", purpose: "marketing", status: "queued" });
      await becomeRoot(client);
      await client.query("insert into app_public.dnc_list (tenant_id, phone, source) values ($1, $2, 'manual')", [w.tenant, to]);
      await becomeUser(client, agent);
      await expectSqlError(client, "SB001", () => client.query("select app_public.queue_sms($1, 'again')", [id]));
      await becomeRoot(client);
      await client.query("update app_public.phone_numbers set status = 'released' where tenant_id = $1", [w.tenant]);
      await client.query("delete from app_public.dnc_list where phone = $1", [to]);
      await becomeUser(client, agent);
      expect((await expectSqlError(client, "22023", () => client.query("select app_public.queue_sms($1, 'again')", [id]))).message).toContain("no active phone number");
    });
  });

  it("request_phone_number: owners with a verified email only; a malformed area code is 22023; the row starts provisioning with its job", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const agent = await addMember(client, w.tenant, "agent");
      await becomeUser(client, agent);
      await expectSqlError(client, "42501", () => client.query("select app_public.request_phone_number('305')"));
      await becomeUser(client, w.owner);
      // An owner whose email address is not verified yet can't buy (nor can an API key: no user).
      await expectSqlError(client, "55000", () => client.query("select app_public.request_phone_number('305')"));
      await becomeRoot(client);
      await markEmailVerified(client, w.owner.user_id);
      await becomeUser(client, w.owner);
      await expectSqlError(client, "22023", () => client.query("select app_public.request_phone_number('05')"));
      const { rows } = await client.query("select * from app_public.request_phone_number('305')");
      expect(rows[0]).toMatchObject({ status: "provisioning", area_code: "305", friendly_name: "Ace Plumbing" });
      await becomeRoot(client);
      const { rows: jobs } = await client.query("select count(*)::int as n from graphile_worker._private_jobs where key = $1", [`provision:${rows[0].id}`]);
      expect(jobs[0].n).toBe(1);
    });
  });
});
