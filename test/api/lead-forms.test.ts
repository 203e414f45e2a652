/**
 * Public lead forms over real HTTP (issue 18): POST /f/<key> as a browser page and as an attacker would
 * send it — allowed and forbidden origins, the honeypot, a too-fast form, forged tokens, the rate limits,
 * a fake captcha verifier on loopback saying yes and no, the same submission five times at once, a
 * malformed body and a 1 MB one. Each refusal is clear, logged, and creates nothing.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formToken } from "../../src/webhooks/leadForms.ts";
import { PASSWORD, addMember, rootPool, uniqueEmail, withRootDb } from "../helpers.ts";
import { startTestServer, type TestServer } from "../server.ts";

let server: TestServer;
let limited: TestServer;
let verifier: Server;
const verified: string[] = [];

beforeAll(async () => {
  // The captcha verifier (the Turnstile / hCaptcha siteverify shape): "good" is a solved captcha.
  verifier = createServer((req, res) => {
    let body = "";
    req.on("data", (chunk) => (body += chunk));
    req.on("end", () => {
      const params = new URLSearchParams(body);
      verified.push(`${params.get("secret")}:${params.get("response")}`);
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ success: params.get("response") === "good" }));
    });
  });
  await new Promise<void>((resolve) => verifier.listen(0, "127.0.0.1", resolve));
  const captcha = { CAPTCHA_VERIFY_URL: `http://127.0.0.1:${(verifier.address() as AddressInfo).port}/siteverify`, CAPTCHA_SECRET: "test-secret" };
  [server, limited] = await Promise.all([
    startTestServer(captcha),
    startTestServer({ ...captcha, TRUST_PROXY: "1", FORM_LIMIT_PER_ADDRESS: "3", FORM_LIMIT_PER_FORM: "5" }),
  ]);
});
afterAll(async () => {
  await Promise.all([server?.close(), limited?.close()]);
  await new Promise((resolve) => verifier?.close(resolve));
});

const DISCLOSURE = "I agree to receive marketing texts from Form Plumbing at this number. Consent is not a condition of purchase. Reply STOP to stop.";
let serial = 0;
const phone = () => `(212) ${String(200 + (Date.now() % 700)).padStart(3, "0")}-${String((process.pid * 13 + ++serial) % 10000).padStart(4, "0")}`;
const e164 = (formatted: string) => `+1${formatted.replace(/\D/g, "")}`;

interface Form {
  token: string;
  tenant: string;
  key: string;
  id: string;
}

async function newForm(settings: Record<string, unknown> = {}): Promise<Form> {
  const registered = await server.gql(`mutation ($e: String!, $p: String!) { register(input: { email: $e, password: $p, businessName: "Form Plumbing" }) { result } }`, {
    e: uniqueEmail("forms"),
    p: PASSWORD,
  });
  const token = registered.data.register.result as string;
  const created = await server.gql(
    `mutation ($form: LeadFormInput!) { createLeadForm(input: { leadForm: $form }) { leadForm { rowId publicKey tenantId } } }`,
    { form: { name: "Quote request", allowedOrigins: ["https://plumbing.example"], consentDisclosure: DISCLOSURE, minFillSeconds: 0, ...settings } },
    token,
  );
  expect(created.errors).toBeUndefined();
  const form = created.data.createLeadForm.leadForm;
  return { token, tenant: form.tenantId, key: form.publicKey, id: form.rowId };
}

async function post(target: TestServer, key: string, body: unknown, headers: Record<string, string> = {}) {
  const json = typeof body !== "string";
  const response = await fetch(`${target.url}/f/${key}`, {
    method: "POST",
    headers: { "content-type": json ? "application/json" : "application/x-www-form-urlencoded", accept: json ? "application/json" : "text/html", ...headers },
    body: json ? JSON.stringify(body) : body,
  });
  const text = await response.text();
  return { status: response.status, text, json: json && text.startsWith("{") ? JSON.parse(text) : null, headers: response.headers };
}

const count = async (sql: string, params: unknown[]) => Number((await rootPool().query(sql, params)).rows[0].n);
const leads = (tenant: string) => count("select count(*) as n from app_public.leads where tenant_id = $1", [tenant]);
const refusals = async (form: Form) =>
  (await rootPool().query("select reason from app_public.lead_form_submissions where form_id = $1 and outcome = 'refused' order by received_at", [form.id])).rows.map((r) => r.reason);

describe("lead forms", () => {
  it("a page on an allowed origin creates a lead with its consent; the answer says only received", async () => {
    const form = await newForm();
    const number = phone();
    const sent = await post(server, form.key, { name: "Dana Whitfield", phone: number, email: "dana.form@example.com", message: "Leaking water heater", sms_consent: "on", _page: "https://plumbing.example/quote" }, {
      origin: "https://plumbing.example",
      "user-agent": "Mozilla/5.0 (form test)",
    });
    expect(sent).toMatchObject({ status: 201, json: { status: "received" } });
    expect(sent.headers.get("access-control-allow-origin")).toBe("https://plumbing.example");
    const { rows: [lead] } = await rootPool().query("select first_name, last_name, phone, email, problem_description, source from app_public.leads where tenant_id = $1", [form.tenant]);
    expect(lead).toEqual({ first_name: "Dana", last_name: "Whitfield", phone: e164(number), email: "dana.form@example.com", problem_description: "Leaking water heater", source: "web_form" });
    const { rows: [consent] } = await rootPool().query("select method, purpose, disclosure, page_url, host(ip) as ip, user_agent from app_public.consent_records where tenant_id = $1", [form.tenant]);
    expect(consent).toEqual({ method: "form", purpose: "marketing", disclosure: DISCLOSURE, page_url: "https://plumbing.example/quote", ip: "127.0.0.1", user_agent: "Mozilla/5.0 (form test)" });
    // The same person again (same phone) merges: one lead, the missing field filled, the submission logged.
    expect((await post(server, form.key, { phone: number, city: "Brooklyn" })).status).toBe(201);
    expect(await leads(form.tenant)).toBe(1);
    const { rows: outcomes } = await rootPool().query("select outcome from app_public.lead_form_submissions where form_id = $1 order by received_at", [form.id]);
    expect(outcomes.map((o) => o.outcome)).toEqual(["created", "merged"]);
    // Without the ticked box, no consent.
    expect((await post(server, form.key, { phone: phone() }, { origin: "https://plumbing.example", "user-agent": "x" })).status).toBe(201);
    expect(await count("select count(*) as n from app_public.consent_records where tenant_id = $1", [form.tenant])).toBe(1);
  });

  it("a plain HTML form (url-encoded, no script) works and gets a thank-you page", async () => {
    const form = await newForm();
    const sent = await post(server, form.key, `first_name=Kim&phone=${encodeURIComponent(phone())}&message=Drain+clog`, { referer: "https://plumbing.example/contact" });
    expect(sent.status).toBe(201);
    expect(sent.text).toContain("we received your request");
    expect(await leads(form.tenant)).toBe(1);
  });

  it("refuses, logs the reason and creates nothing: another origin, the honeypot, no contact, a malformed body, 1 MB, an unknown key", async () => {
    const form = await newForm();
    const forbidden = await post(server, form.key, { phone: phone() }, { origin: "https://evil.example" });
    expect(forbidden).toMatchObject({ status: 403, json: { error: "origin" } });
    expect(forbidden.headers.get("access-control-allow-origin")).toBeNull();
    const preflight = await fetch(`${server.url}/f/${form.key}`, { method: "OPTIONS", headers: { origin: "https://evil.example", "access-control-request-method": "POST" } });
    expect(preflight.status).toBe(403);
    const allowed = await fetch(`${server.url}/f/${form.key}`, { method: "OPTIONS", headers: { origin: "https://plumbing.example", "access-control-request-method": "POST" } });
    expect([allowed.status, allowed.headers.get("access-control-allow-origin")]).toEqual([204, "https://plumbing.example"]);
    expect((await post(server, form.key, { phone: phone(), _hp: "http://spam.example" })).json).toMatchObject({ error: "honeypot" });
    expect((await post(server, form.key, { first_name: "Nobody" })).json).toMatchObject({ error: "invalid", message: "A form needs a phone number or an email address to create a lead" });
    expect((await post(server, form.key, { phone: "not a phone" })).status).toBe(422);
    expect((await post(server, form.key, { phone: phone(), message: "x".repeat(2001) })).json.message).toMatch(/too long/);
    expect((await post(server, form.key, "{not json", { "content-type": "application/json" })).status).toBe(400);
    expect((await post(server, form.key, { phone: phone(), message: "x".repeat(1_048_576) })).status).toBe(413);
    expect((await post(server, "sbf_00000000000000000000000000000000", { phone: phone() })).status).toBe(404);
    expect((await post(server, "sbf_%27%3Bdrop%20table%20leads", { phone: phone() })).status).toBe(404);
    expect(await leads(form.tenant)).toBe(0);
    expect(await refusals(form)).toEqual(["origin", "honeypot", "invalid", "invalid", "invalid"]);
  });

  it("a form sent faster than its minimum fill time, or with a forged or another form's token, is refused", async () => {
    const form = await newForm({ minFillSeconds: 5 });
    const other = await newForm();
    const { token } = (await (await fetch(`${server.url}/f/${form.key}/token`)).json()) as { token: string };
    expect((await post(server, form.key, { phone: phone(), _token: token })).json).toMatchObject({ error: "too_fast" });
    expect((await post(server, form.key, { phone: phone() })).json).toMatchObject({ error: "bad_token" });
    const now = Math.floor(Date.now() / 1000);
    expect((await post(server, form.key, { phone: phone(), _token: `${now - 60}.${"A".repeat(43)}` })).json).toMatchObject({ error: "bad_token" });
    expect((await post(server, form.key, { phone: phone(), _token: formToken(server.config.jwtSecret, other.key, now - 60) })).json).toMatchObject({ error: "bad_token" });
    expect((await post(server, form.key, { phone: phone(), _token: formToken(server.config.jwtSecret, form.key, now - 2 * 86_400) })).json).toMatchObject({ error: "bad_token" });
    expect(await leads(form.tenant)).toBe(0);
    // Filled in a minute: accepted.
    expect((await post(server, form.key, { phone: phone(), _token: formToken(server.config.jwtSecret, form.key, now - 60) })).status).toBe(201);
    expect(await leads(form.tenant)).toBe(1);
  });

  it("a form that needs a captcha asks the verifier: no answer or a wrong one is refused, a solved one goes", async () => {
    const form = await newForm({ captchaRequired: true });
    expect((await post(server, form.key, { phone: phone() })).json).toMatchObject({ error: "captcha" });
    expect((await post(server, form.key, { phone: phone(), "cf-turnstile-response": "bad" })).json).toMatchObject({ error: "captcha" });
    expect((await post(server, form.key, { phone: phone(), "cf-turnstile-response": "good" })).status).toBe(201);
    expect(verified).toContain("test-secret:good");
    expect(await leads(form.tenant)).toBe(1);
    // The captcha answer is not kept as a lead attribute.
    expect(await count("select count(*) as n from app_public.leads where tenant_id = $1 and attributes ? 'cf-turnstile-response'", [form.tenant])).toBe(0);
  });

  it("the same submission five times at once makes one lead, by idempotency key and by phone", async () => {
    const form = await newForm();
    const number = phone();
    const same = await Promise.all(Array.from({ length: 5 }, () => post(server, form.key, { phone: number, first_name: "Ana" }, { "idempotency-key": "submit-123" })));
    expect(same.map((r) => r.status)).toEqual([201, 201, 201, 201, 201]);
    const again = await Promise.all(Array.from({ length: 5 }, (_, i) => post(server, form.key, { phone: phone(), _submission_id: "submit-456", first_name: `Try ${i}` })));
    expect(again.every((r) => r.status === 201)).toBe(true);
    const twin = phone();
    const byPhone = await Promise.all(Array.from({ length: 5 }, () => post(server, form.key, { phone: twin })));
    expect(byPhone.every((r) => r.status === 201)).toBe(true);
    expect(await leads(form.tenant)).toBe(3);
    expect(await count("select count(*) as n from app_public.lead_form_submissions where form_id = $1 and idempotency_key is not null", [form.id])).toBe(2);
  });

  it("the rate limits: per client address and per form, shared through PostgreSQL; refusals write no lead", async () => {
    const form = await newForm();
    const address = `198.51.100.${1 + (Date.now() % 250)}`;
    const from = (ip: string) => ({ "x-forwarded-for": ip });
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push((await post(limited, form.key, { phone: phone() }, from(address))).status);
    expect(statuses).toEqual([201, 201, 201, 429]);
    // Other addresses still get through, until the form's own limit (5) is reached.
    const more = [];
    for (let i = 0; i < 3; i++) more.push((await post(limited, form.key, { phone: phone() }, from(`203.0.113.${10 + i + (Date.now() % 200)}`))).status);
    expect(more).toEqual([201, 201, 429]);
    expect(await leads(form.tenant)).toBe(5);
  });

  it("forms are managed by owners and admins; agents and other businesses cannot change or see them", async () => {
    const form = await newForm();
    const agentToken = await withRootDb(async (client) => {
      const agent = await addMember(client, form.tenant, "agent");
      await client.query("commit");
      await client.query("begin");
      return agent;
    }).then(async (agent) => {
      const login = await server.gql(`mutation ($e: String!, $p: String!) { login(input: { email: $e, password: $p }) { result } }`, { e: agent.email, p: PASSWORD });
      return login.data.login.result as string;
    });
    const denied = await server.gql(`mutation { createLeadForm(input: { leadForm: { name: "Mine" } }) { leadForm { rowId } } }`, {}, agentToken);
    expect(denied.errors?.[0]).toBeDefined();
    const seen = await server.gql(`{ allLeadForms { nodes { rowId publicKey } } }`, {}, agentToken);
    expect(seen.data.allLeadForms.nodes.map((f: { rowId: string }) => f.rowId)).toEqual([form.id]);
    const stranger = await newForm();
    expect((await server.gql(`{ allLeadForms { nodes { rowId } } }`, {}, stranger.token)).data.allLeadForms.nodes.map((f: { rowId: string }) => f.rowId)).toEqual([stranger.id]);
    const bad = await server.gql(`mutation { createLeadForm(input: { leadForm: { name: "Bad", fieldMap: { phone: "password_hash" } } }) { leadForm { rowId } } }`, {}, form.token);
    expect(bad.errors?.[0]?.extensions?.code).toBe("23514");
    const origins = await server.gql(`mutation { createLeadForm(input: { leadForm: { name: "Bad", allowedOrigins: ["javascript:alert(1)"] } }) { leadForm { rowId } } }`, {}, form.token);
    expect(origins.errors?.[0]?.extensions?.code).toBe("23514");
    // A disabled form is as unknown.
    await server.gql(`mutation ($id: UUID!) { updateLeadFormByRowId(input: { rowId: $id, leadFormPatch: { enabled: false } }) { leadForm { enabled } } }`, { id: form.id }, form.token);
    expect((await post(server, form.key, { phone: phone() })).status).toBe(404);
  });

  it("review of 000079: a merge changes no contact detail and records consent only for the phone sent; the answer is the same whether a lead exists", async () => {
    const form = await newForm();
    const number = phone();
    const browser = { origin: "https://plumbing.example", "user-agent": "Mozilla/5.0 (owner)" };
    expect((await post(server, form.key, { name: "Dana Whitfield", phone: number, email: "dana.real@example.com" }, browser)).status).toBe(201);
    // Someone who knows only her email ticks the consent box: no consent for her phone.
    expect((await post(server, form.key, { email: "dana.real@example.com", sms_consent: "on", _page: "https://plumbing.example/q" }, { ...browser, "user-agent": "attacker" })).status).toBe(201);
    expect(await count("select count(*) as n from app_public.consent_records where tenant_id = $1", [form.tenant])).toBe(0);
    // Someone who knows her number sends another email and name: the lead keeps hers; the submission keeps what was sent.
    expect((await post(server, form.key, { name: "Mallory Evil", phone: number, email: "attacker@evil.example", message: "Call me" }, browser)).status).toBe(201);
    const { rows: [lead] } = await rootPool().query("select first_name, last_name, email, problem_description from app_public.leads where tenant_id = $1 and phone = $2", [form.tenant, e164(number)]);
    expect(lead).toEqual({ first_name: "Dana", last_name: "Whitfield", email: "dana.real@example.com", problem_description: "Call me" });
    const { rows: [last] } = await rootPool().query("select outcome, fields from app_public.lead_form_submissions where form_id = $1 order by received_at desc limit 1", [form.id]);
    expect(last.outcome).toBe("merged");
    expect(last.fields).toMatchObject({ email: "attacker@evil.example", first_name: "Mallory", last_name: "Evil" });
    // A bad value gets the same answer for a number that has a lead and one that has none.
    const known = await post(server, form.key, { phone: number, email: "not-an-email" });
    const unknown = await post(server, form.key, { phone: phone(), email: "not-an-email" });
    expect([known.status, known.json]).toEqual([unknown.status, unknown.json]);
    expect(known.status).toBe(422);
  });

  it("review of 000079: field names JavaScript objects have are refused in a field map, and posted ones are ordinary fields; an empty idempotency key counts as none", async () => {
    const form = await newForm();
    const map = await server.gql(`mutation { createLeadForm(input: { leadForm: { name: "Proto", fieldMap: { constructor: "phone", email: "email" } } }) { leadForm { rowId } } }`, {}, form.token);
    expect(map.errors?.[0]?.extensions?.code).toBe("23514");
    const hidden = await server.gql(`mutation { createLeadForm(input: { leadForm: { name: "Hidden", fieldMap: { _token: "phone" } } }) { leadForm { rowId } } }`, {}, form.token);
    expect(hidden.errors?.[0]?.extensions?.code).toBe("23514");
    expect((await post(server, form.key, { constructor: "x", toString: "y", phone: phone() })).status).toBe(201);
    expect((await post(server, form.key, `constructor=x&__proto__=y&phone=${encodeURIComponent(phone())}`)).status).toBe(201);
    expect((await post(server, form.key, { phone: phone(), _hp: "spam" }, { "idempotency-key": "  " })).json).toMatchObject({ error: "honeypot" });
    expect(await refusals(form)).toEqual(["honeypot"]);
  });

  it("review of 000079: junk refused before the form's own limit does not use it up", async () => {
    const form = await newForm();
    for (let i = 0; i < 6; i++) {
      const junk = await post(limited, form.key, { phone: phone(), _hp: "spam" }, { "x-forwarded-for": `192.0.2.${1 + ((Date.now() + i * 17) % 250)}` });
      expect(junk.status).toBe(422);
    }
    expect((await post(limited, form.key, { phone: phone() }, { "x-forwarded-for": `198.18.0.${1 + (Date.now() % 250)}` })).status).toBe(201);
  });

  it("routing per form: the business's auto-routing runs for a form's leads unless the form turns it off; phones are read in the business's country", async () => {
    const routed = await newForm();
    const unrouted = await server.gql(
      `mutation { createLeadForm(input: { leadForm: { name: "Careers", routeLeads: false, minFillSeconds: 0 } }) { leadForm { rowId publicKey } } }`, {}, routed.token);
    const careers = unrouted.data.createLeadForm.leadForm;
    await rootPool().query(
      `insert into app_public.system_config (tenant_id, key, value, value_type) values ($1, 'routing.auto_route', '"job"', 'string')
       on conflict (tenant_id, key) do update set value = excluded.value`, [routed.tenant]);
    const routeJobs = async (number: string) => count(
      `select count(*) as n from graphile_worker._private_jobs j join app_public.leads l on j.key = 'lead_route:' || l.id
        where l.tenant_id = $1 and l.phone = $2`, [routed.tenant, e164(number)]);
    const a = phone();
    const b = phone();
    expect((await post(server, routed.key, { phone: a })).status).toBe(201);
    expect((await post(server, careers.publicKey, { phone: b })).status).toBe(201);
    expect([await routeJobs(a), await routeJobs(b)]).toEqual([1, 0]);
    // A business in the United Kingdom: a number without its country code is British.
    await rootPool().query("update app_public.business_settings set country = 'GB' where tenant_id = $1", [routed.tenant]);
    const ukPost = await post(server, routed.key, { phone: "020 7946 0018" });
    expect(ukPost.status).toBe(201);
    const { rows: [uk] } = await rootPool().query("select phone, country from app_public.leads where tenant_id = $1 and phone = '+442079460018'", [routed.tenant]);
    expect(uk).toEqual({ phone: "+442079460018", country: "GB" });
  });
});

