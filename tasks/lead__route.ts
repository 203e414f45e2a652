/**
 * lead__route — enqueued from SQL (trigger _910_auto_route on app_public.leads) with job key
 * lead_route:<lead_id> when a lead is created in a tenant whose system_config routing.auto_route is
 * 'job'. Routes the lead with app_private.route_lead(tenant, lead, 'new_lead'); the tenant is read
 * from the lead. A repeated run is harmless: route_lead makes no second offer for a lead that has a
 * pending offer or an owner agent (not_routed), and a deleted lead is not routed.
 */
import type { Task } from "graphile-worker";

interface Payload {
  lead_id: string;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function assertPayload(payload: unknown): asserts payload is Payload {
  const p = payload as Partial<Payload> | null;
  if (!p || typeof p.lead_id !== "string" || !UUID.test(p.lead_id)) throw new Error("lead__route needs a payload {lead_id: uuid}");
}

const task: Task = async (payload, helpers) => {
  assertPayload(payload);
  const { rows } = await helpers.withPgClient((client) =>
    client.query<{ history_id: string }>(
      "select app_private.route_lead(l.tenant_id, l.id, 'new_lead') as history_id from app_public.leads l where l.id = $1::uuid",
      [payload.lead_id],
    ),
  );
  if (rows.length === 0) helpers.logger.info(`lead ${payload.lead_id} no longer exists: nothing to route`);
};

export default task;
