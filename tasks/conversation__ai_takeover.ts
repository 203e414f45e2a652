/**
 * conversation__ai_takeover — enqueued by app_private.record_inbound_message, run_at = the customer's
 * text + the ai_takeover_delay of the person who owns the conversation (job key ai_takeover:<id>,
 * preserve_run_at: later texts do not push it back). app_private.ai_takeover decides: nothing when a
 * person has answered meanwhile, the conversation ended or the AI is off.
 */
import type { Task } from "graphile-worker";
import { uuidFromPayload } from "../src/worker/taskPayload.ts";

const task: Task = async (payload, helpers) => {
  const conversationId = uuidFromPayload(payload, "conversation_id", "conversation__ai_takeover");
  const { rows } = await helpers.withPgClient((client) =>
    client.query<{ took: boolean }>("select app_private.ai_takeover($1::uuid) as took", [conversationId]),
  );
  helpers.logger.info(rows[0]?.took ? `AI took over conversation ${conversationId}` : `conversation ${conversationId} stays with people`);
};

export default task;
