/**
 * routing__release_locks — scheduled in crontab every 5 minutes. Calendar slot locks whose
 * locked_until has passed already count as free for every reader; app_private.release_expired_slot_locks()
 * clears them (with a lock_expired routing event each), so running it again finds nothing to do.
 */
import type { Task } from "graphile-worker";

const task: Task = async (_payload, helpers) => {
  const { rows } = await helpers.withPgClient((client) =>
    client.query<{ released: number }>("select app_private.release_expired_slot_locks() as released"),
  );
  const released = rows[0]?.released ?? 0;
  if (released > 0) helpers.logger.info(`released ${released} expired slot locks`);
};

export default task;
