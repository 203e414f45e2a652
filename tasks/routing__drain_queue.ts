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
import { uuidFromPayload } from "../src/worker/taskPayload.ts";

const task: Task = async (payload, helpers) => {
  const tenantId = uuidFromPayload(payload, "tenant_id", "routing__drain_queue");
  const { rows } = await helpers.withPgClient((client) =>
    client.query<{ routed: number }>("select app_private.drain_routing_queue($1::uuid) as routed", [tenantId]),
  );
  helpers.logger.info(`tenant ${tenantId}: ${rows[0]?.routed ?? 0} queued leads routed`);
};

export default task;
