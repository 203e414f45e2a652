/**
 * Twilio webhook benchmark, through the real HTTP stack (Express, signature check, SQL), against a
 * baseline measured in the same run: a bare Express endpoint on loopback that parses the same form
 * and does one INSERT. Rounds alternate (baseline, webhook, baseline, …) so a noisy machine hits both.
 *
 *   npm run bench:webhooks
 *   BENCH_SECONDS=5 BENCH_CONCURRENCY=8 npm run bench:webhooks
 *   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres npm run bench:webhooks
 *
 * Measures:
 *   1. inbound texts per second (POST /webhooks/twilio/sms: signature, idempotency lock, lead,
 *      conversation, message, AI takeover job) vs baseline inserts per second;
 *   2. webhook-to-queued-reply latency for HELP (the reply is queued in the webhook's transaction)
 *      vs the baseline's request latency;
 *   3. missed-call-to-queued-text latency: from the dial-result webhook to the automatic reply in the
 *      outbox, through the call__process_missed job of a worker running in this process.
 */
import "../src/env.ts";
import { randomBytes } from "node:crypto";
import express from "express";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import twilio from "twilio";
import { loadConfig } from "../src/config.ts";
import { startApiServer } from "../src/api/server.ts";
import { openBenchDatabase } from "./database.ts";
import { runLoad } from "./load.ts";
import { startWorker } from "../src/worker/start.ts";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 8);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const MISSED_CALLS = Number(process.env.BENCH_MISSED_CALLS ?? 100);
const roles = { owner: "switchboard_wbench_owner", authenticator: "switchboard_wbench_authenticator", visitor: "switchboard_wbench_visitor" };
const accountSid = `AC${randomBytes(16).toString("hex")}`;
const authToken = randomBytes(16).toString("hex");
const log = (line: string) => process.stderr.write(`${line}\n`);
const hex = () => randomBytes(16).toString("hex");
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const p95 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.95)] ?? NaN;

/** The https address Twilio would call (production requires one); requests go to the local server, signed for this. */
const PUBLIC_URL = "https://bench.switchboard.test";

async function post(url: string, params: Record<string, string>, sign: boolean): Promise<number> {
  const headers: Record<string, string> = { "content-type": "application/x-www-form-urlencoded" };
  const publicUrl = `${PUBLIC_URL}${new URL(url).pathname}${new URL(url).search}`;
  if (sign) headers["x-twilio-signature"] = twilio.getExpectedTwilioSignature(authToken, publicUrl, params);
  const response = await fetch(url, { method: "POST", headers, body: new URLSearchParams(params).toString() });
  await response.arrayBuffer();
  if (response.status >= 300) throw new Error(`${url} answered ${response.status}`);
  return response.status;
}

/** CONCURRENCY loops for SECONDS; returns requests per second and each request's latency in ms. */
const load = (request: () => Promise<unknown>) => runLoad(SECONDS, CONCURRENCY, request);

async function main(): Promise<void> {
  const bench = await openBenchDatabase("switchboard_wbench", roles, log);
  const { urls } = bench;
  const dataDir = mkdtempSync(join(tmpdir(), "switchboard-bench-data-"));
  try {
    const ownerPool = new pg.Pool({ connectionString: urls.ownerUrl, max: CONCURRENCY + 4 });
    const authPool = new pg.Pool({ connectionString: urls.authUrl, max: 2 });

    const business = `+1305${String(Math.floor(Math.random() * 1e7)).padStart(7, "0")}`;
    const { rows: user } = await ownerPool.query<{ id: string }>("select (app_private.create_user('wbench@example.com', 'wbench-password-1')).id");
    const { rows: tenant } = await ownerPool.query<{ id: string }>("select (app_private.create_tenant('Webhook Bench Plumbing', $1)).id", [user[0]!.id]);
    await ownerPool.query(
      "insert into app_public.phone_numbers (tenant_id, phone_number, phone_number_sid, area_code, status) values ($1, $2, $3, '305', 'active')",
      [tenant[0]!.id, business, `PN${hex()}`],
    );
    // No AI takeover jobs piling up while we measure the webhook itself.
    await ownerPool.query("update app_public.business_settings set ai_enabled = false where tenant_id = $1", [tenant[0]!.id]);
    await ownerPool.query("create table if not exists public.bench_inbox (sid text primary key, from_phone text, to_phone text, body text, created_at timestamptz default now())");

    const config = loadConfig({
      DATABASE_URL: urls.ownerUrl, AUTH_DATABASE_URL: urls.authUrl, DATABASE_VISITOR: roles.visitor,
      JWT_SECRET: "bench-secret-bench-secret-bench-secret-12", NODE_ENV: "production", PORT: "0", SWITCHBOARD_DATA_DIR: dataDir,
      TWILIO_ACCOUNT_SID: accountSid, TWILIO_AUTH_TOKEN: authToken, PUBLIC_URL,
    });
    const api = await startApiServer({ config, authPool, ownerPool, workerState: () => "not in this process", port: 0 });

    const bare = express();
    bare.post("/baseline", express.urlencoded({ extended: false, limit: "1mb" }), async (req, res) => {
      const p = req.body as Record<string, string>;
      await ownerPool.query("insert into public.bench_inbox (sid, from_phone, to_phone, body) values ($1, $2, $3, $4)", [p.MessageSid, p.From, p.To, p.Body]);
      res.status(200).type("text/xml").send("<Response/>");
    });
    const bareServer = createServer(bare);
    await new Promise<void>((r) => bareServer.listen(0, "127.0.0.1", r));
    const address = bareServer.address();
    const bareUrl = `http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}/baseline`;

    const customers = Array.from({ length: 200 }, (_, i) => `+1212${String(5_000_000 + i).padStart(7, "0")}`);
    let n = 0;
    const text = (body: string) => ({ MessageSid: `SM${hex()}`, From: customers[n++ % customers.length]!, To: business, Body: body });
    const smsUrl = `${api.url}/webhooks/twilio/sms`;

    const rows: string[] = [];
    const results = { base: [] as number[], hook: [] as number[], baseLat: [] as number[], helpLat: [] as number[] };
    for (let round = 1; round <= ROUNDS; round++) {
      log(`Round ${round}/${ROUNDS}: baseline, inbound texts, baseline, HELP texts (${SECONDS} s each, ${CONCURRENCY} concurrent)…`);
      const b1 = await load(() => post(bareUrl, text("Is anyone there? My sink is leaking."), false));
      const w = await load(() => post(smsUrl, text("Is anyone there? My sink is leaking."), true));
      const b2 = await load(() => post(bareUrl, text("HELP"), false));
      const h = await load(() => post(smsUrl, text("HELP"), true));
      results.base.push(b1.rps, b2.rps);
      results.hook.push(w.rps);
      results.baseLat.push(...b1.latencies, ...b2.latencies);
      results.helpLat.push(...h.latencies);
    }
    const { rows: check } = await ownerPool.query<{ n: number }>(
      "select count(*)::int as n from app_public.messages where purpose = 'help' and status = 'queued'",
    );

    log(`Missed calls: ${MISSED_CALLS} calls, the automatic text queued by the call__process_missed job…`);
    const runner = await startWorker(ownerPool, 2, { only: ["call__process_missed"] });
    const missed: number[] = [];
    for (let i = 0; i < MISSED_CALLS; i++) {
      const callSid = `CA${hex()}`;
      const from = `+1415${String(5_000_000 + i).padStart(7, "0")}`;
      await post(`${api.url}/webhooks/twilio/voice`, { CallSid: callSid, From: from, To: business, CallStatus: "ringing" }, true);
      const t0 = Date.now();
      await post(`${api.url}/webhooks/twilio/voice/status`, { CallSid: callSid, From: from, To: business, CallStatus: "completed", CallDuration: "25" }, true);
      for (;;) {
        const { rows: queued } = await ownerPool.query<{ created_at: Date }>("select created_at from app_public.messages where idempotency_key = $1", [`missed_call:${callSid}`]);
        if (queued[0]) {
          missed.push(queued[0].created_at.getTime() - t0);
          break;
        }
        await new Promise((r) => setTimeout(r, 2));
      }
    }
    await runner.stop();

    const base = median(results.base);
    const hook = median(results.hook);
    rows.push(`| inbound texts per second | ${base.toFixed(0)} (bare Express + 1 insert) | ${hook.toFixed(0)} | ${(hook / base).toFixed(2)} |`);
    rows.push(
      `| HELP → reply queued, median / p95 ms | ${median(results.baseLat).toFixed(1)} / ${p95(results.baseLat).toFixed(1)} (baseline request) | ${median(results.helpLat).toFixed(1)} / ${p95(results.helpLat).toFixed(1)} | ${(median(results.helpLat) / median(results.baseLat)).toFixed(2)} |`,
    );
    rows.push(`| missed call → automatic text queued, median / p95 ms | — | ${median(missed).toFixed(0)} / ${p95(missed).toFixed(0)} | — |`);
    console.log(`\n| measure | baseline | webhook | ratio |\n|---|---|---|---|\n${rows.join("\n")}\n`);
    console.log(`HELP replies queued: ${check[0]!.n}; ${CONCURRENCY} concurrent clients, ${SECONDS} s per load, ${ROUNDS} rounds; missed-call latency includes the worker's pickup (LISTEN/NOTIFY).`);
    await api.close();
    await new Promise<void>((r) => bareServer.close(() => r()));
    await Promise.all([ownerPool.end(), authPool.end()]);
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
    await bench.close();
  }
}

main().catch((error: Error) => {
  console.error(error);
  process.exitCode = 1;
});
