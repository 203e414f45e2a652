/**
 * Lead history in SQL, as the roles that use it: the audit triggers (users, API keys, the
 * system), status/score/assignment histories, reassign_lead, duplicate phones (also under
 * concurrency), soft delete and restore, the do-not-contact list and the lead timeline.
 */
import pg from "pg";
import { describe, expect, it } from "vitest";
import {
  addMember,
  becomeApiKey,
  becomeRoot,
  becomeUser,
  db,
  expectSqlError,
  registerUser,
  rootPool,
  withRootDb,
  type RegisteredUser,
} from "../helpers.ts";
import { seedHistory } from "../fixtures/history.ts";

// Distinct numbers within this file (a random start, then counting), so two leads of one test never collide by chance.
let phoneCounter = Math.floor(Math.random() * 10000);
const randomPhone = (prefix = "+1202555") => `${prefix}${String(phoneCounter++ % 10000).padStart(4, "0")}`;

async function insertLead(client: pg.ClientBase, fields: Record<string, unknown> = {}): Promise<Record<string, any>> {
  const values = { first_name: "Ann", phone: randomPhone(), ...fields };
  const columns = Object.keys(values);
  const { rows } = await client.query(
    `insert into app_public.leads (${columns.map((c) => pg.escapeIdentifier(c)).join(", ")})
     values (${columns.map((_, i) => `$${i + 1}`).join(", ")}) returning *`,
    Object.values(values),
  );
  return rows[0]!;
}

/** Audit rows of a lead, oldest first (read as root so nothing is hidden). */
async function auditRows(client: pg.ClientBase, leadId: string): Promise<Array<Record<string, any>>> {
  const { rows } = await client.query(
    `select field_name, old_value, new_value, changed_by_user_id, changed_by_api_key_id, change_source
       from app_public.lead_audit_log where lead_id = $1 order by id`,
    [leadId],
  );
  return rows;
}

async function asRoot<T>(client: pg.ClientBase, back: RegisteredUser | null, fn: () => Promise<T>): Promise<T> {
  await becomeRoot(client);
  try {
    return await fn();
  } finally {
    if (back) await becomeUser(client, back);
  }
}

interface HistoryCounts {
  leads: number;
  audit: number;
  status: number;
  score: number;
  assignments: number;
  dnc: number;
  dnc_audit: number;
}

/** Number of rows in every history table for a tenant. */
async function historyCounts(client: pg.ClientBase, tenantId: string): Promise<HistoryCounts> {
  const { rows } = await client.query<HistoryCounts>(
    `select (select count(*) from app_public.leads where tenant_id = $1)::int as leads,
            (select count(*) from app_public.lead_audit_log where tenant_id = $1)::int as audit,
            (select count(*) from app_public.lead_status_history where tenant_id = $1)::int as status,
            (select count(*) from app_public.lead_score_history where tenant_id = $1)::int as score,
            (select count(*) from app_public.lead_assignments where tenant_id = $1)::int as assignments,
            (select count(*) from app_public.dnc_list where tenant_id = $1)::int as dnc,
            (select count(*) from app_public.dnc_audit_log where tenant_id = $1)::int as dnc_audit`,
    [tenantId],
  );
  return rows[0]!;
}

describe("the audit trigger on leads", () => {
  it("as a user: insert writes one *created* row (without ignored columns), update one row per changed field", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      await becomeUser(client, owner);
      const lead = await insertLead(client, { first_name: "Ann", last_name: "Lee", email: "ann@example.test" });

      let rows = await asRoot(client, owner, () => auditRows(client, lead.id));
      expect(rows).toHaveLength(1);
      expect(rows[0]).toMatchObject({
        field_name: "*created*",
        old_value: null,
        changed_by_user_id: owner.user_id,
        changed_by_api_key_id: null,
        change_source: "manual",
      });
      expect(rows[0]!.new_value).toMatchObject({ id: lead.id, first_name: "Ann", last_name: "Lee", email: "ann@example.test", phone: lead.phone, status: "new" });
      expect(rows[0]!.new_value).not.toHaveProperty("updated_at");
      expect(rows[0]!.new_value).not.toHaveProperty("full_name");

      // Two fields change (full_name and updated_at change too, but are ignored); email is set to itself.
      await client.query("update app_public.leads set first_name = 'Anna', city = 'Austin', email = email where id = $1", [lead.id]);
      rows = await asRoot(client, owner, () => auditRows(client, lead.id));
      expect(rows.slice(1).map((r) => [r.field_name, r.old_value, r.new_value])).toEqual([
        ["first_name", "Ann", "Anna"],
        ["city", null, "Austin"],
      ]);
      expect(rows.slice(1).every((r) => r.changed_by_user_id === owner.user_id && r.change_source === "manual")).toBe(true);

      // Non-text values keep their JSON types; clearing a value records null.
      await client.query("update app_public.leads set tags = '{vip,roof}', estimated_value = 1250.5, city = null where id = $1", [lead.id]);
      rows = await asRoot(client, owner, () => auditRows(client, lead.id));
      expect(rows.slice(3).map((r) => [r.field_name, r.old_value, r.new_value])).toEqual([
        ["city", "Austin", null],
        ["tags", [], ["vip", "roof"]],
        ["estimated_value", null, 1250.5],
      ]);

      // Nothing changes: nothing is written.
      await client.query("update app_public.leads set first_name = first_name where id = $1", [lead.id]);
      expect(await asRoot(client, owner, () => auditRows(client, lead.id))).toHaveLength(6);
    });
  });

  it("an insert of several leads writes one *created* row each, dated when the statement started, with the first status", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      await becomeUser(client, owner);
      const { rows: made } = await client.query<{ id: string; started: Date }>(
        `insert into app_public.leads (tenant_id, first_name, phone, status)
         select app_public.current_tenant_id(), 'Batch ' || i, '+1512555' || (1000 + i), 'contacted' from generate_series(1, 3) i
         returning id, statement_timestamp() as started`,
      );
      const ids = made.map((r) => r.id);
      const { rows } = await asRoot(client, owner, () =>
        client.query<{ lead_id: string; field_name: string; changed_at: Date; first_status_at: Date; first_status: string; new_first_name: string }>(
          `select a.lead_id, a.field_name, a.changed_at, a.new_value ->> 'first_name' as new_first_name,
                  h.changed_at as first_status_at, h.to_status as first_status
             from app_public.lead_audit_log a
             join app_public.lead_status_history h on h.lead_id = a.lead_id
            where a.lead_id = any($1) order by a.new_value ->> 'first_name'`,
          [ids],
        ),
      );
      expect(rows.map((r) => [r.field_name, r.new_first_name, r.first_status])).toEqual([
        ["*created*", "Batch 1", "contacted"],
        ["*created*", "Batch 2", "contacted"],
        ["*created*", "Batch 3", "contacted"],
      ]);
      for (const r of rows) {
        expect(r.changed_at.getTime()).toBe(made[0]!.started.getTime());
        expect(r.first_status_at.getTime()).toBe(r.changed_at.getTime());
      }
    });
  });

  it("as an API key: the key is the actor and no user is recorded", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      await becomeUser(client, owner);
      const lead = await insertLead(client);
      const { rows: keys } = await client.query("select k.id, k.secret from app_public.create_api_key('CRM sync', 'manager') k");
      await becomeApiKey(client, keys[0].secret);
      await client.query("update app_public.leads set job_type = 'water_heater' where id = $1", [lead.id]);
      const created = await insertLead(client, { first_name: "Key" });

      const rows = await asRoot(client, null, () => auditRows(client, lead.id));
      expect(rows.at(-1)).toMatchObject({
        field_name: "job_type",
        new_value: "water_heater",
        changed_by_user_id: null,
        changed_by_api_key_id: keys[0].id,
        change_source: "manual",
      });
      const createdRows = await auditRows(client, created.id);
      expect(createdRows).toMatchObject([{ field_name: "*created*", changed_by_user_id: null, changed_by_api_key_id: keys[0].id }]);
      const { rows: status } = await client.query("select trigger_type, changed_by_user_id from app_public.lead_status_history where lead_id = $1", [created.id]);
      expect(status).toEqual([{ trigger_type: "manual", changed_by_user_id: null }]);
    });
  });

  it("as the system: no actor, change_source from app.change_source (unknown values fall back)", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      await becomeUser(client, owner);
      const lead = await insertLead(client);

      await becomeRoot(client);
      await client.query("update app_public.leads set city = 'Reno' where id = $1", [lead.id]);
      await client.query("select set_config('app.change_source', 'import', true)");
      await client.query("update app_public.leads set city = 'Elko' where id = $1", [lead.id]);
      await client.query("select set_config('app.change_source', 'bogus', true)");
      await client.query("update app_public.leads set city = 'Ely' where id = $1", [lead.id]);
      // A user with a valid source keeps it; with an unknown one it is manual.
      await becomeUser(client, owner);
      await client.query("select set_config('app.change_source', 'webhook', true)");
      await client.query("update app_public.leads set city = 'Vegas' where id = $1", [lead.id]);
      await client.query("select set_config('app.change_source', 'nonsense', true)");
      await client.query("update app_public.leads set city = 'Sparks' where id = $1", [lead.id]);

      const rows = await asRoot(client, null, () => auditRows(client, lead.id));
      expect(rows.slice(1).map((r) => [r.new_value, r.changed_by_user_id, r.changed_by_api_key_id, r.change_source])).toEqual([
        ["Reno", null, null, "system"],
        ["Elko", null, null, "import"],
        ["Ely", null, null, "system"],
        ["Vegas", owner.user_id, null, "webhook"],
        ["Sparks", owner.user_id, null, "manual"],
      ]);
    });
  });

  it("writes exactly what the generic audit trigger writes, over random inserts and updates by a user and by the system (with and without a change source)", async () => {
    // tg_leads__audit is the rule of tg__audit_changes written out with static SQL for leads: the
    // generic trigger, attached beside it and writing into a copy of the log, must agree row for row.
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const { rows: fn } = await client.query("select proowner::regrole::text as role from pg_proc where oid = 'app_private.tg__audit_changes'::regproc");
      await client.query("create temporary table lead_audit_copy (like app_public.lead_audit_log including defaults including identity)");
      await client.query(`grant insert, select on pg_temp.lead_audit_copy to ${pg.escapeIdentifier(fn[0].role)}`);
      await client.query(
        `create trigger _501_audit_copy after insert or update on app_public.leads for each row
           execute function app_private.tg__audit_changes('pg_temp.lead_audit_copy', 'lead_id', 'updated_at', 'full_name')`,
      );
      const leadIds: string[] = [];
      const changes: Array<[string, string]> = [
        ["first_name", "'Bo'"], ["last_name", "null"], ["city", "'Austin'"], ["city", "upper(city)"], ["tags", "'{vip,roof}'"],
        ["tags", "'{}'"], ["estimated_value", "1250.5"], ["estimated_value", "estimated_value"], ["lead_score", "42"],
        ["status", "'contacted'"], ["attributes", `'{"latitude": 30.1, "nested": {"a": [1, 2]}}'`], ["email", "'x@example.test'"],
        ["owner_user_id", `'${owner.user_id}'`], ["region", "'TX'"], ["problem_description", "'called twice'"], ["event_date", "current_date + 3"],
        ["email", "null"], ["city", "null"], ["deleted_at", "now()"], ["deleted_at", "null"], ["owner_user_id", "null"],
      ];
      // mulberry32: the same sequence on every run.
      let seed = 7;
      const random = (n: number) => {
        seed = (seed + 0x6d2b79f5) | 0;
        let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
        t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
        return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
      };
      for (let i = 0; i < 60; i++) {
        const actor = random(3);
        if (actor === 0) await becomeUser(client, owner);
        else await becomeRoot(client);
        if (actor === 2) await client.query("select set_config('app.change_source', 'import', true)");
        if (leadIds.length === 0 || random(4) === 0) {
          const lead = await insertLead(client, { tenant_id: owner.tenant_id, first_name: `Lead ${i}`, city: random(2) ? "Dallas" : null });
          leadIds.push(lead.id);
        } else {
          const picks = [changes[random(changes.length)]!, changes[random(changes.length)]!];
          const sets = [...new Map(picks.map(([column, value]) => [column, `${pg.escapeIdentifier(column)} = ${value}`])).values()];
          // Requests cannot write deleted_at (delete_lead and restore_lead do): the system does.
          if (picks.some(([column]) => column === "deleted_at")) await becomeRoot(client);
          await client.query(`update app_public.leads set ${sets.join(", ")} where id = $1`, [leadIds[random(leadIds.length)]]);
        }
        await becomeRoot(client);
        await client.query("select set_config('app.change_source', '', true)");
      }
      const read = async (table: string) =>
        (
          await client.query(
            // As text, so that a JSON null and an SQL NULL differ.
            `select lead_id, field_name, old_value::text, new_value::text, changed_by_user_id, changed_by_api_key_id, change_source
               from ${table} where lead_id = any ($1::uuid[]) order by id`,
            [leadIds],
          )
        ).rows;
      const generic = await read("pg_temp.lead_audit_copy");
      expect(generic.length).toBeGreaterThan(40);
      expect(await read("app_public.lead_audit_log")).toEqual(generic);
    });
  });

  it("a hard delete (root only: requests can't delete leads) takes the lead's history with it", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      await becomeUser(client, owner);
      const lead = await insertLead(client, { owner_user_id: owner.user_id });
      await expectSqlError(client, "42501", () => client.query("delete from app_public.leads where id = $1", [lead.id]));
      await becomeRoot(client);
      await client.query("delete from app_public.leads where id = $1", [lead.id]);
      expect(await auditRows(client, lead.id)).toEqual([]);
      const counts = await historyCounts(client, owner.tenant_id!);
      expect(counts).toMatchObject({ leads: 0, audit: 0, status: 0, assignments: 0 });
    });
  });
});

describe("status, score and assignment histories", () => {
  it("status: one row on insert and one per actual change, with the change source as trigger_type", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      await becomeUser(client, owner);
      const lead = await insertLead(client);
      await client.query("update app_public.leads set status = 'contacted' where id = $1", [lead.id]);
      await client.query("update app_public.leads set status = 'contacted', city = 'Provo' where id = $1", [lead.id]); // no change
      await client.query("select set_config('app.change_source', 'automation', true)");
      await client.query("update app_public.leads set status = 'nurturing' where id = $1", [lead.id]);
      await becomeRoot(client);
      await client.query("select set_config('app.change_source', '', true)");
      await client.query("update app_public.leads set status = 'qualified' where id = $1", [lead.id]);
      const { rows } = await client.query(
        "select from_status, to_status, trigger_type, changed_by_user_id from app_public.lead_status_history where lead_id = $1 order by id",
        [lead.id],
      );
      expect(rows).toEqual([
        { from_status: null, to_status: "new", trigger_type: "manual", changed_by_user_id: owner.user_id },
        { from_status: "new", to_status: "contacted", trigger_type: "manual", changed_by_user_id: owner.user_id },
        { from_status: "contacted", to_status: "nurturing", trigger_type: "automation", changed_by_user_id: owner.user_id },
        { from_status: "nurturing", to_status: "qualified", trigger_type: "system", changed_by_user_id: null },
      ]);
    });
  });

  it("score: a row when lead_score or lead_score_factors change, on insert only for a score other than 0", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      await becomeRoot(client);
      const zero = await insertLead(client, { tenant_id: owner.tenant_id });
      const scored = await insertLead(client, { tenant_id: owner.tenant_id, lead_score: 30, lead_score_factors: { total: 30 } });
      await client.query("update app_public.leads set lead_score = 55, lead_score_factors = '{\"total\": 55}' where id = $1", [zero.id]);
      await client.query("update app_public.leads set lead_score_factors = '{\"total\": 55, \"intent\": 20}' where id = $1", [zero.id]);
      await client.query("update app_public.leads set lead_score = 55, city = 'Ogden' where id = $1", [zero.id]); // same score
      const { rows } = await client.query(
        "select lead_id, score, factors from app_public.lead_score_history where tenant_id = $1 order by id",
        [owner.tenant_id],
      );
      expect(rows).toEqual([
        { lead_id: scored.id, score: 30, factors: { total: 30 } },
        { lead_id: zero.id, score: 55, factors: { total: 55 } },
        { lead_id: zero.id, score: 55, factors: { total: 55, intent: 20 } },
      ]);
      // Requests can't write scores (only the scoring function does).
      await becomeUser(client, owner);
      await expectSqlError(client, "42501", () => client.query("update app_public.leads set lead_score = 99 where id = $1", [zero.id]));
    });
  });

  it("assignments: owner set on insert or changed, strategy from app.assignment_strategy (checked), reason from app.assignment_reason", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const agent = await addMember(client, owner.tenant_id!, "agent");
      await becomeUser(client, owner);
      const lead = await insertLead(client, { owner_user_id: owner.user_id });
      await insertLead(client); // no owner: no row

      await becomeRoot(client);
      await client.query("select set_config('app.assignment_strategy', 'round_robin', true), set_config('app.assignment_reason', 'Next in line', true)");
      await client.query("update app_public.leads set owner_user_id = $2 where id = $1", [lead.id, agent.user_id]);
      await client.query("select set_config('app.assignment_strategy', '', true), set_config('app.assignment_reason', '', true)");
      await client.query("update app_public.leads set owner_user_id = $2 where id = $1", [lead.id, owner.user_id]);
      // An unknown strategy is refused with a clear error, and nothing is written.
      await client.query("select set_config('app.assignment_strategy', 'round-robin', true)");
      const error = await expectSqlError(client, "22023", () =>
        client.query("update app_public.leads set owner_user_id = $2 where id = $1", [lead.id, agent.user_id]),
      );
      expect(error.message).toContain("Invalid assignment strategy 'round-robin'");
      expect(error.message).toContain("round_robin");
      await client.query("select set_config('app.assignment_strategy', '', true)");

      const { rows } = await client.query(
        "select from_user_id, to_user_id, strategy, reason, assigned_by_user_id from app_public.lead_assignments where lead_id = $1 order by id",
        [lead.id],
      );
      expect(rows).toEqual([
        { from_user_id: null, to_user_id: owner.user_id, strategy: "manual", reason: null, assigned_by_user_id: owner.user_id },
        { from_user_id: owner.user_id, to_user_id: agent.user_id, strategy: "round_robin", reason: "Next in line", assigned_by_user_id: null },
        { from_user_id: agent.user_id, to_user_id: owner.user_id, strategy: "system", reason: null, assigned_by_user_id: null },
      ]);
      const { rows: all } = await client.query("select count(*)::int as n from app_public.lead_assignments where tenant_id = $1", [owner.tenant_id]);
      expect(all[0].n).toBe(3);
    });
  });

  it("assignments: when the owner leaves the tenant, the unassignment is recorded as system with the reason", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const agent = await addMember(client, owner.tenant_id!, "agent");
      await becomeUser(client, owner);
      const lead = await insertLead(client, { owner_user_id: agent.user_id });
      await client.query("select app_public.remove_member($1)", [agent.user_id]);
      const { rows } = await asRoot(client, null, () =>
        client.query("select from_user_id, to_user_id, strategy, reason from app_public.lead_assignments where lead_id = $1 order by id", [lead.id]),
      );
      expect(rows).toEqual([
        { from_user_id: null, to_user_id: agent.user_id, strategy: "manual", reason: null },
        { from_user_id: agent.user_id, to_user_id: null, strategy: "system", reason: "The previous owner is no longer a member of this tenant" },
      ]);
    });
  });
});

describe("reassign_lead", () => {
  it("managers reassign (recording the reason); agents can't; the target must be a member; other tenants' leads are not found", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const manager = await addMember(client, owner.tenant_id!, "manager");
      const agent = await addMember(client, owner.tenant_id!, "agent");
      const stranger = await registerUser(client, { businessName: "Other Co" });
      await becomeUser(client, stranger);
      const foreignLead = await insertLead(client);
      await becomeUser(client, owner);
      const lead = await insertLead(client);

      await becomeUser(client, manager);
      const { rows } = await client.query("select l.* from app_public.reassign_lead($1, $2, 'Speaks Spanish') l", [lead.id, agent.user_id]);
      expect(rows[0]).toMatchObject({ id: lead.id, owner_user_id: agent.user_id });
      // The reason applied to this change only.
      const { rows: setting } = await client.query("select coalesce(current_setting('app.assignment_reason', true), '') as r");
      expect(setting[0].r).toBe("");
      // Same owner again: nothing to record.
      await client.query("select app_public.reassign_lead($1, $2, 'again')", [lead.id, agent.user_id]);
      // Null unassigns.
      await client.query("select app_public.reassign_lead($1, null, '  ')", [lead.id]);

      await becomeUser(client, agent);
      const denied = await expectSqlError(client, "42501", () => client.query("select app_public.reassign_lead($1, $2)", [lead.id, agent.user_id]));
      expect(denied.message).toBe("Only managers, admins and owners can reassign leads");

      await becomeUser(client, manager);
      const notMember = await expectSqlError(client, "22023", () =>
        client.query("select app_public.reassign_lead($1, $2)", [lead.id, stranger.user_id]),
      );
      expect(notMember.message).toContain("to_user_id");
      await expectSqlError(client, "P0002", () => client.query("select app_public.reassign_lead($1, $2)", [foreignLead.id, agent.user_id]));
      await expectSqlError(client, "P0002", () => client.query("select app_public.reassign_lead(gen_random_uuid(), $1)", [agent.user_id]));

      const history = await asRoot(client, null, () =>
        client.query("select from_user_id, to_user_id, strategy, reason, assigned_by_user_id from app_public.lead_assignments where lead_id = $1 order by id", [lead.id]),
      );
      expect(history.rows).toEqual([
        { from_user_id: null, to_user_id: agent.user_id, strategy: "manual", reason: "Speaks Spanish", assigned_by_user_id: manager.user_id },
        { from_user_id: agent.user_id, to_user_id: null, strategy: "manual", reason: null, assigned_by_user_id: manager.user_id },
      ]);
      const foreign = await client.query("select owner_user_id from app_public.leads where id = $1", [foreignLead.id]);
      expect(foreign.rows[0].owner_user_id).toBeNull();
    });
  });

  it("works for a manager API key (no user recorded) and refuses a deleted lead", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      await becomeUser(client, owner);
      const lead = await insertLead(client);
      const { rows: keys } = await client.query("select k.secret from app_public.create_api_key('Router', 'manager') k");
      await becomeApiKey(client, keys[0].secret);
      await client.query("select app_public.reassign_lead($1, $2, 'API')", [lead.id, owner.user_id]);
      const { rows } = await asRoot(client, null, () =>
        client.query("select to_user_id, strategy, reason, assigned_by_user_id from app_public.lead_assignments where lead_id = $1", [lead.id]),
      );
      expect(rows).toEqual([{ to_user_id: owner.user_id, strategy: "manual", reason: "API", assigned_by_user_id: null }]);

      await becomeUser(client, owner);
      await client.query("select app_public.delete_lead($1)", [lead.id]);
      await expectSqlError(client, "22023", () => client.query("select app_public.reassign_lead($1, null)", [lead.id]));
    });
  });
});

describe("duplicate phone numbers", () => {
  it("a second live lead with the same phone in the tenant is refused, naming the existing lead; other tenants don't matter", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const other = await registerUser(client, { businessName: "Other Co" });
      const phone = randomPhone();
      await becomeUser(client, owner);
      const first = await insertLead(client, { phone });
      const before = await asRoot(client, owner, () => historyCounts(client, owner.tenant_id!));

      const error = await expectSqlError(client, "23505", () => insertLead(client, { phone }));
      expect(error.message).toBe(`A lead with phone ${phone} already exists in this tenant (lead ${first.id})`);
      const second = await insertLead(client, { phone: randomPhone("+1303555") });
      const moved = await expectSqlError(client, "23505", () => client.query("update app_public.leads set phone = $2 where id = $1", [second.id, phone]));
      expect(moved.message).toContain(first.id);
      const after = await asRoot(client, owner, () => historyCounts(client, owner.tenant_id!));
      expect(after).toEqual({ ...before, leads: before.leads + 1, audit: before.audit + 1, status: before.status + 1 });

      // Same phone in another tenant: fine.
      await becomeUser(client, other);
      const elsewhere = await insertLead(client, { phone });
      expect(elsewhere.phone).toBe(phone);

      // A deleted lead's phone is free again.
      await becomeUser(client, owner);
      await client.query("select app_public.delete_lead($1)", [first.id]);
      const again = await insertLead(client, { phone });
      expect(again.phone).toBe(phone);
    });
  });

  it("10 parallel connections inserting the same phone in one tenant, each committing, leave exactly one live lead", async () => {
    const root = await rootPool().connect();
    let owner: RegisteredUser;
    try {
      owner = await registerUser(root, { businessName: "Race Co" });
    } finally {
      root.release();
    }
    const phone = randomPhone("+1404555");
    const clients = await Promise.all(Array.from({ length: 10 }, async () => {
      const c = new pg.Client({ connectionString: db.rootUrl });
      await c.connect();
      return c;
    }));
    try {
      // Everyone is inside a transaction as the owner before anyone inserts.
      await Promise.all(clients.map(async (c) => {
        await c.query("begin");
        await becomeUser(c, owner!);
      }));
      const results = await Promise.allSettled(clients.map(async (c, i) => {
        try {
          await c.query("insert into app_public.leads (first_name, phone) values ($1, $2)", [`Racer ${i}`, phone]);
          await c.query("commit");
        } catch (error) {
          await c.query("rollback");
          throw error;
        }
      }));
      const fulfilled = results.filter((r) => r.status === "fulfilled");
      const rejected = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
      expect(fulfilled).toHaveLength(1);
      expect(rejected).toHaveLength(9);
      expect(rejected.every((r) => (r.reason as pg.DatabaseError).code === "23505")).toBe(true);
      const { rows } = await rootPool().query(
        `select (select count(*) from app_public.leads where tenant_id = $1 and phone = $2 and deleted_at is null)::int as live,
                (select count(*) from app_public.lead_audit_log where tenant_id = $1)::int as audit,
                (select count(*) from app_public.lead_status_history where tenant_id = $1)::int as status`,
        [owner!.tenant_id, phone],
      );
      // Exactly one lead, and only its history: the losers wrote nothing.
      expect(rows[0]).toEqual({ live: 1, audit: 1, status: 1 });
    } finally {
      await Promise.all(clients.map((c) => c.end()));
      await rootPool().query("delete from app_public.tenants where id = $1", [owner!.tenant_id]);
      await rootPool().query("delete from app_public.users where id = $1", [owner!.user_id]);
    }
  });
});

describe("soft delete and restore", () => {
  it("managers delete and restore (audited); agents can't; unknown, foreign and wrong-state leads get clear errors", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const manager = await addMember(client, owner.tenant_id!, "manager");
      const agent = await addMember(client, owner.tenant_id!, "agent");
      const stranger = await registerUser(client, { businessName: "Other Co" });
      await becomeUser(client, stranger);
      const foreignLead = await insertLead(client);
      await becomeUser(client, owner);
      const lead = await insertLead(client);

      await becomeUser(client, agent);
      const denied = await expectSqlError(client, "42501", () => client.query("select app_public.delete_lead($1)", [lead.id]));
      expect(denied.message).toBe("Only managers, admins and owners can delete leads");
      // Agents can't set deleted_at directly either.
      await expectSqlError(client, "42501", () => client.query("update app_public.leads set deleted_at = now() where id = $1", [lead.id]));

      await becomeUser(client, manager);
      await expectSqlError(client, "P0002", () => client.query("select app_public.delete_lead($1)", [foreignLead.id]));
      await expectSqlError(client, "P0002", () => client.query("select app_public.delete_lead(gen_random_uuid())"));
      await expectSqlError(client, "22023", () => client.query("select app_public.restore_lead($1)", [lead.id]));
      const { rows: deleted } = await client.query("select l.* from app_public.delete_lead($1) l", [lead.id]);
      expect(deleted[0].deleted_at).not.toBeNull();
      await expectSqlError(client, "22023", () => client.query("select app_public.delete_lead($1)", [lead.id]));

      await becomeUser(client, agent);
      await expectSqlError(client, "42501", () => client.query("select app_public.restore_lead($1)", [lead.id]));
      await becomeUser(client, manager);
      await expectSqlError(client, "P0002", () => client.query("select app_public.restore_lead($1)", [foreignLead.id]));
      const { rows: restored } = await client.query("select l.* from app_public.restore_lead($1) l", [lead.id]);
      expect(restored[0].deleted_at).toBeNull();

      const rows = await asRoot(client, null, () => auditRows(client, lead.id));
      expect(rows.slice(1).map((r) => [r.field_name, r.old_value === null, r.new_value === null, r.changed_by_user_id])).toEqual([
        ["deleted_at", true, false, manager.user_id],
        ["deleted_at", false, true, manager.user_id],
      ]);
      const foreign = await client.query("select deleted_at from app_public.leads where id = $1", [foreignLead.id]);
      expect(foreign.rows[0].deleted_at).toBeNull();
    });
  });

  it("restore refuses (23505, naming the live lead) when another live lead now has the phone", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      await becomeUser(client, owner);
      const phone = randomPhone();
      const old = await insertLead(client, { phone });
      await client.query("select app_public.delete_lead($1)", [old.id]);
      const replacement = await insertLead(client, { phone });
      const error = await expectSqlError(client, "23505", () => client.query("select app_public.restore_lead($1)", [old.id]));
      expect(error.message).toContain(replacement.id);
      expect(error.message).toContain(phone);
      const { rows } = await client.query("select deleted_at from app_public.leads where id = $1", [old.id]);
      expect(rows[0].deleted_at).not.toBeNull();
      // Once the replacement is deleted, the old lead comes back.
      await client.query("select app_public.delete_lead($1)", [replacement.id]);
      await client.query("select app_public.restore_lead($1)", [old.id]);
    });
  });
});

describe("do-not-contact list", () => {
  it("a lead whose status becomes dnc puts its phone on the list (once); a lead without phone adds nothing", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      await becomeUser(client, owner);
      const phone = randomPhone();
      const lead = await insertLead(client, { phone });
      const noPhone = await insertLead(client, { phone: null, email: "nophone@example.test" });
      expect(await client.query("select app_public.is_on_dnc_list($1, $2) as on", [phone, owner.tenant_id]).then((r) => r.rows[0].on)).toBe(false);

      await client.query("update app_public.leads set status = 'dnc' where id = any($1)", [[lead.id, noPhone.id]]);
      const { rows } = await client.query("select phone, source, added_by_user_id, reason from app_public.dnc_list");
      expect(rows).toEqual([{ phone, source: "lead_status", added_by_user_id: owner.user_id, reason: `The lead's status was set to dnc (lead ${lead.id})` }]);
      expect(await client.query("select app_public.is_on_dnc_list($1, $2) as on", [phone, owner.tenant_id]).then((r) => r.rows[0].on)).toBe(true);
      expect(await client.query("select app_public.is_on_dnc_list($1, null) as on", [phone]).then((r) => r.rows[0].on)).toBe(true);

      // Back and forth, or already listed: no error, still one entry.
      await client.query("update app_public.leads set status = 'contacted' where id = $1", [lead.id]);
      await client.query("update app_public.leads set status = 'dnc' where id = $1", [lead.id]);
      const { rows: audit } = await client.query("select field_name, phone, reason, changed_by_user_id, change_source from app_public.dnc_audit_log");
      expect(audit).toEqual([
        { field_name: "*created*", phone, reason: `The lead's status was set to dnc (lead ${lead.id})`, changed_by_user_id: owner.user_id, change_source: "manual" },
      ]);
      const { rows: count } = await client.query("select count(*)::int as n from app_public.dnc_list");
      expect(count[0].n).toBe(1);
    });
  });

  it("is_on_dnc_list: 22023 for a phone that isn't E.164, 42501 for another tenant as a request, any tenant for the owner role", async () => {
    await withRootDb(async (client) => {
      const a = await registerUser(client, { businessName: "A Co" });
      const b = await registerUser(client, { businessName: "B Co" });
      const phone = randomPhone();
      await becomeUser(client, b);
      await client.query("insert into app_public.dnc_list (phone, reason) values ($1, 'asked')", [phone]);

      await becomeUser(client, a);
      expect((await client.query("select app_public.is_on_dnc_list($1, $2) as on", [phone, a.tenant_id])).rows[0].on).toBe(false);
      const invalid = await expectSqlError(client, "22023", () => client.query("select app_public.is_on_dnc_list('555-1234', $1)", [a.tenant_id]));
      expect(invalid.message).toContain("phone");
      const cross = await expectSqlError(client, "42501", () => client.query("select app_public.is_on_dnc_list($1, $2)", [phone, b.tenant_id]));
      expect(cross.message).toContain("current tenant");

      await becomeRoot(client);
      await client.query(`set local role ${pg.escapeIdentifier(db.roles.owner)}`);
      const { rows } = await client.query(
        "select app_public.is_on_dnc_list($1, $2) as b, app_public.is_on_dnc_list($1, $3) as a",
        [phone, b.tenant_id, a.tenant_id],
      );
      expect(rows[0]).toEqual({ b: true, a: false });
      const { rows: comment } = await client.query("select obj_description('app_public.is_on_dnc_list(text, uuid)'::regprocedure, 'pg_proc') as c");
      expect(comment[0].c).toContain("nothing in Switchboard may ever text or call a number on this list");
    });
  });

  it("remove_from_dnc_list: managers only, reason required, unknown number not found; the removal is audited with the reason", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const manager = await addMember(client, owner.tenant_id!, "manager");
      const agent = await addMember(client, owner.tenant_id!, "agent");
      const phone = randomPhone();
      await becomeUser(client, owner);
      await client.query("insert into app_public.dnc_list (phone, reason) values ($1, 'asked by phone')", [phone]);

      await becomeUser(client, agent);
      const denied = await expectSqlError(client, "42501", () => client.query("select app_public.remove_from_dnc_list($1, 'typo')", [phone]));
      expect(denied.message).toBe("Only managers, admins and owners can remove numbers from the do-not-contact list");
      await expectSqlError(client, "42501", () => client.query("delete from app_public.dnc_list where phone = $1", [phone]));

      await becomeUser(client, manager);
      const blank = await expectSqlError(client, "22023", () => client.query("select app_public.remove_from_dnc_list($1, '   ')", [phone]));
      expect(blank.message).toContain("reason");
      await expectSqlError(client, "22023", () => client.query("select app_public.remove_from_dnc_list($1, null)", [phone]));
      await expectSqlError(client, "22023", () => client.query("select app_public.remove_from_dnc_list('555-1234', 'typo')"));
      await expectSqlError(client, "P0002", () => client.query("select app_public.remove_from_dnc_list($1, 'typo')", [randomPhone("+1505555")]));

      const { rows: removed } = await client.query("select app_public.remove_from_dnc_list($1, 'Opted back in by email') as ok", [phone]);
      expect(removed[0].ok).toBe(true);
      expect((await client.query("select app_public.is_on_dnc_list($1, null) as on", [phone])).rows[0].on).toBe(false);
      const { rows: setting } = await client.query("select coalesce(current_setting('app.change_reason', true), '') as r");
      expect(setting[0].r).toBe("");

      const { rows: audit } = await client.query(
        "select field_name, phone, reason, changed_by_user_id, change_source, old_value, new_value from app_public.dnc_audit_log order by id",
      );
      expect(audit.map((r) => [r.field_name, r.phone, r.reason, r.changed_by_user_id])).toEqual([
        ["*created*", phone, "asked by phone", owner.user_id],
        ["*deleted*", phone, "Opted back in by email", manager.user_id],
      ]);
      expect(audit[1].old_value).toMatchObject({ phone, reason: "asked by phone", source: "manual" });
      expect(audit[1].new_value).toBeNull();
      // The history is read-only for members.
      await expectSqlError(client, "42501", () =>
        client.query("insert into app_public.dnc_audit_log (tenant_id, dnc_entry_id, phone, field_name, change_source) values ($1, gen_random_uuid(), $2, 'x', 'manual')", [owner.tenant_id, phone]),
      );
      await expectSqlError(client, "42501", () => client.query("delete from app_public.dnc_audit_log"));
    });
  });

  it("deleting a tenant takes its list, its leads and all their history with it (nothing orphaned, no error)", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      await becomeUser(client, owner);
      await insertLead(client, { status: "dnc", owner_user_id: owner.user_id });
      await client.query("insert into app_public.dnc_list (phone) values ($1)", [randomPhone("+1606555")]);
      await becomeRoot(client);
      expect(await historyCounts(client, owner.tenant_id!)).toMatchObject({ leads: 1, dnc: 2, dnc_audit: 2 });
      await client.query("delete from app_public.tenants where id = $1", [owner.tenant_id]);
      expect(await historyCounts(client, owner.tenant_id!)).toEqual({ leads: 0, audit: 0, status: 0, score: 0, assignments: 0, dnc: 0, dnc_audit: 0 });
    });
  });

  it("the history fixture leaves a dnc_audit_log row for its tenant only", async () => {
    await withRootDb(async (client) => {
      const a = await registerUser(client, { businessName: "A Co" });
      const b = await registerUser(client, { businessName: "B Co" });
      await becomeUser(client, b);
      const lead = await insertLead(client);
      await seedHistory(client, b, lead.id);
      const { rows } = await client.query("select field_name, reason from app_public.dnc_audit_log order by id");
      expect(rows.map((r) => r.field_name)).toEqual(["*created*", "*deleted*"]);
      expect(rows[1].reason).toBe("history fixture: added by mistake");
      await becomeUser(client, a);
      expect((await client.query("select count(*)::int as n from app_public.dnc_audit_log")).rows[0].n).toBe(0);
    });
  });
});

describe("lead_timeline", () => {
  it("one chronological feed of creation, field changes, status, score, owner changes, deletion and restoration", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const agent = await addMember(client, owner.tenant_id!, "agent");
      await becomeUser(client, owner);
      const lead = await insertLead(client, { first_name: "Ann", owner_user_id: owner.user_id });
      await client.query("update app_public.leads set status = 'contacted' where id = $1", [lead.id]);
      await client.query("update app_public.leads set first_name = 'Anna', email = 'anna@example.test' where id = $1", [lead.id]);
      await becomeRoot(client);
      await client.query("select set_config('app.change_source', 'system', true)");
      await client.query("update app_public.leads set lead_score = 40, lead_score_factors = '{\"total\": 40}' where id = $1", [lead.id]);
      await client.query("update app_public.leads set lead_score = 65, lead_score_factors = '{\"total\": 65}' where id = $1", [lead.id]);
      await client.query("select set_config('app.change_source', '', true)");
      await becomeUser(client, owner);
      await client.query("select app_public.reassign_lead($1, $2, 'Covers the north side')", [lead.id, agent.user_id]);
      await client.query("select set_config('app.change_source', 'webhook', true)");
      await client.query("update app_public.leads set status = 'qualified' where id = $1", [lead.id]);
      await client.query("select set_config('app.change_source', '', true)");
      await client.query("select app_public.delete_lead($1)", [lead.id]);
      await client.query("select app_public.restore_lead($1)", [lead.id]);

      const { rows } = await client.query("select * from app_public.lead_timeline($1)", [lead.id]);
      expect(rows.map((r) => [r.event_type, r.summary])).toEqual([
        ["created", "Lead created"],
        ["status_changed", "Status set to new"],
        ["assigned", "Assigned to Test User"],
        ["status_changed", "Status changed from new to contacted"],
        ["field_changed", "First name changed from Ann to Anna"],
        ["field_changed", "Email set to anna@example.test"],
        ["score_changed", "Score set to 40"],
        ["score_changed", "Score changed from 40 to 65"],
        ["assigned", `Reassigned from Test User to ${agent.email}: Covers the north side`],
        ["status_changed", "Status changed from contacted to qualified (webhook)"],
        ["deleted", "Lead deleted"],
        ["restored", "Lead restored"],
      ]);
      const times = rows.map((r) => new Date(r.occurred_at).getTime());
      expect([...times].sort((x, y) => x - y)).toEqual(times);
      expect(rows[0].actor_user_id).toBe(owner.user_id);
      expect(rows[6].actor_user_id).toBeNull();
      expect(rows[8].details).toMatchObject({ from_user_id: owner.user_id, to_user_id: agent.user_id, strategy: "manual", reason: "Covers the north side" });
      expect(rows[7].details).toMatchObject({ score: 65, previous_score: 40, factors: { total: 65 } });

      // Another tenant sees nothing of it.
      const stranger = await registerUser(client, { businessName: "Other Co" });
      await becomeUser(client, stranger);
      expect((await client.query("select * from app_public.lead_timeline($1)", [lead.id])).rows).toEqual([]);
    });
  });

  it("reads each source through an index on its lead, for the owner role too (no table is read through)", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      await becomeUser(client, owner);
      const lead = await insertLead(client, { first_name: "Ann" });
      // The owner role has no row-level condition on the tenant: the function must give it one.
      await becomeRoot(client);
      await client.query("set local enable_seqscan = off");
      const { rows } = await client.query<{ "QUERY PLAN": unknown }>(
        "explain (format json) select * from app_public.lead_timeline($1) limit 50",
        [lead.id],
      );
      // Every scan of a history table, with the condition its index is searched with.
      const histories = ["lead_audit_log", "lead_status_history", "lead_score_history", "lead_assignments", "messages", "email_messages", "lead_sequence_enrollments"];
      const scans: Array<[string, string]> = [];
      const walk = (node: Record<string, unknown>) => {
        const relation = node["Relation Name"];
        if (typeof relation === "string" && histories.includes(relation)) {
          scans.push([relation, `${node["Node Type"]}: ${String(node["Index Cond"] ?? node["Recheck Cond"] ?? "")}`]);
        }
        for (const child of (node.Plans as Record<string, unknown>[] | undefined) ?? []) walk(child);
      };
      walk((rows[0]!["QUERY PLAN"] as Array<{ Plan: Record<string, unknown> }>)[0]!.Plan);
      expect([...new Set(scans.map(([relation]) => relation))].sort()).toEqual([...histories].sort());
      // Searched by tenant and lead, not scanned through (nor skipped through every tenant on PostgreSQL 18).
      for (const [relation, scan] of scans) expect(`${relation} ${scan}`).toMatch(/(Index.*Scan|Bitmap Heap Scan): .*tenant_id = .*lead_id = /);
    });
  });

  it("a page of a long history reads about a page of each source, for a member and for the owner role, and pages match the whole feed", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      await becomeUser(client, owner);
      const lead = await insertLead(client, { first_name: "Busy", phone: "+15551230001" });
      const quiet = await insertLead(client, { first_name: "Quiet" });
      await becomeRoot(client);
      // A long history written straight into the sources (their triggers are not what is measured),
      // interleaved in time, with equal times inside and across sources, and a quieter lead beside it.
      await client.query("set local session_replication_role = replica");
      const t = owner.tenant_id;
      const start = "now() - interval '30 days'";
      await client.query(
        `insert into app_public.lead_audit_log (tenant_id, lead_id, field_name, old_value, new_value, change_source, changed_at)
         select $1, l, case when g % 5 = 0 then 'status' else 'city' end, to_jsonb('c' || g), to_jsonb('c' || (g + 1)), 'manual',
                ${start} + (g / 2) * interval '1 minute'
         from generate_series(1, 3000) g, unnest(array[$2::uuid, $3::uuid]) l`,
        [t, lead.id, quiet.id],
      );
      await client.query(
        `insert into app_public.lead_score_history (tenant_id, lead_id, score, factors, calculated_at)
         select $1, $2, (g * 7) % 101, jsonb_build_object('g', g), ${start} + (g / 2) * interval '1 minute'
         from generate_series(1, 3000) g`,
        [t, lead.id],
      );
      await client.query(
        `insert into app_public.lead_status_history (tenant_id, lead_id, from_status, to_status, trigger_type, changed_at)
         select $1, l, 'new', 'contacted', 'manual', ${start} + g * interval '3 minutes'
         from generate_series(1, 1000) g, unnest(array[$2::uuid, $3::uuid]) l`,
        [t, lead.id, quiet.id],
      );
      await client.query(
        `insert into app_public.messages (tenant_id, lead_id, direction, sender, purpose, from_phone, to_phone, body, status, created_at)
         select $1, $2, 'inbound', 'customer', 'conversation', '+15551230001', '+15550000000', 'Reply ' || g, 'received',
                ${start} + (g / 4) * interval '2 minutes'
         from generate_series(1, 800) g`,
        [t, lead.id],
      );
      await client.query(
        `insert into app_public.email_messages (tenant_id, lead_id, purpose, to_email, subject, body_text, status, created_at, sent_at)
         select $1, $2, 'marketing', 'busy@example.test', 'News ' || g, 'Hello', 'sent', ${start}, ${start} + g * interval '5 minutes'
         from generate_series(1, 800) g`,
        [t, lead.id],
      );
      await client.query("set local session_replication_role = origin");
      await client.query("analyze app_public.lead_audit_log, app_public.lead_score_history, app_public.lead_status_history, app_public.messages, app_public.email_messages");

      const histories = ["lead_audit_log", "lead_status_history", "lead_score_history", "lead_assignments", "messages", "email_messages", "lead_sequence_enrollments"];
      /** Rows of the history tables read by one query (returned or filtered out, over all loops). */
      const rowsRead = async (sql: string, params: unknown[]) => {
        const { rows } = await client.query<{ "QUERY PLAN": unknown }>(`explain (analyze, format json) ${sql}`, params);
        let read = 0;
        const walk = (node: Record<string, unknown>) => {
          if (typeof node["Relation Name"] === "string" && histories.includes(node["Relation Name"])) {
            read += ((node["Actual Rows"] as number) + ((node["Rows Removed by Filter"] as number | undefined) ?? 0)) * (node["Actual Loops"] as number);
          }
          for (const child of (node.Plans as Record<string, unknown>[] | undefined) ?? []) walk(child);
        };
        walk((rows[0]!["QUERY PLAN"] as Array<{ Plan: Record<string, unknown> }>)[0]!.Plan);
        return read;
      };

      for (const role of ["member", "owner"] as const) {
        if (role === "member") await becomeUser(client, owner);
        else await becomeRoot(client);
        const all = (await client.query("select * from app_public.lead_timeline($1)", [lead.id])).rows;
        // Its creation and first status, then 2,400 field changes (the 600 status rows of the audit
        // log are told by the status branch), 3,000 scores, 1,000 statuses, 800 texts, 800 emails.
        expect(all).toHaveLength(2 + 2400 + 3000 + 1000 + 800 + 800);
        const first = (await client.query("select * from app_public.lead_timeline($1) limit 50", [lead.id])).rows;
        expect(first).toEqual(all.slice(0, 50));
        const later = (await client.query("select * from app_public.lead_timeline($1) offset 4000 limit 50", [lead.id])).rows;
        expect(later).toEqual(all.slice(4000, 4050));
        // The order is time, then source, then the order of each source; each score says the one before.
        const source: Record<string, number> = { created: 1, field_changed: 1, status_changed: 2, score_changed: 3, sms_received: 5, email_sent: 6 };
        for (let i = 1; i < all.length; i++) {
          const [a, b] = [all[i - 1], all[i]];
          const [ta, tb] = [new Date(a.occurred_at).getTime(), new Date(b.occurred_at).getTime()];
          expect(ta < tb || (ta === tb && source[a.event_type]! <= source[b.event_type]!)).toBe(true);
          // Texts at the same time (four at a time here) in the order of their ids: the order is total.
          if (ta === tb && a.event_type === "sms_received" && b.event_type === "sms_received") {
            expect(a.details.message_id < b.details.message_id).toBe(true);
          }
        }
        const scores = all.filter((e) => e.event_type === "score_changed");
        expect(scores.map((e) => e.details.factors.g)).toEqual(Array.from({ length: 3000 }, (_, i) => i + 1));
        expect(scores.map((e) => e.details.previous_score)).toEqual([null, ...scores.slice(0, -1).map((e) => e.details.score)]);

        // A page reads about a page of each source (the scores also read the score before each one
        // shown), not the 8,000 events of the lead nor the quieter lead's.
        expect(await rowsRead("select * from app_public.lead_timeline($1) limit 50", [lead.id])).toBeLessThan(1000);
        // The whole feed reads every event once, and for each score the one before it, once (23,105
        // rows here; 54,598 when each score looked its previous one up four times, in 000059).
        const whole = await rowsRead("select * from app_public.lead_timeline($1)", [lead.id]);
        expect(whole).toBeGreaterThan(8000);
        expect(whole).toBeLessThan(30000);
      }
    });
  });
});

describe("bad input writes nothing", () => {
  it("phone not E.164 (23514), a score over 100 even as root (23514), an unknown status (23503)", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      await becomeUser(client, owner);
      const lead = await insertLead(client);
      const before = await asRoot(client, owner, () => historyCounts(client, owner.tenant_id!));

      const phone = await expectSqlError(client, "23514", () => insertLead(client, { phone: "555-1234" }));
      expect(phone.constraint).toBe("phone_must_be_e164");
      await expectSqlError(client, "23514", () => client.query("update app_public.leads set phone = '555-1234' where id = $1", [lead.id]));
      const status = await expectSqlError(client, "23503", () => insertLead(client, { status: "maybe" }));
      expect(status.constraint).toBe("leads_status_must_be_known");
      await expectSqlError(client, "23503", () => client.query("update app_public.leads set status = 'maybe' where id = $1", [lead.id]));

      await becomeRoot(client);
      const score = await expectSqlError(client, "23514", () => client.query("update app_public.leads set lead_score = 101 where id = $1", [lead.id]));
      expect(score.constraint).toBe("leads_lead_score_must_be_between_0_and_100");
      await expectSqlError(client, "23514", () => insertLead(client, { tenant_id: owner.tenant_id, lead_score: 101 }));

      expect(await historyCounts(client, owner.tenant_id!)).toEqual(before);
    });
  });
});
