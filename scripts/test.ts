/**
 * `npm test`: type check, then the whole suite against the embedded PostgreSQL, then again against
 * the PostgreSQL at 127.0.0.1:5432 when one answers (our machines run 15 there), so every supported
 * major version is exercised. TEST_DATABASE_URL=<superuser url> runs against that server only;
 * TEST_EXTERNAL_PG=skip skips the second pass. Extra arguments go to vitest.
 *
 * Each pass runs in two parts: the suite (a few files at a time), then the load tests of HEAVY alone,
 * so that their worker processes do not starve the timing of the other files on a 2-core machine.
 * With extra arguments (e.g. a file to run), each pass is one vitest run with them.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import pg from "pg";
import { projectRoot } from "../src/config.ts";

const bin = (name: string) => resolve(projectRoot, "node_modules/.bin", name);
const extra = process.argv.slice(2);
/** Load tests that keep both cores busy for minutes: run after the rest, one at a time. */
const HEAVY = ["test/api/nurture-chaos.test.ts", "test/db/routing-fairness.test.ts"];
const reportsDir = resolve(projectRoot, ".data/test-reports");
mkdirSync(reportsDir, { recursive: true });

interface Totals {
  passed: number;
  failed: number;
  skipped: number;
}
const totals: Totals = { passed: 0, failed: 0, skipped: 0 };
let failedPasses = 0;

function runVitest(label: string, env: Record<string, string | undefined>): void {
  if (extra.length > 0) {
    runVitestOnce(label, env, extra);
    return;
  }
  runVitestOnce(label, env, HEAVY.flatMap((file) => ["--exclude", file]));
  runVitestOnce(`${label}, load tests`, env, ["--maxWorkers=1", ...HEAVY]);
}

function runVitestOnce(label: string, env: Record<string, string | undefined>, args: string[]): void {
  console.log(`\n=== Test pass: ${label} ===\n`);
  const report = resolve(reportsDir, `${label.replace(/[^a-z0-9]+/gi, "-")}.json`);
  const result = spawnSync(bin("vitest"), ["run", "--reporter=default", "--reporter=json", `--outputFile.json=${report}`, ...args], {
    stdio: "inherit",
    env: { ...process.env, ...env },
    cwd: projectRoot,
  });
  if (result.status !== 0) failedPasses++;
  if (existsSync(report)) {
    const json = JSON.parse(readFileSync(report, "utf8")) as { numPassedTests: number; numFailedTests: number; numPendingTests: number; numTodoTests: number };
    totals.passed += json.numPassedTests;
    totals.failed += json.numFailedTests;
    totals.skipped += json.numPendingTests + json.numTodoTests;
    if (result.status !== 0 && json.numFailedTests === 0) {
      // Unhandled errors (an uncaught exception, a rejected promise nobody awaited) fail a pass whose tests all passed.
      console.log(`\n${label}: every test passed, but vitest exited with ${result.status ?? result.signal}: see the errors it printed above.`);
    }
  } else if (result.status !== 0) {
    totals.failed += 1; // the pass died before reporting
  }
}

async function reachable(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 });
  try {
    await client.connect();
    const { rows } = await client.query<{ rolsuper: boolean; version: string }>(
      "select rolsuper, current_setting('server_version') as version from pg_roles where rolname = current_user",
    );
    if (!rows[0]?.rolsuper) {
      console.log(`PostgreSQL at ${url} answers but the user is not a superuser: skipping that pass.`);
      return false;
    }
    console.log(`PostgreSQL ${rows[0].version} found at 127.0.0.1:5432.`);
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => {});
  }
}

console.log("=== Type check (tsc --noEmit) ===");
const tsc = spawnSync(bin("tsc"), ["--noEmit", "-p", projectRoot], { stdio: "inherit", cwd: projectRoot });
if (tsc.status !== 0) {
  console.error("Type check failed.");
  failedPasses++;
}

if (process.env.TEST_DATABASE_URL) {
  runVitest("TEST_DATABASE_URL", {});
} else {
  runVitest("embedded PostgreSQL", { TEST_DATABASE_URL: undefined });
  const localUrl = "postgres://postgres@127.0.0.1:5432/postgres";
  if (process.env.TEST_EXTERNAL_PG !== "skip" && (await reachable(localUrl))) {
    runVitest("PostgreSQL at 127.0.0.1:5432", { TEST_DATABASE_URL: localUrl });
  } else {
    console.log("\nNo PostgreSQL superuser at 127.0.0.1:5432 (or TEST_EXTERNAL_PG=skip): second pass skipped.");
  }
}

console.log(`\ntests: ${totals.passed} passed, ${totals.failed} failed, ${totals.skipped} skipped; ${failedPasses} failed step(s) (type check or vitest runs)`);
process.exit(failedPasses > 0 || totals.failed > 0 ? 1 : 0);
