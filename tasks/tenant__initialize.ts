/**
 * tenant__initialize — enqueued from SQL (trigger _900_enqueue_initialize on app_public.tenants) in
 * the same transaction that creates the tenant. Fills in the tenant's default configuration through
 * app_private.initialize_tenant(), which is idempotent, so a retried job is harmless.
 */
import type { Task } from "graphile-worker";

interface Payload {
  tenant_id: string;
}

function assertPayload(payload: unknown): asserts payload is Payload {
  const p = payload as Partial<Payload> | null;
  if (!p || typeof p.tenant_id !== "string") throw new Error("tenant__initialize needs a payload {tenant_id}");
}

const task: Task = async (payload, helpers) => {
  assertPayload(payload);
  await helpers.withPgClient((client) => client.query("select app_private.initialize_tenant($1)", [payload.tenant_id]));
};

export default task;
