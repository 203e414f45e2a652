/**
 * segment__refresh_counts — keeps segments' lead_count. Two callers, two job keys:
 * - after lead changes, the statement triggers _900_enqueue_segment_refresh_* on app_public.leads
 *   enqueue {tenant_id} with job_key 'segment_counts:<tenant_id>' (replace mode, run_at a few seconds
 *   later: a burst of changes becomes one job). It runs app_private.fold_segment_counts(), which adds
 *   the deltas the trigger recorded to the counts (reading no lead) and recounts the segments whose
 *   filter moves with time;
 * - every night, app_private.enqueue_nightly_crm_refresh() enqueues {tenant_id, recount: true} with
 *   job_key 'segment_recount:<tenant_id>', which recounts every segment from its leads
 *   (app_private.refresh_segment_counts()).
 * Both are idempotent, so a retried job is harmless.
 */
import type { Task } from "graphile-worker";
import { uuidFromPayload } from "../src/worker/taskPayload.ts";

const task: Task = async (payload, helpers) => {
  const tenantId = uuidFromPayload(payload, "tenant_id", "segment__refresh_counts");
  const recount = (payload as { recount?: unknown }).recount === true;
  const fn = recount ? "app_private.refresh_segment_counts" : "app_private.fold_segment_counts";
  const { rows } = await helpers.withPgClient((client) => client.query<{ refreshed: number }>(`select ${fn}($1) as refreshed`, [tenantId]));
  helpers.logger.debug(`${recount ? "Recounted" : "Updated"} ${rows[0]?.refreshed ?? 0} segment counts for tenant ${tenantId}`);
};

export default task;
