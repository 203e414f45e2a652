/**
 * maintenance__compact_lead_rollups — scheduled in crontab every minute. Folds the delta rows that
 * lead changes append to the report rollups (lead_day_counts, lead_stage_reaches) into one total per
 * key, so that lead_funnel and lead_source_roi read few rows. The rule lives in
 * app_private.compact_lead_rollups(), which is exact while writers run and safe to run twice.
 */
import type { Task } from "graphile-worker";

const task: Task = async (_payload, helpers) => {
  const { rows } = await helpers.withPgClient((client) =>
    client.query<{ folded: number }>("select app_private.compact_lead_rollups() as folded"),
  );
  helpers.logger.debug(`folded report rollup deltas into ${rows[0]?.folded ?? 0} totals`);
};

export default task;
