/**
 * The GraphQL schema is documented from SQL comments and committed as data/schema.graphql;
 * this fails when the committed file is stale (fix: npm run schema:export).
 */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import pg from "pg";
import { describe, expect, it } from "vitest";
import { loadConfig, projectRoot } from "../../src/config.ts";
import { schemaSDL } from "../../src/api/schemaExport.ts";
import { db, rootPool } from "../helpers.ts";
import { TEST_JWT_SECRET } from "../server.ts";

const SCHEMAS = ["app_public", "app_hidden", "app_private", "raw"];

describe("schema", () => {
  it("data/schema.graphql is up to date (run `npm run schema:export` after changing the database)", async () => {
    const config = loadConfig({ DATABASE_URL: db.ownerUrl, AUTH_DATABASE_URL: db.authUrl, JWT_SECRET: TEST_JWT_SECRET, DATABASE_VISITOR: db.roles.visitor });
    const pool = new pg.Pool({ connectionString: db.authUrl, max: 2 });
    try {
      const current = await schemaSDL(config, pool);
      const committed = readFileSync(resolve(projectRoot, "data/schema.graphql"), "utf8");
      expect(committed === current, "data/schema.graphql is stale: run `npm run schema:export`").toBe(true);
    } finally {
      await pool.end();
    }
  });

  it("every table, column and function in our schemas carries a comment", async () => {
    const { rows } = await rootPool().query<{ what: string }>(
      `select format('table %s.%s', n.nspname, c.relname) as what
         from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = any($1) and c.relkind in ('r', 'p', 'v', 'm') and obj_description(c.oid, 'pg_class') is null
       union all
       select format('column %s.%s.%s', n.nspname, c.relname, a.attname)
         from pg_attribute a join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = any($1) and c.relkind in ('r', 'p', 'v', 'm') and a.attnum > 0 and not a.attisdropped
          and col_description(c.oid, a.attnum) is null
       union all
       select format('function %s.%s', n.nspname, p.oid::regprocedure)
         from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where n.nspname = any($1) and obj_description(p.oid, 'pg_proc') is null
       order by 1`,
      [SCHEMAS],
    );
    expect(rows.map((r) => r.what)).toEqual([]);
  });

  it("SECURITY DEFINER functions pin their search_path and belong to the owner role, never a superuser", async () => {
    const { rows } = await rootPool().query<{ fn: string; owner: string; config: string[] | null }>(
      `select p.oid::regprocedure::text as fn, pg_get_userbyid(p.proowner) as owner, p.proconfig as config
         from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where n.nspname = any($1) and p.prosecdef`,
      [SCHEMAS],
    );
    expect(rows.length).toBeGreaterThan(0);
    const bad = rows.filter((r) => r.owner !== db.roles.owner || !(r.config ?? []).some((c) => c.startsWith("search_path=")));
    expect(bad).toEqual([]);
  });
});
