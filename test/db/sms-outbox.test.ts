/**
 * The SMS outbox rules, in SQL: do-not-contact refusal (SB001), quiet hours and per-state caps for
 * marketing only, idempotency keys, status only moving forward, the claim that prevents duplicate
 * sends, opt-out / opt-in / HELP handling, and what the API lets a member do (queue_sms,
 * send_conversation_reply, request_phone_number).
 */
import pg from "pg";
import { describe, expect, it } from "vitest";
import { addMember, becomeRoot, consentToMarketingTexts, db, becomeUser, expectSqlError, markEmailVerified, rootPool, withRootDb, registerUser, type RegisteredUser } from "../helpers.ts";

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

/**
 * The active conversation of a customer with the business number, as if they had just texted (a
 * reply needs one they started). `lastContact` backdates their last text.
 */
async function customerConversation(client: pg.ClientBase, w: World, to: string, lastContact: string | null = null): Promise<string> {
  const { rows } = await client.query(
    `insert into app_public.conversations (tenant_id, customer_phone, business_phone, created_at, last_customer_message_time)
     values ($1, $2, $3, coalesce($4::timestamptz, now()), coalesce($4::timestamptz, now()))
     on conflict (tenant_id, customer_phone, business_phone) where status = 'active'
     do update set created_at = excluded.created_at, last_customer_message_time = excluded.last_customer_message_time
     returning id`,
    [w.tenant, to, w.business, lastContact],
  );
  return rows[0].id;
}

/** Queues a text through app_private.queue_message; a reply (conversation, auto_response) goes in the customer's conversation. */
async function queue(client: pg.ClientBase, w: World, to: string, purpose: string, at: string | null = null, key: string | null = null) {
  const conversation = purpose === "conversation" || purpose === "auto_response" ? await customerConversation(client, w, to) : null;
  if (purpose === "marketing" || purpose === "nurture") await consentToMarketingTexts(client, w.tenant, to);
  const { rows } = await client.query(
    "select * from app_private.queue_message($1, $2, $3, 'Hello there', $4, 'system', $7, null, $5, $6::timestamptz)",
    [w.tenant, to, w.business, purpose, key, at, conversation],
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

describe("no bypass of sending hours (issue 17)", () => {
  const local = async (client: pg.ClientBase, at: string) =>
    ((await client.query("select to_char($1::timestamptz at time zone 'America/New_York', 'YYYY-MM-DD HH24:MI') as t", [at])).rows[0].t as string);
  const messageCount = async (client: pg.ClientBase, w: World) =>
    Number((await client.query("select count(*) as n from app_public.messages where tenant_id = $1", [w.tenant])).rows[0].n);

  it("a member cannot text a lead as a notification: queue_sms takes marketing only (22023, nothing written)", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const agent = await addMember(client, w.tenant, "agent");
      const id = await lead(client, w, phone("305"), "FL");
      await becomeUser(client, agent);
      for (const purpose of ["notification", "conversation", "auto_response", "nurture", "help", "Marketing", ""]) {
        const error = await expectSqlError(client, "22023", () => client.query("select app_public.queue_sms($1, 'Come in today', $2)", [id, purpose]));
        expect(error.message).toContain("purpose must be marketing");
      }
      await becomeRoot(client);
      expect(await messageCount(client, w)).toBe(0);
    });
  });

  it("a notification goes only to a member's profile phone (at once, at any hour); to a lead or a stranger it is 22023", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const member = await addMember(client, w.tenant, "agent");
      const staff = phone("305");
      await client.query(
        "insert into app_public.user_profiles (tenant_id, user_id, phone_number) values ($1, $2, $3) on conflict (tenant_id, user_id) do update set phone_number = excluded.phone_number",
        [w.tenant, member.user_id, staff],
      );
      const night = "2026-11-24 03:00:00 America/New_York";
      const ok = await queue(client, w, staff, "notification", night);
      expect(await local(client, ok.scheduled_for)).toBe("2026-11-24 03:00");
      const customer = phone("305");
      const leadId = await lead(client, w, customer, "FL");
      const before = await messageCount(client, w);
      const toLead = await expectSqlError(client, "22023", () =>
        client.query("select app_private.queue_message($1, $2, $3, 'Hi', 'notification', 'system', null, $4, null, $5::timestamptz)", [w.tenant, customer, w.business, leadId, night]),
      );
      expect(toLead.message).toContain("only to a member of this business");
      await expectSqlError(client, "22023", () => queue(client, w, customer, "notification", night));
      // A member's phone named as a lead's is still a text to a lead.
      await expectSqlError(client, "22023", () =>
        client.query("select app_private.queue_message($1, $2, $3, 'Hi', 'notification', 'system', null, $4)", [w.tenant, staff, w.business, leadId]),
      );
      // A member who types a customer's number into their own profile does not make it theirs.
      await client.query(
        "insert into app_public.user_profiles (tenant_id, user_id, phone_number) values ($1, $2, $3) on conflict (tenant_id, user_id) do update set phone_number = excluded.phone_number",
        [w.tenant, member.user_id, customer],
      );
      await expectSqlError(client, "22023", () => queue(client, w, customer, "notification", night));
      // The phone of a member of another business is not ours to notify.
      const other = await world(client);
      const outsider = await addMember(client, other.tenant, "agent");
      const theirs = phone("305");
      await client.query(
        "insert into app_public.user_profiles (tenant_id, user_id, phone_number) values ($1, $2, $3) on conflict (tenant_id, user_id) do update set phone_number = excluded.phone_number",
        [other.tenant, outsider.user_id, theirs],
      );
      await expectSqlError(client, "22023", () => queue(client, w, theirs, "notification", night));
      expect(await messageCount(client, w)).toBe(before);
    });
  });

  it("a reply goes at once within 24 hours of the customer's last text in a conversation they started; later it waits for legal hours; without one it is 22023", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const late = "2026-11-24 21:30:00 America/New_York";
      const send = (to: string, conversation: string | null, purpose = "conversation") =>
        client.query("select * from app_private.queue_message($1, $2, $3, 'Sure, we can come', $4, 'human', $5, null, null, $6::timestamptz)", [
          w.tenant, to, w.business, purpose, conversation, late,
        ]);
      // The customer texted at 20:00 the same evening: the answer goes at 21:30.
      const recent = phone("305");
      await lead(client, w, recent, "FL");
      const fresh = (await send(recent, await customerConversation(client, w, recent, "2026-11-24 20:00:00 America/New_York"))).rows[0];
      expect(await local(client, fresh.scheduled_for)).toBe("2026-11-24 21:30");
      // They last texted two days before: the text is no answer any more and waits for 8:00 in Florida.
      const old = phone("305");
      await lead(client, w, old, "FL");
      // A late reply is held like marketing, and needs the marketing consent too (issue 17).
      await consentToMarketingTexts(client, w.tenant, old);
      for (const purpose of ["conversation", "auto_response"]) {
        const held = (await send(old, await customerConversation(client, w, old, "2026-11-22 10:00:00 America/New_York"), purpose)).rows[0];
        expect(await local(client, held.scheduled_for), purpose).toBe("2026-11-25 08:00");
      }
      // They call again at 21:25 (a repeat call reuses the active conversation without touching it):
      // the missed-call text answers that call and goes at once.
      await client.query(
        "insert into app_public.calls (tenant_id, call_sid, customer_phone, business_phone, start_time) values ($1, $2, $3, $4, '2026-11-24 21:25:00 America/New_York')",
        [w.tenant, sid("CA"), old, w.business],
      );
      const answer = (await send(old, await customerConversation(client, w, old, "2026-11-22 10:00:00 America/New_York"), "auto_response")).rows[0];
      expect(await local(client, answer.scheduled_for)).toBe("2026-11-24 21:30");
      // Exactly 24 hours after their text it still answers them; a minute later it waits.
      const edge = phone("305");
      await lead(client, w, edge, "FL");
      await consentToMarketingTexts(client, w.tenant, edge);
      const edgeConversation = await customerConversation(client, w, edge, "2026-11-23 21:30:00 America/New_York");
      expect(await local(client, (await send(edge, edgeConversation)).rows[0].scheduled_for)).toBe("2026-11-24 21:30");
      await client.query("update app_public.conversations set created_at = created_at - interval '1 minute', last_customer_message_time = last_customer_message_time - interval '1 minute' where id = $1", [edgeConversation]);
      expect(await local(client, (await send(edge, edgeConversation)).rows[0].scheduled_for)).toBe("2026-11-25 08:00");
      // No conversation, another customer's conversation, or one the business started: refused.
      const before = await messageCount(client, w);
      const none = await expectSqlError(client, "22023", () => send(recent, null));
      expect(none.message).toContain("conversation the customer started");
      await expectSqlError(client, "22023", () => send(old, fresh.conversation_id));
      const outbound = (await client.query(
        "insert into app_public.conversations (tenant_id, customer_phone, business_phone, started_by, status) values ($1, $2, $3, 'business', 'closed') returning id",
        [w.tenant, recent, w.business],
      )).rows[0].id;
      await expectSqlError(client, "22023", () => send(recent, outbound));
      const foreign = await world(client);
      const foreignConversation = await customerConversation(client, foreign, recent);
      await expectSqlError(client, "22023", () => send(recent, foreignConversation));
      expect(await messageCount(client, w)).toBe(before);
    });
  });

  it("late replies count toward the daily cap like marketing: in Florida, three late replies and the next marketing text waits 24 hours", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const to = phone("305");
      await lead(client, w, to, "FL");
      await consentToMarketingTexts(client, w.tenant, to);
      const conversation = await customerConversation(client, w, to, "2026-11-21 10:00:00 America/New_York");
      const at = "2026-11-24 10:00:00 America/New_York";
      const reply = () =>
        client.query("select * from app_private.queue_message($1, $2, $3, 'Still want that quote?', 'conversation', 'human', $4, null, null, $5::timestamptz)", [
          w.tenant, to, w.business, conversation, at,
        ]).then((r) => r.rows[0]);
      const replies = [await reply(), await reply(), await reply()];
      expect(replies.map((r) => r.held_as_marketing)).toEqual([true, true, true]);
      for (const r of replies) expect(await local(client, r.scheduled_for)).toBe("2026-11-24 10:00");
      // A fourth (reply or marketing) would be the fourth in 24 hours: it waits until the first is 24 hours old.
      expect(await local(client, (await reply()).scheduled_for)).toBe("2026-11-25 10:00");
      expect(await local(client, (await queue(client, w, to, "marketing", at)).scheduled_for)).toBe("2026-11-25 10:00");
      // A reply within the customer's 24 hours is an answer: not held, not counted.
      const fresh = phone("305");
      await lead(client, w, fresh, "FL");
      const answered = await queue(client, w, fresh, "conversation", at);
      expect(answered.held_as_marketing).toBe(false);
    });
  });

  it("a reply the worker reaches after the customer's 24 hours is checked again at the claim: moved to legal hours, or canceled without a marketing consent", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const texted = "2026-12-08 20:00:00 America/New_York";
      const send = async (to: string, consent = true) => {
        await lead(client, w, to, "FL");
        if (consent) await consentToMarketingTexts(client, w.tenant, to);
        const conversation = await customerConversation(client, w, to, texted);
        return (await client.query("select * from app_private.queue_message($1, $2, $3, 'On our way', 'conversation', 'human', $4, null, null, $5::timestamptz)", [
          w.tenant, to, w.business, conversation, "2026-12-08 20:30:00 America/New_York",
        ])).rows[0];
      };
      const stale = await send(phone("305"));
      const unconsented = await send(phone("305"), false);
      const answered = await send(phone("305"));
      expect(await local(client, stale.scheduled_for)).toBe("2026-12-08 20:30");
      // The second customer texts again the next evening; the worker comes back at 21:00 that day.
      await client.query("update app_public.conversations set last_customer_message_time = '2026-12-09 20:45:00 America/New_York' where id = $1", [answered.conversation_id]);
      await client.query("select app_private.advance_clock_to($1, '2026-12-09 21:00:00 America/New_York')", [w.tenant]);
      expect((await client.query("select (app_private.claim_outbound_message($1)).id", [stale.id])).rows[0].id).toBeNull();
      const moved = (await client.query("select status, scheduled_for from app_public.messages where id = $1", [stale.id])).rows[0];
      expect(moved.status).toBe("queued");
      expect(await local(client, moved.scheduled_for)).toBe("2026-12-10 08:00");
      // Held like marketing from now on, it needs the marketing consent too (issue 17).
      expect((await client.query("select (app_private.claim_outbound_message($1)).id", [unconsented.id])).rows[0].id).toBeNull();
      expect((await client.query("select status, error_message from app_public.messages where id = $1", [unconsented.id])).rows[0]).toEqual({
        status: "canceled", error_message: "Canceled: no current consent to marketing texts (checked again before sending)",
      });
      expect((await client.query("select (app_private.claim_outbound_message($1)).status", [answered.id])).rows[0].status).toBe("sending");
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

describe("provider opt-outs (issue 17)", () => {
  async function inbound(client: pg.ClientBase, w: World, from: string, body: string, optOutType: string | null = null) {
    const { rows } = await client.query("select * from app_private.record_inbound_message($1, $2, $3, $4, 0, $5)", [sid("SM"), from, w.business, body, optOutType]);
    return rows[0];
  }
  const listed = async (client: pg.ClientBase, w: World, to: string) =>
    (await client.query("select source from app_public.dnc_list where tenant_id = $1 and phone = $2", [w.tenant, to])).rows[0]?.source ?? null;
  const consent = async (client: pg.ClientBase, w: World, to: string) =>
    (await client.query("select event, source, keyword from app_public.sms_consent_events where tenant_id = $1 and phone = $2 order by occurred_at, id", [w.tenant, to])).rows;
  const replies = async (client: pg.ClientBase, w: World, to: string) =>
    (await client.query("select purpose from app_public.messages where tenant_id = $1 and to_phone = $2 and purpose in ('opt_out_confirmation', 'opt_in_confirmation', 'help') order by created_at", [w.tenant, to])).rows.map((r) => r.purpose);

  it("Twilio's OptOutType STOP counts where our reading sees none: listed as provider, queued texts canceled, nurture over, and no second answer from us", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const to = phone("305");
      const leadId = await lead(client, w, to, "FL");
      const waiting = await queue(client, w, to, "marketing");
      // "Stoppen" is a keyword the business configured in Twilio's Advanced Opt-Out, not one we read.
      expect((await client.query("select app_public.sms_keyword('Stoppen') as k")).rows[0].k).toBeNull();
      expect((await inbound(client, w, to, "Stoppen", "STOP")).keyword).toBe("opt_out");
      expect(await listed(client, w, to)).toBe("provider");
      expect(await consent(client, w, to)).toEqual([{ event: "opt_out", source: "provider", keyword: "STOPPEN" }]);
      expect((await client.query("select status from app_public.messages where id = $1", [waiting.id])).rows[0].status).toBe("canceled");
      expect((await client.query("select app_private.nurture_lead_opted_out($1, $2) as why", [w.tenant, leadId])).rows[0].why).toBe("opted_out");
      // Twilio answered the keyword; we add nothing. Nothing more may go to the number.
      expect(await replies(client, w, to)).toEqual([]);
      await expectSqlError(client, "SB001", () => queue(client, w, to, "marketing"));
      // HELP the provider answered gets no second answer either (our own HELP reading still answers).
      await inbound(client, w, to, "Aide", "HELP");
      expect(await replies(client, w, to)).toEqual([]);
      // Its START lifts the provider's entry, again without an answer from us.
      expect((await inbound(client, w, to, "Start", "START")).keyword).toBe("opt_in");
      expect(await listed(client, w, to)).toBeNull();
      expect((await consent(client, w, to)).map((c) => `${c.event}/${c.source}`)).toEqual(["opt_out/provider", "opt_in/provider"]);
      expect(await replies(client, w, to)).toEqual([]);
      // A STOP Twilio flagged that we also read is recorded once, as the provider's, with no confirmation of ours.
      await inbound(client, w, to, "STOP", "STOP");
      expect(await listed(client, w, to)).toBe("provider");
      expect(await replies(client, w, to)).toEqual([]);
    });
  });

  it("the provider's START never lifts a block a person of the business set; an unknown OptOutType changes nothing", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const to = phone("305");
      await client.query("insert into app_public.dnc_list (tenant_id, phone, source) values ($1, $2, 'manual')", [w.tenant, to]);
      await inbound(client, w, to, "START", "START");
      expect(await listed(client, w, to)).toBe("manual");
      const other = phone("305");
      const r = await inbound(client, w, other, "Hello there", "UNSUBSCRIBE-ALL");
      expect(r.keyword).toBeNull();
      expect(await listed(client, w, other)).toBeNull();
    });
  });

  it("a send refused with 21610 lists the number as provider, whether the error comes with the send or a status callback; other errors do not", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      // At the send: the worker records the refusal.
      const a = phone("305");
      await lead(client, w, a, "TX");
      const first = await queue(client, w, a, "marketing");
      const second = await queue(client, w, a, "marketing");
      await client.query("update app_public.messages set status = 'sending' where id = $1", [first.id]);
      await client.query("select app_private.record_message_failed($1, 21610, 'Attempt to send to unsubscribed recipient')", [first.id]);
      expect(await listed(client, w, a)).toBe("provider");
      expect(await consent(client, w, a)).toEqual([{ event: "opt_out", source: "provider", keyword: "Twilio error 21610" }]);
      expect((await client.query("select status from app_public.messages where id = $1", [second.id])).rows[0].status).toBe("canceled");
      expect(await replies(client, w, a)).toEqual([]);
      await expectSqlError(client, "SB001", () => queue(client, w, a, "marketing"));
      // By a status callback, after the provider took the text.
      const b = phone("305");
      await lead(client, w, b, "TX");
      const sent = await queue(client, w, b, "marketing");
      const messageSid = sid("SM");
      await client.query("update app_public.messages set status = 'sending' where id = $1", [sent.id]);
      await client.query("select app_private.record_message_sent($1, $2, 'queued')", [sent.id, messageSid]);
      expect(await listed(client, w, b)).toBeNull();
      await client.query("select app_private.apply_message_status(null, $1, 'failed', 21610, 'Unsubscribed recipient')", [messageSid]);
      expect(await listed(client, w, b)).toBe("provider");
      // Another refusal (30003, unreachable handset) is no opt-out.
      const c = phone("305");
      await lead(client, w, c, "TX");
      const unreachable = await queue(client, w, c, "marketing");
      await client.query("update app_public.messages set status = 'sending' where id = $1", [unreachable.id]);
      await client.query("select app_private.record_message_failed($1, 30003, 'Unreachable destination handset')", [unreachable.id]);
      expect(await listed(client, w, c)).toBeNull();
    });
  });
});

describe("opt-out by any reasonable means (issue 17)", () => {
  async function inbound(client: pg.ClientBase, w: World, from: string, body: string) {
    const { rows } = await client.query("select * from app_private.record_inbound_message($1, $2, $3, $4)", [sid("SM"), from, w.business, body]);
    return rows[0];
  }
  const sentTo = async (client: pg.ClientBase, w: World, to: string) =>
    (await client.query("select purpose, sender, body, status from app_public.messages where tenant_id = $1 and to_phone = $2 and direction = 'outbound' order by created_at, id", [w.tenant, to])).rows;

  it("a request in ordinary words opts out like STOP: listed, queued marketing canceled, one confirmation with no marketing in it", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const to = phone("305");
      await lead(client, w, to, "FL");
      const waiting = await queue(client, w, to, "marketing");
      expect((await inbound(client, w, to, "Please stop texting me")).keyword).toBe("opt_out");
      expect((await client.query("select source from app_public.dnc_list where tenant_id = $1 and phone = $2", [w.tenant, to])).rows[0].source).toBe("sms_opt_out");
      const out = await sentTo(client, w, to);
        expect(out.map((m) => `${m.purpose}/${m.status}`).sort()).toEqual(["marketing/canceled", "opt_out_confirmation/queued"]);
      expect(out.find((m) => m.purpose === "opt_out_confirmation").body).toContain("unsubscribed");
      expect(waiting.id).toBeTruthy();
      // Saying it again, in other words, sends nothing more, and leaves the first confirmation to go.
      await inbound(client, w, to, "STOP STOP STOP");
      await inbound(client, w, to, "no more texts");
      expect((await sentTo(client, w, to)).map((m) => `${m.purpose}/${m.status}`).sort()).toEqual(["marketing/canceled", "opt_out_confirmation/queued"]);
    });
  });

  it("a text the AI reads as not interested holds marketing too, with the one clarifying text; YES lifts it", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const to = phone("305");
      await lead(client, w, to, "FL");
      const said = await inbound(client, w, to, "we went with someone else");
      expect(said.keyword).toBeNull();
      await client.query("update app_public.conversations set ai_active = true where tenant_id = $1 and customer_phone = $2", [w.tenant, to]);
      const conversation = (await client.query("select id from app_public.conversations where tenant_id = $1 and customer_phone = $2", [w.tenant, to])).rows[0].id;
      await client.query("select app_private.record_ai_reply($1, $2, 'No problem, thanks for letting us know.', 'not_interested', 0.9, '{}')", [conversation, said.message_id]);
      const held = await expectSqlError(client, "SB001", () => queue(client, w, to, "marketing"));
      expect(held.message).toContain("clarifying text");
      const asked = (await sentTo(client, w, to)).filter((m) => m.sender === "system");
      expect(asked).toHaveLength(1);
      expect(asked[0].body).toContain("Reply STOP");
      const events = (await client.query("select event, source from app_public.sms_consent_events where tenant_id = $1 and phone = $2", [w.tenant, to])).rows;
      expect(events).toEqual([{ event: "opt_out_unclear", source: "ai" }]);
      await inbound(client, w, to, "yes");
      expect((await queue(client, w, to, "marketing")).status).toBe("queued");
    });
  });

  it("an unclear one holds marketing (SB001, and at the claim) and gets one clarifying text; YES lifts the hold, STOP opts out", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const to = phone("305");
      await lead(client, w, to, "FL");
      const before = await queue(client, w, to, "marketing");
      expect((await inbound(client, w, to, "how do I unsubscribe?")).keyword).toBe("unclear");
      // One clarifying text, in the customer's conversation, with no marketing; nothing is listed.
      const asked = (await sentTo(client, w, to)).filter((m) => m.purpose === "conversation");
      expect(asked).toHaveLength(1);
      expect(asked[0]).toMatchObject({ sender: "system", status: "queued" });
      expect(asked[0].body).toContain("Reply STOP");
      expect((await client.query("select count(*)::int as n from app_public.dnc_list where tenant_id = $1 and phone = $2", [w.tenant, to])).rows[0].n).toBe(0);
      // Marketing waits: refused when queued, canceled when a text queued before comes up for sending.
      const held = await expectSqlError(client, "SB001", () => queue(client, w, to, "marketing"));
      expect(held.message).toContain("clarifying text");
      await client.query("update app_public.messages set scheduled_for = now() - interval '1 minute' where id = $1", [before.id]);
      expect((await client.query("select (app_private.claim_outbound_message($1)).id", [before.id])).rows[0].id).toBeNull();
      expect((await client.query("select status from app_public.messages where id = $1", [before.id])).rows[0].status).toBe("canceled");
      // Another unclear text asks nothing more; a reply in the conversation still goes.
      await inbound(client, w, to, "stop it");
      expect((await sentTo(client, w, to)).filter((m) => m.purpose === "conversation")).toHaveLength(1);
      expect((await queue(client, w, to, "conversation")).status).toBe("queued");
      // YES answers the question: marketing may go again.
      await inbound(client, w, to, "Yes");
      expect((await queue(client, w, to, "marketing")).status).toBe("queued");
      const events = (await client.query("select event from app_public.sms_consent_events where tenant_id = $1 and phone = $2 order by occurred_at, id", [w.tenant, to])).rows;
      expect(events.map((e) => e.event)).toEqual(["opt_out_unclear", "opt_in"]);
      // Unclear again, then STOP: an opt-out like any other.
      await inbound(client, w, to, "how do I unsubscribe?");
      await expectSqlError(client, "SB001", () => queue(client, w, to, "marketing"));
      await inbound(client, w, to, "STOP");
      expect((await client.query("select source from app_public.dnc_list where tenant_id = $1 and phone = $2", [w.tenant, to])).rows[0].source).toBe("sms_opt_out");
    });
  });
});

describe("whose block it is (issue 17, review of 000067)", () => {
  async function inbound(client: pg.ClientBase, w: World, from: string, body: string, optOutType: string | null = null) {
    await client.query("select * from app_private.record_inbound_message($1, $2, $3, $4, 0, $5)", [sid("SM"), from, w.business, body, optOutType]);
  }
  const source = async (client: pg.ClientBase, w: World, to: string) =>
    (await client.query("select source from app_public.dnc_list where tenant_id = $1 and phone = $2", [w.tenant, to])).rows[0]?.source ?? null;

  it("a lead set to dnc after the customer's STOP keeps them blocked when they text START or YES, or the provider reports START", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const to = phone("305");
      const id = await lead(client, w, to, "FL");
      await inbound(client, w, to, "STOP");
      expect(await source(client, w, to)).toBe("sms_opt_out");
      await client.query("update app_public.leads set status = 'dnc' where id = $1", [id]);
      expect(await source(client, w, to)).toBe("lead_status");
      for (const [body, type] of [["START", null], ["YES", null], ["Start", "START"]] as const) {
        await inbound(client, w, to, body, type);
        expect(await source(client, w, to), body).toBe("lead_status");
      }
      // Even with the entry still the customer's own (written before this rule), the dnc status holds it.
      await client.query("update app_public.dnc_list set source = 'sms_opt_out' where tenant_id = $1 and phone = $2", [w.tenant, to]);
      await inbound(client, w, to, "START");
      expect(await source(client, w, to)).toBe("sms_opt_out");
      await expectSqlError(client, "SB001", () => queue(client, w, to, "marketing"));
    });
  });

  it("a member's do-not-contact entry is manual: the source is not theirs to choose", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const agent = await addMember(client, w.tenant, "agent");
      await becomeUser(client, agent);
      const forged = phone("305");
      await expectSqlError(client, "42501", () =>
        client.query("insert into app_public.dnc_list (tenant_id, phone, source) values ($1, $2, 'sms_opt_out')", [w.tenant, forged]),
      );
      const { rows } = await client.query("insert into app_public.dnc_list (tenant_id, phone, reason) values ($1, $2, 'Asked on the phone') returning source", [w.tenant, forged]);
      expect(rows[0].source).toBe("manual");
      await becomeRoot(client);
      // So the customer's START does not lift it.
      await inbound(client, w, forged, "START");
      expect(await source(client, w, forged)).toBe("manual");
    });
  });
});

describe("who sends it and how to stop (issue 17)", () => {
  const send = async (client: pg.ClientBase, w: World, to: string, body: string) => {
    await consentToMarketingTexts(client, w.tenant, to);
    return (await client.query("select * from app_private.queue_message($1, $2, $3, $4, 'marketing', 'system')", [w.tenant, to, w.business, body])).rows[0];
  };

  it("the first marketing text to a number and every 10th after it name the business and say how to stop; the others go as written", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const to = phone("212");
      await lead(client, w, to, "NY");
      const bodies: string[] = [];
      for (let i = 1; i <= 12; i++) bodies.push((await send(client, w, to, `Offer ${i}`)).body);
      expect(bodies[0]).toBe("Ace Plumbing: Offer 1 Reply STOP to opt out.");
      expect(bodies.slice(1, 10)).toEqual(["Offer 2", "Offer 3", "Offer 4", "Offer 5", "Offer 6", "Offer 7", "Offer 8", "Offer 9", "Offer 10"]);
      expect(bodies[10]).toBe("Ace Plumbing: Offer 11 Reply STOP to opt out.");
      expect(bodies[11]).toBe("Offer 12");
      // Replies are not marketing and are not counted; another number starts its own count.
      expect((await queue(client, w, to, "conversation")).body).toBe("Hello there");
      const other = phone("212");
      await lead(client, w, other, "NY");
      expect((await send(client, w, other, "Offer 1")).body).toBe("Ace Plumbing: Offer 1 Reply STOP to opt out.");
    });
  });

  it("a text that already names the business and says STOP goes as written; every text when the business asks for it; canceled ones do not count; too long is 22023", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const to = phone("212");
      await lead(client, w, to, "NY");
      expect((await send(client, w, to, "ACE PLUMBING spring deal. Text STOP to quit.")).body).toBe("ACE PLUMBING spring deal. Text STOP to quit.");
      await client.query("update app_public.business_settings set sms_identify_every = 1 where tenant_id = $1", [w.tenant]);
      expect((await send(client, w, to, "Ace Plumbing deal")).body).toBe("Ace Plumbing deal Reply STOP to opt out.");
      // A canceled text never went: the next one is the first again.
      const fresh = phone("212");
      await lead(client, w, fresh, "NY");
      await client.query("update app_public.business_settings set sms_identify_every = 10 where tenant_id = $1", [w.tenant]);
      const first = await send(client, w, fresh, "Hi");
      await client.query("update app_public.messages set status = 'canceled' where id = $1", [first.id]);
      expect((await send(client, w, fresh, "Hi again")).body).toBe("Ace Plumbing: Hi again Reply STOP to opt out.");
      const long = phone("212");
      await lead(client, w, long, "NY");
      const error = await expectSqlError(client, "22023", () => send(client, w, long, "x".repeat(1590)));
      expect(error.message).toContain("too long to carry who sends it");
      await expectSqlError(client, "23514", () => client.query("update app_public.business_settings set sms_identify_every = 0 where tenant_id = $1", [w.tenant]));
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
      await client.query("select app_public.record_consent($1, 'sms', 'marketing', 'I agree to receive marketing texts from Ace Plumbing. Reply STOP to stop.')", [id]);
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
