/**
 * maintenance__nightly_crm_refresh — scheduled in crontab. Scores and segment counts that depend on
 * time (engagement recency, "created within N days") are refreshed every night: the SQL function
 * fans out one keyed job per tenant (lead__score_tenant, segment__refresh_counts).
 */
import type { Task } from "graphile-worker";

const task: Task = async (_payload, helpers) => {
  const { rows } = await helpers.withPgClient((client) =>
    client.query<{ tenants: number }>("select app_private.enqueue_nightly_crm_refresh() as tenants"),
  );
  helpers.logger.info(`queued the nightly CRM refresh for ${rows[0]?.tenants ?? 0} tenants`);
};

export default task;
