/**
 * tenant__initialize — enqueued from SQL (trigger _900_enqueue_initialize on app_public.tenants) in
 * the same transaction that creates the tenant. Fills in the tenant's default configuration through
 * app_private.initialize_tenant(), which is idempotent, so a retried job is harmless.
 */
import type { Task } from "graphile-worker";
import { uuidFromPayload } from "../src/worker/taskPayload.ts";

const task: Task = async (payload, helpers) => {
  const tenantId = uuidFromPayload(payload, "tenant_id", "tenant__initialize");
  await helpers.withPgClient((client) => client.query("select app_private.initialize_tenant($1)", [tenantId]));
};

export default task;
