/**
 * routing__refresh_metrics — scheduled nightly in crontab (no payload: every tenant), or enqueued
 * with {tenant_id} for one tenant. Recomputes agent_performance_metrics (current and previous day,
 * week and month) through app_private.refresh_agent_performance_metrics(tenant_id), which upserts,
 * so a retried job is harmless.
 */
import { perTenantRefreshTask } from "../src/worker/perTenantTask.ts";

export default perTenantRefreshTask({
  task: "routing__refresh_metrics",
  sqlFunction: "app_private.refresh_agent_performance_metrics",
  what: "agent metrics",
});
