/**
 * Bulk import in SQL (050-import.sql): what happens to each row, who may import, and that parallel
 * imports of the same file create each lead exactly once (many connections, committed).
 */
import { randomUUID } from "node:crypto";
import type pg from "pg";
import { describe, expect, it } from "vitest";
import {
  addMember,
  becomeAnonymous,
  becomeRoot,
  becomeUser,
  db,
  expectSqlError,
  inSavepoint,
  ownerPool,
  poolFor,
  registerUser,
  rootPool,
  waitFor,
  withRootDb,
  type RegisteredUser,
} from "../helpers.ts";

interface Row {
  row_number: number;
  raw?: Record<string, string>;
  lead?: Record<string, unknown> | null;
  error?: string | null;
}

interface Batch {
  id: string;
  tenant_id: string;
  status: string;
  mode: string;
  default_country: string;
  row_count: number;
  created_count: number;
  merged_count: number;
  skipped_count: number;
  rejected_count: number;
  created_by_user_id: string | null;
}

const counts = (b: Batch) => ({ rows: b.row_count, created: b.created_count, merged: b.merged_count, skipped: b.skipped_count, rejected: b.rejected_count });

async function start(client: pg.ClientBase, mode = "skip", country = "US"): Promise<Batch> {
  const { rows } = await client.query<Batch>("select b.* from app_public.start_import('test.csv', $1, $2) b", [mode, country]);
  return rows[0]!;
}

async function send(client: pg.ClientBase, batchId: string, rows: Row[]): Promise<Batch> {
  const { rows: out } = await client.query<Batch>("select b.* from app_public.import_rows($1, $2::jsonb) b", [batchId, JSON.stringify(rows)]);
  return out[0]!;
}

async function results(client: pg.ClientBase, batchId: string) {
  const { rows } = await client.query<{ row_number: number; result: string; lead_id: string | null; reason: string | null }>(
    "select row_number, result, lead_id, reason from app_public.import_batch_rows where batch_id = $1 order by row_number",
    [batchId],
  );
  return rows;
}

async function leadCount(client: pg.ClientBase): Promise<number> {
  const { rows } = await client.query<{ n: string }>("select count(*) as n from app_public.leads where deleted_at is null");
  return Number(rows[0]!.n);
}

/** A manager of a fresh tenant, acting as them. */
async function asManager(client: pg.ClientBase): Promise<{ owner: RegisteredUser; manager: RegisteredUser }> {
  const owner = await registerUser(client);
  const manager = await addMember(client, owner.tenant_id!, "manager");
  await becomeUser(client, manager);
  return { owner, manager };
}

const ann: Row = { row_number: 2, raw: { Phone: "(202) 555-0101" }, lead: { first_name: "Ann", phone: "+12025550101", email: "ann@example.com", tags: ["roof"] } };

describe("import rows (SQL)", () => {
  it("records each row: good rows around bad ones all land, bad ones are rejected with a readable reason", async () => {
    await withRootDb(async (client) => {
      const { manager } = await asManager(client);
      const batch = await start(client);
      expect(batch).toMatchObject({ status: "running", mode: "skip", default_country: "US", created_by_user_id: manager.user_id });
      const after = await send(client, batch.id, [
        ann,
        { row_number: 3, raw: { Phone: "abc" }, lead: null, error: "Phone 'abc' is not a phone number" },
        { row_number: 4, lead: { first_name: "Bob", phone: "+12025550102", city: "Springfield" } },
        { row_number: 5, lead: { first_name: "NoContact" } },
        { row_number: 6, lead: { email: "not-an-email" } },
        { row_number: 7, lead: { email: "cy@example.com", status: "nonsense" } },
        { row_number: 8, lead: { email: "dee@example.com", estimated_value: "lots" } },
        { row_number: 9, lead: { email: "eve@example.com", owner_user_id: manager.user_id } },
        { row_number: 10, lead: { phone: "12345" } },
        { row_number: 11, lead: { email: "fay@example.com", country: "USA" } },
        { row_number: 12, lead: { first_name: "Gus", email: "gus@example.com", event_date: "2025-06-01", estimated_value: "1250.50" } },
      ]);
      expect(counts(after)).toEqual({ rows: 11, created: 3, merged: 0, skipped: 0, rejected: 8 });
      expect((await results(client, batch.id)).map((r) => [r.row_number, r.result, r.reason])).toEqual([
        [2, "created", null],
        [3, "rejected", "Phone 'abc' is not a phone number"],
        [4, "created", null],
        [5, "rejected", "Leads need a phone or an email."],
        [6, "rejected", "Leads email must look like an email."],
        [7, "rejected", "Leads status must be known."],
        [8, "rejected", 'invalid input syntax for type numeric: "lots"'],
        [9, "rejected", "Unknown lead field(s): owner_user_id"],
        [10, "rejected", "Phone must be e164."],
        [11, "rejected", "Leads country must be an iso code."],
        [12, "created", null],
      ]);
      const { rows: leads } = await client.query(
        "select first_name, phone, email, city, tags, source, status, country, event_date::text, estimated_value::text from app_public.leads order by first_name",
      );
      expect(leads).toEqual([
        { first_name: "Ann", phone: "+12025550101", email: "ann@example.com", city: null, tags: ["roof"], source: "import", status: "new", country: "US", event_date: null, estimated_value: null },
        { first_name: "Bob", phone: "+12025550102", email: null, city: "Springfield", tags: [], source: "import", status: "new", country: "US", event_date: null, estimated_value: null },
        { first_name: "Gus", phone: null, email: "gus@example.com", city: null, tags: [], source: "import", status: "new", country: "US", event_date: "2025-06-01", estimated_value: "1250.50" },
      ]);
      const { rows: raw } = await client.query("select raw from app_public.import_batch_rows where batch_id = $1 and row_number = 2", [batch.id]);
      expect(raw[0].raw).toEqual({ Phone: "(202) 555-0101" });
      const done = await client.query<Batch>("select b.* from app_public.finish_import($1) b", [batch.id]);
      expect(done.rows[0]).toMatchObject({ status: "completed", row_count: 11 });
    });
  });

  it("mode skip: a duplicate by phone, or by email without a phone, is skipped (in the file and against existing leads)", async () => {
    await withRootDb(async (client) => {
      await asManager(client);
      await client.query("insert into app_public.leads (first_name, phone) values ('Existing', '+12025550109')");
      const batch = await start(client, "skip");
      await send(client, batch.id, [
        ann,
        { row_number: 3, lead: { first_name: "Ann again", phone: "+12025550101", city: "Elsewhere" } },
        { row_number: 4, lead: { first_name: "Existing again", phone: "+12025550109" } },
        { row_number: 5, lead: { first_name: "Eve", email: "eve@example.com" } },
        { row_number: 6, lead: { first_name: "Eve again", email: "EVE@example.com" } },
        { row_number: 7, lead: { first_name: "Ann by email", email: "ann@example.com" } },
      ]);
      const r = await results(client, batch.id);
      expect(r.map((x) => [x.row_number, x.result, x.reason])).toEqual([
        [2, "created", null],
        [3, "skipped", "A lead with this phone already exists"],
        [4, "skipped", "A lead with this phone already exists"],
        [5, "created", null],
        [6, "skipped", "A lead with this email already exists"],
        [7, "skipped", "A lead with this email already exists"],
      ]);
      expect(r[1]!.lead_id).toBe(r[0]!.lead_id);
      expect(r[5]!.lead_id).toBe(r[0]!.lead_id);
      expect(await leadCount(client)).toBe(3);
      const { rows } = await client.query("select first_name, city from app_public.leads where phone = '+12025550101'");
      expect(rows).toEqual([{ first_name: "Ann", city: null }]); // untouched
    });
  });

  it("mode merge: fills the lead's empty fields, adds new tags, keeps what it had", async () => {
    await withRootDb(async (client) => {
      const { manager } = await asManager(client);
      const { rows: existing } = await client.query<{ id: string }>(
        `insert into app_public.leads (first_name, phone, city, tags, attributes)
         values ('Ann', '+442079460958', 'Boston', '{vip,roof}', '{"color": "red"}') returning id`,
      );
      // The scoring job of its creation is not what is checked below.
      await becomeRoot(client);
      await client.query("delete from graphile_worker._private_jobs where (payload -> 'lead_ids')::jsonb ? $1", [existing[0]!.id]);
      await becomeUser(client, manager);
      const batch = await start(client, "merge");
      const after = await send(client, batch.id, [
        { row_number: 2, lead: { first_name: "Annie", last_name: "Lee", phone: "+442079460958", email: "ann@example.com", city: "Denver", tags: ["gutter", "vip", "gutter"], attributes: { color: "blue", size: "L" } } },
        { row_number: 3, lead: { phone: "+442079460958", region: "MA", tags: ["late"] } },
        { row_number: 4, lead: { email: "ann@example.com", postal_code: "02101" } },
      ]);
      expect(counts(after)).toEqual({ rows: 3, created: 0, merged: 3, skipped: 0, rejected: 0 });
      const r = await results(client, batch.id);
      expect(r.map((x) => [x.result, x.lead_id, x.reason])).toEqual([
        ["merged", existing[0]!.id, "Merged into the lead with this phone"],
        ["merged", existing[0]!.id, "Merged into the lead with this phone"],
        ["merged", existing[0]!.id, "Merged into the lead with this email"],
      ]);
      const { rows } = await client.query("select first_name, last_name, email, city, region, postal_code, tags, attributes from app_public.leads");
      expect(rows).toEqual([
        {
          first_name: "Ann",
          last_name: "Lee",
          email: "ann@example.com",
          city: "Boston",
          region: "MA",
          postal_code: "02101",
          tags: ["vip", "roof", "gutter", "late"],
          attributes: { color: "red", size: "L" },
        },
      ]);
      // The lead merged into is rescored: one lead__score {lead_ids} job for the chunk, no job per merge.
      await becomeRoot(client);
      const { rows: jobs } = await client.query(
        `select j.payload, j.key from graphile_worker._private_jobs j join graphile_worker._private_tasks t on t.id = j.task_id
          where t.identifier = 'lead__score' and (j.key = $2 or (j.payload -> 'lead_ids')::jsonb ? $1)`,
        [existing[0]!.id, `lead_score:${existing[0]!.id}`],
      );
      expect(jobs).toEqual([{ payload: { lead_ids: [existing[0]!.id] }, key: null }]);
    });
  });

  it("re-running the same rows creates nothing new, in either mode; a retried chunk of the same batch is ignored", async () => {
    await withRootDb(async (client) => {
      await asManager(client);
      const file: Row[] = [
        ann,
        { row_number: 3, lead: { first_name: "Bob", email: "bob@example.com" } },
        { row_number: 4, lead: { first_name: "Bob twin", email: "bob@example.com" } },
        { row_number: 5, lead: { first_name: "Cy", phone: "+12025550103", email: "cy@example.com" } },
        { row_number: 6, lead: null, error: "Phone 'x' is not a phone number" },
      ];
      const first = await start(client, "skip");
      expect(counts(await send(client, first.id, file))).toEqual({ rows: 5, created: 3, merged: 0, skipped: 1, rejected: 1 });
      // The same chunk again in the same batch (a client retrying): recorded rows are not processed twice.
      expect(counts(await send(client, first.id, file))).toEqual({ rows: 5, created: 3, merged: 0, skipped: 1, rejected: 1 });
      expect(await leadCount(client)).toBe(3);
      for (const mode of ["skip", "merge"]) {
        const again = await start(client, mode);
        const after = await send(client, again.id, file);
        expect(after.created_count, mode).toBe(0);
        expect(after.rejected_count, mode).toBe(1);
        expect(await leadCount(client), mode).toBe(3);
      }
    });
  });

  it("a chunk looks for rows already recorded among its own row numbers, not through the whole batch; an overlapping retry still counts each row once", async () => {
    await withRootDb(async (client) => {
      // Calls of functions are counted for this transaction (pg_stat_xact_user_functions).
      await client.query("set local track_functions = 'all'");
      await asManager(client);
      const rows = (from: number, to: number): Row[] =>
        Array.from({ length: to - from + 1 }, (_, i) => ({
          row_number: from + i,
          lead: { first_name: `Range ${from + i}`, phone: `+1202556${String(from + i).padStart(4, "0")}` },
        }));
      const batch = await start(client, "merge");
      for (const from of [1, 301, 601]) await send(client, batch.id, rows(from, from + 299));
      const read = async () => {
        const { rows: stats } = await client.query<{ n: string }>(
          `select coalesce(s.seq_tup_read, 0) + coalesce(s.idx_tup_fetch, 0) as n
             from pg_stat_xact_all_tables s where s.relid = 'app_public.import_batch_rows'::regclass`,
        );
        return Number(stats[0]!.n);
      };
      const given = async () => {
        const { rows: stats } = await client.query<{ n: string }>(
          "select coalesce(sum(f.calls), 0) as n from pg_stat_xact_user_functions f where f.schemaname = 'app_private' and f.funcname = 'import_lead_given'",
        );
        return Number(stats[0]!.n);
      };
      const before = await read();
      const givenBefore = await given();
      expect(counts(await send(client, batch.id, rows(901, 1200)))).toEqual({ rows: 1200, created: 1200, merged: 0, skipped: 0, rejected: 0 });
      // The 900 rows recorded before are not read again (the lookup read them all, once per chunk).
      expect(await read() - before).toBe(0);
      // Each row's given fields are read once (they were read once per use).
      expect(await given() - givenBefore).toBe(300);
      // A retry that overlaps what was recorded (rows 1101 to 1200) imports only the rows after it.
      expect(counts(await send(client, batch.id, rows(1101, 1300)))).toEqual({ rows: 1300, created: 1300, merged: 0, skipped: 0, rejected: 0 });
      expect(await leadCount(client)).toBe(1300);
    });
  });

  it("records the changes as coming from an import in the lead's history, and leaves the setting as it was", async () => {
    await withRootDb(async (client) => {
      await asManager(client);
      const batch = await start(client, "merge");
      await send(client, batch.id, [{ row_number: 2, lead: { phone: "+12025550101", status: "contacted" } }]);
      await send(client, batch.id, [{ row_number: 3, lead: { phone: "+12025550101", city: "Boston" } }]);
      const { rows } = await client.query("select distinct change_source from app_public.lead_audit_log");
      expect(rows).toEqual([{ change_source: "import" }]);
      const { rows: status } = await client.query("select to_status, trigger_type from app_public.lead_status_history");
      expect(status).toEqual([{ to_status: "contacted", trigger_type: "import" }]);
      const { rows: setting } = await client.query("select coalesce(current_setting('app.change_source', true), '') as s");
      expect(setting[0].s).toBe("");
    });
  });

  it("bad input gets a clear error and writes nothing", async () => {
    await withRootDb(async (client) => {
      await asManager(client);
      const mode = await expectSqlError(client, "22023", () => start(client, "replace"));
      expect(mode.message).toBe("Invalid mode 'replace': use merge or skip");
      const country = await expectSqlError(client, "22023", () => start(client, "skip", "USA"));
      expect(country.message).toContain("Invalid default country 'USA'");
      const batch = await start(client);
      expect((await expectSqlError(client, "22023", () => client.query("select app_public.import_rows($1, '{}')", [batch.id]))).message).toContain(
        "send a JSON array",
      );
      expect((await expectSqlError(client, "22023", () => send(client, batch.id, [{ row_number: 0, lead: {} }]))).message).toContain(
        "element 1 needs a row_number that is a positive whole number",
      );
      // An element without a row_number, or with one that is not a whole number, is refused the same way.
      for (const bad of [{ lead: {} }, { row_number: "2", lead: {} }, { row_number: 2.5, lead: {} }, "row", null]) {
        expect((await expectSqlError(client, "22023", () => send(client, batch.id, [ann, bad as unknown as Row]))).message).toContain(
          "element 2 needs a row_number that is a positive whole number",
        );
      }
      expect((await expectSqlError(client, "22023", () => send(client, batch.id, [ann, { ...ann, lead: { phone: "+12025550102" } }]))).message).toBe(
        "Invalid rows: row_number 2 appears more than once",
      );
      const tooMany = Array.from({ length: 5001 }, (_, i) => ({ row_number: i + 2, lead: { email: `x${i}@example.com` } }));
      expect((await expectSqlError(client, "22023", () => send(client, batch.id, tooMany))).message).toContain("at most 5000 rows per call");
      await expectSqlError(client, "P0002", () => send(client, randomUUID(), [ann]));
      await client.query("select app_public.finish_import($1)", [batch.id]);
      expect((await expectSqlError(client, "22023", () => send(client, batch.id, [ann]))).message).toBe("Invalid batch_id: that import is already completed");
      expect(await leadCount(client)).toBe(0);
      const { rows } = await client.query("select count(*)::int as n from app_public.import_batch_rows");
      expect(rows[0].n).toBe(0);
    });
  });

  it("only managers and up of the tenant may import; the tables are read-only and other tenants see nothing", async () => {
    await withRootDb(async (client) => {
      const { owner, manager } = await asManager(client);
      const batch = await start(client);
      await send(client, batch.id, [ann]);

      const agent = await addMember(client, owner.tenant_id!, "agent");
      await becomeUser(client, agent);
      for (const call of [() => start(client), () => send(client, batch.id, [{ ...ann, row_number: 3 }]), () => client.query("select app_public.finish_import($1)", [batch.id])]) {
        const error = await expectSqlError(client, "42501", call);
        expect(error.message).toBe("Only owners, admins and managers can import leads");
      }
      // Members can read the results, not write them.
      const { rows: visible } = await client.query("select count(*)::int as n from app_public.import_batch_rows");
      expect(visible[0].n).toBe(1);
      await expectSqlError(client, "42501", () =>
        client.query("insert into app_public.import_batches (tenant_id, source_name) values ($1, 'x')", [owner.tenant_id]),
      );
      await expectSqlError(client, "42501", () => client.query("update app_public.import_batches set row_count = 0"));
      await expectSqlError(client, "42501", () => client.query("delete from app_public.import_batch_rows"));
      await expectSqlError(client, "42501", () => client.query("select app_private.import_lead_rows($1, $2, '[]')", [owner.tenant_id, batch.id]));

      await becomeAnonymous(client);
      await expectSqlError(client, "28000", () => start(client));

      // Another tenant's owner: sees nothing of it and can't send rows to it.
      await becomeRoot(client);
      const other = await registerUser(client);
      await becomeUser(client, other);
      const { rows: theirs } = await client.query("select (select count(*)::int from app_public.import_batches) as b, (select count(*)::int from app_public.import_batch_rows) as r");
      expect(theirs[0]).toEqual({ b: 0, r: 0 });
      await expectSqlError(client, "P0002", () => send(client, batch.id, [{ ...ann, row_number: 3 }]));
      await becomeUser(client, manager);
      expect(counts(await inSavepoint(client, () => send(client, batch.id, [])))).toMatchObject({ rows: 1 });
    });
  });

  it("the owner-level functions take the tenant explicitly and check it exists", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      await client.query(`set local role ${db.roles.owner}`);
      await expectSqlError(client, "P0002", () => client.query("select app_private.start_import($1, 'x', 'skip', 'US')", [randomUUID()]));
      const { rows } = await client.query<{ id: string }>("select id from app_private.start_import($1, 'cli.csv', 'merge', 'gb')", [owner.tenant_id]);
      const batchId = rows[0]!.id;
      const gb = { row_number: 2, lead: { phone: "+442079460958" } };
      await client.query("select app_private.import_lead_rows($1, $2, $3::jsonb)", [owner.tenant_id, batchId, JSON.stringify([gb])]);
      // Another tenant's id with this batch: not found.
      await expectSqlError(client, "P0002", () => client.query("select app_private.import_lead_rows($1, $2, '[]')", [randomUUID(), batchId]));
      const { rows: failed } = await client.query("select status, failure_reason from app_private.fail_import($1, $2, 'The file is malformed')", [owner.tenant_id, batchId]);
      expect(failed).toEqual([{ status: "failed", failure_reason: "The file is malformed" }]);
      const { rows: leads } = await client.query("select phone, country from app_public.leads where tenant_id = $1", [owner.tenant_id]);
      expect(leads).toEqual([{ phone: "+442079460958", country: "GB" }]);
    });
  });
});

/** A small seeded generator, so that a failing chunk can be replayed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe("the one-statement path of an import chunk", () => {
  it("gives exactly the outcome of importing the rows one by one, over random chunks, and is taken when it can be", async () => {
    await withRootDb(async (client) => {
      const fast = await registerUser(client, { businessName: "One statement" });
      const slow = await registerUser(client, { businessName: "One by one" });
      await becomeRoot(client);
      const r = rng(4_016);
      const pick = <T>(items: T[]) => items[Math.floor(r() * items.length)]!;
      // Mostly new phones and emails, a third from a few that keep coming back (in a chunk and across chunks).
      const phones = Array.from({ length: 400 }, (_, i) => `+1202555${String(2000 + i)}`);
      const emails = Array.from({ length: 300 }, (_, i) => `person${i}@example.com`);
      const somePhone = () => (r() < 0.3 ? pick(phones.slice(0, 8)) : pick(phones));
      const someEmail = () => (r() < 0.3 ? pick(emails.slice(0, 6)) : pick(emails));
      // The same leads already in both tenants: some phones, some emails only, one soft-deleted.
      for (const tenant of [fast.tenant_id, slow.tenant_id]) {
        await client.query(
          `insert into app_public.leads (tenant_id, first_name, phone, email, city, tags, deleted_at)
           values ($1, 'Old', $2, null, 'Denver', '{old}', null), ($1, 'Old', $3, $4, null, '{}', null),
                  ($1, 'Gone', $5, null, null, '{}', now()), ($1, 'Mail', null, $6, null, '{old}', null),
                  ($1, 'No mail', '+12025559909', null, null, '{}', null)`,
          [tenant, phones[0], phones[1], emails[0], phones[2], emails[1]],
        );
      }
      const calls = async () =>
        Number((await client.query<{ n: string }>(
          "select coalesce(pg_stat_get_xact_function_calls('app_private.import_lead_row(app_public.import_batches, jsonb)'::regprocedure), 0) as n",
        )).rows[0]!.n);
      await client.query("set local track_functions = 'pl'");
      let rowNumber = 1;
      let fastChunks = 0;
      for (const mode of ["merge", "skip"]) {
        const batchOf = async (tenant: string) =>
          (await client.query<{ id: string }>("select id from app_private.start_import($1, 'random.csv', $2, 'US')", [tenant, mode])).rows[0]!.id;
        const fastBatch = await batchOf(fast.tenant_id!);
        const slowBatch = await batchOf(slow.tenant_id!);
        for (let chunk = 0; chunk < 9; chunk++) {
          let rows: Row[] = [];
          const poison = chunk === 2; // a value PostgreSQL refuses: the whole chunk takes the row path
          const explicit = chunk === 6; // the cases an adversarial review found, in this order
          const mergeOnly = chunk === 7; // rows that can only merge into (or be skipped for) leads of earlier chunks
          const entangled = chunk === 8; // merges whose order matters: they must go one by one
          if (explicit) {
            const n = () => ++rowNumber;
            const [p1, p2, p3] = mode === "merge" ? ["+12025559101", "+12025559102", "+12025559103"] : ["+12025559201", "+12025559202", "+12025559203"];
            const [e1, e2, e3] = [`${mode}-e1@example.com`, `${mode}-e2@example.com`, `${mode}-e3@example.com`];
            rows = [
              // Only a later copy of a phone carries the email an email-only row looks for.
              { row_number: n(), lead: { first_name: "Ann", phone: p1 } },
              { row_number: n(), lead: { phone: p1, email: e1 } },
              { row_number: n(), lead: { first_name: "Annie", email: e1 } },
              // The first row of a phone is rejected, so a later one creates the lead.
              { row_number: n(), lead: { phone: p2, email: e2, urgency: "bogus" } },
              { row_number: n(), lead: { email: e2 } },
              { row_number: n(), lead: { phone: p2, email: e3 } },
              { row_number: n(), lead: { email: e3 } },
            ];
            // Row numbers against the order of the array: the array order is the order of import.
            const late = rowNumber + 2;
            rows.push({ row_number: late, lead: { phone: p3, first_name: "Late" } }, { row_number: late - 1, lead: { phone: p3, last_name: "Early", tags: ["t2"] } });
            rowNumber = late;
          }
          if (mergeOnly) {
            rows = [
              { row_number: ++rowNumber, lead: { phone: phones[0], last_name: "Filled", tags: ["old", "new"], city: "Ignored" } },
              { row_number: ++rowNumber, lead: { phone: phones[1], email: "other@example.com", attributes: { color: "green" } } },
              { row_number: ++rowNumber, lead: { phone: phones[3], first_name: "Three" } },
            ];
          }
          if (entangled) {
            const fill = `${mode}-fill@example.com`;
            rows = [
              // Two rows for one lead: the second sees what the first gave it.
              { row_number: ++rowNumber, lead: { phone: phones[0], tags: ["a1"], problem_description: "first" } },
              { row_number: ++rowNumber, lead: { phone: phones[0], tags: ["a2"], problem_description: "second" } },
              // An email-only row before the merge that gives the lead its email: it creates its own lead.
              { row_number: ++rowNumber, lead: { first_name: "Email only", email: fill } },
              { row_number: ++rowNumber, lead: { phone: "+12025559909", email: fill } },
            ];
          }
          for (let i = 0; i < (explicit || mergeOnly || entangled ? 0 : 25); i++) {
            const kind = r();
            const lead: Record<string, unknown> = { first_name: pick(["Ann", "Bo", "Cy", ""]), city: r() < 0.5 ? pick(["Austin", "Reno"]) : null };
            if (kind < 0.7) lead.phone = somePhone();
            if (kind > 0.5 || r() < 0.2) lead.email = someEmail();
            if (r() < 0.3) lead.tags = [pick(["a", "b", "c"]), pick(["a", "d"])];
            if (r() < 0.2) lead.attributes = { color: pick(["red", "blue"]) };
            if (r() < 0.05) lead.nickname = "x"; // an unknown field
            const row: Row = { row_number: ++rowNumber, raw: { n: String(rowNumber) }, lead };
            if (r() < 0.05) row.error = "Phone '12' is not a valid US number";
            rows.push(row);
          }
          if (poison) rows.push({ row_number: ++rowNumber, lead: { phone: pick(phones), estimated_value: "lots" } });
          // The order of the array, not of the row numbers, is the order of import.
          if (!explicit) {
            for (let i = rows.length - 1; i > 0; i--) {
              const j = Math.floor(r() * (i + 1));
              [rows[i], rows[j]] = [rows[j]!, rows[i]!];
            }
          }
          const before = await calls();
          await client.query("select app_private.import_lead_rows($1, $2, $3::jsonb)", [fast.tenant_id, fastBatch, JSON.stringify(rows)]);
          const rowPath = (await calls()) - before;
          if (!poison && !explicit && !mergeOnly && !entangled && rowPath < rows.length) fastChunks++;
          if (poison) expect(rowPath).toBe(rows.length);
          // Leads the earlier chunks created or merged into, one row each: none goes one by one.
          if (mergeOnly) expect(rowPath).toBe(0);
          if (entangled) expect(rowPath).toBe(rows.length);
          // The reference: each row through import_lead_row, in order.
          await client.query("select set_config('app.change_source', 'import', true)");
          await client.query(
            `select app_private.import_lead_row(b, e.value)
               from app_public.import_batches b, jsonb_array_elements($2::jsonb) with ordinality e
              where b.id = $1 order by e.ordinality`,
            [slowBatch, JSON.stringify(rows)],
          );
          await client.query("select set_config('app.change_source', '', true)");
        }
      }
      // The one-statement path was taken in most chunks (not only when it cannot fail).
      expect(fastChunks).toBeGreaterThanOrEqual(8);

      // Same outcome per row (the lead it went to, named by what it holds), same leads.
      const outcome = async (tenant: string) =>
        (await client.query(
          `select r.row_number, r.result, r.reason, l.phone, l.email, l.first_name, l.city, l.tags, l.attributes, l.source, l.country
             from app_public.import_batch_rows r left join app_public.leads l on l.id = r.lead_id
            where r.tenant_id = $1 order by r.row_number`,
          [tenant],
        )).rows;
      const leads = async (tenant: string) =>
        (await client.query(
          `select phone, email, first_name, city, tags, attributes, source, status, country, deleted_at is null as live
             from app_public.leads where tenant_id = $1 order by phone nulls last, email nulls last, first_name, city, tags::text`,
          [tenant],
        )).rows;
      // The same history: every change an import made to a lead, field by field.
      const history = async (tenant: string) =>
        (await client.query(
          `select l.phone, l.email, a.field_name, a.old_value::text, a.new_value::text, a.change_source
             from app_public.lead_audit_log a join app_public.leads l on l.id = a.lead_id
            where a.tenant_id = $1 and a.field_name <> '*created*'
            order by 1 nulls last, 2 nulls last, 3, 4, 5`,
          [tenant],
        )).rows;
      const got = await outcome(fast.tenant_id!);
      expect(got).toEqual(await outcome(slow.tenant_id!));
      expect(await leads(fast.tenant_id!)).toEqual(await leads(slow.tenant_id!));
      const changes = await history(fast.tenant_id!);
      expect(changes.length).toBeGreaterThan(10);
      expect(changes).toEqual(await history(slow.tenant_id!));
      const results = new Set(got.map((row) => row.result));
      expect([...results].sort()).toEqual(["created", "merged", "rejected", "skipped"]);
    });
  });
});

describe("a merge racing a concurrent change of its lead (committed, two connections)", () => {
  it("sees the lead as it is once its lock is granted: a phone or an email changed meanwhile keeps the row on the row path", async () => {
    const root = rootPool();
    const setup = await root.connect();
    let owner: RegisteredUser;
    try {
      owner = await registerUser(setup, { businessName: "Racing Merge Co" });
    } finally {
      setup.release();
    }
    const tenant = owner.tenant_id!;
    const { rows: made } = await root.query<{ id: string; phone: string }>(
      `insert into app_public.leads (tenant_id, phone) values ($1, '+12025550100'), ($1, '+12025550110') returning id, phone`,
      [tenant],
    );
    const [moved, mailed] = made;
    const writer = await root.connect();
    const importer = await root.connect();
    try {
      const batch = (await root.query<{ id: string }>("select id from app_private.start_import($1, 'race.csv', 'merge', 'US')", [tenant])).rows[0]!.id;
      // The writer changes the first lead's phone and gives the second an email, and holds its locks.
      await writer.query("begin");
      await writer.query("update app_public.leads set phone = '+12025550199' where id = $1", [moved!.id]);
      await writer.query("update app_public.leads set email = 'race@example.com' where id = $1", [mailed!.id]);
      const rows = [
        // Its lead is given another phone meanwhile: one by one, this row creates a lead.
        { row_number: 1, lead: { phone: "+12025550100", last_name: "New" } },
        // An email-only row before a merge into the lead that is getting that email: it creates its own lead.
        { row_number: 2, lead: { email: "race@example.com", first_name: "Email row" } },
        { row_number: 3, lead: { phone: "+12025550110", first_name: "Phone row" } },
      ];
      const pid = (await importer.query<{ pid: number }>("select pg_backend_pid() as pid")).rows[0]!.pid;
      const importing = importer.query("select app_private.import_lead_rows($1, $2, $3::jsonb)", [tenant, batch, JSON.stringify(rows)]);
      // The import waits for the writer's locks, then the writer commits.
      await waitFor("the import to wait for a lock", async () =>
        (await root.query<{ wait_event_type: string | null }>("select wait_event_type from pg_stat_activity where pid = $1", [pid])).rows[0]
          ?.wait_event_type === "Lock",
      );
      await writer.query("commit");
      await importing;
      const { rows: outcome } = await root.query(
        `select r.row_number, r.result, l.phone, l.email, l.first_name, l.last_name
           from app_public.import_batch_rows r join app_public.leads l on l.id = r.lead_id
          where r.batch_id = $1 order by r.row_number`,
        [batch],
      );
      expect(outcome).toEqual([
        { row_number: 1, result: "created", phone: "+12025550100", email: null, first_name: null, last_name: "New" },
        { row_number: 2, result: "created", phone: null, email: "race@example.com", first_name: "Email row", last_name: null },
        { row_number: 3, result: "merged", phone: "+12025550110", email: "race@example.com", first_name: "Phone row", last_name: null },
      ]);
      // The lead whose phone changed kept its own fields.
      const { rows: kept } = await root.query("select phone, last_name from app_public.leads where id = $1", [moved!.id]);
      expect(kept).toEqual([{ phone: "+12025550199", last_name: null }]);
    } finally {
      await writer.query("rollback").catch(() => undefined);
      writer.release();
      importer.release();
    }
  });
});

describe("parallel imports of the same file (committed, many connections)", () => {
  it("create each lead exactly once", { timeout: 120_000 }, async () => {
    const root = await rootPool().connect();
    let owner: RegisteredUser;
    let manager: RegisteredUser;
    try {
      owner = await registerUser(root, { businessName: "Parallel Import Co" });
      manager = await addMember(root, owner.tenant_id!, "manager");
    } finally {
      root.release();
    }
    // 300 rows: phones, phones with emails, email-only rows, and duplicates inside the file.
    const file: Row[] = [];
    for (let i = 0; i < 300; i++) {
      const n = i % 240; // the last 60 rows repeat earlier leads
      const lead =
        n % 3 === 0
          ? { first_name: `P${n}`, phone: `+1202555${String(1000 + n).padStart(4, "0")}` }
          : n % 3 === 1
            ? { first_name: `PE${n}`, phone: `+1202555${String(1000 + n).padStart(4, "0")}`, email: `pe${n}@example.com` }
            : { first_name: `E${n}`, email: `e${n}@example.com`, tags: [`t${i}`] };
      file.push({ row_number: i + 2, raw: {}, lead });
    }
    const distinctLeads = 240;

    const ownerWorkers = 4;
    let retries = 0;
    const visitorWorkers = 4;
    const barrier = (() => {
      let release!: () => void;
      const ready = new Promise<void>((r) => (release = r));
      let waiting = ownerWorkers + visitorWorkers;
      return () => {
        if (--waiting === 0) release();
        return ready;
      };
    })();

    // The command line's way: owner connection, one transaction per 50-row chunk (retried on a deadlock, as the CLI does).
    const asOwner = async (w: number) => {
      const client = await poolFor(db.ownerUrl, 12).connect();
      try {
        const mode = w % 2 === 0 ? "skip" : "merge";
        const { rows } = await client.query<{ id: string }>("select id from app_private.start_import($1, $2, $3, 'US')", [owner.tenant_id, `owner-${w}`, mode]);
        await barrier();
        for (let i = 0; i < file.length; i += 50) {
          for (let attempt = 1; ; attempt++) {
            try {
              await client.query("begin");
              await client.query("select app_private.import_lead_rows($1, $2, $3::jsonb)", [owner.tenant_id, rows[0]!.id, JSON.stringify(file.slice(i, i + 50))]);
              await client.query("commit");
              break;
            } catch (error) {
              await client.query("rollback");
              if ((error as pg.DatabaseError).code !== "40P01" || attempt >= 5) throw error;
              retries += 1;
            }
          }
        }
        await client.query("select app_private.finish_import($1, $2)", [owner.tenant_id, rows[0]!.id]);
        return rows[0]!.id;
      } finally {
        client.release();
      }
    };
    // The API's way: a manager's request, the whole file in one transaction (as importLeads does), in 100-row calls.
    const asManagerRequest = async (w: number) => {
      const client = await poolFor(db.authUrl, 12).connect();
      try {
        await client.query("begin");
        await client.query(`set local role ${db.roles.visitor}`);
        await client.query(
          "select set_config('app.current_user_id', $1, true), set_config('app.current_tenant_id', $2, true), set_config('app.current_session_id', $3, true)",
          [manager.user_id, manager.tenant_id, manager.session_id],
        );
        const batch = await start(client, w % 2 === 0 ? "merge" : "skip");
        await barrier();
        for (let i = 0; i < file.length; i += 100) await send(client, batch.id, file.slice(i, i + 100));
        await client.query("select app_public.finish_import($1)", [batch.id]);
        await client.query("commit");
        return batch.id;
      } catch (error) {
        await client.query("rollback");
        throw error;
      } finally {
        client.release();
      }
    };

    try {
      const settled = await Promise.allSettled([
        ...Array.from({ length: ownerWorkers }, (_, w) => asOwner(w)),
        ...Array.from({ length: visitorWorkers }, (_, w) => asManagerRequest(w)),
      ]);
      // Imports into one tenant take turns, so none of them fails (no deadlock either).
      const failures = settled.filter((s) => s.status === "rejected").map((s) => String((s as PromiseRejectedResult).reason));
      expect(failures).toEqual([]);
      expect(retries, "chunks that hit a deadlock").toBe(0);

      const pool = ownerPool();
      const { rows: leads } = await pool.query<{ n: number; phones: number; emails: number }>(
        `select count(*)::int as n, count(distinct phone)::int as phones, count(distinct lower(email::text)) filter (where phone is null)::int as emails
           from app_public.leads where tenant_id = $1 and deleted_at is null`,
        [owner.tenant_id],
      );
      expect(leads[0]).toEqual({ n: distinctLeads, phones: 160, emails: 80 });
      const { rows: batches } = await pool.query<{ status: string; created: number; rows: number }>(
        "select status, created_count as created, row_count as rows from app_public.import_batches where tenant_id = $1",
        [owner.tenant_id],
      );
      expect(batches.every((b) => b.status === "completed" && b.rows === file.length)).toBe(true);
      // Exactly one import created each lead.
      expect(batches.reduce((sum, b) => sum + b.created, 0)).toBe(distinctLeads);
      const { rows: rejected } = await pool.query("select count(*)::int as n from app_public.import_batch_rows where tenant_id = $1 and result = 'rejected'", [owner.tenant_id]);
      expect(rejected[0].n).toBe(0);
    } finally {
      const cleanup = await rootPool().connect();
      try {
        await cleanup.query("delete from app_public.tenants where id = $1", [owner.tenant_id]);
        await cleanup.query("delete from app_public.users where id = any($1)", [[owner.user_id, manager.user_id]]);
      } finally {
        cleanup.release();
      }
    }
  });
});
