/**
 * Consent records (issue 17, point 6): a marketing or nurture text goes only to a number whose person
 * gave a recorded consent to marketing texts (the disclosure they agreed to, how, where, when, and a
 * hash of it all), and an opt-out or a member's revocation ends it. Asked as members (the visitor
 * role) where the API would, as an attacker where one would try.
 */
import { createHash } from "node:crypto";
import type pg from "pg";
import { describe, expect, it } from "vitest";
import { addMember, becomeRoot, becomeUser, db, expectSqlError, registerUser, rootPool, withRootDb, type RegisteredUser } from "../helpers.ts";

let serial = 0;
/** A unique E.164 number in an area code. */
function phone(area = "212"): string {
  serial += 1;
  return `+1${area}${String(Date.now() % 1000).padStart(3, "0")}${String((process.pid * 7 + serial) % 10000).padStart(4, "0")}`;
}
const sid = (prefix: string) => `${prefix}${[...crypto.getRandomValues(new Uint8Array(16))].map((b) => b.toString(16).padStart(2, "0")).join("")}`;

const DISCLOSURE = "By checking this box I agree to receive marketing texts from Ace Plumbing. Consent is not a condition of purchase. Reply STOP to stop.";

interface World {
  owner: RegisteredUser;
  agent: RegisteredUser;
  tenant: string;
  business: string;
  lead: string;
  to: string;
}

async function world(client: pg.ClientBase): Promise<World> {
  const owner = await registerUser(client, { businessName: "Ace Plumbing" });
  const business = phone("786");
  await client.query(
    "insert into app_public.phone_numbers (tenant_id, phone_number, phone_number_sid, area_code, status, date_provisioned) values ($1, $2, 'PN' || md5(random()::text), '786', 'active', now())",
    [owner.tenant_id, business],
  );
  const to = phone();
  const { rows } = await client.query(
    "insert into app_public.leads (tenant_id, first_name, phone, email, region, timezone, source) values ($1, 'Dana', $2, $3, 'NY', 'America/New_York', 'web') returning id",
    [owner.tenant_id, to, `dana-${serial}-${Date.now()}@example.test`],
  );
  const agent = await addMember(client, owner.tenant_id!, "agent");
  return { owner, agent, tenant: owner.tenant_id!, business, lead: rows[0].id, to };
}

const count = async (client: pg.ClientBase, w: World) =>
  Number((await rootPool().query("select count(*) from app_public.consent_records where tenant_id = $1", [w.tenant])).rows[0].count) +
  Number((await client.query("select count(*) from app_public.consent_records")).rows[0].count) * 0;

/** The evidence hash as the documentation says to recompute it: SHA-256 of the JSON object of the evidence, as PostgreSQL writes jsonb (keys by length, then bytes). */
function evidenceHash(record: Record<string, unknown>): string {
  const fields = ["tenant_id", "channel", "phone", "email", "purpose", "method", "disclosure", "page_url", "ip", "user_agent", "message_id", "given_at"];
  const keys = fields.sort((a, b) => a.length - b.length || (a < b ? -1 : a > b ? 1 : 0));
  const value = (key: string) => {
    const v = record[key];
    if (v === null || v === undefined) return "null";
    if (key === "given_at") return JSON.stringify((v as Date).toISOString().replace(/\.(\d{3})Z$/, ".$1000Z"));
    return JSON.stringify(String(v));
  };
  return createHash("sha256").update(`{${keys.map((k) => `${JSON.stringify(k)}: ${value(k)}`).join(", ")}}`, "utf8").digest("hex");
}

const queueSms = (client: pg.ClientBase, w: World, body = "Spring tune-up, $79 this week") =>
  client.query("select * from app_public.queue_sms($1, $2)", [w.lead, body]);

describe("consent records", () => {
  it("a marketing text needs a recorded consent: SB002 before, queued after recordConsent, whose evidence hash anyone can recompute", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      await becomeUser(client, w.agent);
      const refused = await expectSqlError(client, "SB002", () => queueSms(client, w));
      expect(refused.message).toMatch(/no current consent to marketing texts from \+1212\d{7} is recorded; record the consent/);
      expect((await client.query("select count(*)::int as n from app_public.messages where to_phone = $1", [w.to])).rows[0].n).toBe(0);
      const given = "2026-11-30T15:04:05.123Z";
      const { rows: [record] } = await client.query(
        "select * from app_public.record_consent($1, 'sms', 'marketing', $2, $3::timestamptz, 'form', 'https://ace.example/quote?utm=fb', '198.51.100.7', 'Mozilla/5.0 (test)')",
        [w.lead, DISCLOSURE, given],
      );
      expect(record).toMatchObject({ tenant_id: w.tenant, lead_id: w.lead, channel: "sms", phone: w.to, purpose: "marketing", method: "form", ip: "198.51.100.7", recorded_by_user_id: w.agent.user_id, revoked_at: null });
      expect(record.evidence_hash).toBe(evidenceHash(record));
      const { rows: [message] } = await queueSms(client, w);
      expect(message).toMatchObject({ purpose: "marketing", status: "queued" });
      // A transactional consent does not let marketing through.
      await becomeRoot(client);
      const other = await world(client);
      await becomeUser(client, other.agent);
      await client.query("select app_public.record_consent($1, 'sms', 'transactional', null)", [other.lead]);
      await expectSqlError(client, "SB002", () => queueSms(client, other));
    });
  });

  it("refuses consent without its evidence, with the rule that is missing, and writes nothing", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      await becomeUser(client, w.agent);
      const bad: Array<[string, string | null, string, unknown[]]> = [
        ["23514", "consent_records_marketing_needs_the_disclosure_shown", "select app_public.record_consent($1, 'sms', 'marketing', null)", [w.lead]],
        ["23514", "consent_records_marketing_needs_the_disclosure_shown", "select app_public.record_consent($1, 'sms', 'marketing', '   I agree   ')", [w.lead]],
        ["23514", "consent_records_form_needs_its_page_ip_and_user_agent", "select app_public.record_consent($1, 'sms', 'marketing', $2, now(), 'form', 'https://ace.example/quote')", [w.lead, DISCLOSURE]],
        ["23514", "consent_records_page_url_must_be_http_and_at_most_2048", "select app_public.record_consent($1, 'sms', 'marketing', $2, now(), 'form', 'javascript:alert(1)', '198.51.100.7', 'UA')", [w.lead, DISCLOSURE]],
        ["23514", "consent_records_page_url_must_be_http_and_at_most_2048", "select app_public.record_consent($1, 'sms', 'marketing', $2, now(), 'form', $3, '198.51.100.7', 'UA')", [w.lead, DISCLOSURE, `https://ace.example/${"a".repeat(2100)}`]],
        ["23514", "consent_records_disclosure_must_be_at_most_4000_characters", "select app_public.record_consent($1, 'sms', 'marketing', $2)", [w.lead, "I agree. ".repeat(500)]],
        ["23514", "consent_records_user_agent_must_be_at_most_1000_characters", "select app_public.record_consent($1, 'sms', 'marketing', $2, now(), 'api', null, null, $3)", [w.lead, DISCLOSURE, "x".repeat(1001)]],
        ["23514", "consent_records_purpose_must_be_marketing_or_transactional", "select app_public.record_consent($1, 'sms', 'everything', $2)", [w.lead, DISCLOSURE]],
        ["22023", null, "select app_public.record_consent($1, 'sms', 'marketing', $2, now() + interval '1 day')", [w.lead, DISCLOSURE]],
        ["22023", null, "select app_public.record_consent($1, 'sms', 'marketing', $2, null)", [w.lead, DISCLOSURE]],
        ["22023", null, "select app_public.record_consent($1, 'sms', 'marketing', $2, now(), 'import')", [w.lead, DISCLOSURE]],
        ["22023", null, "select app_public.record_consent($1, 'sms', 'marketing', $2, now(), 'keyword')", [w.lead, DISCLOSURE]],
        ["22023", null, "select app_public.record_consent($1, 'fax', 'marketing', $2)", [w.lead, DISCLOSURE]],
        ["22P02", null, "select app_public.record_consent($1, 'sms', 'marketing', $2, now(), 'form', 'https://ace.example', 'not an ip', 'UA')", [w.lead, DISCLOSURE]],
      ];
      for (const [code, constraint, sql, params] of bad) {
        const error = await expectSqlError(client, code, () => client.query(sql, params));
        if (constraint) expect(error.constraint, sql).toBe(constraint);
      }
      expect(await count(client, w)).toBe(0);
      // A lead without a phone cannot consent to texts.
      await becomeRoot(client);
      const { rows: [mailOnly] } = await client.query("insert into app_public.leads (tenant_id, email, source) values ($1, 'x@example.test', 'web') returning id", [w.tenant]);
      await becomeUser(client, w.agent);
      expect((await expectSqlError(client, "22023", () => client.query("select app_public.record_consent($1, 'sms', 'marketing', $2)", [mailOnly.id, DISCLOSURE]))).message).toMatch(/no phone number/);
    });
  });

  it("an attacker: another tenant's lead is P0002, a stranger is refused, and requests cannot write, change or delete a record", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const other = await world(client);
      await becomeUser(client, other.agent);
      await expectSqlError(client, "P0002", () => client.query("select app_public.record_consent($1, 'sms', 'marketing', $2)", [w.lead, DISCLOSURE]));
      await expectSqlError(client, "P0002", () => client.query("select app_public.revoke_consent($1, 'sms')", [w.lead]));
      await becomeRoot(client);
      const stranger = await registerUser(client);
      await becomeUser(client, { ...stranger, tenant_id: w.tenant });
      await expectSqlError(client, "42501", () => client.query("select app_public.record_consent($1, 'sms', 'marketing', $2)", [w.lead, DISCLOSURE]));
      await becomeUser(client, w.agent);
      await client.query("select app_public.record_consent($1, 'sms', 'marketing', $2)", [w.lead, DISCLOSURE]);
      await expectSqlError(client, "42501", () =>
        client.query("insert into app_public.consent_records (tenant_id, channel, phone, purpose, method, disclosure, given_at, evidence_hash) values ($1, 'sms', '+12125550100', 'marketing', 'api', $2, now(), repeat('0', 64))", [w.tenant, DISCLOSURE]));
      await expectSqlError(client, "42501", () => client.query("update app_public.consent_records set disclosure = 'I agree to everything, forever.'"));
      await expectSqlError(client, "42501", () => client.query("delete from app_public.consent_records"));
      // The other tenant sees none of it.
      await becomeUser(client, other.agent);
      expect((await client.query("select count(*)::int as n from app_public.consent_records")).rows[0].n).toBe(0);
      // Even the owner role cannot rewrite the evidence: only one revocation is ever added.
      await becomeRoot(client);
      const { rows: [record] } = await client.query("select * from app_public.consent_records where tenant_id = $1", [w.tenant]);
      await expectSqlError(client, "55000", () => client.query("update app_public.consent_records set disclosure = 'I agree to everything, forever.' where id = $1", [record.id]));
      await expectSqlError(client, "55000", () => client.query("update app_public.consent_records set given_at = given_at - interval '1 year' where id = $1", [record.id]));
      await client.query("update app_public.consent_records set revoked_at = now(), revoked_by = 'manual' where id = $1", [record.id]);
      await expectSqlError(client, "55000", () => client.query("update app_public.consent_records set revoked_at = null, revoked_by = null where id = $1", [record.id]));
    });
  });

  it("STOP ends the consent (revoked by the text) and marketing stops; START brings back what the opt-out ended, given by that text", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      await becomeUser(client, w.agent);
      const { rows: [consent] } = await client.query("select * from app_public.record_consent($1, 'sms', 'marketing', $2)", [w.lead, DISCLOSURE]);
      await becomeRoot(client);
      const stop = (await client.query("select * from app_private.record_inbound_message($1, $2, $3, 'STOP')", [sid("SM"), w.to, w.business])).rows[0];
      const { rows: [revoked] } = await client.query("select revoked_at, revoked_by from app_public.consent_records where id = $1", [consent.id]);
      expect(revoked.revoked_by).toBe("sms_keyword");
      expect(revoked.revoked_at).not.toBeNull();
      expect(stop).toBeTruthy();
      const start = (await client.query("select * from app_private.record_inbound_message($1, $2, $3, 'START')", [sid("SM"), w.to, w.business])).rows[0];
      const { rows: current } = await client.query("select method, message_id, purpose, disclosure from app_public.consent_records where tenant_id = $1 and revoked_at is null", [w.tenant]);
      expect(current).toHaveLength(1);
      expect(current[0]).toMatchObject({ method: "keyword", purpose: "marketing" });
      expect(current[0].message_id).toBe(start.id ?? start.message_id ?? current[0].message_id);
      expect(current[0].disclosure).toContain(`consent record ${consent.id}`);
      await becomeUser(client, w.agent);
      expect((await queueSms(client, w)).rows[0].status).toBe("queued");
    });
  });

  it("START gives no consent that was never there: a number without one stays without marketing", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      await client.query("select * from app_private.record_inbound_message($1, $2, $3, 'STOP')", [sid("SM"), w.to, w.business]);
      await client.query("select * from app_private.record_inbound_message($1, $2, $3, 'START')", [sid("SM"), w.to, w.business]);
      expect((await client.query("select count(*)::int as n from app_public.consent_records where tenant_id = $1", [w.tenant])).rows[0].n).toBe(0);
      await becomeUser(client, w.agent);
      await expectSqlError(client, "SB002", () => queueSms(client, w));
    });
  });

  it("revokeConsent (the customer said so on the phone) ends it, cancels queued marketing, and a text queued before it is canceled at the claim", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      await becomeUser(client, w.agent);
      await client.query("select app_public.record_consent($1, 'sms', 'marketing', $2)", [w.lead, DISCLOSURE]);
      const { rows: [queued] } = await queueSms(client, w);
      expect((await client.query("select app_public.revoke_consent($1, 'sms') as n", [w.lead])).rows[0].n).toBe(1);
      expect((await client.query("select app_public.revoke_consent($1, 'sms') as n", [w.lead])).rows[0].n).toBe(0);
      const { rows: [after] } = await client.query("select status, error_message from app_public.messages where id = $1", [queued.id]);
      expect(after).toMatchObject({ status: "canceled", error_message: "Canceled: the recipient revoked their consent to marketing texts" });
      await expectSqlError(client, "SB002", () => queueSms(client, w));
      // A text that slipped in (queued while the revocation ran) is stopped at the claim.
      await becomeRoot(client);
      await client.query(
        `insert into app_public.consent_records (tenant_id, lead_id, channel, phone, purpose, method, disclosure, given_at, evidence_hash)
         values ($1, $2, 'sms', $3, 'marketing', 'api', $4, now(), repeat('0', 64))`, [w.tenant, w.lead, w.to, DISCLOSURE]);
      const { rows: [slipped] } = await client.query("select * from app_private.queue_message($1, $2, $3, 'Hi', 'marketing', 'system', null, $4)", [w.tenant, w.to, w.business, w.lead]);
      await client.query("update app_public.consent_records set revoked_at = now(), revoked_by = 'manual' where tenant_id = $1 and revoked_at is null", [w.tenant]);
      await client.query("update app_public.messages set scheduled_for = now() - interval '1 minute' where id = $1", [slipped.id]);
      expect((await client.query("select app_private.claim_outbound_message($1) as m", [slipped.id])).rows[0].m).toBeNull();
      expect((await client.query("select status, error_message from app_public.messages where id = $1", [slipped.id])).rows[0]).toMatchObject({
        status: "canceled", error_message: "Canceled: no current consent to marketing texts (checked again before sending)",
      });
    });
  });

  it("the timeline shows consent given and revoked, with how; the record outlives its lead", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      await becomeUser(client, w.agent);
      await client.query("select app_public.record_consent($1, 'sms', 'marketing', $2, now(), 'form', 'https://ace.example/quote', '198.51.100.7', 'UA')", [w.lead, DISCLOSURE]);
      await client.query("select app_public.revoke_consent($1, 'sms')", [w.lead]);
      const { rows } = await client.query("select event_type, summary, details ->> 'evidence_hash' as hash from app_public.lead_timeline($1) where event_type like 'consent%'", [w.lead]);
      expect(rows.map((r) => [r.event_type, r.summary])).toEqual([
        ["consent_given", "Consent to marketing texts given (web form)"],
        ["consent_revoked", "Consent to marketing texts revoked (recorded by a member)"],
      ]);
      expect(rows[0].hash).toMatch(/^[0-9a-f]{64}$/);
      await becomeRoot(client);
      await client.query("delete from app_public.leads where id = $1", [w.lead]);
      expect((await client.query("select lead_id from app_public.consent_records where tenant_id = $1", [w.tenant])).rows).toEqual([{ lead_id: null }]);
    });
  });

  it("an import attaches the consent a row carries to the lead it created or merged into (method import); a consent without its evidence refuses the call and writes nothing", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const manager = await addMember(client, w.tenant, "manager");
      await becomeUser(client, manager);
      const { rows: [batch] } = await client.query("select b.* from app_public.start_import('consent.csv', 'merge', 'US') b");
      const fresh = phone();
      const consent = { disclosure: DISCLOSURE, given_at: "2026-10-01T12:00:00Z", page_url: "https://ace.example/spring", ip: "192.0.2.44", user_agent: "Mozilla/5.0 (import)" };
      const bad = [
        { row_number: 9, raw: {}, lead: { phone: phone() }, error: null, consent: { given_at: "2026-10-01T12:00:00Z" } },
        { row_number: 9, raw: {}, lead: { phone: phone() }, error: null, consent: { disclosure: DISCLOSURE, given_at: "yesterday-ish" } },
        { row_number: 9, raw: {}, lead: { phone: phone() }, error: null, consent: { disclosure: DISCLOSURE, given_at: "2999-01-01T00:00:00Z" } },
        { row_number: 9, raw: {}, lead: { phone: phone() }, error: null, consent: { disclosure: DISCLOSURE, given_at: "2026-10-01T12:00:00Z", ip: "999.1.1.1" } },
        { row_number: 9, raw: {}, lead: { phone: phone() }, error: null, consent: { disclosure: DISCLOSURE, given_at: "2026-10-01T12:00:00Z", purpose: "everything" } },
        { row_number: 9, raw: {}, lead: { phone: phone() }, error: null, consent: "yes" },
      ];
      for (const row of bad) {
        const error = await expectSqlError(client, "22023", () => client.query("select app_public.import_rows($1, $2::jsonb)", [batch.id, JSON.stringify([row])]));
        expect(error.message).toMatch(/^Invalid rows: row 9: consent/);
      }
      expect((await client.query("select count(*)::int as n from app_public.leads where tenant_id = $1", [w.tenant])).rows[0].n).toBe(1);
      await client.query("select app_public.import_rows($1, $2::jsonb)", [batch.id, JSON.stringify([
        { row_number: 2, raw: {}, lead: { phone: fresh, first_name: "Lee" }, error: null, consent },
        { row_number: 3, raw: {}, lead: { phone: w.to, first_name: "Dana" }, error: null, consent },
        { row_number: 4, raw: {}, lead: { phone: phone() }, error: null },
      ])]);
      const { rows } = await client.query("select c.phone, c.method, c.purpose, c.given_at, c.page_url, host(c.ip) as ip, c.recorded_by_user_id, l.id = c.lead_id as linked from app_public.consent_records c join app_public.leads l on l.phone = c.phone where c.tenant_id = $1 order by c.phone", [w.tenant]);
      expect(rows.map((r) => r.phone).sort()).toEqual([fresh, w.to].sort());
      for (const r of rows) {
        expect(r).toMatchObject({ method: "import", purpose: "marketing", page_url: "https://ace.example/spring", ip: "192.0.2.44", recorded_by_user_id: manager.user_id, linked: true });
        expect(r.given_at.toISOString()).toBe("2026-10-01T12:00:00.000Z");
      }
    });
  });

  it("review of 000077: START restores nothing a member revoked, nothing for a deleted lead (a new owner of the number), and only what its own opt-out ended", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      const text = (body: string) => client.query("select * from app_private.record_inbound_message($1, $2, $3, $4)", [sid("SM"), w.to, w.business, body]);
      const current = async () => (await client.query("select count(*)::int as n from app_public.consent_records where tenant_id = $1 and revoked_at is null", [w.tenant])).rows[0].n;
      await becomeUser(client, w.agent);
      await client.query("select app_public.record_consent($1, 'sms', 'marketing', $2)", [w.lead, DISCLOSURE]);
      await becomeRoot(client);
      await text("STOP");
      await text("START");
      expect(await current()).toBe(1);
      // The customer then tells a member to stop marketing; a later STOP and START bring nothing back.
      await becomeUser(client, w.agent);
      expect((await client.query("select app_public.revoke_consent($1, 'sms') as n", [w.lead])).rows[0].n).toBe(1);
      await becomeRoot(client);
      await text("STOP");
      await text("START");
      expect(await current()).toBe(0);
      await becomeUser(client, w.agent);
      await expectSqlError(client, "SB002", () => queueSms(client, w));

      // A number whose lead was deleted after its STOP: whoever texts YES from it later inherits nothing.
      await becomeRoot(client);
      const v = await world(client);
      await becomeUser(client, v.agent);
      await client.query("select app_public.record_consent($1, 'sms', 'marketing', $2)", [v.lead, DISCLOSURE]);
      await becomeRoot(client);
      await client.query("select * from app_private.record_inbound_message($1, $2, $3, 'STOP')", [sid("SM"), v.to, v.business]);
      await client.query("update app_public.leads set deleted_at = now() where id = $1", [v.lead]);
      await client.query("select * from app_private.record_inbound_message($1, $2, $3, 'Yes')", [sid("SM"), v.to, v.business]);
      expect((await client.query("select count(*)::int as n from app_public.consent_records where tenant_id = $1 and revoked_at is null", [v.tenant])).rows[0].n).toBe(0);
    });
  });

  it("review of 000077: a reply held like marketing (the customer's last text over a day ago) needs the marketing consent too, when written and at the claim", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      await client.query("select * from app_private.record_inbound_message($1, $2, $3, 'Hi, how much for a water heater?')", [sid("SM"), w.to, w.business]);
      const { rows: [conversation] } = await client.query("select id from app_public.conversations where tenant_id = $1 and customer_phone = $2", [w.tenant, w.to]);
      await client.query(
        "update app_public.conversations set last_customer_message_time = now() - interval '30 days', created_at = now() - interval '30 days' where id = $1", [conversation.id]);
      await client.query("update app_public.messages set created_at = now() - interval '30 days' where tenant_id = $1 and direction = 'inbound'", [w.tenant]);
      const reply = () => client.query("select * from app_private.queue_message($1, $2, $3, 'BLACK FRIDAY: 50% off', 'conversation', 'human', $4)", [w.tenant, w.to, w.business, conversation.id]);
      const refused = await expectSqlError(client, "SB002", reply);
      expect(refused.message).toMatch(/held like marketing, and no current consent to marketing texts/);
      await client.query(
        `insert into app_public.consent_records (tenant_id, lead_id, channel, phone, purpose, method, disclosure, given_at, evidence_hash)
         values ($1, $2, 'sms', $3, 'marketing', 'api', $4, now(), repeat('0', 64))`, [w.tenant, w.lead, w.to, DISCLOSURE]);
      const { rows: [late] } = await reply();
      expect(late).toMatchObject({ purpose: "conversation", held_as_marketing: true, status: "queued" });
      await client.query("update app_public.consent_records set revoked_at = now(), revoked_by = 'manual' where tenant_id = $1", [w.tenant]);
      await client.query("update app_public.messages set scheduled_for = now() - interval '1 minute' where id = $1", [late.id]);
      expect((await client.query("select app_private.claim_outbound_message($1) as m", [late.id])).rows[0].m).toBeNull();
      expect((await client.query("select status from app_public.messages where id = $1", [late.id])).rows[0].status).toBe("canceled");
    });
  });

  it("review of 000077: an import records consent only for the row's own phone, once; consent evidence cannot be deleted, even by the owner role", async () => {
    await withRootDb(async (client) => {
      const w = await world(client);
      await client.query("update app_public.leads set email = 'dana-import@example.test' where id = $1", [w.lead]);
      const manager = await addMember(client, w.tenant, "manager");
      await becomeUser(client, manager);
      const { rows: [batch] } = await client.query("select b.* from app_public.start_import('consent.csv', 'merge', 'US') b");
      const consent = { disclosure: DISCLOSURE, given_at: "2026-10-01T12:00:00Z" };
      // A row with only an email merges into the lead that has a phone: its consent names no number.
      const error = await expectSqlError(client, "22023", () => client.query("select app_public.import_rows($1, $2::jsonb)", [batch.id,
        JSON.stringify([{ row_number: 2, raw: {}, lead: { email: "dana-import@example.test" }, error: null, consent }])]));
      expect(error.message).toBe("Invalid rows: row 2: consent to texts needs the phone number of the row it came with");
      const rows = JSON.stringify([{ row_number: 2, raw: {}, lead: { phone: w.to }, error: null, consent }]);
      await client.query("select app_public.import_rows($1, $2::jsonb)", [batch.id, rows]);
      await client.query("select app_public.import_rows($1, $2::jsonb)", [batch.id, rows]); // a retried chunk
      expect((await client.query("select count(*)::int as n from app_public.consent_records where method = 'import'")).rows[0].n).toBe(1);
      await becomeRoot(client);
      await client.query(`set local role ${db.roles.owner}`);
      await expectSqlError(client, "55000", () => client.query("delete from app_public.consent_records where tenant_id = $1", [w.tenant]));
      await expectSqlError(client, "55000", () => client.query("update app_public.consent_records set lead_id = null where tenant_id = $1", [w.tenant]));
      await becomeRoot(client);
      // It goes with its business.
      await client.query("delete from app_public.tenants where id = $1", [w.tenant]);
      expect((await client.query("select count(*)::int as n from app_public.consent_records where tenant_id = $1", [w.tenant])).rows[0].n).toBe(0);
    });
  });
});

