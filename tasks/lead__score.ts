/**
 * lead__score — enqueued from SQL by triggers on app_public.leads: {lead_ids} for up to 500 leads an
 * insert statement created (_900_enqueue_lead_score_on_insert), {lead_id} with job key
 * lead_score:<lead_id> when one of the fields a score is computed from changes (_on_update). Scoring
 * never runs inline in the user's transaction.
 *
 * The rule lives in SQL: app_private.refresh_lead_score() recalculates with calculate_lead_score()
 * and writes only when the score or its factors change, so a retried or repeated job is harmless.
 * {lead_id}: it waits at most 2 s for the lead's row lock; then the job is retried later instead of
 * blocking a worker. {lead_ids}: app_private.refresh_lead_scores, 50 leads per transaction; a locked
 * lead is not waited for but gets a {lead_id} job of its own, so it never holds back the others.
 */
import type { Task } from "graphile-worker";
import { isUuid, uuidFromPayload } from "../src/worker/taskPayload.ts";

/** The leads of the payload: {lead_id} or {lead_ids: [...]} (at most 500). */
function leadIds(payload: unknown): string[] {
  const ids = (payload as { lead_ids?: unknown } | null)?.lead_ids;
  if (ids === undefined) return [uuidFromPayload(payload, "lead_id", "lead__score")];
  if (!Array.isArray(ids) || ids.length === 0 || ids.length > 500 || !ids.every(isUuid)) {
    throw new Error("lead__score needs a payload {lead_id: uuid} or {lead_ids: [uuid, …]} (1 to 500)");
  }
  return ids;
}

const task: Task = async (payload, helpers) => {
  const ids = leadIds(payload);
  if ((payload as { lead_ids?: unknown } | null)?.lead_ids !== undefined) {
    // New leads: 50 per transaction. A lead locked by another transaction is not waited for, it gets a
    // job of its own (app_private.refresh_lead_scores), so it never holds back the others.
    for (let i = 0; i < ids.length; i += 50) {
      await helpers.withPgClient((client) => client.query("select app_private.refresh_lead_scores($1::uuid[])", [ids.slice(i, i + 50)]));
    }
    return;
  }
  const leadId = ids[0]!;
  // A lead locked by a long transaction (an open user edit, a routing race) must not hold a worker slot:
  // after 2 s the job fails with 55P03 and graphile-worker retries it later, with backoff.
  const { rows } = await helpers.withPgClient(async (client) => {
    await client.query("begin");
    try {
      await client.query("set local lock_timeout = '2s'");
      const result = await client.query<{ score: number | null }>("select app_private.refresh_lead_score($1::uuid) as score", [leadId]);
      await client.query("commit");
      return result;
    } catch (error) {
      await client.query("rollback");
      throw error;
    }
  });
  const score = rows[0]?.score ?? null;
  if (score === null) helpers.logger.info(`lead ${leadId} no longer exists: nothing to score`);
};

export default task;
