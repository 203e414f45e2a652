/**
 * lead__route — enqueued from SQL (trigger _910_auto_route on app_public.leads) with job key
 * lead_route:<lead_id> when a lead is created in a tenant whose system_config routing.auto_route is
 * 'job'. Routes the lead with app_private.route_lead(tenant, lead, 'new_lead'); the tenant is read
 * from the lead. A repeated run is harmless: route_lead makes no second offer for a lead that has a
 * pending offer or an owner agent (not_routed), and a deleted lead is not routed.
 */
import type { Task } from "graphile-worker";
import { uuidFromPayload } from "../src/worker/taskPayload.ts";

const task: Task = async (payload, helpers) => {
  const leadId = uuidFromPayload(payload, "lead_id", "lead__route");
  const { rows } = await helpers.withPgClient((client) =>
    client.query<{ history_id: string }>(
      "select app_private.route_lead(l.tenant_id, l.id, 'new_lead') as history_id from app_public.leads l where l.id = $1::uuid",
      [leadId],
    ),
  );
  if (rows.length === 0) helpers.logger.info(`lead ${leadId} no longer exists: nothing to route`);
};

export default task;
