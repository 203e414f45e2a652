/**
 * Outbound webhooks over real HTTP (issue 18): a receiver on loopback verifies every signature with the
 * `standardwebhooks` library; it answers 500 for a while, then 200 (retries deliver, each event once by
 * id); the worker is killed mid-delivery (no event lost); filters deliver only subscribed types; one
 * business's endpoint never sees another's events; private targets are refused unless allowed; secrets
 * rotate with an overlap; an endpoint failing too long is turned off and its owner told; redelivery
 * and replay; and the GraphQL surface as an attacker sees it.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { resolve } from "node:path";
import type { Runner } from "graphile-worker";
import { Webhook } from "standardwebhooks";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { privateAddressReason, postWebhook } from "../../src/providers/webhookPoster.ts";
import { LocalAiResponder } from "../../src/providers/aiLocal.ts";
import { LocalEmailProvider } from "../../src/providers/emailLocal.ts";
import { LocalNumberProvisioner } from "../../src/providers/numbersLocal.ts";
import { LocalSmsProvider } from "../../src/providers/smsLocal.ts";
import { setServices, type Services } from "../../src/worker/services.ts";
import { startWorker } from "../../src/worker/start.ts";
import { PASSWORD, db, ownerPool, rootPool, uniqueEmail, useOwnDatabase, waitFor } from "../helpers.ts";
import { startTestServer, type TestServer } from "../server.ts";

useOwnDatabase("webhooks");

interface Received {
  path: string;
  id: string;
  timestamp: string;
  signature: string;
  body: string;
  json: { id: string; type: string; sequence: number; timestamp: string; data: Record<string, unknown> };
  answered: number | null;
}

/** What each path answers: a status, or "hang" (never answers). */
const behaviour = new Map<string, (count: number) => number | "hang">();
const received: Received[] = [];
const hanging: ServerResponse[] = [];
let receiver: Server;
let receiverUrl: string;
let server: TestServer;
let runner: Runner | null = null;
let services: Services;

function receive(req: IncomingMessage, res: ServerResponse): void {
  let body = "";
  req.setEncoding("utf8");
  req.on("data", (chunk: string) => (body += chunk));
  req.on("end", () => {
    const path = req.url ?? "/";
    const count = received.filter((r) => r.path === path).length;
    const answer = (behaviour.get(path) ?? (() => 200))(count);
    const entry: Received = {
      path,
      id: String(req.headers["webhook-id"]),
      timestamp: String(req.headers["webhook-timestamp"]),
      signature: String(req.headers["webhook-signature"]),
      body,
      json: JSON.parse(body),
      answered: answer === "hang" ? null : answer,
    };
    received.push(entry);
    if (answer === "hang") {
      hanging.push(res);
      return;
    }
    res.statusCode = answer;
    res.end(answer === 200 ? "ok" : "nope");
  });
}

const at = (path: string) => received.filter((r) => r.path === path);

/** True when the delivery verifies with this secret, by the standardwebhooks library, as a receiver would. */
function verifies(r: Received, secret: string): boolean {
  try {
    new Webhook(secret).verify(r.body, { "webhook-id": r.id, "webhook-timestamp": r.timestamp, "webhook-signature": r.signature });
    return true;
  } catch {
    return false;
  }
}

const webhookSettings = { timeoutMs: 1000, concurrency: 4, allowPrivateTargets: true };

beforeAll(async () => {
  receiver = createServer(receive);
  await new Promise<void>((r) => receiver.listen(0, "127.0.0.1", r));
  receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
  server = await startTestServer();
  services = {
    sms: new LocalSmsProvider(ownerPool(), "unused", -1),
    ai: new LocalAiResponder(),
    numbers: new LocalNumberProvisioner(),
    email: new LocalEmailProvider(ownerPool()),
    emailFrom: { name: "Switchboard", address: "no-reply@switchboard.localhost" },
    publicUrl: () => server.url,
    webhooks: webhookSettings,
  };
  setServices(services);
  runner = await startWorker(ownerPool(), 4, { only: ["webhook__deliver"] });
}, 60_000);

afterAll(async () => {
  await runner?.stop();
  setServices(null);
  for (const res of hanging) res.destroy();
  await server?.close();
  await new Promise((r) => receiver?.close(r));
});

interface Business {
  token: string;
  tenant: string;
}

async function newBusiness(name = "Hook Plumbing"): Promise<Business> {
  const email = uniqueEmail("hooks");
  const r = await server.gql(`mutation ($e: String!, $p: String!, $b: String!) { register(input: { email: $e, password: $p, businessName: $b }) { result } }`, {
    e: email,
    p: PASSWORD,
    b: name,
  });
  const token = r.data.register.result as string;
  const me = await server.gql(`{ currentTenantId }`, {}, token);
  return { token, tenant: me.data.currentTenantId };
}

async function newEndpoint(b: Business, path: string, eventTypes: string[] = [], extra: Record<string, unknown> = {}): Promise<{ id: string; secret: string }> {
  const r = await server.gql(
    `mutation ($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) { result { rowId secret eventTypes } } }`,
    { input: { url: `${receiverUrl}${path}`, eventTypes, ...extra } },
    b.token,
  );
  expect(r.errors).toBeUndefined();
  return { id: r.data.createWebhookEndpoint.result.rowId, secret: r.data.createWebhookEndpoint.result.secret };
}

let leadSerial = 0;
async function newLead(b: Business, name = "Ann"): Promise<string> {
  const r = await server.gql(
    `mutation ($lead: LeadInput!) { createLead(input: { lead: $lead }) { lead { rowId } } }`,
    { lead: { firstName: name, email: `lead-${++leadSerial}-${Date.now()}@example.test` } },
    b.token,
  );
  expect(r.errors).toBeUndefined();
  return r.data.createLead.lead.rowId;
}

async function setStatus(b: Business, leadId: string, status: string): Promise<void> {
  const r = await server.gql(`mutation ($id: UUID!, $s: String!) { updateLeadByRowId(input: { rowId: $id, leadPatch: { status: $s } }) { lead { status } } }`, { id: leadId, s: status }, b.token);
  expect(r.errors).toBeUndefined();
}

/** Moves the business's clock and wakes what became due (the retries), as time passing would. */
async function advance(b: Business, by: string): Promise<void> {
  await rootPool().query("select app_private.advance_clock($1, $2::interval)", [b.tenant, by]);
  await rootPool().query("select app_private.wake_due_jobs($1)", [b.tenant]);
}

describe("outbound webhooks", () => {
  it("delivers each event, signed per Standard Webhooks, with the event's id as webhook-id and its number", async () => {
    const b = await newBusiness();
    const endpoint = await newEndpoint(b, "/signed");
    const lead = await newLead(b, "Signed");
    await setStatus(b, lead, "contacted");
    const got = await waitFor("two deliveries", async () => (at("/signed").length >= 2 ? at("/signed") : null));
    expect(got.map((r) => r.json.type)).toEqual(["lead.created", "lead.status_changed"]);
    for (const r of got) {
      expect(verifies(r, endpoint.secret)).toBe(true);
      expect(r.id).toBe(r.json.id);
      // A forged body does not verify.
      expect(verifies({ ...r, body: r.body.replace('"type"', '"tipe"') }, endpoint.secret)).toBe(false);
    }
    expect(got.map((r) => r.json.sequence)).toEqual([1, 2].map((n) => n + (got[0]!.json.sequence - 1)));
    expect(got[0]!.json.data).toMatchObject({ id: lead, first_name: "Signed", status: "new" });
    const deliveries = await waitFor("both recorded", async () => {
      const r = await server.gql(`{ allWebhookDeliveries { nodes { eventSeq status attempts eventType lastStatusCode } } }`, {}, b.token);
      expect(r.errors).toBeUndefined();
      const nodes = r.data.allWebhookDeliveries.nodes as { eventSeq: string; status: string }[];
      return nodes.every((n) => n.status === "delivered") ? nodes.sort((x, y) => Number(x.eventSeq) - Number(y.eventSeq)).map(({ eventSeq: _, ...n }) => n) : null;
    });
    expect(deliveries).toEqual([
      { status: "delivered", attempts: 1, eventType: "lead.created", lastStatusCode: 200 },
      { status: "delivered", attempts: 1, eventType: "lead.status_changed", lastStatusCode: 200 },
    ]);
  });

  it("a receiver answering 500 for a while gets every event by retries with a growing delay, each answered once by id", async () => {
    const b = await newBusiness();
    behaviour.set("/flaky", (count) => (count < 7 ? 500 : 200));
    const endpoint = await newEndpoint(b, "/flaky");
    for (let i = 0; i < 4; i++) await newLead(b, `Flaky${i}`);
    // Every event tried once (the endpoint pauses after failures, so the clock may have to move).
    await waitFor("every event tried once", async () => {
      const { rows } = await rootPool().query<{ n: number }>(
        "select count(distinct delivery_id)::int as n from app_public.webhook_delivery_attempts where endpoint_id = $1",
        [endpoint.id],
      );
      if (rows[0]!.n === 4) return true;
      if (process.env.DEBUG_HOOKS) {
        const d = await rootPool().query("select status, attempts, next_attempt_at - app_hidden.clock_now(tenant_id) as due_in, lease_until > clock_timestamp() as leased, last_status_code from app_public.webhook_deliveries where endpoint_id = $1", [endpoint.id]);
        const w = await rootPool().query("select paused_until - app_hidden.clock_now(tenant_id) as paused_for, consecutive_failures from app_public.webhook_endpoints where id = $1", [endpoint.id]);
        const j = await rootPool().query("select id, run_at - now() as run_in, locked_at is not null as locked, attempts, last_error from graphile_worker.jobs where task_identifier = 'webhook__deliver'");
        const a = await rootPool().query("select pid, state, wait_event_type, wait_event, left(query, 80) q from pg_stat_activity where wait_event_type = 'Lock'");
        console.log(JSON.stringify({ d: d.rows, w: w.rows, j: j.rows, a: a.rows, n: rows[0]!.n, recv: at("/flaky").length }));
      }
      await advance(b, "1 minute");
      return false;
    }, 20_000, 300);
    // Each retry waits 5 s after the first failure, doubling after each further one (on the business's clock).
    const { rows: waiting } = await rootPool().query<{ delay: number; attempts: number }>(
      "select extract(epoch from next_attempt_at - last_attempt_at)::int as delay, attempts from app_public.webhook_deliveries where endpoint_id = $1 and status = 'pending' and last_status_code = 500",
      [endpoint.id],
    );
    expect(waiting.length).toBeGreaterThan(0);
    for (const w of waiting) expect(w.delay).toBe(5 * 2 ** (w.attempts - 1));
    for (let round = 0; round < 8; round++) {
      const delivered = new Set(at("/flaky").filter((r) => r.answered === 200).map((r) => r.id));
      if (delivered.size === 4) break;
      const before = at("/flaky").length;
      await advance(b, "10 minutes");
      await waitFor("a round of retries", async () => at("/flaky").length > before, 10_000);
      await new Promise((r) => setTimeout(r, 200));
    }
    const all = at("/flaky");
    const answeredOk = all.filter((r) => r.answered === 200).map((r) => r.id);
    expect(new Set(answeredOk).size).toBe(4);
    expect(answeredOk.length).toBe(4);
    for (const r of all) expect(verifies(r, endpoint.secret)).toBe(true);
    // Every attempt is in the log, with the answer.
    const attempts = await server.gql(`{ allWebhookDeliveryAttempts { totalCount nodes { statusCode durationMs } } }`, {}, b.token);
    expect(attempts.data.allWebhookDeliveryAttempts.totalCount).toBe(all.length);
    const { rows: backoff } = await rootPool().query<{ attempts: number }>(
      "select attempts from app_public.webhook_deliveries where endpoint_id = $1 and status = 'delivered'",
      [endpoint.id],
    );
    expect(backoff.reduce((n, d) => n + d.attempts, 0)).toBe(all.length);
  }, 60_000);

  it("only the subscribed event types are delivered, and one business's endpoint never sees another's events", async () => {
    const a = await newBusiness("Alpha");
    const b = await newBusiness("Beta");
    await newEndpoint(a, "/alpha-status", ["lead.status_changed"]);
    await newEndpoint(b, "/beta-all");
    const aLead = await newLead(a, "AlphaLead");
    await setStatus(a, aLead, "contacted");
    const bLead = await newLead(b, "BetaLead");
    await setStatus(b, bLead, "qualified");
    await waitFor("beta's two events", async () => at("/beta-all").length >= 2);
    await waitFor("alpha's status change", async () => at("/alpha-status").length >= 1);
    await new Promise((r) => setTimeout(r, 500));
    expect(at("/alpha-status").map((r) => [r.json.type, r.json.data.id])).toEqual([["lead.status_changed", aLead]]);
    expect(at("/beta-all").map((r) => r.json.type)).toEqual(["lead.created", "lead.status_changed"]);
    for (const r of at("/beta-all")) expect(r.json.data.id).toBe(bLead);
    // The feed numbers each business on its own.
    expect(at("/alpha-status")[0]!.json.sequence).toBe(2);
    expect(at("/beta-all").map((r) => r.json.sequence)).toEqual([1, 2]);
  });

  it("a worker killed in the middle of a delivery loses nothing: the delivery is sent again once its lease runs out", async () => {
    const b = await newBusiness();
    behaviour.set("/killed", (count) => (count === 0 ? "hang" : 200));
    await runner?.stop();
    runner = null;
    const child: ChildProcess = spawn(process.execPath, [resolve(import.meta.dirname, "../fixtures/webhookWorker.ts")], {
      env: { ...process.env, OWNER_URL: db.ownerUrl, WEBHOOK_TIMEOUT_MS: "1000" },
      stdio: ["ignore", "pipe", "inherit"],
    });
    try {
      await new Promise<void>((ready, fail) => {
        child.stdout!.on("data", (chunk: Buffer) => chunk.toString().includes("ready") && ready());
        child.on("exit", (code) => fail(new Error(`webhook worker exited with ${code}`)));
      });
      const endpoint = await newEndpoint(b, "/killed");
      const lead = await newLead(b, "Killed");
      await waitFor("the delivery in flight", async () => at("/killed").length === 1);
      child.kill("SIGKILL");
      await new Promise((r) => child.once("exit", r));
      const { rows: [inFlight] } = await rootPool().query("select status, attempts, lease_until > clock_timestamp() as leased from app_public.webhook_deliveries where endpoint_id = $1", [endpoint.id]);
      expect(inFlight).toEqual({ status: "pending", attempts: 1, leased: true });
      // A new worker and the sweep (every minute in production) take it once the lease has run out.
      runner = await startWorker(ownerPool(), 4, { only: ["webhook__deliver"] });
      await waitFor(
        "the lease to run out",
        async () => (await rootPool().query("select lease_until < clock_timestamp() as over from app_public.webhook_deliveries where endpoint_id = $1", [endpoint.id])).rows[0].over,
        20_000,
        200,
      );
      const { rows: [swept] } = await rootPool().query<{ n: number }>("select app_private.sweep_webhook_deliveries() as n");
      expect(swept!.n).toBeGreaterThanOrEqual(1);
      await waitFor("the delivery sent again", async () => at("/killed").length === 2, 20_000);
      const [first, second] = at("/killed");
      expect(second!.id).toBe(first!.id);
      expect(second!.json.data.id).toBe(lead);
      expect(verifies(second!, endpoint.secret)).toBe(true);
      await waitFor("delivered", async () => (await rootPool().query("select status from app_public.webhook_deliveries where endpoint_id = $1", [endpoint.id])).rows[0].status === "delivered");
    } finally {
      child.kill("SIGKILL");
      if (!runner) runner = await startWorker(ownerPool(), 4, { only: ["webhook__deliver"] });
    }
  }, 60_000);

  it("private and loopback targets are refused unless the deployment allows them, and nothing reaches them", async () => {
    expect(privateAddressReason("93.184.216.34")).toBeNull();
    expect(privateAddressReason("2606:4700::1111")).toBeNull();
    for (const address of ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "::1", "fd00::1", "fe80::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "224.0.0.1"]) {
      expect(privateAddressReason(address), address).not.toBeNull();
    }
    for (const url of [`${receiverUrl}/ssrf`, `http://localhost:${new URL(receiverUrl).port}/ssrf`, `http://[::1]:${new URL(receiverUrl).port}/ssrf`]) {
      const answer = await postWebhook({ url, id: "msg_1", payload: "{}", secrets: ["whsec_" + Buffer.alloc(32, 1).toString("base64")], timeoutMs: 1000, allowPrivateTargets: false });
      expect(answer.status, url).toBeNull();
      expect(answer.error, url).toMatch(/SSRF/);
    }
    expect(at("/ssrf")).toEqual([]);

    const b = await newBusiness();
    setServices({ ...services, webhooks: { ...webhookSettings, allowPrivateTargets: false } });
    try {
      const endpoint = await newEndpoint(b, "/ssrf");
      await newLead(b);
      const attempt = await waitFor("the refused attempt", async () => {
        const { rows } = await rootPool().query("select status_code, error from app_public.webhook_delivery_attempts where endpoint_id = $1", [endpoint.id]);
        return rows[0];
      });
      expect(attempt.status_code).toBeNull();
      expect(attempt.error).toMatch(/refused target: 127\.0\.0\.1 is a loopback address \(SSRF protection\)/);
      expect(at("/ssrf")).toEqual([]);
    } finally {
      setServices(services);
    }
  });

  it("a rotated secret signs alongside the old one for the overlap, then alone", async () => {
    const b = await newBusiness();
    const endpoint = await newEndpoint(b, "/rotate");
    const rotated = await server.gql(`mutation ($id: UUID!) { rotateWebhookSecret(input: { endpointId: $id, overlapSeconds: 3600 }) { result } }`, { id: endpoint.id }, b.token);
    const second = rotated.data.rotateWebhookSecret.result as string;
    expect(second).toMatch(/^whsec_/);
    await newLead(b, "During");
    const during = await waitFor("a delivery during the overlap", async () => at("/rotate")[0]);
    expect(during.signature.split(" ").length).toBe(2);
    expect(verifies(during, endpoint.secret)).toBe(true);
    expect(verifies(during, second)).toBe(true);
    const again = await server.gql(`mutation ($id: UUID!) { rotateWebhookSecret(input: { endpointId: $id, overlapSeconds: 0 }) { result } }`, { id: endpoint.id }, b.token);
    const third = again.data.rotateWebhookSecret.result as string;
    await newLead(b, "After");
    const after = await waitFor("a delivery after the overlap", async () => at("/rotate")[1]);
    expect(after.signature.split(" ").length).toBe(1);
    expect(verifies(after, third)).toBe(true);
    expect(verifies(after, second)).toBe(false);
    expect(verifies(after, endpoint.secret)).toBe(false);
  });

  it("an endpoint failing for longer than its limit is turned off and its owner told; turned on again, it delivers what waited", async () => {
    const b = await newBusiness();
    let down = true;
    behaviour.set("/down", () => (down ? 503 : 200));
    const endpoint = await newEndpoint(b, "/down", [], { disableAfterSeconds: 300 });
    await newLead(b, "Down");
    await waitFor("the first failure", async () => at("/down").length >= 1);
    await waitFor("recorded", async () => (await rootPool().query("select failing_since from app_public.webhook_endpoints where id = $1", [endpoint.id])).rows[0].failing_since);
    await advance(b, "2 minutes");
    await waitFor("a retry", async () => at("/down").length >= 2);
    const state = await waitFor("turned off", async () => {
      const { rows } = await rootPool().query("select enabled, disabled_reason from app_public.webhook_endpoints where id = $1", [endpoint.id]);
      if (rows[0].enabled) {
        await advance(b, "5 minutes");
        return null;
      }
      return rows[0];
    }, 20_000, 300);
    expect(state.disabled_reason).toMatch(/failing since .* \(last answer: HTTP 503\)/);
    const notices = await server.gql(`{ allNotifications(condition: { kind: "webhook_endpoint_disabled" }) { nodes { title body } } }`, {}, b.token);
    expect(notices.errors).toBeUndefined();
    expect(notices.data.allNotifications.nodes.length).toBe(1);
    expect(notices.data.allNotifications.nodes[0].body).toContain(`${receiverUrl}/down`);
    const { rows: mail } = await rootPool().query("select subject from app_public.email_messages where tenant_id = $1 and subject = 'A webhook endpoint was turned off'", [b.tenant]);
    expect(mail.length).toBe(1);
    // Off: nothing more goes out, even when due.
    const sent = at("/down").length;
    await newLead(b, "WhileOff");
    await advance(b, "1 hour");
    await new Promise((r) => setTimeout(r, 700));
    expect(at("/down").length).toBe(sent);
    // On again: the waiting delivery goes; the event written while off is replayed on request.
    down = false;
    const on = await server.gql(`mutation ($id: UUID!) { updateWebhookEndpointByRowId(input: { rowId: $id, webhookEndpointPatch: { enabled: true } }) { webhookEndpoint { enabled failingSince disabledReason } } }`, { id: endpoint.id }, b.token);
    expect(on.data.updateWebhookEndpointByRowId.webhookEndpoint).toEqual({ enabled: true, failingSince: null, disabledReason: null });
    await waitFor("the waiting delivery", async () => at("/down").some((r) => r.answered === 200));
    const replay = await server.gql(`mutation ($id: UUID!) { replayWebhookEvents(input: { endpointId: $id, afterSeq: "1" }) { result } }`, { id: endpoint.id }, b.token);
    expect(replay.errors).toBeUndefined();
    expect(replay.data.replayWebhookEvents.result).toBe(1);
    await waitFor("the replayed event", async () => at("/down").some((r) => r.answered === 200 && r.json.data.first_name === "WhileOff"));
  }, 60_000);

  it("redeliverWebhook sends a delivery again with the same webhook-id; only the business's owners and admins may", async () => {
    const b = await newBusiness();
    const other = await newBusiness("Other");
    await newEndpoint(b, "/redeliver");
    await newLead(b, "Again");
    await waitFor("delivered", async () => at("/redeliver").length === 1);
    const list = await server.gql(`{ allWebhookDeliveries { nodes { rowId status } } }`, {}, b.token);
    const delivery = list.data.allWebhookDeliveries.nodes[0].rowId as string;
    await waitFor("recorded", async () => (await server.gql(`{ allWebhookDeliveries { nodes { status } } }`, {}, b.token)).data.allWebhookDeliveries.nodes[0].status === "delivered");
    const stolen = await server.gql(`mutation ($id: UUID!) { redeliverWebhook(input: { deliveryId: $id }) { result { rowId } } }`, { id: delivery }, other.token);
    expect(stolen.errors?.[0]?.message).toMatch(/No webhook delivery/);
    const anonymous = await server.gql(`mutation ($id: UUID!) { redeliverWebhook(input: { deliveryId: $id }) { result { rowId } } }`, { id: delivery });
    expect(anonymous.errors?.[0]).toBeDefined();
    const again = await server.gql(`mutation ($id: UUID!) { redeliverWebhook(input: { deliveryId: $id }) { result { status attempts } } }`, { id: delivery }, b.token);
    expect(again.data.redeliverWebhook.result).toEqual({ status: "pending", attempts: 0 });
    await waitFor("sent again", async () => at("/redeliver").length === 2);
    expect(at("/redeliver")[1]!.id).toBe(at("/redeliver")[0]!.id);
  });

  it("as an attacker: no endpoints, deliveries or events for strangers or another business; bad input refused clearly", async () => {
    const b = await newBusiness();
    const other = await newBusiness("Other");
    const endpoint = await newEndpoint(b, "/attack");
    // Another business's endpoint: invisible, unchangeable, not deletable, its secret unrotatable.
    const seen = await server.gql(`{ allWebhookEndpoints { nodes { rowId } } }`, {}, other.token);
    expect(seen.data.allWebhookEndpoints.nodes).toEqual([]);
    const hijack = await server.gql(
      `mutation ($id: UUID!) { updateWebhookEndpointByRowId(input: { rowId: $id, webhookEndpointPatch: { url: "https://evil.example/x" } }) { webhookEndpoint { url } } }`,
      { id: endpoint.id },
      other.token,
    );
    expect(hijack.data?.updateWebhookEndpointByRowId?.webhookEndpoint ?? null).toBeNull();
    const { rows: [kept] } = await rootPool().query("select url from app_public.webhook_endpoints where id = $1", [endpoint.id]);
    expect(kept.url).toBe(`${receiverUrl}/attack`);
    const removed = await server.gql(`mutation ($id: UUID!) { deleteWebhookEndpointByRowId(input: { rowId: $id }) { webhookEndpoint { rowId } } }`, { id: endpoint.id }, other.token);
    expect(removed.data?.deleteWebhookEndpointByRowId?.webhookEndpoint ?? null).toBeNull();
    expect((await rootPool().query("select 1 from app_public.webhook_endpoints where id = $1", [endpoint.id])).rowCount).toBe(1);
    const rotate = await server.gql(`mutation ($id: UUID!) { rotateWebhookSecret(input: { endpointId: $id }) { result } }`, { id: endpoint.id }, other.token);
    expect(rotate.errors?.[0]?.message).toMatch(/No webhook endpoint/);
    const feed = await server.gql(`{ eventsAfter(afterSeq: "0") { nodes { seq } } }`, {}, other.token);
    expect(feed.data.eventsAfter.nodes).toEqual([]);
    // No credentials: nothing.
    const stranger = await server.gql(`mutation { createWebhookEndpoint(input: { url: "https://example.com/hook" }) { result { secret } } }`);
    expect(stranger.errors?.[0]?.message).toMatch(/not|log/i);
    const strangerFeed = await server.gql(`{ eventsAfter { nodes { seq } } }`);
    expect(strangerFeed.errors?.[0]).toBeDefined();
    // Bad input: clear messages.
    const bad = async (url: string, eventTypes: string[] = []) =>
      (await server.gql(`mutation ($u: String!, $t: [String]) { createWebhookEndpoint(input: { url: $u, eventTypes: $t }) { result { secret } } }`, { u: url, t: eventTypes }, b.token)).errors?.[0]?.message;
    expect(await bad("ftp://example.com/x")).toMatch(/must start with https:\/\//);
    expect(await bad("https://user:pw@example.com/x")).toMatch(/user name or password/);
    expect(await bad(`https://example.com/${"a".repeat(2100)}`)).toMatch(/at most 2000/);
    expect(await bad("https://example.com/x", ["lead.created", "lead.exploded"])).toMatch(/Unknown event type 'lead.exploded'/);
    const patchBad = await server.gql(
      `mutation ($id: UUID!) { updateWebhookEndpointByRowId(input: { rowId: $id, webhookEndpointPatch: { url: "javascript:alert(1)" } }) { webhookEndpoint { url } } }`,
      { id: endpoint.id },
      b.token,
    );
    expect(patchBad.errors?.[0]?.message).toMatch(/url must be an http url/i);
    // At most 20 endpoints, even asked for at once.
    const many = await Promise.all(
      Array.from({ length: 25 }, (_, i) =>
        server.gql(`mutation ($u: String!) { createWebhookEndpoint(input: { url: $u }) { result { rowId } } }`, { u: `https://example.com/h${i}` }, b.token),
      ),
    );
    expect(many.filter((r) => !r.errors).length).toBe(19);
    expect(many.find((r) => r.errors)?.errors?.[0]?.message).toMatch(/at most 20 webhook endpoints/);
  });
});
