/**
 * The missed-call flow over real HTTP: signed Twilio webhooks into the Express app, the worker
 * running the real tasks, and a fake Twilio REST server on loopback receiving the texts.
 * missed call → automatic text → customer reply → AI turns → lead qualified and routed.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { resolve } from "node:path";
import type { Runner } from "graphile-worker";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalAiResponder } from "../../src/providers/aiLocal.ts";
import { SmtpEmailProvider } from "../../src/providers/emailSmtp.ts";
import { LocalNumberProvisioner } from "../../src/providers/numbersLocal.ts";
import { LocalSmsProvider } from "../../src/providers/smsLocal.ts";
import { createTwilioClient, TwilioNumberProvisioner, TwilioSmsProvider } from "../../src/providers/twilio.ts";
import { services, setServices } from "../../src/worker/services.ts";
import { startWorker } from "../../src/worker/start.ts";
import { startFakeSmtp, type FakeSmtp } from "../fakeSmtp.ts";
import { postSignedForm, startFakeTwilio, type FakeTwilio } from "../fakeTwilio.ts";
import { db, markEmailVerified, ownerPool, registerUser, rootPool, useOwnDatabase, type RegisteredUser, waitFor } from "../helpers.ts";
import { projectRoot } from "../../src/config.ts";
import { startTestServer, type TestServer } from "../server.ts";

// Its worker runs tasks other files run too: a database of its own keeps their jobs apart.
useOwnDatabase("missed_call");

const TASKS = ["call__process_missed", "sms__send", "sms__reconcile", "conversation__ai_takeover", "conversation__ai_turn", "phone_number__provision", "email__send"];
const accountSid = `AC${randomBytes(16).toString("hex")}`;
const authToken = randomBytes(16).toString("hex");
const hex = () => randomBytes(16).toString("hex");
const randomPhone = (area: string) => `+1${area}${String(Math.floor(Math.random() * 1e7)).padStart(7, "0")}`;

let fake: FakeTwilio;
let smtp: FakeSmtp;
let server: TestServer;
let runner: Runner;
let owner: RegisteredUser;
let business: string;
const forward = randomPhone("786");

async function ownerToken(): Promise<string> {
  const answer = await server.gql(`mutation ($email: String!, $password: String!) { login(input: { email: $email, password: $password }) { result } }`, {
    email: owner.email,
    password: owner.password,
  });
  return answer.data.login.result;
}

const hook = (path: string, params: Record<string, string>, opts?: Parameters<typeof postSignedForm>[3]) =>
  postSignedForm(`${server.url}/webhooks/twilio${path}`, params, authToken, opts);

beforeAll(async () => {
  fake = await startFakeTwilio({ accountSid, authToken });
  server = await startTestServer({ TWILIO_ACCOUNT_SID: accountSid, TWILIO_AUTH_TOKEN: authToken, TWILIO_API_BASE_URL: fake.url });
  const client = createTwilioClient({ accountSid, authToken, apiBaseUrl: fake.url });
  smtp = await startFakeSmtp();
  setServices({
    sms: new TwilioSmsProvider(client),
    ai: new LocalAiResponder(),
    numbers: new TwilioNumberProvisioner(client),
    email: new SmtpEmailProvider({ url: smtp.url, timeoutMs: 5_000 }),
    emailFrom: { name: "Switchboard", address: "alerts@switchboard.example" },
    publicUrl: () => server.url,
  });
  const root = await rootPool().connect();
  try {
    owner = await registerUser(root, { businessName: "Ace Plumbing" });
    await markEmailVerified(root, owner.user_id); // the owner buys a number below
    business = randomPhone("305");
    await root.query(
      `insert into app_public.phone_numbers (tenant_id, phone_number, phone_number_sid, area_code, status, date_provisioned)
       values ($1, $2, $3, '305', 'active', now())`,
      [owner.tenant_id, business, `PN${hex()}`],
    );
    await root.query("update app_public.tenants set trade_type = 'plumbing' where id = $1", [owner.tenant_id]);
    await root.query("update app_public.business_settings set forward_to_phone = $2 where tenant_id = $1", [owner.tenant_id, forward]);
    await root.query(
      `insert into app_public.user_preferences (user_id, ai_takeover_delay) values ($1, 1)
       on conflict (user_id) do update set ai_takeover_delay = 1`,
      [owner.user_id],
    );
  } finally {
    root.release();
  }
  runner = await startWorker(ownerPool(), 2, { only: TASKS });
});

afterAll(async () => {
  await runner?.stop();
  await services().email.close();
  setServices(null);
  await server?.close();
  await fake?.close();
  await smtp?.close();
});

describe("Twilio webhooks", () => {
  it("answer an unsigned, tampered or wrongly signed request with 403 and write nothing", async () => {
    const callSid = `CA${hex()}`;
    const params = { CallSid: callSid, From: randomPhone("212"), To: business, CallStatus: "ringing" };
    expect((await hook("/voice", params, { omitSignature: true })).status).toBe(403);
    expect((await hook("/voice", params, { signatureOverride: "bm90IGEgc2lnbmF0dXJl" })).status).toBe(403);
    expect((await hook("/voice", params, { signUrl: "https://evil.example/webhooks/twilio/voice" })).status).toBe(403);
    const wrongToken = await postSignedForm(`${server.url}/webhooks/twilio/voice`, params, "another-token");
    expect(wrongToken.status).toBe(403);
    const { rows } = await rootPool().query("select count(*)::int as n from app_public.calls where call_sid = $1", [callSid]);
    expect(rows[0].n).toBe(0);
  });

  it("answer malformed input clearly: 400 for non-E.164 numbers or a bad CallSid, 404 for a number of no tenant; nothing half-written", async () => {
    const bad = await hook("/voice", { CallSid: `CA${hex()}`, From: "555-1234", To: business, CallStatus: "ringing" });
    expect(bad.status).toBe(400);
    expect(bad.text).toContain("E.164");
    expect((await hook("/voice", { CallSid: "CA123", From: randomPhone("212"), To: business })).status).toBe(400);
    const unknown = await hook("/sms", { MessageSid: `SM${hex()}`, From: randomPhone("212"), To: randomPhone("999"), Body: "hi" });
    expect(unknown.status).toBe(404);
    expect(unknown.text).toContain("does not belong to any tenant");
    expect((await hook("/sms", { MessageSid: `SM${hex()}`, From: randomPhone("212"), To: business })).status).toBe(400);
    expect((await hook("/voice/status", { CallSid: `CA${hex()}`, From: randomPhone("212"), To: business, CallStatus: "exploded" })).status).toBe(400);
  });

  it("store a 10,000-character text whole", async () => {
    const sid = `SM${hex()}`;
    const body = "a".repeat(10_000);
    expect((await hook("/sms", { MessageSid: sid, From: randomPhone("212"), To: business, Body: body })).status).toBe(200);
    const { rows } = await rootPool().query("select length(body) as n from app_public.messages where message_sid = $1", [sid]);
    expect(rows[0].n).toBe(10_000);
  });

  it("the same inbound text delivered 5 times at once makes one message and one lead", async () => {
    const sid = `SM${hex()}`;
    const from = randomPhone("212");
    const params = { MessageSid: sid, From: from, To: business, Body: "Is anyone there?" };
    const answers = await Promise.all(Array.from({ length: 5 }, () => hook("/sms", params)));
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200, 200]);
    const root = rootPool();
    expect((await root.query("select count(*)::int as n from app_public.messages where message_sid = $1", [sid])).rows[0].n).toBe(1);
    expect((await root.query("select count(*)::int as n from app_public.leads where phone = $1", [from])).rows[0].n).toBe(1);
    expect((await root.query("select message_count from app_public.conversations where customer_phone = $1", [from])).rows[0].message_count).toBe(1);
  });

  it("call status only moves forward and a missed call is processed once, however often and in whatever order the callbacks come", async () => {
    const callSid = `CA${hex()}`;
    const from = randomPhone("415");
    const status = (s: string, extra: Record<string, string> = {}) => hook("/voice/status", { CallSid: callSid, From: from, To: business, CallStatus: s, ...extra });
    // The final status first, then an old "ringing", then the incoming-call webhook itself, five times each, concurrently.
    const answers = await Promise.all([
      ...Array.from({ length: 5 }, () => status("completed", { CallDuration: "31" })),
      ...Array.from({ length: 5 }, () => status("ringing")),
      ...Array.from({ length: 5 }, () => hook("/voice", { CallSid: callSid, From: from, To: business, CallStatus: "ringing" })),
    ]);
    expect(answers.every((a) => a.status === 200)).toBe(true);
    const root = rootPool();
    const call = await waitFor("the call to be processed", async () => {
      const { rows } = await root.query("select * from app_public.calls where call_sid = $1 and processed", [callSid]);
      return rows[0];
    });
    expect(call).toMatchObject({ status: "completed", duration: 31, missed: true, sms_triggered: true });
    const { rows } = await root.query("select count(*)::int as n from app_public.messages where to_phone = $1 and purpose = 'auto_response'", [from]);
    expect(rows[0].n).toBe(1);
  });

  it("missed call → automatic text → customer replies → the AI takes over, qualifies the lead, and the lead is routed", async () => {
    const callSid = `CA${hex()}`;
    const customer = randomPhone("305");
    const voice = await hook("/voice", { CallSid: callSid, From: customer, To: business, CallStatus: "ringing", CallerState: "FL", CallerCity: "MIAMI" });
    expect(voice.status).toBe(200);
    expect(voice.text).toContain(`<Number>${forward}</Number>`);
    expect(voice.text).toMatch(/<Dial timeout="20" action="[^"]+\/webhooks\/twilio\/voice\/status" method="POST">/);
    const dial = await hook("/voice/status", { CallSid: callSid, From: customer, To: business, CallStatus: "in-progress", DialCallStatus: "no-answer", DialCallDuration: "0" });
    expect(dial.text).toContain("<Say>");

    const root = rootPool();
    const autoText = await waitFor("the automatic text at the provider", async () => fake.messages.find((m) => m.to === customer));
    expect(autoText.body).toBe("Hi! Sorry we missed your call. How can we help?");
    expect(await fake.sendStatusCallback(autoText.sid, "delivered")).toBe(204);
    await waitFor("delivered", async () => (await root.query("select 1 from app_public.messages where message_sid = $1 and status = 'delivered'", [autoText.sid])).rowCount);
    // A late "sent" does not undo "delivered".
    await fake.sendStatusCallback(autoText.sid, "sent");
    expect((await root.query("select status from app_public.messages where message_sid = $1", [autoText.sid])).rows[0].status).toBe("delivered");

    const say = async (body: string, aiTurns: number) => {
      expect((await hook("/sms", { MessageSid: `SM${hex()}`, From: customer, To: business, Body: body })).status).toBe(200);
      return waitFor(`AI turn ${aiTurns}`, async () => {
        const texts = fake.messages.filter((m) => m.to === customer);
        return texts.length === aiTurns + 1 ? texts[texts.length - 1] : null;
      });
    };
    await say("Hi, my water heater is leaking all over the basement", 1);
    const conversation = (await root.query("select * from app_public.conversations where customer_phone = $1", [customer])).rows[0];
    expect(conversation).toMatchObject({ ai_active: true, human_active: false, call_id: expect.any(String) });
    await say("It's at 123 Main St, Miami FL 33101", 2);
    const last = await say("Today please, as soon as possible", 3);
    expect(last.body.length).toBeLessThanOrEqual(320);

    const lead = await waitFor("the qualified lead", async () => (await root.query("select * from app_public.leads where phone = $1 and status = 'qualified'", [customer])).rows[0]);
    expect(lead).toMatchObject({ source: "missed_call", city: "MIAMI", region: "FL" });
    expect(lead.address).toContain("123 Main St");
    expect(lead.problem_description).toContain("water heater");
    expect(lead.job_type).toBeTruthy();
    expect(lead.ai_analysis).toMatchObject({ urgency: expect.any(String) });
    const { rows: ai } = await root.query(
      "select intent, confidence from app_public.messages where conversation_id = $1 and sender = 'ai' order by created_at",
      [conversation.id],
    );
    expect(ai).toHaveLength(3);
    for (const m of ai) {
      expect(m.intent).toMatch(/^[a-z_]+$/);
      expect(Number(m.confidence)).toBeGreaterThan(0);
    }
    expect((await root.query("select outcome from app_public.conversations where id = $1", [conversation.id])).rows[0].outcome).toBe("qualified");
    expect((await root.query("select count(*)::int as n from app_public.lead_routing_history where lead_id = $1", [lead.id])).rows[0].n).toBeGreaterThan(0);
    expect((await root.query("select kind from app_public.notifications where lead_id = $1", [lead.id])).rows).toEqual([{ kind: "lead_qualified" }]);
    // The owner's preferences (notification_email on by default) also bring it by email, to their login address.
    // (The owner's inbox also holds the verification email register sent.)
    const mail = await waitFor("the notification email", async () =>
      smtp.received.find((m) => m.envelope.to.includes(owner.email) && !/^Confirm your email address/.test(m.subject ?? "")),
    );
    expect(mail.subject).toMatch(/^(Qualified|Emergency) lead: .+ from \+1305/);
    expect(mail.text).toContain("water heater");
    expect(mail.text).toContain(lead.id);
    const carried = await waitFor("the notification email recorded as sent", async () =>
      (await root.query(
        "select e.status, e.purpose, e.message_id_header from app_public.notifications n join app_public.email_messages e on e.id = n.email_message_id where n.lead_id = $1 and e.status = 'sent'",
        [lead.id],
      )).rows[0],
    );
    expect(carried).toEqual({ status: "sent", purpose: "notification", message_id_header: mail.messageId });
  });

  it("a human reply through GraphQL stops the AI for that conversation", async () => {
    const customer = randomPhone("305");
    expect((await hook("/sms", { MessageSid: `SM${hex()}`, From: customer, To: business, Body: "Do you fix toilets?" })).status).toBe(200);
    const root = rootPool();
    const conversation = (await root.query("select id from app_public.conversations where customer_phone = $1", [customer])).rows[0];
    const reply = await server.gql(
      `mutation($id: UUID!) { sendConversationReply(input: { conversationId: $id, body: "Yes! Joe here, when suits you?" }) { result { status sender purpose } } }`,
      { id: conversation.id },
      await ownerToken(),
    );
    expect(reply.errors, JSON.stringify(reply.errors)).toBeUndefined();
    expect(reply.data.sendConversationReply.result).toEqual({ status: "queued", sender: "human", purpose: "conversation" });
    await waitFor("the human reply at the provider", async () => fake.messages.find((m) => m.to === customer && m.body.startsWith("Yes! Joe")));
    // The takeover timer (1 s) passes: the AI stays quiet.
    await new Promise((r) => setTimeout(r, 2500));
    const { rows } = await root.query("select ai_active, human_active from app_public.conversations where id = $1", [conversation.id]);
    expect(rows[0]).toEqual({ ai_active: false, human_active: true });
    expect(fake.messages.filter((m) => m.to === customer)).toHaveLength(1);
  });

  it("an opt-out in ordinary words through the signed webhook: listed, and exactly one confirmation reaches the provider", async () => {
    const root = rootPool();
    const customer = randomPhone("212");
    for (const body of ["Please stop texting me", "STOP STOP", "no more texts"]) {
      expect((await hook("/sms", { MessageSid: `SM${hex()}`, From: customer, To: business, Body: body })).status).toBe(200);
    }
    expect((await root.query("select source from app_public.dnc_list where tenant_id = $1 and phone = $2", [owner.tenant_id, customer])).rows[0]?.source).toBe("sms_opt_out");
    await waitFor("the confirmation", async () => fake.messages.some((m) => m.to === customer));
    await new Promise((r) => setTimeout(r, 500));
    const sent = fake.messages.filter((m) => m.to === customer);
    expect(sent).toHaveLength(1);
    expect(sent[0]!.body).toContain("unsubscribed");
  });

  it("provider opt-outs end to end: a signed text Twilio flags OptOutType=STOP, and a send the provider refuses with 21610, each put the number on the do-not-contact list for good", async () => {
    const root = rootPool();
    const source = async (phone: string) =>
      (await root.query("select source from app_public.dnc_list where tenant_id = $1 and phone = $2", [owner.tenant_id, phone])).rows[0]?.source ?? null;
    // A keyword the business configured in Twilio (we do not read "Arrête" as one); Twilio answered it.
    const flagged = randomPhone("212");
    const answer = await hook("/sms", { MessageSid: `SM${hex()}`, From: flagged, To: business, Body: "Arrête", OptOutType: "STOP" });
    expect(answer.status).toBe(200);
    expect(await source(flagged)).toBe("provider");
    expect((await root.query("select count(*)::int as n from app_public.messages where to_phone = $1", [flagged])).rows[0].n).toBe(0);
    // A reply the worker sends, refused by the provider: the recipient unsubscribed at the carrier.
    const refused = randomPhone("212");
    fake.failNextSends(1, { httpStatus: 400, code: 21610, message: "Attempt to send to unsubscribed recipient" });
    const { rows } = await root.query(
      `with c as (insert into app_public.conversations (tenant_id, customer_phone, business_phone) values ($1, $2, $3) returning id)
       select m.id from c, app_private.queue_message($1, $2, $3, 'Thanks for your call', 'conversation', 'system', c.id) m`,
      [owner.tenant_id, refused, business],
    );
    await waitFor("the refused send", async () =>
      (await root.query("select 1 from app_public.messages where id = $1 and status = 'failed' and error_code = 21610", [rows[0].id])).rows[0],
    );
    expect(await source(refused)).toBe("provider");
    for (const to of [flagged, refused]) {
      await expect(root.query("select app_private.queue_message($1, $2, $3, 'One more thing', 'marketing', 'system')", [owner.tenant_id, to, business])).rejects.toMatchObject({
        code: "SB001",
      });
    }
  });

  it("requestPhoneNumber buys a number at the provider with our webhooks and makes it active", async () => {
    const answer = await server.gql(`mutation { requestPhoneNumber(input: { areaCode: "415" }) { result { rowId status } } }`, {}, await ownerToken());
    expect(answer.errors, JSON.stringify(answer.errors)).toBeUndefined();
    const id = answer.data.requestPhoneNumber.result.rowId;
    const number = await waitFor("the number to be active", async () =>
      (await rootPool().query("select * from app_public.phone_numbers where id = $1 and status = 'active'", [id])).rows[0],
    );
    expect(number.phone_number).toMatch(/^\+1415/);
    expect(number.voice_webhook_url).toBe(`${server.url}/webhooks/twilio/voice`);
    expect(number.messaging_service_sid).toMatch(/^MG/);
    const bought = fake.numbers.find((n) => n.phoneNumber === number.phone_number);
    expect(bought?.smsUrl).toBe(`${server.url}/webhooks/twilio/sms`);
  });

  it("1,000 outbound texts with the worker killed midway: each sent exactly once by our records and the provider's, none to a number that opted out", async () => {
    await runner.stop();
    const root = rootPool();
    const base = 6_460_000_000 + Math.floor(Math.random() * 1_000_000) * 1000;
    const tag = hex().slice(0, 8);
    // Replies in 1,000 conversations the customers started (a reply needs one; it then goes at once).
    await root.query(
      `with c as (
         insert into app_public.conversations (tenant_id, customer_phone, business_phone)
         select $1, '+1' || ($3::bigint + i), $2 from generate_series(1, 1000) i
         returning id, customer_phone)
       select app_private.queue_message($1, c.customer_phone, $2, 'Crash test ${tag} #' || (c.customer_phone::text::bigint - 10000000000 - $3::bigint),
                                        'conversation', 'system', c.id, null, 'crash-${tag}:' || c.customer_phone)
         from c`,
      [owner.tenant_id, business, base],
    );
    const ours = () => fake.messages.filter((m) => m.body.startsWith(`Crash test ${tag} #`));
    // Three texts the provider takes but whose answer is lost: the worker cannot know they left.
    fake.acceptButDropResponse(3);
    const child = spawn(process.execPath, [resolve(projectRoot, "test/fixtures/outboxWorker.ts")], {
      env: { ...process.env, OWNER_URL: db.ownerUrl, TWILIO_ACCOUNT_SID: accountSid, TWILIO_AUTH_TOKEN: authToken, TWILIO_API_BASE_URL: fake.url, PUBLIC_URL: server.url },
      stdio: ["ignore", "pipe", "inherit"],
    });
    const exited = new Promise((r) => child.once("exit", r));
    await waitFor("300 texts at the provider", async () => ours().length >= 300, 60_000);
    child.kill("SIGKILL");
    await exited;
    const sentBeforeKill = ours().length;
    const { rows: states } = await root.query(
      "select status, count(*)::int as n from app_public.messages where idempotency_key like $1 group by 1 order by 1",
      [`crash-${tag}:%`],
    );
    expect(states.find((s) => s.status === "queued")?.n ?? 0).toBeGreaterThan(0);

    // 20 recipients still waiting opt out before the restart.
    const { rows: optedOut } = await root.query(
      `insert into app_public.dnc_list (tenant_id, phone, source)
       select tenant_id, to_phone, 'sms_opt_out' from app_public.messages
        where idempotency_key like $1 and status = 'queued' order by idempotency_key limit 20
       returning phone`,
      [`crash-${tag}:%`],
    );
    expect(optedOut).toHaveLength(20);
    // The dead worker still holds its jobs' locks: the sweep hands every stuck row to a new job.
    await root.query("select * from app_private.sweep_outbox(interval '0')");
    runner = await startWorker(ownerPool(), 4, { only: TASKS });
    await waitFor(
      "every text to be settled",
      async () =>
        (await root.query("select count(*)::int as n from app_public.messages where idempotency_key like $1 and status in ('queued', 'sending')", [`crash-${tag}:%`]))
          .rows[0].n === 0,
      120_000,
    );
    const { rows: final } = await root.query(
      "select status, message_sid, to_phone, body from app_public.messages where idempotency_key like $1",
      [`crash-${tag}:%`],
    );
    const dnc = new Set(optedOut.map((r) => r.phone));
    const canceled = final.filter((m) => m.status === "canceled");
    expect(canceled.map((m) => m.to_phone).sort()).toEqual([...dnc].sort());
    const sent = final.filter((m) => m.status === "sent");
    expect(sent).toHaveLength(980);
    expect(new Set(sent.map((m) => m.message_sid)).size).toBe(980);
    // The provider saw each text exactly once, under the id we recorded, and nothing for an opted-out number.
    const provider = ours();
    expect(provider).toHaveLength(980);
    expect(new Set(provider.map((m) => m.body)).size).toBe(980);
    const bySid = new Map(provider.map((m) => [m.sid, m]));
    for (const m of sent) expect(bySid.get(m.message_sid)?.body).toBe(m.body);
    expect(provider.filter((m) => dnc.has(m.to))).toEqual([]);
    expect(sentBeforeKill).toBeLessThan(980);
  });

  it("a call to an agent tracking number rings the agent and attributes the call, the conversation and the lead to that agent", async () => {
    const root = rootPool();
    const agentPhone = randomPhone("786");
    const tracking = randomPhone("305");
    const { rows: agent } = await root.query(
      "insert into app_public.agents (tenant_id, display_name, phone) values ($1, 'DJ Nova', $2) returning id",
      [owner.tenant_id, agentPhone],
    );
    // The tracking number is one of the tenant's provisioned numbers, given to the agent through the API.
    await root.query(
      `insert into app_public.phone_numbers (tenant_id, phone_number, phone_number_sid, area_code, status, date_provisioned)
       values ($1, $2, $3, '305', 'active', now())`,
      [owner.tenant_id, tracking, `PN${hex()}`],
    );
    const assigned = await server.gql(
      `mutation ($agentId: UUID!, $phone: String!) { assignTrackingNumber(input: { agentId: $agentId, phone: $phone }) { result { rowId isActive } } }`,
      { agentId: agent[0].id, phone: tracking },
      await ownerToken(),
    );
    expect(assigned.errors).toBeUndefined();
    expect(assigned.data.assignTrackingNumber.result.isActive).toBe(true);
    const callSid = `CA${hex()}`;
    const customer = randomPhone("212");
    const voice = await hook("/voice", { CallSid: callSid, From: customer, To: tracking, CallStatus: "ringing" });
    expect(voice.text).toContain(`<Number>${agentPhone}</Number>`);
    await hook("/voice/status", { CallSid: callSid, From: customer, To: tracking, CallStatus: "in-progress", DialCallStatus: "busy" });
    const call = await waitFor("the call to be processed", async () => (await root.query("select * from app_public.calls where call_sid = $1 and processed", [callSid])).rows[0]);
    expect(call.agent_id).toBe(agent[0].id);
    const { rows } = await root.query(
      "select l.owner_agent_id as lead_agent, c.agent_id as conversation_agent from app_public.leads l join app_public.conversations c on c.lead_id = l.id where l.id = $1",
      [call.lead_id],
    );
    expect(rows[0]).toEqual({ lead_agent: agent[0].id, conversation_agent: agent[0].id });
    // The automatic text leaves from the tracking number the customer called.
    expect((await waitFor("the automatic text", async () => fake.messages.find((m) => m.to === customer)))?.from).toBe(tracking);
  });

  it("the local provider (no Twilio credentials) records the text and reports it delivered through the signed status webhook", async () => {
    const twilioServices = services();
    setServices({ ...twilioServices, sms: new LocalSmsProvider(ownerPool(), authToken, 10), numbers: new LocalNumberProvisioner() });
    try {
      const customer = randomPhone("646");
      const { rows } = await rootPool().query(
        `with c as (insert into app_public.conversations (tenant_id, customer_phone, business_phone) values ($1, $2, $3) returning id)
         select m.id from c, app_private.queue_message($1, $2, $3, 'Local hello', 'conversation', 'system', c.id) m`,
        [owner.tenant_id, customer, business],
      );
      const delivered = await waitFor("local delivery", async () =>
        (await rootPool().query("select status, message_sid from app_public.messages where id = $1 and status = 'delivered'", [rows[0].id])).rows[0],
      );
      const { rows: local } = await rootPool().query("select to_phone, body, status from app_private.local_provider_messages where sid = $1", [delivered.message_sid]);
      expect(local[0]).toEqual({ to_phone: customer, body: "Local hello", status: "delivered" });
      expect(fake.messages.find((m) => m.to === customer)).toBeUndefined();
    } finally {
      setServices(twilioServices);
    }
  });
});
