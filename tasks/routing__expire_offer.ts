/**
 * routing__expire_offer — enqueued from SQL by app_private.route_lead when it makes an offer, with
 * run_at = the offer's expires_at and job key routing_offer:<offer_id>.
 *
 * The rule lives in SQL: app_private.expire_offer() does nothing (returns false) when the offer was
 * answered already or has not expired yet, so an early, repeated or retried job is harmless. When it
 * expires the offer it gives back the reserved load and slot and routes the lead again.
 */
import type { Task } from "graphile-worker";
import { uuidFromPayload } from "../src/worker/taskPayload.ts";

const task: Task = async (payload, helpers) => {
  const offerId = uuidFromPayload(payload, "offer_id", "routing__expire_offer");
  const { rows } = await helpers.withPgClient((client) =>
    client.query<{ expired: boolean }>("select app_private.expire_offer($1::uuid) as expired", [offerId]),
  );
  if (!rows[0]?.expired) helpers.logger.info(`offer ${offerId} was answered, is gone or has not expired yet: nothing to do`);
};

export default task;
