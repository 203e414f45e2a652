/**
 * segment__refresh_counts — enqueued from SQL by the statement triggers _900_enqueue_segment_refresh_*
 * on app_public.leads, in the same transaction as the lead change, with job_key
 * 'segment_counts:<tenant_id>' in replace mode and run_at a few seconds later: a burst of lead changes
 * becomes one job per tenant (a debounce). Recomputes every segment's lead_count through
 * app_private.refresh_segment_counts(), which is idempotent, so a retried job is harmless.
 */
import type { Task } from "graphile-worker";

interface Payload {
  tenant_id: string;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function assertPayload(payload: unknown): asserts payload is Payload {
  const p = payload as Partial<Payload> | null;
  if (!p || typeof p.tenant_id !== "string" || !UUID.test(p.tenant_id)) {
    throw new Error("segment__refresh_counts needs a payload {tenant_id: <uuid>}");
  }
}

const task: Task = async (payload, helpers) => {
  assertPayload(payload);
  const { rows } = await helpers.withPgClient((client) =>
    client.query<{ refreshed: number }>("select app_private.refresh_segment_counts($1) as refreshed", [payload.tenant_id]),
  );
  helpers.logger.debug(`Refreshed ${rows[0]?.refreshed ?? 0} segment counts for tenant ${payload.tenant_id}`);
};

export default task;
