/**
 * One source file per SQL function (migrations/fixtures/<domain>/<name>.sql, see
 * migrations/fixtures/README.md). The files are the source of truth a DBA edits; these tests prove
 * that each one is exactly what the migrated database runs, so a file edited but never included
 * from current.sql (or a function changed in current.sql without its file) fails here.
 */
import { readFileSync, readdirSync } from "node:fs";
import { basename, relative, resolve } from "node:path";
import { compile } from "graphile-migrate";
import type pg from "pg";
import { describe, expect, it } from "vitest";
import { projectRoot } from "../../src/config.ts";
import { migrateSettings } from "../../src/db/migrate.ts";
import { db, ownerPool } from "../helpers.ts";
import { splitSql, stripLeading } from "../sqlSource.ts";

const migrations = resolve(projectRoot, "migrations");
const fixtures = resolve(migrations, "fixtures");
/** The schemas whose functions are ours (graphile_worker and graphile_migrate belong to the libraries). */
const OUR_SCHEMAS = ["app_public", "app_hidden", "app_private", "raw"];
/** Past this many lines (as PostgreSQL prints the definition), a function gets its own file. */
const LONG_FUNCTION_LINES = 50;

function sqlFiles(folder: string): string[] {
  return readdirSync(folder, { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile() && entry.name.endsWith(".sql"))
    .map((entry) => resolve(entry.parentPath, entry.name))
    .sort();
}

const functionFiles = sqlFiles(fixtures).map((path) => relative(fixtures, path));

/** A function or procedure name in a statement: schema-qualified, each part plain or "quoted". */
const QUALIFIED_NAME = String.raw`("(?:[^"]|"")+"|[a-z_][a-z_0-9$]*)\s*\.\s*("(?:[^"]|"")+"|[a-z_][a-z_0-9$]*)\s*\(`;
const CREATES = new RegExp(String.raw`^create\s+(?:or\s+replace\s+)?(?:function|procedure)\s+` + QUALIFIED_NAME, "i");
const ALTERS = new RegExp(String.raw`^alter\s+(?:function|procedure|routine)\s+` + QUALIFIED_NAME, "i");
const identifier = (part: string) => (part.startsWith('"') ? part.slice(1, -1).replaceAll('""', '"') : part.toLowerCase());

/** The schema.name a statement creates (`create [or replace] function|procedure`), or null. */
function createdFunction(statement: string): string | null {
  const match = CREATES.exec(stripLeading(statement));
  return match ? `${identifier(match[1]!)}.${identifier(match[2]!)}` : null;
}

/**
 * Where each function was written or changed: every `create [or replace] function|procedure` and
 * `alter function|procedure|routine` statement of the committed migrations and of current.sql, by
 * schema.name. More than one entry means the function changed after the migration that created it.
 */
function definitionHistory(): Map<string, string[]> {
  const found = new Map<string, string[]>();
  const sources = [...sqlFiles(resolve(migrations, "committed")), resolve(migrations, "current.sql")];
  for (const path of sources) {
    for (const statement of splitSql(readFileSync(path, "utf8"))) {
      const text = stripLeading(statement.text);
      const match = CREATES.exec(text) ?? ALTERS.exec(text);
      if (match) {
        const name = `${identifier(match[1]!)}.${identifier(match[2]!)}`;
        found.set(name, [...(found.get(name) ?? []), basename(path)]);
      }
    }
  }
  return found;
}

/** The function each file writes, read from its first create statement (the per-file test runs it to be sure). */
const fileFunctions = new Map(
  functionFiles.map((file) => {
    const created = splitSql(readFileSync(resolve(fixtures, file), "utf8")).map((statement) => createdFunction(statement.text)).find(Boolean);
    return [file, created ?? null] as const;
  }),
);

async function compiled(file: string): Promise<string> {
  const settings = migrateSettings({ ownerUrl: db.ownerUrl, rootUrl: null, databaseName: db.databaseName, roles: db.roles });
  return compile(settings, `--!include ${file}\n`);
}

interface FunctionState {
  signature: string;
  definition: string;
  comment: string | null;
  grants: string[];
}

/** How PostgreSQL sees the given functions now: definition, comment and grants (sorted). */
async function stateOf(client: pg.PoolClient, oids: number[]): Promise<FunctionState[]> {
  const { rows } = await client.query<FunctionState>(
    `select p.oid::regprocedure::text as signature,
            pg_catalog.pg_get_functiondef(p.oid) as definition,
            pg_catalog.obj_description(p.oid, 'pg_proc') as comment,
            coalesce((select array_agg(format('%s:%s:%s', a.grantee::regrole, a.privilege_type, a.is_grantable) order by 1)
                        from pg_catalog.aclexplode(p.proacl) a), '{}') as grants
       from pg_catalog.pg_proc p
      where p.oid = any($1::oid[])
      order by 1`,
    [oids],
  );
  return rows;
}

/**
 * Runs a function file in a transaction that is rolled back: first to learn which functions it writes
 * (the pg_proc rows this transaction touched), then again after dropping their comments and grants,
 * so a file that lacks its `comment on` or a grant leaves a difference. Returns those functions'
 * state before, as the migrated database has them, and after the second run.
 */
async function runFunctionFile(file: string): Promise<{ names: string[]; live: FunctionState[]; fromFile: FunctionState[] }> {
  const sql = await compiled(file);
  const client = await ownerPool().connect();
  try {
    await client.query("begin");
    await client.query(sql);
    const { rows: touched } = await client.query<{ oid: number; name: string }>(
      `select p.oid, p.pronamespace::regnamespace::text || '.' || p.proname as name
         from pg_catalog.pg_proc p
        where p.xmin = pg_catalog.xid(pg_catalog.pg_current_xact_id())
        order by 2`,
    );
    const oids = touched.map((row) => row.oid);
    await client.query("rollback");
    const live = await stateOf(client, oids);

    await client.query("begin");
    for (const state of live) {
      await client.query(`comment on function ${state.signature} is null`);
      for (const grant of state.grants) {
        const [grantee] = grant.split(":");
        if (grantee === db.roles.owner) continue;
        await client.query(`revoke all on function ${state.signature} from ${grantee === "-" ? "public" : grantee}`);
      }
    }
    await client.query(sql);
    const fromFile = await stateOf(client, oids);
    await client.query("rollback");
    return { names: touched.map((row) => row.name), live, fromFile };
  } catch (error) {
    await client.query("rollback").catch(() => {});
    throw error;
  } finally {
    client.release();
  }
}

describe("one source file per SQL function", () => {
  it("every function redefined or altered after its first migration, or longer than 50 lines, has a source file", async () => {
    const history = definitionHistory();
    const { rows } = await ownerPool().query<{ name: string; lines: number }>(
      `select n.nspname || '.' || p.proname as name,
              pg_catalog.array_length(pg_catalog.regexp_split_to_array(pg_catalog.pg_get_functiondef(p.oid), E'\\n'), 1) as lines
         from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
        where n.nspname = any($1)
          and p.prokind in ('f', 'p') -- pg_get_functiondef cannot print aggregates or window functions
          and not exists (select 1 from pg_catalog.pg_depend d where d.objid = p.oid and d.deptype = 'e')
        order by 1`,
      [OUR_SCHEMAS],
    );
    const withFile = new Set(fileFunctions.values());
    const missing = rows
      .filter((row) => (history.get(row.name)?.length ?? 0) > 1 || row.lines > LONG_FUNCTION_LINES)
      .filter((row) => !withFile.has(row.name))
      .map((row) => `${row.name} (${row.lines} lines, written in ${(history.get(row.name) ?? ["?"]).join(", ")})`);
    expect(missing, "functions that need a file in migrations/fixtures/<domain>/").toEqual([]);
    // The rule is not vacuous: route_lead alone was written out three times before the files existed,
    // and search_leads was changed by an alter function (000003).
    expect(history.get("app_private.route_lead")?.length).toBeGreaterThanOrEqual(3);
    expect(history.get("app_public.search_leads")).toEqual(expect.arrayContaining([expect.stringMatching(/^000003-/)]));
    expect(rows.length).toBeGreaterThan(200);
  });

  it("reads function names as PostgreSQL does: quoted or not, functions and procedures", () => {
    expect(createdFunction("-- x\ncreate or replace function app_public.route_lead(a int)")).toBe("app_public.route_lead");
    expect(createdFunction('CREATE FUNCTION App_Private."Odd ""Name"""()')).toBe('app_private.Odd "Name"');
    expect(createdFunction("create procedure raw . tidy ()")).toBe("raw.tidy");
    expect(createdFunction("create function unqualified()")).toBeNull();
    expect(createdFunction("comment on function app_public.route_lead(uuid) is 'x'")).toBeNull();
  });

  it("files sit in a folder per domain, are named after their function, and no two write the same one", () => {
    const domains = new Set(["platform", "identity", "crm", "routing", "messaging", "nurture", "servicetitan"]);
    expect(functionFiles.length).toBeGreaterThanOrEqual(50);
    for (const file of functionFiles) {
      expect(domains.has(file.split("/")[0]!), `${file} is in a domain folder`).toBe(true);
      const fn = fileFunctions.get(file);
      // <name>.sql, or <schema>.<name>.sql where two schemas have a function of that name.
      expect([fn?.split(".")[1], fn], `${file} is named after the function it creates (${fn})`).toContain(basename(file, ".sql"));
    }
    const written = [...fileFunctions.values()];
    expect(written.filter((fn, index) => written.indexOf(fn) !== index)).toEqual([]);
  });

  it.each(functionFiles)("%s defines exactly its function, as the migrated database has it, with its comment and grants", async (file) => {
    const { names, live, fromFile } = await runFunctionFile(file);
    expect(names.length, `${file} writes exactly one function (wrote: ${names.join(", ") || "none"})`).toBe(1);
    expect(names[0]).toBe(fileFunctions.get(file));
    expect(live[0]!.comment, `${names[0]} has a comment in the database`).toBeTruthy();
    // A difference here means the file was edited but not included from migrations/current.sql (or
    // the function was changed elsewhere without its file): include it, or bring the file up to date.
    expect(fromFile).toEqual(live);
  });
});
