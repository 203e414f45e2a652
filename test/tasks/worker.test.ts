/**
 * Jobs are enqueued from SQL in the same transaction as the change that causes them, only through
 * the owner's SECURITY DEFINER helper, and the real worker runs them.
 */
import type { Runner } from "graphile-worker";
import { afterAll, describe, expect, it } from "vitest";
import { startWorker } from "../../src/worker/start.ts";
import { becomeUser, expectSqlError, ownerPool, registerUser, rootPool, withRootDb } from "../helpers.ts";

let runner: Runner | null = null;
afterAll(async () => {
  await runner?.stop();
});

describe("jobs from SQL", () => {
  it("registering a tenant enqueues tenant__initialize in the same transaction (and a rollback removes it)", async () => {
    let tenantId = "";
    await withRootDb(async (client) => {
      const user = await registerUser(client);
      tenantId = user.tenant_id!;
      const { rows } = await client.query(
        `select t.identifier from graphile_worker._private_jobs j join graphile_worker._private_tasks t on t.id = j.task_id
          where t.identifier = 'tenant__initialize' and j.payload->>'tenant_id' = $1`,
        [tenantId],
      );
      expect(rows).toHaveLength(1);
    });
    const { rows } = await rootPool().query("select count(*)::int as n from graphile_worker._private_jobs where payload->>'tenant_id' = $1", [tenantId]);
    expect(rows[0].n).toBe(0);
  });

  it("the request role cannot enqueue jobs or reach the worker's schema", async () => {
    await withRootDb(async (client) => {
      const user = await registerUser(client);
      await becomeUser(client, user);
      await expectSqlError(client, "42501", () => client.query("select app_private.add_job('tenant__initialize', '{}')"));
      await expectSqlError(client, "42501", () => client.query("select * from graphile_worker.jobs"));
    });
  });

  it("our SQL enqueues jobs only through app_private.add_job and add_jobs: no other function of ours calls graphile_worker's add_job", async () => {
    const { rows } = await rootPool().query<{ fn: string }>(
      `select p.oid::regprocedure::text as fn
         from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
        where n.nspname in ('app_public', 'app_hidden', 'app_private', 'raw')
          and p.prosrc ~* 'graphile_worker\\s*\\.\\s*"?add_jobs?\\M'
        order by 1`,
    );
    expect(rows.map((r) => r.fn)).toEqual([
      "app_private.add_job(text,json,text,timestamp with time zone,integer,text,integer,text)",
      "app_private.add_jobs(text,json[])",
    ]);
  });

  it("app_private.add_jobs enqueues one job per payload, without keys", async () => {
    await withRootDb(async (client) => {
      const { rows } = await client.query<{ n: number }>(
        "select app_private.add_jobs('test__add_jobs_probe', array['{\"n\": 1}', '{\"n\": 2}', null]::json[]) as n",
      );
      expect(rows[0]!.n).toBe(3);
      const jobs = await client.query(
        `select j.payload, j.key from graphile_worker._private_jobs j join graphile_worker._private_tasks t on t.id = j.task_id
          where t.identifier = 'test__add_jobs_probe'`,
      );
      // graphile-worker does not promise the order in which one call inserts its jobs.
      expect(jobs.rows).toHaveLength(3);
      expect(jobs.rows).toEqual(expect.arrayContaining([{ payload: {}, key: null }, { payload: { n: 1 }, key: null }, { payload: { n: 2 }, key: null }]));
    });
  });

  it("app_private.add_job passes job_key_mode on: preserve_run_at keeps a pending job's time, the default replaces it", async () => {
    await withRootDb(async (client) => {
      const later = "2031-01-01T00:00:00Z";
      const runAt = async () =>
        (await client.query("select run_at from graphile_worker._private_jobs where key = 'entry-point-test'")).rows[0].run_at.toISOString();
      await client.query("select app_private.add_job('routing__escalate', '{}', run_at => $1, job_key => 'entry-point-test')", [later]);
      await client.query("select app_private.add_job('routing__escalate', '{}', run_at => now(), job_key => 'entry-point-test', job_key_mode => 'preserve_run_at')");
      expect(await runAt()).toBe(new Date(later).toISOString());
      await client.query("select app_private.add_job('routing__escalate', '{}', run_at => '2032-01-01T00:00:00Z', job_key => 'entry-point-test')");
      expect(await runAt()).toBe(new Date("2032-01-01T00:00:00Z").toISOString());
      await expectSqlError(client, "GWBKM", () =>
        client.query("select app_private.add_job('routing__escalate', '{}', job_key => 'entry-point-test', job_key_mode => 'sometimes')"),
      );
    });
  });

  it("the worker runs tenant__initialize: defaults appear and the tenant is marked initialised", async () => {
    const root = await rootPool().connect();
    let tenantId: string;
    try {
      tenantId = (await registerUser(root, { businessName: "Worker Test Co" })).tenant_id!;
    } finally {
      root.release();
    }
    runner = await startWorker(ownerPool(), 2, { only: ["tenant__initialize"] });
    const deadline = Date.now() + 30_000;
    let initialized = false;
    while (Date.now() < deadline && !initialized) {
      const { rows } = await rootPool().query("select initialized_at is not null as done from app_public.tenants where id = $1", [tenantId]);
      initialized = rows[0].done;
      if (!initialized) await new Promise((r) => setTimeout(r, 200));
    }
    expect(initialized).toBe(true);
    const config = await rootPool().query("select key from app_public.system_config where tenant_id = $1 order by key", [tenantId]);
    expect(config.rows.map((r) => r.key)).toContain("routing.offer_timeout_seconds");
    // Idempotent: running the step again changes nothing.
    await rootPool().query("select app_private.initialize_tenant($1)", [tenantId]);
    const again = await rootPool().query("select count(*)::int as n from app_public.system_config where tenant_id = $1", [tenantId]);
    expect(again.rows[0].n).toBe(config.rows.length);
  });
});
