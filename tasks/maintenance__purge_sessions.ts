/**
 * maintenance__purge_sessions — scheduled in crontab. Deletes sessions that expired or were revoked
 * long ago (the rule and the retention live in app_private.purge_expired_sessions()).
 */
import type { Task } from "graphile-worker";

const task: Task = async (_payload, helpers) => {
  const { rows } = await helpers.withPgClient((client) =>
    client.query<{ purged: number }>("select app_private.purge_expired_sessions() as purged"),
  );
  helpers.logger.info(`purged ${rows[0]?.purged ?? 0} old sessions`);
};

export default task;
