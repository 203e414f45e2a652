/**
 * Nurture sequences in SQL, time-travelled with the tenant clock (app_private.advance_clock), never
 * with sleeps: saving and validating sequences, versions, delays in the lead's time zone across a DST
 * change, sending windows, legal hours and daily caps, running a step exactly once, skip conditions,
 * every stop rule, auto-enrollment, statistics and the lead timeline. Each test is one transaction,
 * rolled back; steps are run by calling app_private.run_nurture_step as the nurture__run_step job does.
 */
import pg from "pg";
import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import { addMember, becomeRoot, becomeUser, consentToMarketingTexts, db, expectSqlError, registerUser, withRootDb, type RegisteredUser } from "../helpers.ts";

let serial = 0;
function phone(area = "212"): string {
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
    `insert into app_public.phone_numbers (tenant_id, phone_number, phone_number_sid, area_code, status, date_provisioned, capabilities)
     values ($1, $2, 'PN' || md5(random()::text), '786', 'active', now(), '{voice,sms}')`,
    [owner.tenant_id, business],
  );
  return { owner, tenant: owner.tenant_id!, business };
}

/** Moves the tenant clock forward so that it shows `target` (nothing when it already shows that or later). */
async function clockTo(client: pg.ClientBase, w: World, target: string): Promise<void> {
  await client.query("select app_private.advance_clock_to($1, $2)", [w.tenant, target]);
}

/** A lead; with a phone, it consented to marketing texts unless `consent` is false. */
async function newLead(client: pg.ClientBase, w: World, fields: Record<string, unknown> = {}, consent = true): Promise<string> {
  const values = { first_name: "Dana", phone: phone("212"), email: `dana-${randomUUID().slice(0, 8)}@example.test`, timezone: "America/New_York", region: "NY", source: "web", ...fields };
  const keys = Object.keys(values);
  const { rows } = await client.query(
    `insert into app_public.leads (tenant_id, ${keys.join(", ")}) values ($1, ${keys.map((_, i) => `$${i + 2}`).join(", ")}) returning id, phone`,
    [w.tenant, ...Object.values(values)],
  );
  if (consent && rows[0].phone) await consentToMarketingTexts(client, w.tenant, rows[0].phone, rows[0].id);
  return rows[0].id;
}

async function sequence(client: pg.ClientBase, w: World, steps: unknown[], extra: Record<string, unknown> = {}): Promise<string> {
  const values = { name: `Seq ${randomUUID().slice(0, 6)}`, steps: JSON.stringify(steps), ...extra };
  const keys = Object.keys(values);
  const { rows } = await client.query(
    `insert into app_public.nurture_sequences (tenant_id, ${keys.join(", ")}) values ($1, ${keys.map((_, i) => `$${i + 2}`).join(", ")}) returning id`,
    [w.tenant, ...Object.values(values).map((v) => (v !== null && typeof v === "object" && !Array.isArray(v) ? JSON.stringify(v) : v))],
  );
  return rows[0].id;
}

async function enroll(client: pg.ClientBase, w: World, seq: string, lead: string) {
  const { rows } = await client.query("select * from app_private.enroll_lead($1, $2, $3, 'manual')", [w.tenant, seq, lead]);
  return rows[0];
}

async function enrollment(client: pg.ClientBase, id: string) {
  return (await client.query("select * from app_public.lead_sequence_enrollments where id = $1", [id])).rows[0];
}

/** Advances the clock to the enrollment's next step and runs it, as its job would. */
async function runNext(client: pg.ClientBase, w: World, id: string): Promise<string> {
  const e = await enrollment(client, id);
  const { rows: now } = await client.query("select app_hidden.clock_now($1) as now", [w.tenant]);
  if (new Date(e.next_step_at) > new Date(now[0].now)) await clockTo(client, w, new Date(e.next_step_at).toISOString());
  const { rows } = await client.query("select app_private.run_nurture_step($1, $2) as outcome", [id, e.next_step_number]);
  return rows[0].outcome;
}

const local = async (client: pg.ClientBase, at: Date | string, tz = "America/New_York") =>
  (await client.query("select to_char($1::timestamptz at time zone $2, 'Dy YYYY-MM-DD HH24:MI') as t", [at, tz])).rows[0].t as string;

const SMS = (template = "Hi {{lead.first_name}}, it is {{tenant.business_name}}", delay: Record<string, number> = {}) => ({ channel: "sms", delay, template });
const EMAIL = (subject = "News for {{lead.first_name}}", delay: Record<string, number> = {}) => ({ channel: "email", delay, subject, template: "Hello {{lead.full_name | default: \"friend\"}}" });

describe("saving a sequence", () => {
  it.each([
    ["an unknown variable, naming the step and the known ones", [SMS("Hi {{lead.fist_name}}")], /step 1 template: unknown variable \{\{lead\.fist_name\}\}; known: lead\.first_name/],
    ["an unreadable placeholder", [SMS("Hi {{ first name }}")], /step 1 template: cannot read the placeholder/],
    ["an email step without a subject", [{ channel: "email", template: "Hi" }], /step 1: an email step needs a subject/],
    ["a subject on a text", [{ ...SMS(), subject: "x" }], /step 1: a text has no subject/],
    ["an unknown step field", [{ ...SMS(), wait: 3 }], /step 1 has an unknown field 'wait'/],
    ["an unknown delay unit", [SMS("Hi", { weeks: 1 })], /step 1: delay has an unknown unit 'weeks'/],
    ["a negative delay", [SMS("Hi", { days: -1 })], /step 1: delay days must be a whole number from 0/],
    ["an unknown channel", [{ channel: "fax", template: "Hi" }], /step 1: channel must be sms or email/],
    ["a bad skip condition", [SMS(), { ...SMS(), skip_if: { colour: "red" } }], /step 2 skip_if: Unknown filter field 'colour'/],
    ["no steps", [], /steps must be a non-empty list/],
  ])("refuses %s with 22023", async (_what, steps, message) => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const error = await expectSqlError(client, "22023", () => sequence(client, w, steps));
      expect(error.message).toMatch(message);
    });
  });

  it.each([
    [{ days: ["mon", "funday"], start: "09:00", end: "17:00" }, /unknown day 'funday'/],
    [{ days: ["mon"], start: "17:00", end: "09:00" }, /must start before it ends/],
    [{ days: ["mon"], start: "9am", end: "17:00" }, /HH:MM/],
    [{ days: [], start: "09:00", end: "17:00" }, /needs days/],
  ])("refuses a bad sending window %o with 22023", async (sendingWindow, message) => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const error = await expectSqlError(client, "22023", () => sequence(client, w, [SMS()], { sending_window: sendingWindow }));
      expect(error.message).toMatch(message);
    });
  });

  it("lets managers create and edit, not agents; refuses final statuses for auto-enrollment", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const agent = await addMember(client, w.tenant, "agent");
      const manager = await addMember(client, w.tenant, "manager");
      await becomeUser(client, agent);
      const denied = await expectSqlError(client, "42501", () =>
        client.query("insert into app_public.nurture_sequences (name, steps) values ('Nope', $1)", [JSON.stringify([SMS()])]),
      );
      expect(denied.message).toContain("Only owners, admins and managers can create nurture sequences");
      await becomeUser(client, manager);
      const { rows } = await client.query("insert into app_public.nurture_sequences (name, steps) values ('Welcome', $1) returning id, current_version", [JSON.stringify([SMS()])]);
      expect(rows[0].current_version).toBe(1);
      await expectSqlError(client, "22023", () => client.query("update app_public.nurture_sequences set enroll_on_statuses = '{won}' where id = $1", [rows[0].id]));
      await becomeUser(client, agent);
      const change = await expectSqlError(client, "42501", () => client.query("update app_public.nurture_sequences set name = 'Renamed' where id = $1", [rows[0].id]));
      expect(change.message).toContain("Only owners, admins and managers can change nurture sequences");
      await becomeRoot(client);
    });
  });
});

describe("versions", () => {
  it("an edit makes a new version; running enrollments finish the version they started with", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      await clockTo(client, w, "2031-03-04 10:00 America/New_York");
      const seq = await sequence(client, w, [SMS("v1 step 1"), SMS("v1 step 2", { hours: 1 })]);
      const early = await enroll(client, w, seq, await newLead(client, w));
      expect(await runNext(client, w, early.id)).toBe("queued");
      await client.query("update app_public.nurture_sequences set steps = $2, description = 'edited' where id = $1", [
        seq,
        JSON.stringify([SMS("v2 step 1"), SMS("v2 step 2", { hours: 1 }), SMS("v2 step 3", { hours: 1 })]),
      ]);
      await client.query("update app_public.nurture_sequences set name = 'Renamed' where id = $1", [seq]);
      const { rows: versions } = await client.query("select version from app_public.nurture_sequence_versions where sequence_id = $1 order by version", [seq]);
      expect(versions.map((v) => v.version)).toEqual([1, 2]);
      const late = await enroll(client, w, seq, await newLead(client, w));
      expect(late.version).toBe(2);
      expect(await runNext(client, w, early.id)).toBe("queued");
      expect((await enrollment(client, early.id)).status).toBe("completed");
      const bodies = (await client.query("select body from app_public.messages where nurture_enrollment_id = $1 order by nurture_step", [early.id])).rows.map((r) => r.body);
      // The first marketing text to the number says who sends it and how to stop (issue 17).
      expect(bodies).toEqual(["Ace Plumbing: v1 step 1 Reply STOP to opt out.", "v1 step 2"]);
    });
  });
});

describe("time: delays, windows, legal hours, caps (time-travelled)", () => {
  it("counts days as calendar days where the lead lives, across the DST change (10:00 stays 10:00)", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      // Saturday 13 March 2027, 10:00 EST; clocks go forward on Sunday 14 March.
      await clockTo(client, w, "2031-03-08 10:00 America/New_York");
      const seq = await sequence(client, w, [SMS("one"), SMS("two", { days: 1 }), SMS("three", { hours: 24 })]);
      const e = await enroll(client, w, seq, await newLead(client, w));
      expect(await runNext(client, w, e.id)).toBe("queued");
      const second = await enrollment(client, e.id);
      expect(await local(client, second.next_step_at)).toBe("Sun 2031-03-09 10:00");
      expect(new Date(second.next_step_at).toISOString()).toBe("2031-03-09T14:00:00.000Z");
      expect(await runNext(client, w, e.id)).toBe("queued");
      // 24 hours are elapsed time: 10:00 EDT + 24 h = 10:00 EDT Monday.
      expect(await local(client, (await enrollment(client, e.id)).next_step_at)).toBe("Mon 2031-03-10 10:00");
    });
  });

  it("moves a step due outside the sending window to its next opening, in the lead's time zone", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      await clockTo(client, w, "2031-03-07 16:30 America/Los_Angeles");
      const seq = await sequence(client, w, [SMS("now"), EMAIL("Later", { days: 1 }), SMS("after", { hours: 2 })], {
        sending_window: { days: ["mon", "tue", "wed", "thu", "fri"], start: "09:00", end: "17:00" },
      });
      const e = await enroll(client, w, seq, await newLead(client, w, { timezone: "America/Los_Angeles", region: "CA", phone: phone("415") }));
      expect(await local(client, e.next_step_at, "America/Los_Angeles")).toBe("Fri 2031-03-07 16:30");
      expect(await runNext(client, w, e.id)).toBe("queued");
      // Saturday 16:30 is outside the window: Monday 09:00 Pacific (after the DST change).
      const second = await enrollment(client, e.id);
      expect(await local(client, second.next_step_at, "America/Los_Angeles")).toBe("Mon 2031-03-10 09:00");
      expect(await runNext(client, w, e.id)).toBe("queued");
      expect(await local(client, (await enrollment(client, e.id)).next_step_at, "America/Los_Angeles")).toBe("Mon 2031-03-10 11:00");
    });
  });

  it("never texts a Florida lead outside 8:00-20:00 local: a step due at 20:30 waits for 8:00, not dropped, not early", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      await clockTo(client, w, "2031-03-04 20:30 America/New_York");
      const seq = await sequence(client, w, [SMS("evening"), EMAIL("Mail goes any time")]);
      const e = await enroll(client, w, seq, await newLead(client, w, { region: "FL", phone: phone("305") }));
      expect(await local(client, e.next_step_at)).toBe("Wed 2031-03-05 08:00");
      // A job run early changes nothing.
      expect((await client.query("select app_private.run_nurture_step($1, 1) as o", [e.id])).rows[0].o).toBe("not_due");
      expect(await runNext(client, w, e.id)).toBe("queued");
      const { rows } = await client.query("select scheduled_for from app_public.messages where nurture_enrollment_id = $1", [e.id]);
      expect(await local(client, rows[0].scheduled_for)).toBe("Wed 2031-03-05 08:00");
    });
  });

  it("follows each state's own hours in its own time zone: Texas on a Sunday waits for 12:00 Central, Connecticut for 9:00 Eastern", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      // Sunday 9 March 2031, 10:30 in Houston (11:30 in New York): Texas allows texts from 12:00 on Sundays.
      await clockTo(client, w, "2031-03-09 10:30 America/Chicago");
      const seq = await sequence(client, w, [SMS("Sunday hello")]);
      const tx = await enroll(client, w, seq, await newLead(client, w, { region: "TX", timezone: "America/Chicago", phone: phone("713") }));
      expect(await local(client, tx.next_step_at, "America/Chicago")).toBe("Sun 2031-03-09 12:00");
      // Monday 8:15 in Hartford: Connecticut allows texts from 9:00.
      await clockTo(client, w, "2031-03-10 08:15 America/New_York");
      const ct = await enroll(client, w, seq, await newLead(client, w, { region: "CT", timezone: "America/New_York", phone: phone("860") }));
      expect(await local(client, ct.next_step_at)).toBe("Mon 2031-03-10 09:00");
      // A New York lead at the same moment is inside the federal 8:00-21:00 and goes at once.
      const ny = await enroll(client, w, seq, await newLead(client, w));
      expect(await local(client, ny.next_step_at)).toBe("Mon 2031-03-10 08:15");
    });
  });

  it("keeps a Florida lead to 3 texts per 24 hours: the fourth step waits for the cap", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      await clockTo(client, w, "2031-03-04 10:00 America/New_York");
      const seq = await sequence(client, w, [SMS("1"), SMS("2", { minutes: 5 }), SMS("3", { minutes: 5 }), SMS("4", { minutes: 5 })]);
      const e = await enroll(client, w, seq, await newLead(client, w, { region: "FL", phone: phone("305") }));
      for (let i = 0; i < 3; i++) expect(await runNext(client, w, e.id)).toBe("queued");
      const fourth = await enrollment(client, e.id);
      expect(fourth.next_step_number).toBe(4);
      expect(await local(client, fourth.next_step_at)).toBe("Wed 2031-03-05 10:00");
      expect(await runNext(client, w, e.id)).toBe("queued");
      const { rows } = await client.query("select scheduled_for from app_public.messages where nurture_enrollment_id = $1 order by nurture_step", [e.id]);
      const times = await Promise.all(rows.map((r) => local(client, r.scheduled_for)));
      expect(times).toEqual(["Tue 2031-03-04 10:00", "Tue 2031-03-04 10:05", "Tue 2031-03-04 10:10", "Wed 2031-03-05 10:00"]);
    });
  });
});

describe("running a step", () => {
  it("queues each step once, with the rendered template and its enrollment and step on the outbox row; a repeated or early run changes nothing", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      await clockTo(client, w, "2031-03-04 10:00 America/New_York");
      const seq = await sequence(client, w, [SMS("Hi {{lead.first_name}} from {{tenant.business_name}}, call {{tenant.phone}}"), EMAIL("For {{lead.first_name}}", { days: 2 })]);
      const lead = await newLead(client, w, { first_name: "Robin", last_name: null });
      const e = await enroll(client, w, seq, lead);
      expect(await runNext(client, w, e.id)).toBe("queued");
      expect((await client.query("select app_private.run_nurture_step($1, 1) as o", [e.id])).rows[0].o).toBe("stale");
      expect((await client.query("select app_private.run_nurture_step($1, 2) as o", [e.id])).rows[0].o).toBe("not_due");
      const { rows: texts } = await client.query("select body, purpose, idempotency_key, nurture_step from app_public.messages where nurture_enrollment_id = $1", [e.id]);
      expect(texts).toEqual([{ body: `Hi Robin from Ace Plumbing, call ${w.business} Reply STOP to opt out.`, purpose: "nurture", idempotency_key: `nurture:${e.id}:1`, nurture_step: 1 }]);
      expect(await runNext(client, w, e.id)).toBe("queued");
      const { rows: mails } = await client.query("select subject, body_text, purpose from app_public.email_messages where nurture_enrollment_id = $1", [e.id]);
      expect(mails).toEqual([{ subject: "For Robin", body_text: "Hello Robin", purpose: "nurture" }]);
      expect((await enrollment(client, e.id)).status).toBe("completed");
      const other = phone();
      await consentToMarketingTexts(client, w.tenant, other);
      await expectSqlError(client, "23505", () =>
        client.query("update app_public.messages set nurture_enrollment_id = $1, nurture_step = 1 where id = (select id from app_public.messages where to_phone = $2 limit 1)", [e.id, w.business]).then(async () =>
          client.query("insert into app_public.messages (tenant_id, direction, sender, purpose, from_phone, to_phone, body, status, nurture_enrollment_id, nurture_step) values ($1, 'outbound', 'system', 'nurture', $2, $3, 'dup', 'queued', $4, 1)", [w.tenant, w.business, other, e.id]),
        ),
      );
    });
  });

  it("skips a step whose skip_if matches, and a channel the lead cannot be reached on", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      await clockTo(client, w, "2031-03-04 10:00 America/New_York");
      const seq = await sequence(client, w, [{ ...SMS("Only for cold leads"), skip_if: { status: ["hot"] } }, EMAIL("Hi"), SMS("Last")]);
      const lead = await newLead(client, w, { email: null, status: "hot" });
      const e = await enroll(client, w, seq, lead);
      expect(await runNext(client, w, e.id)).toBe("skipped");
      expect(await runNext(client, w, e.id)).toBe("skipped");
      expect(await runNext(client, w, e.id)).toBe("queued");
      const { rows } = await client.query("select step_number, outcome, skip_reason from app_public.nurture_step_runs where enrollment_id = $1 order by step_number", [e.id]);
      expect(rows).toEqual([
        { step_number: 1, outcome: "skipped", skip_reason: "condition" },
        { step_number: 2, outcome: "skipped", skip_reason: "no_email" },
        { step_number: 3, outcome: "queued", skip_reason: null },
      ]);
    });
  });

  it("skips an email step while the business has no postal address (CAN-SPAM), and sends it once it has one", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      await client.query("update app_public.tenants set business_address = '  ' where id = $1", [w.tenant]);
      await clockTo(client, w, "2031-03-04 10:00 America/New_York");
      const seq = await sequence(client, w, [EMAIL("First"), EMAIL("Second")]);
      const e = await enroll(client, w, seq, await newLead(client, w));
      expect(await runNext(client, w, e.id)).toBe("skipped");
      await client.query("update app_public.tenants set business_address = '1 Harbor Way, Miami, FL 33101' where id = $1", [w.tenant]);
      expect(await runNext(client, w, e.id)).toBe("queued");
      const { rows } = await client.query("select step_number, outcome, skip_reason from app_public.nurture_step_runs where enrollment_id = $1 order by step_number", [e.id]);
      expect(rows).toEqual([
        { step_number: 1, outcome: "skipped", skip_reason: "no_postal_address" },
        { step_number: 2, outcome: "queued", skip_reason: null },
      ]);
    });
  });

  it("skips a text step to a number without a current marketing consent (TCPA), and texts once consent is recorded; the email step still goes", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      await clockTo(client, w, "2031-03-04 10:00 America/New_York");
      const seq = await sequence(client, w, [SMS("First"), EMAIL("Hi"), SMS("Third")]);
      const lead = await newLead(client, w, {}, false);
      const e = await enroll(client, w, seq, lead);
      expect(await runNext(client, w, e.id)).toBe("skipped");
      expect(await runNext(client, w, e.id)).toBe("queued");
      const { rows: [l] } = await client.query("select phone from app_public.leads where id = $1", [lead]);
      await consentToMarketingTexts(client, w.tenant, l.phone, lead);
      expect(await runNext(client, w, e.id)).toBe("queued");
      const { rows } = await client.query("select step_number, outcome, skip_reason from app_public.nurture_step_runs where enrollment_id = $1 order by step_number", [e.id]);
      expect(rows).toEqual([
        { step_number: 1, outcome: "skipped", skip_reason: "no_consent" },
        { step_number: 2, outcome: "queued", skip_reason: null },
        { step_number: 3, outcome: "queued", skip_reason: null },
      ]);
      expect((await client.query("select count(*)::int as n from app_public.messages where lead_id = $1", [lead])).rows[0].n).toBe(1);
    });
  });

  it("a paused sequence sends nothing; resuming sends what fell due meanwhile", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      await clockTo(client, w, "2031-03-04 10:00 America/New_York");
      const seq = await sequence(client, w, [SMS("1"), SMS("2", { hours: 1 })]);
      const e = await enroll(client, w, seq, await newLead(client, w));
      expect(await runNext(client, w, e.id)).toBe("queued");
      await client.query("update app_public.nurture_sequences set status = 'paused' where id = $1", [seq]);
      expect(await runNext(client, w, e.id)).toBe("paused");
      await expectSqlError(client, "22023", () => enroll(client, w, seq, "00000000-0000-0000-0000-000000000000"));
      await clockTo(client, w, "2031-03-04 15:00 America/New_York");
      await client.query("update app_public.nurture_sequences set status = 'active' where id = $1", [seq]);
      const resumed = await enrollment(client, e.id);
      expect(await local(client, resumed.next_step_at)).toBe("Tue 2031-03-04 15:00");
      expect(await runNext(client, w, e.id)).toBe("queued");
    });
  });
});

describe("exactly once, and never to an opted-out lead", () => {
  it("8 connections running the same step while it is rescheduled: one run, one outbox row, the rest stale", async () => {
    const pool = new pg.Pool({ connectionString: db.rootUrl, max: 9 });
    const setup = await pool.connect();
    let w: World;
    let id: string;
    try {
      w = await world(setup);
      await clockTo(setup, w, "2031-03-04 10:00 America/New_York");
      const seq = await sequence(setup, w, [SMS("once"), SMS("twice?", { days: 1 })]);
      id = (await enroll(setup, w, seq, await newLead(setup, w))).id;
    } finally {
      setup.release();
    }
    try {
      const outcomes = await Promise.all([
        ...Array.from({ length: 8 }, () => pool.query("select app_private.run_nurture_step($1, 1) as o", [id]).then((r) => r.rows[0].o as string)),
        pool.query("select app_private.schedule_nurture_step($1)", [id]).then(() => "rescheduled"),
      ]);
      expect(outcomes.filter((o) => o === "queued")).toHaveLength(1);
      expect(outcomes.filter((o) => o === "stale")).toHaveLength(7);
      const { rows } = await pool.query(
        "select (select count(*)::int from app_public.messages where nurture_enrollment_id = $1) as texts, (select count(*)::int from app_public.nurture_step_runs where enrollment_id = $1) as runs",
        [id],
      );
      expect(rows[0]).toEqual({ texts: 1, runs: 1 });
    } finally {
      await pool.query("delete from graphile_worker._private_jobs where key like 'nurture:%' and payload->>'enrollment_id' = $1", [id!]);
      await pool.query("delete from graphile_worker._private_jobs where key like 'sms_send:%' and payload->>'message_id' in (select id::text from app_public.messages where tenant_id = $1)", [w!.tenant]);
      await pool.query("delete from app_public.tenants where id = $1", [w!.tenant]);
      await pool.end();
    }
  });

  it("a step never goes to a number on the do-not-contact list or a suppressed address, even when the stop triggers did not run", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      await clockTo(client, w, "2031-03-04 10:00 America/New_York");
      const seq = await sequence(client, w, [SMS("to a blocked number?")]);
      const a = await enroll(client, w, seq, await newLead(client, w));
      const mailSeq = await sequence(client, w, [EMAIL("to an unsubscribed address?")]);
      const b = await enroll(client, w, mailSeq, await newLead(client, w));
      // Simulate a list entry that bypassed the stop triggers (e.g. a bulk load with triggers off).
      await client.query("alter table app_public.dnc_list disable trigger _600_nurture_stop");
      await client.query("alter table app_public.email_suppressions disable trigger _600_nurture_stop");
      await client.query("insert into app_public.dnc_list (tenant_id, phone, source) select tenant_id, phone, 'import' from app_public.leads where id = $1", [a.lead_id]);
      await client.query("insert into app_public.email_suppressions (tenant_id, email, source) select tenant_id, email, 'import' from app_public.leads where id = $1", [b.lead_id]);
      await client.query("alter table app_public.dnc_list enable trigger _600_nurture_stop");
      await client.query("alter table app_public.email_suppressions enable trigger _600_nurture_stop");
      expect(await runNext(client, w, a.id)).toBe("stopped");
      expect(await runNext(client, w, b.id)).toBe("stopped");
      expect((await enrollment(client, a.id)).stop_reason).toBe("dnc");
      expect((await enrollment(client, b.id)).stop_reason).toBe("unsubscribed");
      const { rows } = await client.query(
        "select (select count(*)::int from app_public.messages where nurture_enrollment_id = $1) + (select count(*)::int from app_public.email_messages where nurture_enrollment_id = $2) as n",
        [a.id, b.id],
      );
      expect(rows[0].n).toBe(0);
    });
  });
});

describe("what stops an enrollment", () => {
  async function started(client: pg.ClientBase, w: World, extra: Record<string, unknown> = {}, leadFields: Record<string, unknown> = {}) {
    await clockTo(client, w, "2031-03-04 10:00 America/New_York");
    const seq = await sequence(client, w, [SMS("1"), SMS("2", { days: 1 }), EMAIL("3", { days: 1 })], extra);
    const lead = await newLead(client, w, leadFields);
    const e = await enroll(client, w, seq, lead);
    expect(await runNext(client, w, e.id)).toBe("queued");
    const { rows } = await client.query("select phone, email from app_public.leads where id = $1", [lead]);
    return { seq, lead, e, phone: rows[0].phone as string, email: rows[0].email as string };
  }
  const stopped = async (client: pg.ClientBase, id: string) => {
    const row = await enrollment(client, id);
    return { status: row.status, stop_reason: row.stop_reason };
  };

  it("a reply from the lead (replied), but not in a sequence that keeps going on replies", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const a = await started(client, w);
      await client.query("select app_private.record_inbound_message($1, $2, $3, 'Sounds good, call me')", [`SM${randomUUID().replace(/-/g, "")}`, a.phone, w.business]);
      expect(await stopped(client, a.e.id)).toEqual({ status: "stopped", stop_reason: "replied" });
      const b = await started(client, w, { stop_on_reply: false });
      await client.query("select app_private.record_inbound_message($1, $2, $3, 'ok')", [`SM${randomUUID().replace(/-/g, "")}`, b.phone, w.business]);
      expect((await enrollment(client, b.e.id)).status).toBe("active");
    });
  });

  it("STOP (opted_out), the do-not-contact list (dnc), an unsubscribe (unsubscribed); a text waiting for legal hours is canceled", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const a = await started(client, w);
      await client.query("select app_private.record_inbound_message($1, $2, $3, 'STOP')", [`SM${randomUUID().replace(/-/g, "")}`, a.phone, w.business]);
      expect(await stopped(client, a.e.id)).toEqual({ status: "stopped", stop_reason: "opted_out" });
      // In ordinary words (issue 17), and as an unclear request: both end nurture.
      const words = await started(client, w);
      await client.query("select app_private.record_inbound_message($1, $2, $3, 'Please stop texting me')", [`SM${randomUUID().replace(/-/g, "")}`, words.phone, w.business]);
      expect(await stopped(client, words.e.id)).toEqual({ status: "stopped", stop_reason: "opted_out" });
      const unclear = await started(client, w);
      await client.query("select app_private.record_inbound_message($1, $2, $3, 'how do I unsubscribe?')", [`SM${randomUUID().replace(/-/g, "")}`, unclear.phone, w.business]);
      expect((await client.query("select app_private.nurture_lead_opted_out($1, $2) as why", [w.tenant, unclear.lead])).rows[0].why).toBe("opted_out");
      const b = await started(client, w);
      await client.query("insert into app_public.dnc_list (tenant_id, phone, source) values ($1, $2, 'manual')", [w.tenant, b.phone]);
      expect(await stopped(client, b.e.id)).toEqual({ status: "stopped", stop_reason: "dnc" });
      const c = await started(client, w);
      await client.query("insert into app_public.email_suppressions (tenant_id, email, source) values ($1, $2, 'manual')", [w.tenant, c.email]);
      expect(await stopped(client, c.e.id)).toEqual({ status: "stopped", stop_reason: "unsubscribed" });
      // Florida at 21:00: the step's text waits in the outbox for 8:00; unenrolling cancels it.
      await clockTo(client, w, "2031-03-07 21:00 America/New_York");
      const seq = await sequence(client, w, [SMS("late"), SMS("next", { days: 1 })]);
      const lead = await newLead(client, w, { region: "FL", phone: phone("305") });
      const d = await enroll(client, w, seq, lead);
      await client.query("update app_public.lead_sequence_enrollments set next_step_at = app_hidden.clock_now($2) where id = $1", [d.id, w.tenant]);
      expect((await client.query("select app_private.run_nurture_step($1, 1) as o", [d.id])).rows[0].o).toBe("queued");
      const waiting = (await client.query("select id, status from app_public.messages where nurture_enrollment_id = $1", [d.id])).rows[0];
      expect(waiting.status).toBe("queued");
      await becomeUser(client, w.owner);
      const { rows } = await client.query("select status, stop_reason from app_public.unenroll_lead_from_sequence($1)", [d.id]);
      expect(rows[0]).toEqual({ status: "stopped", stop_reason: "unenrolled" });
      await expectSqlError(client, "22023", () => client.query("select app_public.unenroll_lead_from_sequence($1)", [d.id]));
      await becomeRoot(client);
      expect((await client.query("select status from app_public.messages where id = $1", [waiting.id])).rows[0].status).toBe("canceled");
    });
  });

  it("deletion (lead_deleted), a final status (final_status), archiving the sequence (sequence_archived)", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const a = await started(client, w);
      await client.query("update app_public.leads set deleted_at = now() where id = $1", [a.lead]);
      expect(await stopped(client, a.e.id)).toEqual({ status: "stopped", stop_reason: "lead_deleted" });
      const b = await started(client, w);
      await client.query("update app_public.leads set status = 'won' where id = $1", [b.lead]);
      expect(await stopped(client, b.e.id)).toEqual({ status: "stopped", stop_reason: "final_status" });
      const c = await started(client, w);
      await client.query("update app_public.nurture_sequences set status = 'archived' where id = $1", [c.seq]);
      expect(await stopped(client, c.e.id)).toEqual({ status: "stopped", stop_reason: "sequence_archived" });
      await expectSqlError(client, "22023", () => client.query("update app_public.nurture_sequences set status = 'active' where id = $1", [c.seq]));
    });
  });

  it("a person of the business texting an assigned lead (human_contact), unless the tenant turned that off", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const a = await started(client, w, {}, { owner_user_id: w.owner.user_id });
      await client.query(
        `with c as (insert into app_public.conversations (tenant_id, customer_phone, business_phone, lead_id) values ($1, $2, $3, $4) returning id)
         select app_private.queue_message($1, $2, $3, 'Joe here', 'conversation', 'human', c.id, $4) from c`,
        [w.tenant, a.phone, w.business, a.lead],
      );
      expect(await stopped(client, a.e.id)).toEqual({ status: "stopped", stop_reason: "human_contact" });
      await client.query("update app_public.business_settings set nurture_stop_on_human_contact = false where tenant_id = $1", [w.tenant]);
      const b = await started(client, w, {}, { owner_user_id: w.owner.user_id });
      await client.query(
        `with c as (insert into app_public.conversations (tenant_id, customer_phone, business_phone, lead_id) values ($1, $2, $3, $4) returning id)
         select app_private.queue_message($1, $2, $3, 'Joe here', 'conversation', 'human', c.id, $4) from c`,
        [w.tenant, b.phone, w.business, b.lead],
      );
      expect((await enrollment(client, b.e.id)).status).toBe("active");
    });
  });
});

describe("enrolling", () => {
  it("by hand once at a time (23505), never a do-not-contact lead (SB001); by status and by new segment matches, automatically", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const seq = await sequence(client, w, [SMS()]);
      const lead = await newLead(client, w);
      await becomeUser(client, w.owner);
      const { rows } = await client.query("select status, enrolled_via from app_public.enroll_lead_in_sequence($1, $2)", [seq, lead]);
      expect(rows[0]).toEqual({ status: "active", enrolled_via: "manual" });
      await expectSqlError(client, "23505", () => client.query("select app_public.enroll_lead_in_sequence($1, $2)", [seq, lead]));
      await becomeRoot(client);
      const blocked = await newLead(client, w);
      await client.query("insert into app_public.dnc_list (tenant_id, phone, source) select tenant_id, phone, 'manual' from app_public.leads where id = $1", [blocked]);
      await becomeUser(client, w.owner);
      await expectSqlError(client, "SB001", () => client.query("select app_public.enroll_lead_in_sequence($1, $2)", [seq, blocked]));
      await becomeRoot(client);

      const onStatus = await sequence(client, w, [SMS()], { enroll_on_statuses: ["contacted"] });
      const seg = (await client.query("insert into app_public.segments (tenant_id, name, filter) values ($1, 'VIP', '{\"tags_any\": [\"vip\"]}') returning id", [w.tenant])).rows[0].id;
      const onSegment = await sequence(client, w, [SMS()], { enroll_segment_id: seg, enroll_new_segment_matches: true });
      const other = await newLead(client, w);
      await client.query("update app_public.leads set status = 'contacted' where id = $1", [other]);
      await client.query("update app_public.leads set tags = '{vip}' where id = $1", [other]);
      await client.query("update app_public.leads set tags = '{vip,gold}' where id = $1", [other]);
      const { rows: auto } = await client.query("select sequence_id, enrolled_via from app_public.lead_sequence_enrollments where lead_id = $1 order by enrolled_via", [other]);
      expect(auto).toEqual([
        { sequence_id: onSegment, enrolled_via: "segment_match" },
        { sequence_id: onStatus, enrolled_via: "status" },
      ]);
    });
  });

  it("a whole segment at once, leaving out leads already in, on the do-not-contact list or closed", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const seq = await sequence(client, w, [SMS()]);
      const leads: string[] = [];
      for (let i = 0; i < 5; i++) leads.push(await newLead(client, w, { tags: ["spring"] }));
      await client.query("update app_public.leads set status = 'lost' where id = $1", [leads[0]]);
      await client.query("insert into app_public.dnc_list (tenant_id, phone, source) select tenant_id, phone, 'manual' from app_public.leads where id = $1", [leads[1]]);
      await enroll(client, w, seq, leads[2]!);
      const seg = (await client.query("insert into app_public.segments (tenant_id, name, filter) values ($1, 'Spring', '{\"tags_any\": [\"spring\"]}') returning id", [w.tenant])).rows[0].id;
      await becomeUser(client, w.owner);
      expect((await client.query("select app_public.enroll_segment_in_sequence($1, $2) as n", [seq, seg])).rows[0].n).toBe(2);
      expect((await client.query("select app_public.enroll_segment_in_sequence($1, $2) as n", [seq, seg])).rows[0].n).toBe(0);
      await becomeRoot(client);
    });
  });

  it("8 connections enrolling the same lead at once leave one active enrollment", async () => {
    const pool = new pg.Pool({ connectionString: db.rootUrl, max: 8 });
    const setup = await pool.connect();
    let w: World;
    let seq: string;
    let lead: string;
    try {
      w = await world(setup);
      seq = await sequence(setup, w, [SMS()]);
      lead = await newLead(setup, w);
    } finally {
      setup.release();
    }
    try {
      const results = await Promise.all(
        Array.from({ length: 8 }, () => pool.query("select id from app_private.enroll_lead($1, $2, $3, 'manual')", [w.tenant, seq, lead]).then((r) => r.rows[0].id)),
      );
      expect(results.filter(Boolean)).toHaveLength(1);
      expect((await pool.query("select count(*)::int as n from app_public.lead_sequence_enrollments where lead_id = $1", [lead])).rows[0].n).toBe(1);
    } finally {
      await pool.query("delete from graphile_worker._private_jobs where key like 'nurture:%' and payload->>'enrollment_id' in (select id::text from app_public.lead_sequence_enrollments where tenant_id = $1)", [w!.tenant]);
      await pool.query("delete from app_public.tenants where id = $1", [w!.tenant]);
      await pool.end();
    }
  });
});

describe("statistics and the timeline", () => {
  it("counts per step and per sequence, and shows enrollment, steps and the stop in the lead timeline", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      await clockTo(client, w, "2031-03-04 10:00 America/New_York");
      const seq = await sequence(client, w, [SMS("one"), EMAIL("two", { days: 1 })], { name: "Spring promo" });
      const a = await enroll(client, w, seq, await newLead(client, w));
      const b = await enroll(client, w, seq, await newLead(client, w));
      expect(await runNext(client, w, a.id)).toBe("queued");
      expect(await runNext(client, w, b.id)).toBe("queued");
      const { rows: ma } = await client.query("select id from app_public.messages where nurture_enrollment_id = $1", [a.id]);
      await client.query("select app_private.claim_outbound_message($1)", [ma[0].id]);
      await client.query("select app_private.record_message_sent($1, 'SM' || md5(random()::text), 'sent')", [ma[0].id]);
      const bLead = (await enrollment(client, b.id)).lead_id;
      const bPhone = (await client.query("select phone from app_public.leads where id = $1", [bLead])).rows[0].phone;
      await client.query("select app_private.record_inbound_message($1, $2, $3, 'who is this?')", [`SM${randomUUID().replace(/-/g, "")}`, bPhone, w.business]);
      expect(await runNext(client, w, a.id)).toBe("queued");

      await becomeUser(client, w.owner);
      const { rows: steps } = await client.query("select (s).* from app_public.nurture_sequences q, app_public.nurture_sequences_step_stats(q) s where q.id = $1", [seq]);
      expect(steps).toEqual([
        { version: 1, step_number: 1, channel: "sms", ran: 2, skipped: 0, sent: 1, delivered: 0, failed: 0, replied: 1, opted_out: 0 },
        { version: 1, step_number: 2, channel: "email", ran: 1, skipped: 0, sent: 0, delivered: 0, failed: 0, replied: 0, opted_out: 0 },
      ]);
      const { rows: totals } = await client.query("select (app_public.nurture_sequences_stats(q)).* from app_public.nurture_sequences q where q.id = $1", [seq]);
      expect(totals[0]).toMatchObject({ enrolled: 2, active: 0, completed: 1, stopped: 1, stopped_by_reason: { replied: 1 }, sent: 1, replied: 1 });
      // Nurture events carry times of the tenant clock (moved to 2027 here), texts real times: compare each kind on its own.
      const { rows: timeline } = await client.query("select event_type, summary from app_public.lead_timeline($1) where event_type like 'nurture%'", [bLead]);
      expect(timeline.map((t) => t.event_type)).toEqual(["nurture_enrolled", "nurture_step", "nurture_stopped"]);
      expect(timeline.map((t) => t.summary)).toEqual([
        'Enrolled in nurture sequence "Spring promo"',
        'Nurture "Spring promo" step 1 (sms) queued',
        'Nurture sequence "Spring promo" stopped: replied',
      ]);
      // The reply stopped the enrollment, so its text still waiting in the outbox was canceled (same transaction time: order by kind).
      const { rows: texts } = await client.query("select event_type, summary from app_public.lead_timeline($1) where event_type like 'sms%' order by event_type", [bLead]);
      expect(texts).toEqual([
        { event_type: "sms_received", summary: "Text received: who is this?" },
        { event_type: "sms_sent", summary: "Text canceled (nurture): Ace Plumbing: one Reply STOP to opt out." },
      ]);
      await becomeRoot(client);
    });
  });
});
