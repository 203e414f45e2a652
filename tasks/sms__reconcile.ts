/**
 * sms__reconcile — settles a message left in sending (its worker stopped, or the provider's answer
 * was lost). Asks the provider what it has: by the recorded id, else the messages it sent to that
 * number since the claim with the same body (and an id no other message has). app_private.reconcile_message
 * records what was found (never sent again), or queues the message again when the provider has no trace of it (it never left).
 */
import type { Task } from "graphile-worker";
import type { ProviderMessage } from "../src/providers/sms.ts";
import { services } from "../src/worker/services.ts";
import { uuidFromPayload } from "../src/worker/taskPayload.ts";

interface Pending {
  status: string;
  message_sid: string | null;
  to_phone: string;
  from_phone: string | null;
  messaging_service_sid: string | null;
  body: string;
  sending_at: Date | null;
}

const task: Task = async (payload, helpers) => {
  const messageId = uuidFromPayload(payload, "message_id", "sms__reconcile");
  const { rows } = await helpers.withPgClient((client) =>
    client.query<Pending>(
      "select status, message_sid, to_phone, from_phone, messaging_service_sid, body, sending_at from app_public.messages where id = $1",
      [messageId],
    ),
  );
  const message = rows[0];
  if (!message || message.status !== "sending") return;
  const { sms } = services();
  let found: ProviderMessage | null = null;
  if (message.message_sid) {
    found = await sms.fetch(message.message_sid);
  } else {
    const since = new Date((message.sending_at ?? new Date()).getTime() - 60_000);
    const candidates = (await sms.findSent({ to: message.to_phone, from: message.messaging_service_sid ? null : message.from_phone, since }))
      .filter((m) => m.body === message.body);
    if (candidates.length > 0) {
      const { rows: used } = await helpers.withPgClient((client) =>
        client.query<{ message_sid: string }>("select message_sid from app_public.messages where message_sid = any($1)", [candidates.map((c) => c.sid)]),
      );
      const taken = new Set(used.map((u) => u.message_sid));
      // Oldest first: identical texts claimed one after the other match in order.
      found = candidates.filter((c) => !taken.has(c.sid)).sort((a, b) => (a.dateCreated?.getTime() ?? 0) - (b.dateCreated?.getTime() ?? 0))[0] ?? null;
    }
  }
  const { rows: result } = await helpers.withPgClient((client) =>
    client.query<{ status: string }>("select app_private.reconcile_message($1, $2, $3, $4, $5) as status", [
      messageId,
      found?.sid ?? null,
      found?.status ?? null,
      found?.errorCode ?? null,
      found?.errorMessage ?? null,
    ]),
  );
  helpers.logger.info(`message ${messageId} reconciled: ${result[0]?.status}${found ? ` (${found.sid})` : " (not found at the provider)"}`);
};

export default task;
