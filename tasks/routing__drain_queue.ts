/**
 * routing__drain_queue — enqueued from SQL (triggers on agent_availability, availability_slots and
 * agents) with job key routing_drain:<tenant_id> when capacity appears in a tenant that has leads
 * waiting: an agent becomes available, their load drops, a slot becomes free.
 *
 * The rule lives in SQL: app_private.drain_routing_queue() re-routes the waiting leads in queue
 * order, one drain per tenant at a time, and stops when nobody has capacity left; running it again
 * only retries leads that are still waiting.
 */
import type { Task } from "graphile-worker";

interface Payload {
  tenant_id: string;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function assertPayload(payload: unknown): asserts payload is Payload {
  const p = payload as Partial<Payload> | null;
  if (!p || typeof p.tenant_id !== "string" || !UUID.test(p.tenant_id)) throw new Error("routing__drain_queue needs a payload {tenant_id: uuid}");
}

const task: Task = async (payload, helpers) => {
  assertPayload(payload);
  const { rows } = await helpers.withPgClient((client) =>
    client.query<{ routed: number }>("select app_private.drain_routing_queue($1::uuid) as routed", [payload.tenant_id]),
  );
  helpers.logger.info(`tenant ${payload.tenant_id}: ${rows[0]?.routed ?? 0} queued leads routed`);
};

export default task;
