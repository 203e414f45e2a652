/**
 * email__sweep — every minute (crontab): emails a stopped worker left behind get their job again
 * (queued) or are settled (sending). The rule is app_private.sweep_email_outbox; payload
 * {grace_seconds} overrides the default 10 minutes.
 */
import type { Task } from "graphile-worker";

const task: Task = async (payload, helpers) => {
  const raw = (payload as { grace_seconds?: unknown } | null)?.grace_seconds;
  const grace = typeof raw === "number" && Number.isInteger(raw) && raw >= 0 ? raw : 600;
  const { rows } = await helpers.withPgClient((client) =>
    client.query<{ requeued: number; to_settle: number }>("select * from app_private.sweep_email_outbox(make_interval(secs => $1))", [grace]),
  );
  const { requeued = 0, to_settle = 0 } = rows[0] ?? {};
  if (requeued > 0 || to_settle > 0) helpers.logger.info(`email sweep: ${requeued} queued email(s) re-enqueued, ${to_settle} sent to be settled`);
};

export default task;
