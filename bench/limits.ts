/**
 * What a refusal costs the server, through the real HTTP stack of a production-mode API server,
 * against a baseline measured in the same run: the cheapest real GraphQL request (`{ __typename }`).
 * Rounds alternate (baseline, then each refusal) so a noisy machine hits every measure. A ratio of
 * 1 means a refusal costs as much as the cheapest request; the goal is that no refusal costs much
 * more (ratio ≥ 0.5), whatever the attacker sends.
 *
 *   npm run bench:limits
 *   BENCH_SECONDS=3 BENCH_CONCURRENCY=8 BENCH_ROUNDS=2 npm run bench:limits
 *   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres npm run bench:limits
 *
 * Measures (requests per second, ratio to the baseline):
 *   1. a 1 MB body (REQUEST_TOO_LARGE, refused from its Content-Length);
 *   2. 1,000 aliases (TOO_MANY_TOKENS, refused before parsing);
 *   3. a cost bomb (QUERY_TOO_COSTLY, parsed and validated once, then refused before execution);
 *   4. a login refused by its rate limit (RATE_LIMITED: a few counter upserts, no bcrypt), and for
 *      scale a login with a wrong password that reaches SQL and its bcrypt hash.
 */
import "../src/env.ts";
import pg from "pg";
import { startBenchApi, type BenchApi } from "./api.ts";
import { openBenchDatabase } from "./database.ts";
import { runLoad } from "./load.ts";

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
    const measures: Array<{ name: string; run: () => Promise<void> }> = [
      { name: "baseline: { __typename }", run: () => post(open, bodies.baseline, { status: 200 }) },
      { name: "1 MB body (REQUEST_TOO_LARGE)", run: () => post(open, bodies.big, { status: 413, code: "REQUEST_TOO_LARGE" }) },
      { name: "1,000 aliases (TOO_MANY_TOKENS)", run: () => post(open, bodies.aliases, { status: 400, code: "TOO_MANY_TOKENS" }) },
      { name: "cost bomb (QUERY_TOO_COSTLY)", run: () => post(open, bodies.bomb, { status: 400, code: "QUERY_TOO_COSTLY" }) },
      { name: "login refused by its rate limit (RATE_LIMITED)", run: () => post(strict, bodies.wrongLogin, { status: 429, code: "RATE_LIMITED" }) },
      { name: "for scale: login with a wrong password (28P01, bcrypt)", run: () => post(open, bodies.wrongLogin, { status: 200, code: "28P01" }) },
    ];
    const rps = new Map<string, number[]>(measures.map((m) => [m.name, []]));
    for (let round = 1; round <= ROUNDS; round++) {
      for (const measure of measures) {
        const result = await runLoad(SECONDS, CONCURRENCY, measure.run);
        rps.get(measure.name)!.push(result.rps);
        log(`round ${round}: ${measure.name}: ${Math.round(result.rps)} requests/s`);
      }
    }
    const baseline = median(rps.get(measures[0]!.name)!);
    const lines = ["| request | requests/s | ratio to the baseline |", "|---|---|---|"];
    let met = true;
    for (const measure of measures) {
      const value = median(rps.get(measure.name)!);
      const ratio = value / baseline;
      if (measure.name.includes("(") && !measure.name.startsWith("for scale") && ratio < GOAL) met = false;
      lines.push(`| ${measure.name} | ${Math.round(value)} | ${ratio.toFixed(2)} |`);
    }
    console.log(`\n${lines.join("\n")}\n`);
    console.log(`${CONCURRENCY} concurrent clients, ${SECONDS} s per measure, ${ROUNDS} rounds (medians). Goal: every refusal at least ${GOAL} of the baseline: ${met ? "met" : "NOT met"}.`);
  } finally {
    await Promise.all([open.close(), strict.close()]);
    await ownerPool.end();
    await bench.close();
  }
}

await main();
