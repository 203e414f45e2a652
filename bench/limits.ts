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
 *   1. a 1 MB body (REQUEST_TOO_LARGE, refused from its Content-Length), compared not with
 *      `{ __typename }` but with Node's HTTP server alone refusing the same body at once (the
 *      transport baseline): whoever refuses a body over HTTP/1.1 reads it off the socket, so what is
 *      judged is what the API adds to that;
 *   2. 1,000 aliases (TOO_MANY_TOKENS, refused before parsing);
 *   3. a cost bomb (QUERY_TOO_COSTLY, parsed and validated once, then refused before execution);
 *   4. a login refused by its rate limit (RATE_LIMITED: a few counter upserts, no bcrypt; the
 *      upserts' work in PostgreSQL is not in this process's CPU time), and for scale a login with a
 *      wrong password that reaches SQL and its bcrypt hash (likewise in PostgreSQL).
 */
import "../src/env.ts";
import { execFile } from "node:child_process";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
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
  /** Where the requests go: an API server's /graphql, or the bare HTTP server. */
  url: string;
  body: string;
  status: number;
  code?: string;
  /** The measure this one is compared with, when it is not `{ __typename }`. */
  against?: string;
}

/**
 * Node's HTTP server alone, refusing every request at once with the same 413: what the transport
 * costs. HTTP/1.1 leaves a server two choices with a body it refuses, read it off the socket and
 * throw it away (what Node does) or break the connection while the client is still writing (the
 * client then sees a broken pipe, not the 413), so refusing a large body costs in proportion to its
 * bytes even here. The API's refusal of a 1 MB body is compared with this one.
 */
async function startBareRefuser(): Promise<{ url: string; close: () => Promise<void> }> {
  const server = createServer((_req, res) => {
    res.writeHead(413, { "content-type": "application/json" }).end('{"errors":[{"message":"too large","extensions":{"code":"REQUEST_TOO_LARGE"}}]}');
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/graphql`, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

const jobs = mkdtempSync(join(tmpdir(), "switchboard-lbench-jobs-"));

/** Runs one measure's load from a child process; returns requests per second and this process's CPU µs per request. */
async function measure(m: Measure): Promise<{ rps: number; cpuMicros: number }> {
  const file = join(jobs, "job.json");
  writeFileSync(file, JSON.stringify({ url: m.url, body: m.body, seconds: SECONDS, concurrency: CONCURRENCY, status: m.status, code: m.code }));
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
  const closers: Array<() => Promise<void>> = [];
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
    const bare = await startBareRefuser();
    closers.push(bare.close);
    const at = (api: BenchApi) => `${api.url}/graphql`;
    const measures: Measure[] = [
      { name: "baseline: { __typename }", url: at(open), body: bodies.baseline, status: 200 },
      { name: "transport baseline: Node alone refusing a 1 MB body", url: bare.url, body: bodies.big, status: 413, code: "REQUEST_TOO_LARGE" },
      { name: "1 MB body (REQUEST_TOO_LARGE)", url: at(open), body: bodies.big, status: 413, code: "REQUEST_TOO_LARGE", against: "transport baseline: Node alone refusing a 1 MB body" },
      { name: "1,000 aliases (TOO_MANY_TOKENS)", url: at(open), body: bodies.aliases, status: 400, code: "TOO_MANY_TOKENS" },
      { name: "cost bomb (QUERY_TOO_COSTLY)", url: at(open), body: bodies.bomb, status: 400, code: "QUERY_TOO_COSTLY" },
      { name: "login refused by its rate limit (RATE_LIMITED)", url: at(strict), body: bodies.wrongLogin, status: 429, code: "RATE_LIMITED" },
      { name: "for scale: login with a wrong password (28P01, bcrypt)", url: at(open), body: bodies.wrongLogin, status: 200, code: "28P01" },
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
    const baselineRps = median(baseline.rps);
    const lines = [
      "| request | server CPU per request | compared with | ratio (CPU) | requests/s | ratio to { __typename } (requests/s) |",
      "|---|---|---|---|---|---|",
    ];
    let met = true;
    for (const m of measures) {
      const r = results.get(m.name)!;
      const cpu = median(r.cpu);
      const rps = median(r.rps);
      const reference = m.against ?? measures[0]!.name;
      const ratio = median(results.get(reference)!.cpu) / cpu;
      const judged = m.name.includes("(") && !m.name.startsWith("for scale") && !m.name.startsWith("transport");
      if (judged && ratio < GOAL) met = false;
      lines.push(`| ${m.name} | ${Math.round(cpu)} µs | ${m.against ? "Node alone" : "{ __typename }"} | ${ratio.toFixed(2)} | ${Math.round(rps)} | ${(rps / baselineRps).toFixed(2)} |`);
    }
    console.log(`\n${lines.join("\n")}\n`);
    console.log(
      `${CONCURRENCY} concurrent clients in a child process, ${SECONDS} s per measure, ${ROUNDS} rounds (medians). ` +
        `Goal: every refusal costs the server at most twice its reference (ratio at least ${GOAL}): ${met ? "met" : "NOT met"}.`,
    );
  } finally {
    await Promise.all([open.close(), strict.close(), ...closers.map((close) => close())]);
    await ownerPool.end();
    await bench.close();
    rmSync(jobs, { recursive: true, force: true });
  }
}

await main();
