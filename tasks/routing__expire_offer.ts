/**
 * routing__expire_offer — enqueued from SQL by app_private.route_lead when it makes an offer, with
 * run_at = the offer's expires_at and job key routing_offer:<offer_id>.
 *
 * The rule lives in SQL: app_private.expire_offer() does nothing (returns false) when the offer was
 * answered already or has not expired yet, so an early, repeated or retried job is harmless. When it
 * expires the offer it gives back the reserved load and slot and routes the lead again.
 */
import type { Task } from "graphile-worker";

interface Payload {
  offer_id: string;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function assertPayload(payload: unknown): asserts payload is Payload {
  const p = payload as Partial<Payload> | null;
  if (!p || typeof p.offer_id !== "string" || !UUID.test(p.offer_id)) throw new Error("routing__expire_offer needs a payload {offer_id: uuid}");
}

const task: Task = async (payload, helpers) => {
  assertPayload(payload);
  const { rows } = await helpers.withPgClient((client) =>
    client.query<{ expired: boolean }>("select app_private.expire_offer($1::uuid) as expired", [payload.offer_id]),
  );
  if (!rows[0]?.expired) helpers.logger.info(`offer ${payload.offer_id} was answered, is gone or has not expired yet: nothing to do`);
};

export default task;
