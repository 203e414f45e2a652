/**
 * data/schema.sql: a schema-only pg_dump of our four schemas (app_public, app_hidden, app_private,
 * raw) as the migrations leave them, so a DBA reads the current shape of any table, function or
 * policy in one place and every schema change shows in a diff. `npm run schema:dump` writes it; a
 * test fails when it is stale wherever a pg_dump of the snapshot's major version can read the server.
 *
 * The dump is made deterministic: pg_dump's version lines and its random `\restrict` key are left
 * out, and role names become graphile-migrate's placeholders (:DATABASE_OWNER, …), so the file
 * does not depend on the database it came from.
 */
import { execFile } from "node:child_process";
import { existsSync, readdirSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { ConfigError, projectRoot, type Config } from "../config.ts";
import { dropDatabase, ensureRolesAndDatabase, type Roles } from "./bootstrap.ts";
import { migrateDatabase } from "./migrate.ts";
import type { PreparedDatabase } from "./setup.ts";

const run = promisify(execFile);

export const DUMPED_SCHEMAS = ["app_public", "app_hidden", "app_private", "raw"] as const;

/**
 * data/schema.sql is made by pg_dump 15 from PostgreSQL 15, the versions CI checks it with: other
 * majors print the same schema differently, and a snapshot no pass can check would go stale unseen.
 */
export const SNAPSHOT_PG_MAJOR = 15;

export interface PgDump {
  path: string;
  major: number;
}

async function majorOf(path: string): Promise<number | null> {
  try {
    const { stdout } = await run(path, ["--version"]);
    const match = /\(PostgreSQL\) (\d+)/.exec(stdout);
    return match ? Number(match[1]) : null;
  } catch {
    return null;
  }
}

/**
 * A pg_dump that can read a server of `serverMajor` (pg_dump refuses servers newer than itself):
 * PG_DUMP when set, else `pg_dump` on PATH or one of Debian's /usr/lib/postgresql/<major>/bin.
 * Prefers the server's own major version. Null when none can.
 */
export async function findPgDump(serverMajor: number): Promise<PgDump | null> {
  const candidates = process.env.PG_DUMP
    ? [process.env.PG_DUMP]
    : [
        "pg_dump",
        ...(existsSync("/usr/lib/postgresql") ? readdirSync("/usr/lib/postgresql").map((v) => `/usr/lib/postgresql/${v}/bin/pg_dump`) : []),
      ];
  const found: PgDump[] = [];
  for (const path of candidates) {
    const major = await majorOf(path);
    if (major !== null && major >= serverMajor) found.push({ path, major });
  }
  found.sort((a, b) => a.major - b.major);
  return found[0] ?? null;
}

/** The first line of data/schema.sql names the versions that made it: other majors print differently. */
export function snapshotHeader(dump: PgDump, serverMajor: number): string {
  return `-- data/schema.sql: written by \`npm run schema:dump\` with pg_dump ${dump.major} from PostgreSQL ${serverMajor}; do not edit.`;
}

/** The pg_dump major version data/schema.sql was made with, from its first line. */
export function snapshotPgDumpMajor(snapshot: string): number | null {
  const match = /^-- data\/schema\.sql: written by `npm run schema:dump` with pg_dump (\d+) /.exec(snapshot);
  return match ? Number(match[1]) : null;
}

/** Runs pg_dump (schema only, our schemas, no owners) and makes its output deterministic. */
export async function dumpSchema(options: { url: string; roles: Roles; pgDump: PgDump; serverMajor: number }): Promise<string> {
  const args = ["--schema-only", "--no-owner", ...DUMPED_SCHEMAS.flatMap((schema) => ["--schema", schema]), "--dbname", options.url];
  const { stdout } = await run(options.pgDump.path, args, { maxBuffer: 256 * 1024 * 1024 });
  return normalizeDump(stdout, options.roles, snapshotHeader(options.pgDump, options.serverMajor));
}

export function normalizeDump(dump: string, roles: Roles, header: string): string {
  const placeholders: [string, string][] = [
    [roles.authenticator, ":DATABASE_AUTHENTICATOR"],
    [roles.visitor, ":DATABASE_VISITOR"],
    [roles.owner, ":DATABASE_OWNER"],
  ];
  let text = dump
    .split("\n")
    .filter((line) => !/^\\(un)?restrict /.test(line) && !/^-- Dumped (from database|by pg_dump) version /.test(line))
    .join("\n");
  for (const [role, placeholder] of placeholders.sort((a, b) => b[0].length - a[0].length)) {
    text = text.replace(new RegExp(`(?<![A-Za-z0-9_$])${role}(?![A-Za-z0-9_$])`, "g"), placeholder);
  }
  return `${header}\n${text.replace(/\n{3,}/g, "\n\n").trim()}\n`;
}

/** The server's major version (15, 18, …). */
export async function serverMajorOf(url: string): Promise<number> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ major: number }>("select current_setting('server_version_num')::int / 10000 as major");
    return rows[0]!.major;
  } finally {
    await client.end();
  }
}

/**
 * `npm run schema:dump`: migrates a scratch database (committed migrations and current.sql, nothing
 * else that a development database may have picked up), dumps it into data/schema.sql and drops it.
 * Without a superuser URL (only DATABASE_URL + AUTH_DATABASE_URL), dumps the configured database.
 */
export async function writeSchemaSnapshot(config: Config, db: PreparedDatabase, log: (line: string) => void): Promise<void> {
  const target = resolve(projectRoot, "data/schema.sql");
  const serverMajor = await serverMajorOf(db.ownerUrl);
  const howTo =
    `Dump from a PostgreSQL ${SNAPSHOT_PG_MAJOR} with its pg_dump (on our machines: ` +
    `DATABASE_URL=postgres://postgres@127.0.0.1:5432/switchboard npm run schema:dump; PG_DUMP names another pg_dump).`;
  if (serverMajor !== SNAPSHOT_PG_MAJOR) {
    throw new ConfigError(
      `data/schema.sql is made from PostgreSQL ${SNAPSHOT_PG_MAJOR} (the version CI checks it against), but this server is ` +
        `PostgreSQL ${serverMajor}; other versions print the same schema differently. ${howTo}`,
    );
  }
  const pgDump = await findPgDump(serverMajor);
  if (!pgDump || pgDump.major !== SNAPSHOT_PG_MAJOR) {
    throw new ConfigError(`No pg_dump ${SNAPSHOT_PG_MAJOR} was found${pgDump ? ` (only pg_dump ${pgDump.major})` : ""}. ${howTo}`);
  }

  let url = db.ownerUrl;
  let scratch: string | null = null;
  if (db.rootUrl) {
    scratch = `${db.databaseName}_schema_dump`;
    log(`Creating the scratch database ${scratch}…`);
    await dropDatabase(db.rootUrl, scratch);
    const urls = await ensureRolesAndDatabase({
      rootUrl: db.rootUrl,
      databaseName: scratch,
      roles: config.roles,
      ownerPassword: config.ownerPassword,
      authenticatorPassword: config.authenticatorPassword,
    });
    await migrateDatabase({ ...urls, roles: config.roles, includeCurrent: !config.production, log });
    url = urls.ownerUrl;
  } else {
    log(`No superuser URL: dumping ${db.databaseName} as it is.`);
  }
  try {
    log(`Dumping ${DUMPED_SCHEMAS.join(", ")} with ${pgDump.path} (pg_dump ${pgDump.major}, PostgreSQL ${serverMajor})…`);
    const snapshot = await dumpSchema({ url, roles: config.roles, pgDump, serverMajor });
    writeFileSync(target, snapshot);
    log(`Wrote data/schema.sql (${snapshot.split("\n").length.toLocaleString("en-US")} lines).`);
  } finally {
    if (scratch) await dropDatabase(db.rootUrl!, scratch);
  }
}
