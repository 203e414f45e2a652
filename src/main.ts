/**
 * Switchboard's command line. Run through npm so the project's own Node 24 is used:
 *   npm start [-- --seed] [-- --no-worker]   API + worker (+ embedded PostgreSQL when DATABASE_URL is unset)
 *   npm run worker                           the worker alone
 *   npm run migrate                          create roles/database if needed and run migrations
 *   npm run seed                             load the demo tenant
 *   npm run import -- <file.csv> --tenant <id> [--mode merge|skip] [--country US] [--source-name NAME]
 *                                            import leads from a CSV file (see src/import/cli.ts)
 *   npm run migrate:commit|watch|status|…    graphile-migrate, with the database settings filled in
 *   npm run schema:export                    write data/schema.graphql
 *   npm run schema:dump                      write data/schema.sql (schema-only pg_dump of a freshly migrated scratch database)
 */
import "./env.ts";
import { spawn } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { resolve } from "node:path";
import type { Runner } from "graphile-worker";
import { ConfigError, loadConfig, projectRoot, type Config } from "./config.ts";
import { prepareDatabase, type PreparedDatabase } from "./db/setup.ts";
import { makePool } from "./db/pools.ts";
import { startApiServer, type ApiServer } from "./api/server.ts";
import { schemaSDL } from "./api/schemaExport.ts";
import { writeSchemaSnapshot } from "./db/schemaDump.ts";
import { startWorker } from "./worker/start.ts";
import { makeServices, setServices } from "./worker/services.ts";
import { placeholderValues } from "./db/bootstrap.ts";
import { assertReadableFile, ImportCliError, parseImportArgs, runImport } from "./import/cli.ts";

const log = (line: string) => console.log(`[switchboard] ${line}`);

type Cleanup = () => Promise<void>;
const cleanups: Cleanup[] = [];
let stopping = false;

async function shutdown(code: number): Promise<never> {
  if (!stopping) {
    stopping = true;
    for (const cleanup of cleanups.reverse()) {
      try {
        await cleanup();
      } catch (error) {
        console.error(`[switchboard] while stopping: ${(error as Error).message}`);
      }
    }
  }
  process.exit(code);
}

/**
 * One Ctrl-C under `npm start` delivers SIGINT twice (from the terminal to the whole process group,
 * and again forwarded by npm), so only a signal arriving well after the first forces an exit.
 */
function onSignals(): void {
  let firstSignalAt = 0;
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => {
      if (stopping) {
        if (Date.now() - firstSignalAt > 3000) {
          console.error("[switchboard] forced exit (cleanup skipped)");
          process.exit(130);
        }
        return;
      }
      firstSignalAt = Date.now();
      log(`${signal} received, stopping…`);
      void shutdown(0);
    });
  }
}

async function prepared(config: Config, migrate: boolean): Promise<PreparedDatabase> {
  const db = await prepareDatabase(config, { migrate, log });
  if (db.embedded) cleanups.push(async () => {
    await db.embedded!.stop();
    log(db.embedded!.shared ? "Left the shared embedded PostgreSQL running." : "Embedded PostgreSQL stopped.");
  });
  return db;
}

/**
 * Loads the demo tenant (src/db/demo.sql, as the owner role, in one transaction; idempotent) and says
 * what it holds. The demo queues texts and emails (to fictional 555-01xx numbers and example.com
 * addresses) that the worker sends: only with the local providers, never through Twilio or SMTP.
 */
async function seed(ownerUrl: string, config: Config): Promise<void> {
  if (config.production) {
    throw new ConfigError("The demo data is not loaded in production: its users have a published password (demo-password-1).");
  }
  if (config.telephony.smsProvider !== "local" || config.email.provider !== "local") {
    throw new ConfigError(
      "The demo data queues texts and emails, which must not reach a real provider: load it only with the local " +
        "providers (no TWILIO_ACCOUNT_SID/SMS_PROVIDER=twilio, no SMTP_URL/EMAIL_PROVIDER=smtp).",
    );
  }
  const pool = makePool(ownerUrl, 1, "seed");
  try {
    const sql = await readFile(resolve(projectRoot, "src/db/demo.sql"), "utf8");
    const client = await pool.connect();
    try {
      await client.query(sql);
    } catch (error) {
      // The script runs between its own begin and commit: nothing of it stays.
      await client.query("rollback").catch(() => undefined);
      throw error;
    } finally {
      client.release();
    }
    const { rows } = await pool.query<Record<string, string>>(
      `select
         (select count(*) from app_public.leads l where l.tenant_id = t.id) as leads,
         (select count(*) from app_public.agents a where a.tenant_id = t.id) as agents,
         (select count(*) from app_public.lead_routing_history h where h.tenant_id = t.id) as routing_decisions,
         (select count(*) from app_public.conversations c where c.tenant_id = t.id) as conversations,
         (select count(*) from app_public.lead_sequence_enrollments e where e.tenant_id = t.id) as enrollments
       from app_public.tenants t join app_public.memberships m on m.tenant_id = t.id and m.role = 'owner'
       join app_public.users u on u.id = m.user_id
       where u.email = 'owner@demo.switchboard.test' and t.business_name = 'Demo Plumbing Co'
       order by t.created_at limit 1`,
    );
    const c = rows[0];
    log(
      `Demo data loaded (Demo Plumbing Co: ${c?.leads} leads, ${c?.agents} agents, ${c?.routing_decisions} routing decisions, ` +
        `${c?.conversations} conversations, ${c?.enrollments} nurture enrollments).`,
    );
    log("Log in as owner@demo.switchboard.test / demo-password-1 (see README).");
  } finally {
    await pool.end();
  }
}

/** Where Twilio (and the local SMS provider) reach this server: PUBLIC_URL, else our own address. */
function publicUrlOf(config: Config): string {
  return config.telephony.publicUrl ?? `http://${config.host === "0.0.0.0" ? "localhost" : config.host}:${config.port}`;
}

async function start(config: Config, argv: string[]): Promise<void> {
  onSignals();
  const db = await prepared(config, true);
  const ownerPool = makePool(db.ownerUrl, 10, "owner");
  const authPool = makePool(db.authUrl, 20, "authenticator");
  cleanups.push(async () => {
    await Promise.all([ownerPool.end(), authPool.end()]);
  });
  if (config.seedDemo) await seed(db.ownerUrl, config);

  let runner: Runner | null = null;
  let workerStopped = false;
  if (config.worker.enabled && !argv.includes("--no-worker")) {
    setServices(makeServices(config, ownerPool, () => publicUrlOf(config)));
    runner = await startWorker(ownerPool, config.worker.concurrency);
    runner.promise.then(
      () => (workerStopped = true),
      (error: Error) => {
        workerStopped = true;
        console.error(`[switchboard] worker stopped: ${error.message}`);
      },
    );
    cleanups.push(async () => {
      await runner?.stop();
    });
    log(`Worker running (${config.worker.concurrency} concurrent jobs, tasks in tasks/, schedule in crontab).`);
  }
  const api: ApiServer = await startApiServer({
    config,
    authPool,
    ownerPool,
    workerState: () => (runner ? (workerStopped ? "stopped" : "running") : "not in this process"),
  });
  cleanups.push(() => api.close());
  log(`GraphQL API:  ${api.url}/graphql`);
  if (!config.production) log(`GraphQL IDE:  ${api.url}/graphiql`);
  log(`Health:       ${api.url}/healthz`);
  log("Press Ctrl-C to stop.");
}

async function workerOnly(config: Config): Promise<void> {
  onSignals();
  const db = await prepared(config, true);
  const ownerPool = makePool(db.ownerUrl, config.worker.concurrency + 2, "owner");
  cleanups.push(() => ownerPool.end());
  setServices(makeServices(config, ownerPool, () => publicUrlOf(config)));
  const runner = await startWorker(ownerPool, config.worker.concurrency);
  cleanups.push(() => runner.stop());
  log("Worker running. Press Ctrl-C to stop.");
}

/** graphile-migrate's own CLI, with our connection strings and placeholders in its environment. */
async function graphileMigrate(config: Config, args: string[]): Promise<number> {
  const db = await prepared(config, false);
  const env = {
    ...process.env,
    DATABASE_URL: db.ownerUrl,
    ...(db.shadowUrl ? { SHADOW_DATABASE_URL: db.shadowUrl } : {}),
    ...(db.rootUrl ? { ROOT_DATABASE_URL: db.rootUrl } : {}),
    ...placeholderValues(db.databaseName, config.roles),
  };
  const child = spawn(resolve(projectRoot, "node_modules/.bin/graphile-migrate"), args, { stdio: "inherit", env, cwd: projectRoot });
  const stopChild = () => child.kill("SIGINT");
  process.on("SIGINT", stopChild);
  const code = await new Promise<number>((r) => child.on("exit", (c) => r(c ?? 1)));
  process.off("SIGINT", stopChild);
  return code;
}

async function main(): Promise<void> {
  const [command = "start", ...rest] = process.argv.slice(2);
  const config = loadConfig(process.env, rest);
  switch (command) {
    case "start":
      await start(config, rest);
      return;
    case "worker":
      await workerOnly(config);
      return;
    case "migrate": {
      await prepared(config, true);
      log("Migrations are up to date.");
      return shutdown(0);
    }
    case "seed": {
      const db = await prepared(config, true);
      await seed(db.ownerUrl, config);
      return shutdown(0);
    }
    case "import": {
      try {
        const options = parseImportArgs(rest);
        await assertReadableFile(options.file);
        // Progress and messages go to stderr; stdout carries only the summary.
        const db = await prepareDatabase(config, { migrate: false, log: (line) => console.error(`[switchboard] ${line}`) });
        if (db.embedded) cleanups.push(() => db.embedded!.stop());
        const pool = makePool(db.ownerUrl, 2, "import");
        cleanups.push(() => pool.end());
        return shutdown(await runImport(options, pool));
      } catch (error) {
        if (!(error instanceof ImportCliError)) throw error;
        console.error(`[switchboard] ${error.message}`);
        return shutdown(error.exitCode);
      }
    }
    case "gm": {
      const code = await graphileMigrate(config, rest);
      return shutdown(code);
    }
    case "dump-schema": {
      const db = await prepared(config, false);
      await writeSchemaSnapshot(config, db, log);
      return shutdown(0);
    }
    case "export-schema": {
      const db = await prepared(config, true);
      const pool = makePool(db.authUrl, 2, "authenticator");
      cleanups.push(() => pool.end());
      const sdl = await schemaSDL(config, pool);
      await writeFile(resolve(projectRoot, "data/schema.graphql"), sdl);
      log("Wrote data/schema.graphql");
      return shutdown(0);
    }
    default:
      console.error(`Unknown command '${command}'. Commands: start, worker, migrate, seed, import, gm, export-schema, dump-schema.`);
      process.exit(2);
  }
}

/** Connection problems people cause by configuration (refused, unknown host, bad password, no database). */
const CONNECTION_CODES = new Set(["ECONNREFUSED", "ENOTFOUND", "ETIMEDOUT", "EAI_AGAIN", "EHOSTUNREACH", "28P01", "28000", "3D000", "57P03"]);

main().catch(async (error: unknown) => {
  const code = (error as { code?: unknown } | null)?.code;
  if (error instanceof ConfigError) {
    console.error(`\n[switchboard] ${error.message}\n`);
  } else if (typeof code === "string" && CONNECTION_CODES.has(code)) {
    console.error(`\n[switchboard] Cannot use the database: ${(error as Error).message} (${code}). Check DATABASE_URL and AUTH_DATABASE_URL.\n`);
  } else {
    console.error("[switchboard] failed to start:", error);
  }
  await shutdown(1);
});
