/**
 * lead__score_tenant — enqueued from SQL with job key lead_score_tenant:<tenant_id> when the tenant's
 * scoring weights (system_config scoring.weights) or its service area change. Rescores the tenant's
 * live leads in batches: each call to app_private.refresh_tenant_lead_scores() is one statement, so
 * one short transaction, and returns the last lead id it handled (the cursor for the next batch).
 *
 * Idempotent: a lead is written only when its score changes, so a retry after a crash simply walks
 * the leads again. A weights change during a run enqueues a fresh run (the key moves to a new job).
 */
import type { JobHelpers, Task } from "graphile-worker";
import { uuidFromPayload } from "../src/worker/taskPayload.ts";

const BATCH_SIZE = 200;

async function rescoreBatch(helpers: JobHelpers, tenantId: string, afterLeadId: string | null): Promise<string | null> {
  const { rows } = await helpers.withPgClient((client) =>
    client.query<{ last_id: string | null }>("select app_private.refresh_tenant_lead_scores($1::uuid, $2::uuid, $3) as last_id", [
      tenantId,
      afterLeadId,
      BATCH_SIZE,
    ]),
  );
  return rows[0]?.last_id ?? null;
}

const task: Task = async (payload, helpers) => {
  const tenantId = uuidFromPayload(payload, "tenant_id", "lead__score_tenant");
  let batches = 0;
  // One batch per statement, so one short transaction each; the cursor is the last lead id handled.
  for (let after = await rescoreBatch(helpers, tenantId, null); after !== null; ) {
    batches += 1;
    after = await rescoreBatch(helpers, tenantId, after);
  }
  helpers.logger.info(`rescored the live leads of tenant ${tenantId} in ${batches} batch(es)`);
};

export default task;
