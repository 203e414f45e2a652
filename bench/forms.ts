/**
 * Lead form benchmark, through the real HTTP stack (Express, the rate limits in PostgreSQL, the form's
 * checks, SQL), against a baseline measured in the same run: a bare Express endpoint on loopback that
 * parses the same JSON and does one INSERT. Rounds alternate (baseline, forms, baseline, …) so a noisy
 * machine hits both. Every submission is a new person (a new phone) with a ticked consent box: a lead,
 * its history, its score job, a consent record and a submission log row.
 *
 *   npm run bench:forms
 *   BENCH_SECONDS=5 BENCH_CONCURRENCY=8 BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres npm run bench:forms
 */
import "../src/env.ts";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import express from "express";
import pg from "pg";
import { loadConfig } from "../src/config.ts";
import { startApiServer } from "../src/api/server.ts";
import { openBenchDatabase } from "./database.ts";
import { runLoad } from "./load.ts";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 8);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const roles = { owner: "switchboard_fbench_owner", authenticator: "switchboard_fbench_authenticator", visitor: "switchboard_fbench_visitor" };
const log = (line: string) => process.stderr.write(`${line}\n`);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const p95 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.95)] ?? NaN;
const DISCLOSURE = "I agree to receive marketing texts from Form Bench Plumbing at this number. Consent is not a condition of purchase. Reply STOP to stop.";

async function post(url: string, body: Record<string, string>): Promise<void> {
  const response = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", origin: "https://bench.example", "user-agent": "bench", referer: "https://bench.example/quote" },
    body: JSON.stringify(body),
  });
  await response.arrayBuffer();
  if (response.status >= 300) throw new Error(`${url} answered ${response.status}`);
}

async function main(): Promise<void> {
  const bench = await openBenchDatabase("switchboard_fbench", roles, log);
  const { urls } = bench;
  const dataDir = mkdtempSync(join(tmpdir(), "switchboard-bench-data-"));
  try {
    const ownerPool = new pg.Pool({ connectionString: urls.ownerUrl, max: CONCURRENCY + 4 });
    const authPool = new pg.Pool({ connectionString: urls.authUrl, max: 2 });
    ownerPool.on("error", (error) => log(`owner pool: ${error.message}`));
    authPool.on("error", (error) => log(`auth pool: ${error.message}`));
    const { rows: user } = await ownerPool.query<{ id: string }>("select (app_private.create_user('fbench@example.com', 'fbench-password-1')).id");
    const { rows: tenant } = await ownerPool.query<{ id: string }>("select (app_private.create_tenant('Form Bench Plumbing', $1)).id", [user[0]!.id]);
    const { rows: form } = await ownerPool.query<{ public_key: string }>(
      "insert into app_public.lead_forms (tenant_id, name, allowed_origins, consent_disclosure, min_fill_seconds) values ($1, 'Bench', '{https://bench.example}', $2, 0) returning public_key",
      [tenant[0]!.id, DISCLOSURE],
    );
    await ownerPool.query("create table if not exists public.bench_form_inbox (id bigserial primary key, body jsonb, created_at timestamptz default now())");

    const config = loadConfig({
      DATABASE_URL: urls.ownerUrl, AUTH_DATABASE_URL: urls.authUrl, DATABASE_VISITOR: roles.visitor,
      JWT_SECRET: "bench-secret-bench-secret-bench-secret-12", NODE_ENV: "production", PORT: "0", SWITCHBOARD_DATA_DIR: dataDir,
      PUBLIC_URL: "https://bench.switchboard.test", FORM_LIMIT_PER_ADDRESS: "1000000", FORM_LIMIT_PER_FORM: "10000000",
    });
    const api = await startApiServer({ config, authPool, ownerPool, workerState: () => "not in this process", port: 0 });

    const bare = express();
    bare.post("/baseline", express.json({ limit: "16kb" }), async (req, res) => {
      await ownerPool.query("insert into public.bench_form_inbox (body) values ($1)", [req.body]);
      res.status(201).json({ status: "received" });
    });
    const bareServer = createServer(bare);
    await new Promise<void>((r) => bareServer.listen(0, "127.0.0.1", r));
    const address = bareServer.address();
    const bareUrl = `http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}/baseline`;
    const formUrl = `${api.url}/f/${form[0]!.public_key}`;
    let n = 0;
    const person = () => {
      n += 1;
      return { name: `Dana Lead${n}`, phone: `+1212${String(2_000_000 + n).padStart(7, "0")}`, email: `dana${n}@example.com`, message: "A quote for a water heater", sms_consent: "on" };
    };

    const results = { base: [] as number[], form: [] as number[], baseLat: [] as number[], formLat: [] as number[] };
    for (let round = 1; round <= ROUNDS; round++) {
      log(`Round ${round}/${ROUNDS}: baseline, forms, baseline (${SECONDS} s each, ${CONCURRENCY} concurrent)…`);
      const b1 = await runLoad(SECONDS, CONCURRENCY, () => post(bareUrl, person()));
      const f = await runLoad(SECONDS, CONCURRENCY, () => post(formUrl, person()));
      const b2 = await runLoad(SECONDS, CONCURRENCY, () => post(bareUrl, person()));
      results.base.push((b1.rps + b2.rps) / 2);
      results.form.push(f.rps);
      results.baseLat.push(...b1.latencies, ...b2.latencies);
      results.formLat.push(...f.latencies);
    }
    const { rows: counts } = await ownerPool.query<{ leads: number; consents: number; submissions: number }>(
      `select (select count(*)::int from app_public.leads where tenant_id = $1) as leads,
              (select count(*)::int from app_public.consent_records where tenant_id = $1) as consents,
              (select count(*)::int from app_public.lead_form_submissions where tenant_id = $1) as submissions`,
      [tenant[0]!.id],
    );
    const base = median(results.base);
    const forms = median(results.form);
    console.log(`\nLead forms: ${CONCURRENCY} concurrent clients, ${SECONDS} s per phase, ${ROUNDS} rounds\n`);
    console.log("| measure | baseline (bare Express + 1 insert) | form | ratio |");
    console.log("|---|---|---|---|");
    console.log(`| submissions per second | ${base.toFixed(0)} | ${forms.toFixed(0)} | ${(forms / base).toFixed(2)} |`);
    console.log(`| latency median / p95 | ${median(results.baseLat).toFixed(1)} / ${p95(results.baseLat).toFixed(1)} ms | ${median(results.formLat).toFixed(1)} / ${p95(results.formLat).toFixed(1)} ms | — |`);
    console.log(`\nWritten: ${counts[0]!.leads} leads, ${counts[0]!.consents} consent records, ${counts[0]!.submissions} submission rows.`);
    await api.close();
    await new Promise<void>((r) => bareServer.close(() => r()));
    await ownerPool.end();
    await authPool.end();
  } catch (error) {
    log(`failed: ${(error as Error).stack ?? error}`);
    process.exitCode = 1;
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
    await bench.close();
  }
}

await main();
