/**
 * Outbound webhook benchmark (issue 18): webhook deliveries per second, through the whole path (events
 * numbered at the commit, fan-out to endpoints, graphile-worker jobs, claim, Standard Webhooks
 * signatures, HTTP POST, the attempt recorded), against a baseline measured in the same run: a bare
 * HTTP POST loop to the same receiver on loopback, with the same bodies and as many requests in flight
 * as the worker can have (WORKER_CONCURRENCY jobs × WEBHOOK_CONCURRENCY). Rounds alternate (bare, small
 * tenant, big tenant, …) so a noisy machine hits them all.
 *
 * Sizes: a big tenant (BENCH_BIG_LEADS, default 200,000 leads, with twice as many earlier events, all
 * delivered to its endpoints before) and a small one (BENCH_SMALL_LEADS, default 2,000, likewise), each
 * with BENCH_ENDPOINTS endpoints (default 4). A round writes BENCH_EVENTS new leads (default 1,000) in one
 * statement, so BENCH_EVENTS × BENCH_ENDPOINTS deliveries; it ends when the receiver has them all.
 *
 * Also measured: what writing the events costs the change that writes them (the same 1,000-lead insert
 * with the event trigger on and off).
 *
 * Goals: deliveries per second do not fall with the tenant (big / small ≥ 0.67); the whole path keeps a
 * useful share of a bare POST loop (reported as a ratio).
 *
 *   npm run bench:outbound
 *   BENCH_BIG_LEADS=50000 BENCH_ROUNDS=2 BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres npm run bench:outbound
 */
import "../src/env.ts";
import http, { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { cpus, totalmem } from "node:os";
import { performance } from "node:perf_hooks";
import pg from "pg";
import { Webhook } from "standardwebhooks";
import { LocalAiResponder } from "../src/providers/aiLocal.ts";
import { LocalEmailProvider } from "../src/providers/emailLocal.ts";
import { LocalNumberProvisioner } from "../src/providers/numbersLocal.ts";
import { LocalSmsProvider } from "../src/providers/smsLocal.ts";
import { webhookSignature } from "../src/providers/webhookPoster.ts";
import { setServices } from "../src/worker/services.ts";
import { startWorker } from "../src/worker/start.ts";
import { openBenchDatabase } from "./database.ts";

const BIG = Number(process.env.BENCH_BIG_LEADS ?? 200_000);
const SMALL = Number(process.env.BENCH_SMALL_LEADS ?? 2_000);
const EVENTS = Number(process.env.BENCH_EVENTS ?? 1_000);
const ENDPOINTS = Number(process.env.BENCH_ENDPOINTS ?? 4);
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 3));
const JOBS = Number(process.env.WORKER_CONCURRENCY ?? 4);
const PER_ENDPOINT = Number(process.env.WEBHOOK_CONCURRENCY ?? 8);
const roles = { owner: "switchboard_obench_owner", authenticator: "switchboard_obench_authenticator", visitor: "switchboard_obench_visitor" };
const log = (line: string) => process.stderr.write(`${line}\n`);

interface Tenant {
  id: string;
  name: string;
  size: number;
  secrets: Map<string, string>;
}

let received = 0;
let lastBody = "";
const firstHeaders: Record<string, string>[] = [];

async function timed<T>(label: string, fn: () => Promise<T>): Promise<T> {
  const start = performance.now();
  const result = await fn();
  log(`  ${label}: ${((performance.now() - start) / 1000).toFixed(1)} s`);
  return result;
}

/** A tenant with `size` leads and 2 × size earlier events, each delivered to each of its endpoints (loaded set-based, triggers off). */
async function loadTenant(root: pg.Client, name: string, size: number, receiverUrl: string): Promise<Tenant> {
  const { rows: [tenant] } = await root.query<{ id: string }>("insert into app_public.tenants (business_name, trade_type) values ($1, 'plumbing') returning id", [name]);
  const id = tenant!.id;
  const secrets = new Map<string, string>();
  for (let e = 0; e < ENDPOINTS; e++) {
    const secret = `whsec_${Buffer.from(`${name}-${e}-`.padEnd(32, "k")).toString("base64")}`;
    const { rows: [endpoint] } = await root.query<{ id: string }>(
      "insert into app_public.webhook_endpoints (tenant_id, url) values ($1, $2) returning id",
      [id, `${receiverUrl}/${name}/${e}`],
    );
    await root.query("insert into app_private.webhook_secrets (tenant_id, endpoint_id, secret) values ($1, $2, $3)", [id, endpoint!.id, secret]);
    secrets.set(endpoint!.id, secret);
  }
  await root.query("set session_replication_role = replica");
  await timed(`${name}: ${size.toLocaleString()} leads, ${(2 * size).toLocaleString()} earlier events, ${(2 * size * ENDPOINTS).toLocaleString()} earlier deliveries`, async () => {
    await root.query(
      `insert into app_public.leads (tenant_id, first_name, email, source, created_at, updated_at)
       select $1, 'Lead ' || g, 'lead' || g || '@' || $3 || '.example', 'bench', now() - (g % 365) * interval '1 day', now()
         from generate_series(1, $2) g`,
      [id, size, name.toLowerCase()],
    );
    await root.query(
      `insert into app_public.events (tenant_id, seq, type, lead_id, data, occurred_at)
       select l.tenant_id, 2 * dense_rank() over (order by l.id) - k, case k when 1 then 'lead.created' else 'lead.updated' end, l.id,
              jsonb_build_object('id', l.id, 'first_name', l.first_name), l.created_at
         from app_public.leads l cross join (values (0), (1)) v(k) where l.tenant_id = $1`,
      [id],
    );
    await root.query("insert into app_private.event_counters (tenant_id, last_seq) values ($1, $2)", [id, 2 * size]);
    await root.query(
      `insert into app_public.webhook_deliveries (tenant_id, endpoint_id, event_id, event_seq, event_type, status, attempts, next_attempt_at, delivered_at, last_status_code)
       select e.tenant_id, w.id, e.id, e.seq, e.type, 'delivered', 1, e.occurred_at, e.occurred_at, 200
         from app_public.events e join app_public.webhook_endpoints w on w.tenant_id = e.tenant_id where e.tenant_id = $1`,
      [id],
    );
  });
  await root.query("set session_replication_role = origin");
  return { id, name, size, secrets };
}

/** Writes EVENTS new leads of the tenant in one statement and waits for every delivery to reach the receiver: deliveries per second. */
async function deliveriesRound(root: pg.Client, t: Tenant, round: number): Promise<number> {
  const expected = received + EVENTS * ENDPOINTS;
  const start = performance.now();
  await root.query(
    `insert into app_public.leads (tenant_id, first_name, email, source)
     select $1, 'New ' || g, 'new' || $3 || '-' || g || '@' || $4 || '.example', 'bench' from generate_series(1, $2) g`,
    [t.id, EVENTS, round, t.name.toLowerCase()],
  );
  while (received < expected) await new Promise((r) => setTimeout(r, 5));
  return (EVENTS * ENDPOINTS) / ((performance.now() - start) / 1000);
}

/** The baseline: the same number of POSTs of a delivery's body, signed, as many in flight as the worker may have. */
async function bareRound(port: number, body: string): Promise<number> {
  const total = EVENTS * ENDPOINTS;
  const agent = new http.Agent({ keepAlive: false });
  let next = 0;
  const secret = `whsec_${Buffer.from("bare".padEnd(32, "k")).toString("base64")}`;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: JOBS * PER_ENDPOINT }, async () => {
      while (next < total) {
        const i = next++;
        const id = `bare-${i}`;
        const at = new Date();
        await new Promise<void>((resolve, reject) => {
          const req = http.request(
            {
              host: "127.0.0.1", port, path: `/bare/${i % ENDPOINTS}`, method: "POST", agent,
              headers: { "content-type": "application/json", "webhook-id": id, "webhook-timestamp": String(Math.floor(at.getTime() / 1000)), "webhook-signature": webhookSignature([secret], id, at, body) },
            },
            (res) => {
              res.resume();
              res.on("end", resolve);
            },
          );
          req.on("error", reject);
          req.end(body);
        });
      }
    }),
  );
  return total / ((performance.now() - start) / 1000);
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}

async function main(): Promise<void> {
  const receiver = createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (c: string) => (body += c));
    req.on("end", () => {
      if (!req.url?.startsWith("/bare/")) {
        received++;
        lastBody = body;
        if (firstHeaders.length < 3) firstHeaders.push({ path: req.url ?? "", id: String(req.headers["webhook-id"]), ts: String(req.headers["webhook-timestamp"]), sig: String(req.headers["webhook-signature"]), body });
      }
      res.end("ok");
    });
  });
  await new Promise<void>((r) => receiver.listen(0, "127.0.0.1", r));
  const port = (receiver.address() as AddressInfo).port;
  const receiverUrl = `http://127.0.0.1:${port}`;
  const bench = await openBenchDatabase("switchboard_obench", roles, log);
  const ownerPool = new pg.Pool({ connectionString: bench.urls.ownerUrl, max: JOBS + 4 });
  ownerPool.on("error", () => undefined);
  let runner: Awaited<ReturnType<typeof startWorker>> | null = null;
  try {
    const root = new pg.Client({ connectionString: bench.rootUrl });
    root.on("error", () => undefined);
    await root.connect();
    log("Loading…");
    const big = await loadTenant(root, "Big", BIG, receiverUrl);
    const small = await loadTenant(root, "Small", SMALL, receiverUrl);
    await timed("analyze", () => root.query("analyze"));

    setServices({
      sms: new LocalSmsProvider(ownerPool, "unused", -1),
      ai: new LocalAiResponder(),
      numbers: new LocalNumberProvisioner(),
      email: new LocalEmailProvider(ownerPool),
      emailFrom: { name: "Switchboard", address: "no-reply@switchboard.localhost" },
      publicUrl: () => receiverUrl,
      webhooks: { timeoutMs: 10_000, concurrency: PER_ENDPOINT, allowPrivateTargets: true },
    });
    runner = await startWorker(ownerPool, JOBS, { only: ["webhook__deliver"] });

    // Warm up (and capture a real body for the baseline).
    await deliveriesRound(root, small, -1);
    const body = lastBody;
    const samples = { bare: [] as number[], small: [] as number[], big: [] as number[] };
    for (let round = 0; round < ROUNDS; round++) {
      log(`Round ${round + 1}/${ROUNDS}: ${(EVENTS * ENDPOINTS).toLocaleString()} POSTs each (bare loop, small tenant, big tenant)…`);
      samples.bare.push(await bareRound(port, body));
      samples.small.push(await deliveriesRound(root, small, round));
      samples.big.push(await deliveriesRound(root, big, round));
    }
    // Every delivery was signed so the receiver's library verifies it.
    for (const h of firstHeaders) {
      const endpointId = [...small.secrets.keys()][Number(h.path!.split("/")[2])]!;
      new Webhook(small.secrets.get(endpointId)!).verify(h.body!, { "webhook-id": h.id!, "webhook-timestamp": h.ts!, "webhook-signature": h.sig! });
    }

    // What the events cost the write: the same insert with the event trigger on and off.
    const writeTimes = { on: [] as number[], off: [] as number[] };
    await runner.stop();
    runner = null;
    await root.query("update app_public.webhook_endpoints set enabled = false");
    for (let round = 0; round < ROUNDS; round++) {
      for (const mode of ["on", "off"] as const) {
        if (mode === "off") await root.query("alter table app_public.leads disable trigger _950_events_on_insert");
        const start = performance.now();
        await root.query(
          `insert into app_public.leads (tenant_id, first_name, email, source)
           select $1, 'Write ' || g, 'write' || $3 || '-' || g || '@big.example', 'bench' from generate_series(1, $2) g`,
          [big.id, EVENTS, `${round}${mode}`],
        );
        writeTimes[mode].push(performance.now() - start);
        if (mode === "off") await root.query("alter table app_public.leads enable trigger _950_events_on_insert");
      }
    }
    const { rows: [check] } = await root.query<{ gaps: number }>(
      "select count(*)::int as gaps from (select seq - lag(seq) over (partition by tenant_id order by seq) as d from app_public.events) x where d <> 1",
    );

    const s = { bare: median(samples.bare), small: median(samples.small), big: median(samples.big) };
    const { rows: [server] } = await root.query<{ version: string }>("select version()");
    console.log(`\nOutbound webhooks: ${(EVENTS * ENDPOINTS).toLocaleString()} deliveries per round (${EVENTS.toLocaleString()} events × ${ENDPOINTS} endpoints), ${ROUNDS} rounds; worker ${JOBS} jobs × ${PER_ENDPOINT} per endpoint\n`);
    console.log("| path | deliveries/s (median) | rounds |");
    console.log("|---|---|---|");
    console.log(`| bare HTTP POST loop, signed (baseline) | ${s.bare.toFixed(0)} | ${samples.bare.map((v) => v.toFixed(0)).join(", ")} |`);
    console.log(`| webhooks, ${SMALL.toLocaleString()}-lead tenant | ${s.small.toFixed(0)} | ${samples.small.map((v) => v.toFixed(0)).join(", ")} |`);
    console.log(`| webhooks, ${BIG.toLocaleString()}-lead tenant (${(2 * BIG).toLocaleString()} earlier events) | ${s.big.toFixed(0)} | ${samples.big.map((v) => v.toFixed(0)).join(", ")} |`);
    console.log(`\nwebhooks / bare loop: ${(s.small / s.bare).toFixed(2)} (small tenant), ${(s.big / s.bare).toFixed(2)} (big tenant)`);
    const growth = s.big / s.small;
    console.log(`big / small tenant: ${growth.toFixed(2)} (goal ≥ 0.67: ${growth >= 0.67 ? "met" : "missed"})`);
    const on = median(writeTimes.on);
    const off = median(writeTimes.off);
    console.log(`\nWriting ${EVENTS.toLocaleString()} leads in one statement (big tenant): ${on.toFixed(0)} ms with their events, ${off.toFixed(0)} ms without (${((on / off - 1) * 100).toFixed(0)}% more)`);
    console.log(`Event numbers checked: ${check!.gaps} gaps.`);
    console.log(`\nMachine: ${cpus().length} × ${cpus()[0]?.model.trim()}, ${Math.round(totalmem() / 2 ** 30)} GiB; ${server!.version.split(" on ")[0]}; Node ${process.version}.`);
    await root.end();
  } catch (error) {
    log(`The benchmark failed: ${(error as Error).stack ?? String(error)}`);
    process.exitCode = 1;
  } finally {
    await runner?.stop();
    setServices(null);
    await ownerPool.end();
    await bench.close();
    await new Promise((r) => receiver.close(r));
  }
}

await main();
