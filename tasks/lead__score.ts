/**
 * lead__score — enqueued from SQL (triggers _900_enqueue_lead_score_on_insert/_on_update on
 * app_public.leads) with job key lead_score:<lead_id>, when a lead is created or one of the fields its
 * score is computed from changes. Scoring never runs inline in the user's transaction.
 *
 * The rule lives in SQL: app_private.refresh_lead_score() recalculates with calculate_lead_score()
 * and writes only when the score or its factors change, so a retried or repeated job is harmless.
 * It waits at most 2 s for the lead's row lock; then the job is retried later instead of blocking a worker.
 */
import type { Task } from "graphile-worker";
import { uuidFromPayload } from "../src/worker/taskPayload.ts";

const task: Task = async (payload, helpers) => {
  const leadId = uuidFromPayload(payload, "lead_id", "lead__score");
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
