/**
 * Nurture sequences over real parts: defined and enrolled through GraphQL, run by the real worker
 * (nurture__run_step → sms__send / email__send) with the local SMS provider and a fake SMTP server on
 * loopback, time-travelled with the tenant clock instead of sleeps. An email's unsubscribe link stops
 * the enrollment before its next step; statistics and the lead timeline come back through GraphQL.
 */
import type { Runner } from "graphile-worker";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalAiResponder } from "../../src/providers/aiLocal.ts";
import { SmtpEmailProvider } from "../../src/providers/emailSmtp.ts";
import { LocalNumberProvisioner } from "../../src/providers/numbersLocal.ts";
import { LocalSmsProvider } from "../../src/providers/smsLocal.ts";
import { setServices, type Services } from "../../src/worker/services.ts";
import { startWorker } from "../../src/worker/start.ts";
import { findHeader, startFakeSmtp, type FakeSmtp } from "../fakeSmtp.ts";
import { consentToMarketingTexts, ownerPool, registerUser, rootPool, uniqueEmail, useOwnDatabase, type RegisteredUser, waitFor } from "../helpers.ts";
import { startTestServer, type TestServer } from "../server.ts";

// Its worker runs tasks other files run too: a database of its own keeps their jobs apart.
useOwnDatabase("nurture");

let smtp: FakeSmtp;
let server: TestServer;
let runner: Runner;
let owner: RegisteredUser;
let token: string;
let services: Services;
const business = `+1786${String(Math.floor(Math.random() * 1e7)).padStart(7, "0")}`;

const gql = async (query: string, variables: Record<string, unknown> = {}) => server.gql(query, variables, token);
const clockTo = (target: string) => rootPool().query("select app_private.advance_clock_to($1, $2)", [owner.tenant_id, target]);

beforeAll(async () => {
  smtp = await startFakeSmtp();
  server = await startTestServer();
  services = {
    sms: new LocalSmsProvider(ownerPool(), "unused", -1),
    ai: new LocalAiResponder(),
    numbers: new LocalNumberProvisioner(),
    email: new SmtpEmailProvider({ url: smtp.url, timeoutMs: 3_000 }),
    emailFrom: { name: "Switchboard", address: "news@mail.example.com" },
    publicUrl: () => server.url,
  };
  setServices(services);
  const root = await rootPool().connect();
  try {
    owner = await registerUser(root, { businessName: "Ace Plumbing" });
    await root.query(
      `insert into app_public.phone_numbers (tenant_id, phone_number, phone_number_sid, area_code, status, date_provisioned, capabilities)
       values ($1, $2, 'PN' || md5(random()::text), '786', 'active', now(), '{voice,sms}')`,
      [owner.tenant_id, business],
    );
  } finally {
    root.release();
  }
  const login = await server.gql(`mutation ($email: String!, $password: String!) { login(input: { email: $email, password: $password }) { result } }`, {
    email: owner.email,
    password: owner.password,
  });
  token = login.data.login.result;
  runner = await startWorker(ownerPool(), 2, { only: ["nurture__run_step", "sms__send", "email__send"] });
});

afterAll(async () => {
  await runner?.stop();
  await services?.email.close();
  setServices(null);
  await server?.close();
  await smtp?.close();
});

const CREATE = `mutation ($name: String!, $steps: JSON!, $window: JSON) {
  createNurtureSequence(input: { nurtureSequence: { name: $name, steps: $steps, sendingWindow: $window } }) {
    nurtureSequence { rowId currentVersion status }
  }
}`;

describe("a nurture sequence through GraphQL and the worker", () => {
  it("refuses an unknown template variable when saved, with 22023 and the reason", async () => {
    const answer = await gql(CREATE, { name: "Broken", steps: [{ channel: "sms", template: "Hi {{lead.nickname}}" }] });
    expect(answer.errors?.[0]?.extensions?.code).toBe("22023");
    expect(answer.errors?.[0]?.message).toMatch(/step 1 template: unknown variable \{\{lead\.nickname\}\}/);
  });

  it("texts, then emails a day later inside the window; the email's unsubscribe link stops the third step; stats and timeline show it", async () => {
    await clockTo("2031-03-04 10:00 America/New_York");
    const created = await gql(CREATE, {
      name: "Welcome",
      steps: [
        { channel: "sms", template: "Hi {{lead.first_name}}, thanks for calling {{tenant.business_name}}!" },
        { channel: "email", delay: { days: 1 }, subject: "Your quote, {{lead.first_name}}", template: "Hello {{lead.full_name}},\nhere is your quote." },
        { channel: "sms", delay: { days: 2 }, template: "Still interested, {{lead.first_name}}?" },
      ],
      window: { days: ["mon", "tue", "wed", "thu", "fri"], start: "09:00", end: "17:00" },
    });
    expect(created.errors).toBeUndefined();
    const sequenceId = created.data.createNurtureSequence.nurtureSequence.rowId;
    const email = uniqueEmail("robin");
    const phone = `+1212${String(Math.floor(Math.random() * 1e7)).padStart(7, "0")}`;
    const { rows } = await rootPool().query(
      "insert into app_public.leads (tenant_id, first_name, last_name, phone, email, timezone, region, source) values ($1, 'Robin', 'Hood', $2, $3, 'America/New_York', 'NY', 'web') returning id",
      [owner.tenant_id, phone, email],
    );
    const leadId = rows[0].id;
    await consentToMarketingTexts(rootPool(), owner.tenant_id!, phone, leadId);

    const enrolled = await gql(`mutation ($s: UUID!, $l: UUID!) { enrollLeadInSequence(input: { sequenceId: $s, leadId: $l }) { result { rowId status nextStepNumber } } }`, {
      s: sequenceId,
      l: leadId,
    });
    expect(enrolled.errors).toBeUndefined();
    const enrollmentId = enrolled.data.enrollLeadInSequence.result.rowId;

    // Step 1 is due at once: the worker runs it and the local provider "sends" the text.
    const text = await waitFor("the first text", async () =>
      (await rootPool().query("select body from app_private.local_provider_messages where to_phone = $1", [phone])).rows[0],
    );
    // The first marketing text to the number: it names the business already, and gets how to stop.
    expect(text.body).toBe("Hi Robin, thanks for calling Ace Plumbing! Reply STOP to opt out.");
    expect(smtp.received.filter((m) => m.envelope.to.includes(email))).toHaveLength(0);

    // A day later (the clock, not a sleep): the email.
    await clockTo("2031-03-05 10:00:01 America/New_York");
    const mail = await waitFor("the email", async () => smtp.received.find((m) => m.envelope.to.includes(email)));
    expect(mail.subject).toBe("Your quote, Robin");
    expect(mail.text).toContain("Hello Robin Hood,\nhere is your quote.");
    const unsubscribe = findHeader(mail, "list-unsubscribe")!.replace(/^<|>$/g, "");
    expect((await fetch(unsubscribe, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: "List-Unsubscribe=One-Click" })).status).toBe(200);

    const after = await gql(`query ($id: UUID!) { leadSequenceEnrollmentByRowId(rowId: $id) { status stopReason currentStep } }`, { id: enrollmentId });
    expect(after.data.leadSequenceEnrollmentByRowId).toEqual({ status: "stopped", stopReason: "unsubscribed", currentStep: 2 });
    // Two days later nothing more goes out.
    await clockTo("2031-03-07 11:00 America/New_York");
    await new Promise((r) => setTimeout(r, 500));
    expect((await rootPool().query("select count(*)::int as n from app_private.local_provider_messages where to_phone = $1", [phone])).rows[0].n).toBe(1);

    const stats = await gql(
      `query ($id: UUID!) { nurtureSequenceByRowId(rowId: $id) {
        stats { enrolled active stopped stoppedByReason sent optedOut }
        stepStats { nodes { stepNumber channel ran sent optedOut } }
      } }`,
      { id: sequenceId },
    );
    expect(stats.errors).toBeUndefined();
    expect(stats.data.nurtureSequenceByRowId.stats).toEqual({ enrolled: 1, active: 0, stopped: 1, stoppedByReason: { unsubscribed: 1 }, sent: 2, optedOut: 1 });
    expect(stats.data.nurtureSequenceByRowId.stepStats.nodes).toEqual([
      { stepNumber: 1, channel: "sms", ran: 1, sent: 1, optedOut: 0 },
      { stepNumber: 2, channel: "email", ran: 1, sent: 1, optedOut: 1 },
      { stepNumber: 3, channel: "sms", ran: 0, sent: 0, optedOut: 0 },
    ]);

    const timeline = await gql(`query ($id: UUID!) { leadTimeline(leadId: $id) { nodes { eventType summary } } }`, { id: leadId });
    const nurture = timeline.data.leadTimeline.nodes.filter((e: { eventType: string }) => e.eventType.startsWith("nurture"));
    expect(nurture.map((e: { summary: string }) => e.summary)).toEqual([
      'Enrolled in nurture sequence "Welcome"',
      'Nurture "Welcome" step 1 (sms) queued',
      'Nurture "Welcome" step 2 (email) queued',
      'Nurture sequence "Welcome" stopped: unsubscribed',
    ]);
    // Paged two by two with the cursors of the connection, the timeline is the same feed.
    const paged: Array<{ eventType: string; summary: string }> = [];
    let cursor: string | null = null;
    for (let page = 0; page < 50; page++) {
      const next = await gql(
        `query ($id: UUID!, $after: Cursor) { leadTimeline(leadId: $id, first: 2, after: $after) { nodes { eventType summary } pageInfo { hasNextPage endCursor } } }`,
        { id: leadId, after: cursor },
      );
      expect(next.errors).toBeUndefined();
      paged.push(...next.data.leadTimeline.nodes);
      if (!next.data.leadTimeline.pageInfo.hasNextPage) break;
      cursor = next.data.leadTimeline.pageInfo.endCursor;
    }
    expect(paged.length).toBeGreaterThan(4);
    expect(paged).toEqual(timeline.data.leadTimeline.nodes);
  });

  it("unenrolls through GraphQL, and a second unenroll says it is already stopped", async () => {
    const created = await gql(CREATE, { name: "Later", steps: [{ channel: "sms", delay: { days: 3 }, template: "Hi" }] });
    const sequenceId = created.data.createNurtureSequence.nurtureSequence.rowId;
    const { rows } = await rootPool().query(
      "insert into app_public.leads (tenant_id, first_name, phone, timezone, source) values ($1, 'Kim', $2, 'America/New_York', 'web') returning id",
      [owner.tenant_id, `+1212${String(Math.floor(Math.random() * 1e7)).padStart(7, "0")}`],
    );
    const enrolled = await gql(`mutation ($s: UUID!, $l: UUID!) { enrollLeadInSequence(input: { sequenceId: $s, leadId: $l }) { result { rowId } } }`, {
      s: sequenceId,
      l: rows[0].id,
    });
    const id = enrolled.data.enrollLeadInSequence.result.rowId;
    const UNENROLL = `mutation ($id: UUID!) { unenrollLeadFromSequence(input: { enrollmentId: $id }) { result { status stopReason } } }`;
    expect((await gql(UNENROLL, { id })).data.unenrollLeadFromSequence.result).toEqual({ status: "stopped", stopReason: "unenrolled" });
    const again = await gql(UNENROLL, { id });
    expect(again.errors?.[0]?.extensions?.code).toBe("22023");
    expect(again.errors?.[0]?.message).toBe("This enrollment is already stopped");
    const twice = await gql(`mutation ($s: UUID!, $l: UUID!) { enrollLeadInSequence(input: { sequenceId: $s, leadId: $l }) { result { rowId } } }`, { s: sequenceId, l: rows[0].id });
    expect(twice.errors).toBeUndefined();
    const dup = await gql(`mutation ($s: UUID!, $l: UUID!) { enrollLeadInSequence(input: { sequenceId: $s, leadId: $l }) { result { rowId } } }`, { s: sequenceId, l: rows[0].id });
    expect(dup.errors?.[0]?.extensions?.code).toBe("23505");
  });
});
