/**
 * Creates Switchboard's roles and database on a server we hold a superuser URL for
 * (the embedded cluster, or DATABASE_URL pointing at an empty server). Idempotent:
 * existing roles get their passwords and attributes re-asserted; an existing database is kept.
 */
import pg from "pg";
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { ConfigError, projectRoot, withCredentials, withDatabase } from "../config.ts";

export interface Roles {
  owner: string;
  authenticator: string;
  visitor: string;
}

export interface DatabaseUrls {
  rootUrl: string | null;
  ownerUrl: string;
  authUrl: string;
  shadowUrl: string | null;
  databaseName: string;
}

const ident = (name: string) => pg.escapeIdentifier(name);
const literal = (value: string) => pg.escapeLiteral(value);

/** graphile-migrate's placeholder substitution, done the same way for afterReset.sql. */
export function substitutePlaceholders(sql: string, values: Record<string, string>): string {
  return sql.replace(/:(DATABASE_[A-Z_]+)\b/g, (match, key: string) => {
    const value = values[key];
    if (value === undefined) throw new Error(`Unknown placeholder ${match}`);
    return value;
  });
}

export interface PlaceholderValues {
  [key: string]: string;
  DATABASE_NAME: string;
  DATABASE_OWNER: string;
  DATABASE_AUTHENTICATOR: string;
  DATABASE_VISITOR: string;
}

export function placeholderValues(databaseName: string, roles: Roles): PlaceholderValues {
  return {
    DATABASE_NAME: databaseName,
    DATABASE_OWNER: roles.owner,
    DATABASE_AUTHENTICATOR: roles.authenticator,
    DATABASE_VISITOR: roles.visitor,
  };
}

async function connect(url: string, what: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
  try {
    await client.connect();
  } catch (error) {
    const e = error as Error & { code?: string };
    throw new ConfigError(`Could not connect to ${what} (${redact(url)}): ${e.message}`);
  }
  return client;
}

export function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "(invalid URL)";
  }
}

export async function ensureRolesAndDatabase(options: {
  rootUrl: string;
  databaseName: string;
  roles: Roles;
  ownerPassword: string;
  authenticatorPassword: string;
  /** Also create `<name>_shadow` for graphile-migrate commit/watch (development). */
  shadow?: boolean;
  log?: (line: string) => void;
}): Promise<DatabaseUrls> {
  const { rootUrl, databaseName, roles } = options;
  const root = await connect(rootUrl, "PostgreSQL as superuser");
  try {
    const { rows } = await root.query<{ rolsuper: boolean }>("select rolsuper from pg_roles where rolname = current_user");
    if (!rows[0]?.rolsuper) {
      throw new ConfigError(
        "DATABASE_URL's user is not a superuser, so Switchboard cannot create its roles and database. " +
          "Either give a superuser URL, or create the roles yourself and set DATABASE_URL (owner) and AUTH_DATABASE_URL (authenticator).",
      );
    }
    const existing = new Set(
      (await root.query<{ rolname: string }>("select rolname from pg_roles where rolname = any($1)", [Object.values(roles)])).rows.map(
        (r) => r.rolname,
      ),
    );
    const ensureRole = async (name: string, attributes: string) => {
      if (!existing.has(name)) {
        options.log?.(`Creating role ${name}`);
        await root.query(`create role ${ident(name)} ${attributes}`);
      } else {
        await root.query(`alter role ${ident(name)} ${attributes}`);
      }
    };
    await ensureRole(roles.owner, `login nosuperuser createdb password ${literal(options.ownerPassword)}`);
    await ensureRole(roles.authenticator, `login noinherit nosuperuser nocreatedb nocreaterole password ${literal(options.authenticatorPassword)}`);
    await ensureRole(roles.visitor, "nologin nosuperuser");
    await root.query(`grant ${ident(roles.visitor)} to ${ident(roles.authenticator)}`);

    const databases = [databaseName, ...(options.shadow ? [`${databaseName}_shadow`] : [])];
    for (const db of databases) {
      const found = await root.query("select 1 from pg_database where datname = $1", [db]);
      if (found.rowCount === 0) {
        options.log?.(`Creating database ${db}`);
        await root.query(`create database ${ident(db)} owner ${ident(roles.owner)} encoding 'UTF8' template template0`);
        try {
          await runAfterReset(withDatabase(rootUrl, db), db, roles);
        } catch (error) {
          // Nothing half-written: a database without its extensions and grants is removed again.
          await root.query(`drop database if exists ${ident(db)}`);
          throw error;
        }
      }
    }
  } finally {
    await root.end();
  }
  const base = withDatabase(rootUrl, databaseName);
  return {
    rootUrl: withDatabase(rootUrl, "template1"),
    ownerUrl: withCredentials(base, roles.owner, options.ownerPassword),
    authUrl: withCredentials(base, roles.authenticator, options.authenticatorPassword),
    shadowUrl: options.shadow ? withCredentials(withDatabase(rootUrl, `${databaseName}_shadow`), roles.owner, options.ownerPassword) : null,
    databaseName,
  };
}

/** migrations/afterReset.sql, as superuser, on a freshly created database. */
export async function runAfterReset(rootDbUrl: string, databaseName: string, roles: Roles): Promise<void> {
  const sql = await readFile(resolve(projectRoot, "migrations/afterReset.sql"), "utf8");
  const client = await connect(rootDbUrl, `database ${databaseName} as superuser`);
  try {
    await client.query(substitutePlaceholders(sql, placeholderValues(databaseName, roles)));
  } finally {
    await client.end();
  }
}

/** Drops and recreates a database (tests and `gm reset` only). */
export async function dropDatabase(rootUrl: string, databaseName: string): Promise<void> {
  const root = await connect(rootUrl, "PostgreSQL as superuser");
  try {
    await root.query(`drop database if exists ${ident(databaseName)} with (force)`);
  } finally {
    await root.end();
  }
}
