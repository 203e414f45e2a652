/**
 * webhook__sweep — every minute (crontab): every enabled webhook endpoint with a due delivery that
 * nobody is sending (a worker died holding its lease, or its job was lost) gets its webhook__deliver
 * job again. The rule is app_private.sweep_webhook_deliveries; running twice only enqueues the same
 * job key twice.
 */
import type { Task } from "graphile-worker";

const task: Task = async (_payload, helpers) => {
  const { rows } = await helpers.withPgClient((client) =>
    client.query<{ endpoints: number }>("select app_private.sweep_webhook_deliveries() as endpoints"),
  );
  const endpoints = rows[0]?.endpoints ?? 0;
  if (endpoints > 0) helpers.logger.info(`webhook sweep: ${endpoints} endpoint(s) with due deliveries got their job again`);
};

export default task;
