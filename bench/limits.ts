/**
 * What a refusal costs the server, through the real HTTP stack of a production-mode API server,
 * against a baseline measured in the same run: the cheapest real GraphQL request (`{ __typename }`).
 * The clients run in a child process (bench/loadClient.ts), so this process holds only the server:
 * its CPU time per answered request is what a request costs the server. Rounds alternate (baseline,
 * then each refusal) so a noisy machine hits every measure. The ratio is the baseline's CPU time per
 * request over the refusal's: 1 means a refusal costs the server as much as the cheapest request;
 * the goal is that no refusal costs it much more (ratio ≥ 0.5), whatever the attacker sends.
 * Requests per second are shown too: they include what the client spends sending (a 1 MB body
 * crosses the loopback whether or not the server reads it).
 *
 *   npm run bench:limits
 *   BENCH_SECONDS=3 BENCH_CONCURRENCY=8 BENCH_ROUNDS=2 npm run bench:limits
 *   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres npm run bench:limits
 *
 * Measures:
 *   1. a 1 MB body (REQUEST_TOO_LARGE, refused from its Content-Length);
 *   2. 1,000 aliases (TOO_MANY_TOKENS, refused before parsing);
 *   3. a cost bomb (QUERY_TOO_COSTLY, parsed and validated once, then refused before execution);
 *   4. a login refused by its rate limit (RATE_LIMITED: a few counter upserts, no bcrypt; the
 *      upserts' work in PostgreSQL is not in this process's CPU time), and for scale a login with a
 *      wrong password that reaches SQL and its bcrypt hash (likewise in PostgreSQL).
 */
import "../src/env.ts";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { startBenchApi, type BenchApi } from "./api.ts";
import { openBenchDatabase } from "./database.ts";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 8);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const GOAL = 0.5;
const roles = { owner: "switchboard_lbench_owner", authenticator: "switchboard_lbench_authenticator", visitor: "switchboard_lbench_visitor" };
const log = (line: string) => process.stderr.write(`${line}\n`);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

/** POSTs a body and checks the answer is what the measure is about (a refusal must be that refusal). */
async function post(api: BenchApi, body: string, expect: { status: number; code?: string }): Promise<void> {
  const response = await fetch(`${api.url}/graphql`, { method: "POST", headers: { "content-type": "application/json" }, body });
  const text = await response.text();
  if (response.status !== expect.status || (expect.code && !text.includes(`"${expect.code}"`))) {
    throw new Error(`expected ${expect.status} ${expect.code ?? ""}, got ${response.status}: ${text.slice(0, 200)}`);
  }
}

interface Measure {
  name: string;
  api: BenchApi;
  body: string;
  status: number;
  code?: string;
}

const jobs = mkdtempSync(join(tmpdir(), "switchboard-lbench-jobs-"));

/** Runs one measure's load from a child process; returns requests per second and this process's CPU µs per request. */
async function measure(m: Measure): Promise<{ rps: number; cpuMicros: number }> {
  const file = join(jobs, "job.json");
  writeFileSync(file, JSON.stringify({ url: `${m.api.url}/graphql`, body: m.body, seconds: SECONDS, concurrency: CONCURRENCY, status: m.status, code: m.code }));
  const before = process.cpuUsage();
  const { stdout } = await promisify(execFile)(process.execPath, [new URL("./loadClient.ts", import.meta.url).pathname, file], { maxBuffer: 1 << 20 });
  const used = process.cpuUsage(before);
  const { requests, rps } = JSON.parse(stdout.trim().split("\n").pop()!) as { requests: number; rps: number };
  return { rps, cpuMicros: (used.user + used.system) / Math.max(1, requests) };
}

async function main(): Promise<void> {
  const bench = await openBenchDatabase("switchboard_lbench", roles, log);
  const ownerPool = new pg.Pool({ connectionString: bench.urls.ownerUrl, max: 8 });
  // One server lets every wrong password reach SQL (generous limits); the other refuses every login after the first.
  const open = await startBenchApi(bench.urls, roles, ownerPool, {
    LOGIN_FREE_ATTEMPTS: "1000",
    LOGIN_LIMIT_PER_ADDRESS: "1000000",
    LOGIN_LIMIT_PER_ACCOUNT: "1000000",
  });
  const strict = await startBenchApi(bench.urls, roles, ownerPool, { LOGIN_LIMIT_PER_ADDRESS: "1" });
  try {
    await open.gql(`mutation { register(input: { email: "lbench@example.com", password: "lbench-password-1", businessName: "Limits Bench", timezone: "UTC" }) { result } }`);
    const login = (password: string) => JSON.stringify({
      query: `mutation ($p: String!) { login(input: { email: "lbench@example.com", password: $p }) { result } }`,
      variables: { p: password },
    });
    await post(strict, login("wrong-password"), { status: 200 }); // uses the one attempt strict allows

    // Bodies are built once, so the client's own work is not what is measured.
    const bodies = {
      baseline: JSON.stringify({ query: "{ __typename }" }),
      big: JSON.stringify({ query: `{ __typename }`, pad: "x".repeat(1024 * 1024) }),
      aliases: JSON.stringify({ query: `{ ${Array.from({ length: 1000 }, (_, i) => `a${i}: allLeads(first: 200) { nodes { id } }`).join(" ")} }` }),
      bomb: JSON.stringify({ query: `{ allTenants(first: 200) { nodes { leadsByTenantId(first: 200) { nodes { id } } } } }` }),
      wrongLogin: login("wrong-password"),
    };
    const measures: Measure[] = [
      { name: "baseline: { __typename }", api: open, body: bodies.baseline, status: 200 },
      { name: "1 MB body (REQUEST_TOO_LARGE)", api: open, body: bodies.big, status: 413, code: "REQUEST_TOO_LARGE" },
      { name: "1,000 aliases (TOO_MANY_TOKENS)", api: open, body: bodies.aliases, status: 400, code: "TOO_MANY_TOKENS" },
      { name: "cost bomb (QUERY_TOO_COSTLY)", api: open, body: bodies.bomb, status: 400, code: "QUERY_TOO_COSTLY" },
      { name: "login refused by its rate limit (RATE_LIMITED)", api: strict, body: bodies.wrongLogin, status: 429, code: "RATE_LIMITED" },
      { name: "for scale: login with a wrong password (28P01, bcrypt)", api: open, body: bodies.wrongLogin, status: 200, code: "28P01" },
    ];
    const results = new Map<string, { rps: number[]; cpu: number[] }>(measures.map((m) => [m.name, { rps: [], cpu: [] }]));
    for (let round = 1; round <= ROUNDS; round++) {
      for (const m of measures) {
        const result = await measure(m);
        results.get(m.name)!.rps.push(result.rps);
        results.get(m.name)!.cpu.push(result.cpuMicros);
        log(`round ${round}: ${m.name}: ${Math.round(result.rps)} requests/s, ${Math.round(result.cpuMicros)} µs of server CPU per request`);
      }
    }
    const baseline = results.get(measures[0]!.name)!;
    const baselineCpu = median(baseline.cpu);
    const baselineRps = median(baseline.rps);
    const lines = [
      "| request | server CPU per request | ratio to the baseline (CPU) | requests/s | ratio to the baseline (requests/s) |",
      "|---|---|---|---|---|",
    ];
    let met = true;
    for (const m of measures) {
      const r = results.get(m.name)!;
      const cpu = median(r.cpu);
      const rps = median(r.rps);
      const ratio = baselineCpu / cpu;
      if (m.name.includes("(") && !m.name.startsWith("for scale") && ratio < GOAL) met = false;
      lines.push(`| ${m.name} | ${Math.round(cpu)} µs | ${ratio.toFixed(2)} | ${Math.round(rps)} | ${(rps / baselineRps).toFixed(2)} |`);
    }
    console.log(`\n${lines.join("\n")}\n`);
    console.log(
      `${CONCURRENCY} concurrent clients in a child process, ${SECONDS} s per measure, ${ROUNDS} rounds (medians). ` +
        `Goal: every refusal costs the server at most twice the baseline's CPU (ratio at least ${GOAL}): ${met ? "met" : "NOT met"}.`,
    );
  } finally {
    await Promise.all([open.close(), strict.close()]);
    await ownerPool.end();
    await bench.close();
    rmSync(jobs, { recursive: true, force: true });
  }
}

await main();
