/**
 * sms__sweep — every minute (crontab): outbox rows a stopped worker left behind get their job again
 * (queued) or a reconciliation (sending). The rule is app_private.sweep_outbox; payload
 * {grace_seconds} overrides the default 10 minutes.
 */
import type { Task } from "graphile-worker";

const task: Task = async (payload, helpers) => {
  const raw = (payload as { grace_seconds?: unknown } | null)?.grace_seconds;
  const grace = typeof raw === "number" && Number.isInteger(raw) && raw >= 0 ? raw : 600;
  const { rows } = await helpers.withPgClient((client) =>
    client.query<{ requeued: number; to_reconcile: number }>("select * from app_private.sweep_outbox(make_interval(secs => $1))", [grace]),
  );
  const { requeued = 0, to_reconcile = 0 } = rows[0] ?? {};
  if (requeued > 0 || to_reconcile > 0) helpers.logger.info(`outbox sweep: ${requeued} queued message(s) re-enqueued, ${to_reconcile} sent to reconciliation`);
};

export default task;
