/**
 * The README's start command, for real: `npm start -- --seed` as a child process on a fresh data
 * folder (embedded PostgreSQL) — or, when the suite runs against another server, with DATABASE_URL
 * set to a superuser URL of an empty database, which it must create with its roles. Waits for
 * /healthz, logs in as the demo owner over HTTP, runs a query, then stops it like Ctrl-C and checks
 * that nothing is left running and that a second start works.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { projectRoot, withDatabase } from "../../src/config.ts";
import { dropDatabase } from "../../src/db/bootstrap.ts";
import { freePort } from "../globalSetup.ts";
import { db } from "../helpers.ts";

interface Started {
  child: ChildProcess;
  output: () => string;
  /** Resolves when every process holding the output pipes (npm, and our node under it) has exited. */
  closed: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function npmStart(env: Record<string, string>): Started {
  let output = "";
  // Its own process group, so we can send SIGINT to the whole group as a terminal's Ctrl-C does.
  const child = spawn("npm", ["start", "--", "--seed"], { cwd: projectRoot, env: { ...process.env, ...env }, detached: true });
  child.stdout!.on("data", (d) => (output += d));
  child.stderr!.on("data", (d) => (output += d));
  const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on("close", (code, signal) => resolve({ code, signal })),
  );
  return { child, output: () => output, closed };
}

async function waitForHealth(url: string, started: Started, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (started.child.exitCode !== null) throw new Error(`npm start exited early:\n${started.output()}`);
    try {
      const response = await fetch(`${url}/healthz`);
      if (response.status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error(`no healthy /healthz within ${timeoutMs} ms:\n${started.output()}`);
}

async function gql(url: string, query: string, variables: Record<string, unknown> = {}, token?: string) {
  const response = await fetch(`${url}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  return (await response.json()) as { data?: any; errors?: any[] };
}

/** SIGINT to the whole process group, as Ctrl-C in a terminal; npm itself dies of the signal, our process exits 0. */
async function stopLikeCtrlC(started: Started): Promise<void> {
  process.kill(-started.child.pid!, "SIGINT");
  const result = await Promise.race([started.closed, new Promise<"timeout">((r) => setTimeout(() => r("timeout"), 30_000))]);
  if (result === "timeout") {
    process.kill(-started.child.pid!, "SIGKILL");
    throw new Error(`did not stop within 30 s after SIGINT:\n${started.output()}`);
  }
  expect(result.code === 0 || result.signal === "SIGINT", started.output()).toBe(true);
  expect(started.output()).toContain("[switchboard] SIGINT received, stopping…");
  expect(started.output()).not.toContain("failed to start");
}

function postgresStillRunning(dataDir: string): boolean {
  const pidFile = join(dataDir, "postgres", "postmaster.pid");
  if (!existsSync(pidFile)) return false;
  const pid = Number(readFileSync(pidFile, "utf8").split("\n")[0]);
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("npm start (end to end)", () => {
  it("starts everything, serves a logged-in query, and stops cleanly; the next start works", { timeout: 300_000 }, async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "switchboard-e2e-"));
    const port = await freePort();
    const env: Record<string, string> = { PORT: String(port), SWITCHBOARD_DATA_DIR: dataDir, NODE_ENV: "development" };
    if (db.embedded) {
      env.EMBEDDED_PG_PORT = String(await freePort());
    } else {
      // A superuser URL to a database that doesn't exist yet: start must create roles and database.
      await dropDatabase(db.serverRootUrl, "switchboard_e2e");
      await dropDatabase(db.serverRootUrl, "switchboard_e2e_shadow");
      env.DATABASE_URL = withDatabase(db.serverRootUrl, "switchboard_e2e");
    }
    const url = `http://127.0.0.1:${port}`;

    for (const round of [1, 2]) {
      const started = npmStart(env);
      try {
        await waitForHealth(url, started, 120_000);
        expect(started.output()).toContain(`GraphQL API:  ${url}/graphql`);
        expect(started.output()).toContain(`GraphQL IDE:  ${url}/graphiql`);
        const login = await gql(url, `mutation { login(input: { email: "owner@demo.switchboard.test", password: "demo-password-1" }) { result } }`);
        expect(login.errors, started.output()).toBeUndefined();
        const me = await gql(url, `{ currentUser { email } currentTenant { businessName } }`, {}, login.data.login.result);
        expect(me.data).toEqual({ currentUser: { email: "owner@demo.switchboard.test" }, currentTenant: { businessName: "Demo Plumbing Co" } });
        const sequences = await gql(url, `{ allNurtureSequences { nodes { name currentVersion status } } }`, {}, login.data.login.result);
        expect(sequences.data?.allNurtureSequences.nodes, JSON.stringify(sequences.errors)).toEqual([{ name: "Quote follow-up", currentVersion: 1, status: "active" }]);
        const health = (await (await fetch(`${url}/healthz`)).json()) as any;
        expect(health.worker.state, `round ${round}`).toBe("running");
      } finally {
        await stopLikeCtrlC(started);
      }
      if (db.embedded) {
        expect(started.output()).toContain("Embedded PostgreSQL stopped.");
        expect(postgresStillRunning(dataDir), "embedded postgres left running").toBe(false);
      }
    }
    if (!db.embedded) {
      // Outside production, start also creates graphile-migrate's shadow database.
      await dropDatabase(db.serverRootUrl, "switchboard_e2e");
      await dropDatabase(db.serverRootUrl, "switchboard_e2e_shadow");
    }
    rmSync(dataDir, { recursive: true, force: true });
  });
});
