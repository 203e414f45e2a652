/**
 * Tenant isolation, generated from the catalog: every table in app_public, app_hidden, app_private
 * and raw is checked, so a new table is covered without anyone adding a test. As the owner of
 * tenant A (the most privileged member), tenant B's rows can't be read, changed or deleted, and a
 * row claiming tenant B can't be inserted (SQLSTATE 42501).
 *
 * Which rows are "tenant B's" is read from the columns: tenant_id; for per-user tables, user_id of
 * a user who belongs only to B. A table with neither fails the suite, as does a table without B
 * rows in the fixture below (extend seedTenant when you add a table).
 */
import type pg from "pg";
import { describe, expect, it } from "vitest";
import { becomeRoot, becomeUser, becomeAnonymous, db, expectSqlError, registerUser, withRootDb, type RegisteredUser, inSavepoint } from "../helpers.ts";
import { seedAnalysis } from "../fixtures/analysis.ts";
import { seedHistory } from "../fixtures/history.ts";
import { seedImport } from "../fixtures/import.ts";
import { seedForms } from "../fixtures/forms.ts";
import { seedWebhooks } from "../fixtures/webhooks.ts";
import { seedLedger } from "../fixtures/ledger.ts";
import { seedRouting } from "../fixtures/routing.ts";
import { seedEmail } from "../fixtures/email.ts";
import { seedNurture } from "../fixtures/nurture.ts";
import { seedTelephony } from "../fixtures/telephony.ts";
import { seedServiceTitan } from "../fixtures/serviceTitan.ts";

const SCHEMAS = ["app_public", "app_hidden", "app_private", "raw"];

interface TableInfo {
  schema: string;
  name: string;
  rls: boolean;
  forced: boolean;
  columns: string[];
}

async function tables(client: pg.ClientBase): Promise<TableInfo[]> {
  const { rows } = await client.query<TableInfo>(
    `select n.nspname as schema, c.relname as name, c.relrowsecurity as rls, c.relforcerowsecurity as forced,
            array(select a.attname::text from pg_attribute a where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped order by a.attnum) as columns
       from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = any($1) and c.relkind in ('r', 'p')
      order by 1, 2`,
    [SCHEMAS],
  );
  return rows;
}

const qualified = (t: TableInfo) => `${t.schema}.${t.name}`;

/**
 * Tenant B with a row in every table: a member, an invitation, an API key, account tokens, settings, config, and a
 * lead with its history (audit, status, score, assignment) and a do-not-contact entry.
 */
async function seedTenant(client: pg.ClientBase, owner: RegisteredUser): Promise<void> {
  await becomeUser(client, owner);
  await client.query("select app_public.invite_member($1, 'agent')", [`invitee-${owner.user_id.slice(0, 8)}@example.test`]);
  await client.query("select app_public.create_api_key('isolation fixture', 'agent')");
  // Account tokens: a pending change of address and a password reset.
  await client.query("select app_public.request_email_change($1, $2)", [`moved-${owner.user_id.slice(0, 8)}@example.test`, owner.password]);
  await client.query("select app_public.request_password_reset($1)", [owner.email]);
  await client.query(
    "insert into app_public.system_config (key, value, value_type, description) values ('fixture.flag', 'true', 'boolean', 'isolation fixture')",
  );
  const phone = `+1202555${String(Math.floor(Math.random() * 10000)).padStart(4, "0")}`;
  const { rows } = await client.query<{ id: string }>(
    "insert into app_public.leads (first_name, phone, source) values ('Fixture', $1, 'isolation') returning id",
    [phone],
  );
  await client.query("update app_public.leads set status = 'contacted' where id = $1", [rows[0]!.id]);
  await client.query("insert into app_public.dnc_list (phone, reason) values ('+12025550000', 'isolation fixture')");
  // Each area's own fixture (test/fixtures/*.ts) fills its tables.
  for (const seed of [seedHistory, seedAnalysis, seedLedger, seedImport, seedRouting, seedTelephony, seedEmail, seedNurture, seedServiceTitan, seedForms, seedWebhooks]) {
    await seed(client, owner, rows[0]!.id);
    await becomeUser(client, owner);
  }
  await becomeRoot(client);
  // Owner and score change only through managed paths; as root we write them directly to fire the history triggers.
  await client.query("update app_public.leads set owner_user_id = $2, lead_score = 42 where id = $1", [rows[0]!.id, owner.user_id]);
}

/**
 * The column that says who owns a row: tenant_id, or for per-user tables the user; null when
 * ownership can't be told. "tenant" compares with tenant B's id, "user" with B's owner's user id.
 */
function ownerColumn(t: TableInfo): { column: string; of: "tenant" | "user" } | null {
  if (t.columns.includes("tenant_id")) return { column: "tenant_id", of: "tenant" };
  if (qualified(t) === "app_public.tenants") return { column: "id", of: "tenant" };
  if (qualified(t) === "app_public.users") return { column: "id", of: "user" };
  if (t.columns.includes("user_id")) return { column: "user_id", of: "user" };
  return null;
}

describe("tenant isolation (generated from the catalog)", () => {
  it("every table in the app schemas has row level security enabled and forced", async () => {
    await withRootDb(async (client) => {
      const all = await tables(client);
      expect(all.length).toBeGreaterThan(10);
      const unprotected = all.filter((t) => !t.rls || !t.forced).map((t) => `${qualified(t)} (rls=${t.rls}, forced=${t.forced})`);
      expect(unprotected).toEqual([]);
    });
  });

  it("as a member of tenant A, no table reveals, changes, deletes or accepts tenant B's rows", async () => {
    await withRootDb(async (client) => {
      const a = await registerUser(client, { businessName: "Tenant A" });
      const b = await registerUser(client, { businessName: "Tenant B" });
      await seedTenant(client, a);
      await seedTenant(client, b);
      const all = await tables(client);

      const problems: string[] = [];
      for (const t of all) {
        const target = ownerColumn(t);
        if (!target) {
          // Shared reference data (e.g. lead_statuses) is allowed only if requests can't change it.
          await becomeRoot(client);
          const { rows: writable } = await client.query<{ w: boolean }>(
            `select has_table_privilege($1, $2, 'insert') or has_table_privilege($1, $2, 'update') or has_table_privilege($1, $2, 'delete') as w`,
            [db.roles.visitor, qualified(t)],
          );
          if (writable[0]!.w) problems.push(`${qualified(t)}: no tenant_id or user_id column, yet requests may write it`);
          continue;
        }
        const predicate = `"${target.column}" = $1::uuid`;
        const params = [target.of === "tenant" ? b.tenant_id : b.user_id];
        // The fixture must give B at least one row here, or the checks below prove nothing.
        await becomeRoot(client);
        const { rows: fixture } = await client.query<{ n: string }>(`select count(*) as n from ${qualified(t)} where ${predicate}`, params);
        if (Number(fixture[0]!.n) === 0) {
          problems.push(`${qualified(t)}: the isolation fixture has no tenant B rows (extend seedTenant)`);
          continue;
        }
        const privileges = await client.query<{ sel: boolean; del: boolean; upd: string | null }>(
          `select has_any_column_privilege($1, $2, 'select') as sel, has_table_privilege($1, $2, 'delete') as del,
                  (select a.attname::text from pg_attribute a where a.attrelid = $2::regclass and a.attnum > 0 and not a.attisdropped
                     and has_column_privilege($1, $2, a.attname::text, 'update') order by a.attnum limit 1) as upd`,
          [db.roles.visitor, qualified(t)],
        );
        const priv = privileges.rows[0]!;
        await becomeUser(client, a);

        // select
        if (priv.sel) {
          const { rows } = await inSavepoint(client, () => client.query<{ n: string }>(`select count(*) as n from ${qualified(t)} where ${predicate}`, params));
          if (Number(rows[0]!.n) !== 0) problems.push(`${qualified(t)}: select shows ${rows[0]!.n} of tenant B's rows`);
        } else {
          await expectSqlError(client, "42501", () => client.query(`select 1 from ${qualified(t)} limit 1`));
        }
        // update
        if (priv.upd) {
          const col = `"${priv.upd}"`;
          const result = await inSavepoint(client, () => client.query(`update ${qualified(t)} set ${col} = ${col} where ${predicate}`, params));
          if (result.rowCount !== 0) problems.push(`${qualified(t)}: update changed ${result.rowCount} of tenant B's rows`);
        } else {
          // (the ownership column: an identity column would fail with 428C9 before the privilege check)
          await expectSqlError(client, "42501", () => client.query(`update ${qualified(t)} set "${target.column}" = "${target.column}" where ${predicate}`, params));
        }
        // delete
        if (priv.del) {
          const result = await inSavepoint(client, () => client.query(`delete from ${qualified(t)} where ${predicate}`, params));
          if (result.rowCount !== 0) problems.push(`${qualified(t)}: delete removed ${result.rowCount} of tenant B's rows`);
        } else {
          await expectSqlError(client, "42501", () => client.query(`delete from ${qualified(t)} where ${predicate}`, params));
        }
        // insert claiming tenant B
        await expectSqlError(client, "42501", () =>
          client.query(`insert into ${qualified(t)} ("${target.column}") values ($1::uuid)`, params),
        );
      }
      expect(problems).toEqual([]);
    });
  });

  it("every unique key and foreign key on tenant data includes tenant_id (generated primary keys and provider ids the visitor can't write excepted)", async () => {
    await withRootDb(async (client) => {
      const { rows } = await client.query<{ what: string }>(
        `with tenant_tables as (
           select c.oid from pg_class c join pg_namespace n on n.oid = c.relnamespace
            where n.nspname = any($1) and c.relkind in ('r', 'p')
              and exists (select 1 from pg_attribute a where a.attrelid = c.oid and a.attname = 'tenant_id' and not a.attisdropped)
         )
         select format('%s: %s %s', con.conrelid::regclass, con.conname, pg_get_constraintdef(con.oid)) as what
           from pg_constraint con
          where con.conrelid in (select oid from tenant_tables)
            and con.contype in ('u', 'p', 'f')
            and not exists (select 1 from pg_attribute a where a.attrelid = con.conrelid and a.attname = 'tenant_id' and a.attnum = any(con.conkey))
            -- foreign keys to global tables (users) are not tenant data
            and not (con.contype = 'f' and con.confrelid not in (select oid from tenant_tables))
            -- a unique key on columns no request can write (provider ids such as a Twilio CallSid, globally unique by nature)
            and not (con.contype = 'u' and not exists (
                       select 1 from pg_attribute a where a.attrelid = con.conrelid and a.attnum = any(con.conkey)
                          and (has_column_privilege($2, con.conrelid, a.attname, 'insert') or has_column_privilege($2, con.conrelid, a.attname, 'update'))))
            -- a single generated primary key (random uuid or identity) is fine when requests can't supply it
            and not (con.contype = 'p' and array_length(con.conkey, 1) = 1
                     and (select (a.atttypid = 'uuid'::regtype or a.attidentity <> '') and not has_column_privilege($2, con.conrelid, a.attname, 'insert')
                            from pg_attribute a where a.attrelid = con.conrelid and a.attnum = con.conkey[1]))
          order by 1`,
        [SCHEMAS, db.roles.visitor],
      );
      expect(rows.map((r) => r.what)).toEqual([]);
    });
  });

  it("missing, empty and garbage tenant settings see no tenant data and the helpers return NULL", async () => {
    await withRootDb(async (client) => {
      const a = await registerUser(client);
      await seedTenant(client, a);
      const all = (await tables(client)).filter((t) => t.schema === "app_public" && t.columns.includes("tenant_id"));
      const variants: Array<[string, Record<string, string>]> = [
        ["missing", {}],
        ["empty", { "app.current_tenant_id": "", "app.current_user_id": "", "app.current_session_id": "" }],
        ["garbage", { "app.current_tenant_id": "not-a-uuid", "app.current_user_id": "x'; drop table users; --", "app.current_session_id": "42" }],
        // A well-formed tenant id without a valid session is not enough either.
        ["tenant id without a session", { "app.current_tenant_id": a.tenant_id! }],
      ];
      for (const [label, settings] of variants) {
        await becomeAnonymous(client);
        for (const [key, value] of Object.entries(settings)) await client.query("select set_config($1, $2, true)", [key, value]);
        const { rows: helpers } = await client.query(
          "select app_public.current_tenant_id() as t, app_public.current_user_id() as u, app_public.current_session_id() as s",
        );
        expect(helpers[0], label).toEqual({ t: null, u: null, s: null });
        for (const t of all) {
          const canSelect = await client.query<{ ok: boolean }>("select has_table_privilege($1, $2, 'select') as ok", [db.roles.visitor, qualified(t)]);
          if (!canSelect.rows[0]!.ok) continue;
          const { rows } = await client.query<{ n: string }>(`select count(*) as n from ${qualified(t)}`);
          expect(Number(rows[0]!.n), `${label}: ${qualified(t)}`).toBe(0);
        }
      }
    });
  });

  it("a pooled authenticator connection reused after another tenant's request sees nothing of it", async () => {
    // Committed data (a pooled connection can't share our rolled-back transaction); cleaned up below.
    const setup = await import("../helpers.ts");
    const root = await setup.rootPool().connect();
    let a: RegisteredUser;
    try {
      a = await registerUser(root, { businessName: "Pooled A" });
    } finally {
      root.release();
    }
    const pool = setup.poolFor(db.authUrl, 1);
    const client = await pool.connect();
    try {
      // Request 1: tenant A's owner.
      await client.query("begin");
      await client.query(`set local role ${db.roles.visitor}`);
      await client.query("select set_config('app.current_user_id', $1, true), set_config('app.current_tenant_id', $2, true), set_config('app.current_session_id', $3, true)", [a.user_id, a.tenant_id, a.session_id]);
      const first = await client.query("select id from app_public.tenants");
      expect(first.rows.map((r) => r.id)).toEqual([a.tenant_id]);
      await client.query("commit");
      // Request 2 on the same connection, anonymous: the cleared settings read as '' and must mean "nobody".
      await client.query("begin");
      await client.query(`set local role ${db.roles.visitor}`);
      const leftovers = await client.query("select current_setting('app.current_tenant_id', true) as t");
      expect(leftovers.rows[0].t === "" || leftovers.rows[0].t === null).toBe(true);
      const second = await client.query("select id from app_public.tenants");
      expect(second.rows).toEqual([]);
      const users = await client.query("select id from app_public.users");
      expect(users.rows).toEqual([]);
      await client.query("commit");
    } finally {
      client.release();
      const cleanup = await setup.rootPool().connect();
      try {
        await cleanup.query("delete from app_public.tenants where id = $1", [a!.tenant_id]);
        await cleanup.query("delete from app_public.users where id = $1", [a!.user_id]);
      } finally {
        cleanup.release();
      }
    }
  });
});
