/**
 * segment__refresh_counts — enqueued from SQL by the statement triggers _900_enqueue_segment_refresh_*
 * on app_public.leads, in the same transaction as the lead change, with job_key
 * 'segment_counts:<tenant_id>' in replace mode and run_at a few seconds later: a burst of lead changes
 * becomes one job per tenant (a debounce). Recomputes every segment's lead_count through
 * app_private.refresh_segment_counts(), which is idempotent, so a retried job is harmless.
 */
import type { Task } from "graphile-worker";
import { uuidFromPayload } from "../src/worker/taskPayload.ts";

const task: Task = async (payload, helpers) => {
  const tenantId = uuidFromPayload(payload, "tenant_id", "segment__refresh_counts");
  const { rows } = await helpers.withPgClient((client) =>
    client.query<{ refreshed: number }>("select app_private.refresh_segment_counts($1) as refreshed", [tenantId]),
  );
  helpers.logger.debug(`Refreshed ${rows[0]?.refreshed ?? 0} segment counts for tenant ${tenantId}`);
};

export default task;
