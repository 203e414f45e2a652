/** The nightly CRM refresh fans out one keyed job per tenant, never doubling a pending one. */
import { describe, expect, it } from "vitest";
import { becomeRoot, becomeUser, registerUser, withRootDb } from "../helpers.ts";

const JOBS = `select t.identifier, j.key, j.payload->'recount' as recount from graphile_worker._private_jobs j join graphile_worker._private_tasks t on t.id = j.task_id
               where j.payload->>'tenant_id' = $1 and t.identifier in ('lead__score_tenant', 'segment__refresh_counts') order by 1`;

describe("maintenance__nightly_crm_refresh", () => {
  it("enqueues a rescore for every tenant and a recount of segments where there are segments, keyed per tenant", async () => {
    await withRootDb(async (client) => {
      const withSegments = await registerUser(client);
      const without = await registerUser(client);
      await becomeUser(client, withSegments);
      await client.query(`insert into app_public.segments (name, filter) values ('Hot', '{"status": "hot"}')`);
      await becomeRoot(client);
      await client.query("delete from graphile_worker._private_jobs where payload->>'tenant_id' = any($1)", [[withSegments.tenant_id, without.tenant_id]]);
      const { rows } = await client.query<{ n: number }>("select app_private.enqueue_nightly_crm_refresh() as n");
      expect(rows[0]!.n).toBeGreaterThanOrEqual(2);
      // Twice: the keys replace the pending jobs instead of adding more.
      await client.query("select app_private.enqueue_nightly_crm_refresh()");
      expect((await client.query(JOBS, [withSegments.tenant_id])).rows).toEqual([
        { identifier: "lead__score_tenant", key: `lead_score_tenant:${withSegments.tenant_id}`, recount: null },
        // Keyed apart from the fold that lead changes enqueue (segment_counts:<tenant>): neither replaces the other.
        { identifier: "segment__refresh_counts", key: `segment_recount:${withSegments.tenant_id}`, recount: true },
      ]);
      expect((await client.query(JOBS, [without.tenant_id])).rows).toEqual([
        { identifier: "lead__score_tenant", key: `lead_score_tenant:${without.tenant_id}`, recount: null },
      ]);
    });
  });
});
