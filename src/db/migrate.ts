/**
 * Brings a database up to date: graphile-worker's own schema first (so SQL can enqueue jobs),
 * then our committed migrations, then (outside production) migrations/current.sql.
 */
import { Logger as MigrateLogger, migrate, watch, type Settings } from "graphile-migrate";
import { Logger as WorkerLogger, runMigrations } from "graphile-worker";
import { readFileSync, readdirSync } from "node:fs";
import { resolve } from "node:path";
import { makePool } from "./pools.ts";
import { projectRoot } from "../config.ts";
import { placeholderValues, type Roles } from "./bootstrap.ts";

export interface MigrateOptions {
  ownerUrl: string;
  rootUrl: string | null;
  shadowUrl?: string | null;
  databaseName: string;
  roles: Roles;
  /** Apply migrations/current.sql too (development and tests). */
  includeCurrent: boolean;
  log?: (line: string) => void;
}

export function migrateSettings(options: Omit<MigrateOptions, "includeCurrent">): Settings {
  const gmrc = JSON.parse(readFileSync(resolve(projectRoot, ".gmrc"), "utf8")) as Settings;
  // :DATABASE_NAME and :DATABASE_OWNER are graphile-migrate's own (reserved) placeholders.
  const { DATABASE_AUTHENTICATOR, DATABASE_VISITOR } = placeholderValues(options.databaseName, options.roles);
  const placeholders = { ":DATABASE_AUTHENTICATOR": DATABASE_AUTHENTICATOR, ":DATABASE_VISITOR": DATABASE_VISITOR };
  return {
    ...gmrc,
    migrationsFolder: resolve(projectRoot, "migrations"),
    connectionString: options.ownerUrl,
    ...(options.rootUrl ? { rootConnectionString: options.rootUrl } : {}),
    ...(options.shadowUrl ? { shadowConnectionString: options.shadowUrl } : {}),
    placeholders,
    // graphile-migrate logs every statement batch; we report progress ourselves.
    logger: new MigrateLogger((scope) => (level, message) => {
      if (level === "error" || level === "warning") console.error(`[migrate] ${message}`);
      void scope;
    }),
  };
}

export async function installWorkerSchema(ownerUrl: string): Promise<void> {
  const pool = makePool(ownerUrl, 1, "migrate");
  try {
    await runMigrations({ pgPool: pool, logger: new WorkerLogger(() => () => {}) });
  } finally {
    await pool.end();
  }
}

export async function migrateDatabase(options: MigrateOptions): Promise<void> {
  options.log?.("Installing graphile-worker's schema…");
  await installWorkerSchema(options.ownerUrl);
  const settings = migrateSettings(options);
  options.log?.("Running committed migrations…");
  await migrate(settings);
  if (options.includeCurrent) {
    options.log?.("Applying migrations/current.sql…");
    await watch(settings, true, false);
  }
}

export interface CommittedMigration {
  file: string;
  /** graphile-migrate's hash from the file's `--! Hash:` header, as stored in graphile_migrate.migrations. */
  hash: string;
}

/** The newest committed migration, or null when none is committed. */
export function latestCommittedMigration(): CommittedMigration | null {
  const folder = resolve(projectRoot, "migrations/committed");
  const file = readdirSync(folder)
    .filter((f) => /^\d{6}.*\.sql$/.test(f))
    .sort()
    .at(-1);
  if (!file) return null;
  const hash = /^--! Hash: (\S+)$/m.exec(readFileSync(resolve(folder, file), "utf8"))?.[1];
  if (!hash) throw new Error(`migrations/committed/${file} has no '--! Hash:' header`);
  return { file, hash };
}
