/**
 * What a stranger reaches without credentials, tried as an attacker over real HTTP against a server
 * in production mode: /healthz says only up or down (its details, which name database errors and
 * migration files, are for operators), and the Twilio webhooks refuse a large body before parsing it
 * or checking its signature.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startApiServer, type ApiServer } from "../../src/api/server.ts";
import { loadConfig } from "../../src/config.ts";
import { makePool } from "../../src/db/pools.ts";
import { WEBHOOK_MAX_BODY_BYTES } from "../../src/webhooks/twilio.ts";
import { db, rootPool } from "../helpers.ts";
import { startTestServer, TEST_JWT_SECRET, type TestServer } from "../server.ts";

const HEALTH_TOKEN = "operator-health-token-0123456789";
let prod: TestServer;
beforeAll(async () => {
  prod = await startTestServer({ NODE_ENV: "production", HEALTH_TOKEN });
});
afterAll(async () => {
  await prod?.close();
});

async function health(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(`${url}/healthz`, { headers });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

describe("/healthz", () => {
  it("tells a stranger behind a proxy only whether the service is up", async () => {
    const proxied: Record<string, string>[] = [{ "x-forwarded-for": "203.0.113.9" }, { forwarded: "for=203.0.113.9" }, { "x-real-ip": "203.0.113.9" }];
    for (const headers of proxied) {
      expect(await health(prod.url, headers)).toEqual({ status: 200, body: { ok: true } });
    }
  });

  it("a wrong or missing operator token shows nothing more, the right one shows the details", async () => {
    const stranger = { "x-forwarded-for": "203.0.113.9" };
    expect((await health(prod.url, { ...stranger, "x-health-token": "operator-health-token-0123456780" })).body).toEqual({ ok: true });
    expect((await health(prod.url, { ...stranger, authorization: "Bearer nope" })).body).toEqual({ ok: true });
    const tokens: Record<string, string>[] = [{ "x-health-token": HEALTH_TOKEN }, { authorization: `Bearer ${HEALTH_TOKEN}` }];
    for (const token of tokens) {
      const { status, body } = await health(prod.url, { ...stranger, ...token });
      expect(status).toBe(200);
      expect(body).toMatchObject({ ok: true, database: { reachable: true }, migrations: { current: true } });
    }
  });

  it("an operator on the machine itself (loopback, no proxy header) sees the details", async () => {
    expect((await health(prod.url)).body).toMatchObject({ ok: true, migrations: { current: true }, worker: { state: "not in this process" } });
  });

  it("with the database down, a stranger sees 503 and nothing of the error; the operator sees why", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "switchboard-api-"));
    const config = loadConfig({
      DATABASE_URL: db.ownerUrl,
      AUTH_DATABASE_URL: db.authUrl,
      DATABASE_VISITOR: db.roles.visitor,
      JWT_SECRET: TEST_JWT_SECRET,
      NODE_ENV: "production",
      PUBLIC_URL: "https://switchboard.test",
      HEALTH_TOKEN,
      PORT: "0",
      SWITCHBOARD_DATA_DIR: dataDir,
    });
    // A pool that cannot reach any database: port 1 refuses connections.
    const deadPool = makePool("postgres://nobody:secret-password@127.0.0.1:1/nowhere", 1, "dead", 0);
    const authPool = makePool(db.authUrl, 1, "auth", 0);
    let api: ApiServer | null = null;
    try {
      api = await startApiServer({ config, authPool, ownerPool: deadPool, workerState: () => "not in this process", port: 0 });
      const stranger = await health(api.url, { "x-forwarded-for": "203.0.113.9" });
      expect(stranger).toEqual({ status: 503, body: { ok: false } });
      const operator = await health(api.url, { "x-forwarded-for": "203.0.113.9", "x-health-token": HEALTH_TOKEN });
      expect(operator.status).toBe(503);
      expect(operator.body).toMatchObject({ ok: false, database: { reachable: false, error: expect.stringMatching(/ECONNREFUSED|connect/) } });
    } finally {
      await api?.close();
      await Promise.all([deadPool.end(), authPool.end()]);
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

/** A raw POST (fetch would also work, but this shows the status even when the server closes early). */
function post(url: string, body: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded", "content-length": Buffer.byteLength(body) } }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (text += chunk));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

describe("Twilio webhooks", () => {
  it(`refuse a body over ${WEBHOOK_MAX_BODY_BYTES} bytes with 413 before the signature check, and record nothing`, async () => {
    const sid = `SM${"f".repeat(32)}`;
    const big = new URLSearchParams({ MessageSid: sid, From: "+15555550188", To: "+15555550199", Body: "x".repeat(WEBHOOK_MAX_BODY_BYTES) }).toString();
    const refused = await post(`${prod.url}/webhooks/twilio/sms`, big);
    expect(refused.status).toBe(413);
    expect(refused.text).not.toMatch(/at |Error|node_modules/);
    const { rows } = await rootPool().query("select count(*)::int as n from app_public.messages where message_sid = $1", [sid]);
    expect(rows[0].n).toBe(0);
  });

  it("parse a body of a real webhook's size, then refuse it without a valid signature (403)", async () => {
    const normal = new URLSearchParams({ MessageSid: `SM${"e".repeat(32)}`, From: "+15555550188", To: "+15555550199", Body: "y".repeat(1600) }).toString();
    expect((await post(`${prod.url}/webhooks/twilio/sms`, normal)).status).toBe(403);
  });
});
