/**
 * sms__send — hands one outbox message to the SMS provider (job key sms_send:<message_id>, enqueued
 * by the messages trigger at scheduled_for).
 *
 * No duplicate sends: the claim (queued → sending) commits before the provider is called, so a second
 * job, a retry or a restarted worker finds nothing to claim. After the call:
 *   accepted            → record_message_sent (its provider id; delivery reports move it on)
 *   refused for good    → record_message_failed (e.g. 21211 invalid number)
 *   429 too many        → release_message_for_retry (certainly not taken: queued again later)
 *   anything uncertain  → left in sending; sms__reconcile asks the provider later and resends only
 *                        when the provider has no such message.
 */
import type { Task } from "graphile-worker";
import { ProviderError } from "../src/providers/sms.ts";
import { services, webhookUrls } from "../src/worker/services.ts";
import { uuidFromPayload } from "../src/worker/taskPayload.ts";

interface Claimed {
  id: string | null;
  to_phone: string;
  from_phone: string | null;
  messaging_service_sid: string | null;
  body: string;
}

const task: Task = async (payload, helpers) => {
  const messageId = uuidFromPayload(payload, "message_id", "sms__send");
  const { rows } = await helpers.withPgClient((client) =>
    client.query<Claimed>("select * from app_private.claim_outbound_message($1::uuid)", [messageId]),
  );
  const message = rows[0];
  if (!message?.id) {
    helpers.logger.info(`message ${messageId} is not due, not queued any more, or was canceled: nothing to send`);
    return;
  }
  const { sms, publicUrl } = services();
  try {
    const sent = await sms.send({
      to: message.to_phone,
      from: message.messaging_service_sid ? null : message.from_phone,
      messagingServiceSid: message.messaging_service_sid,
      body: message.body,
      statusCallbackUrl: `${webhookUrls(publicUrl()).smsStatus}?message_id=${messageId}`,
    });
    await helpers.withPgClient((client) =>
      client.query("select app_private.record_message_sent($1, $2, $3)", [messageId, sent.sid, sent.status]),
    );
  } catch (error) {
    if (error instanceof ProviderError && error.permanent) {
      await helpers.withPgClient((client) =>
        client.query("select app_private.record_message_failed($1, $2, $3)", [messageId, error.code, error.message]),
      );
      helpers.logger.warn(`message ${messageId} refused by ${sms.name}: ${error.message}`);
      return;
    }
    if (error instanceof ProviderError && error.httpStatus === 429) {
      await helpers.withPgClient((client) =>
        client.query("select app_private.release_message_for_retry($1, $2, 30)", [messageId, error.message]),
      );
      return;
    }
    // Uncertain: the provider may have taken it. Ask it later instead of sending again.
    await helpers.withPgClient((client) =>
      client.query(
        "select app_private.add_job('sms__reconcile', json_build_object('message_id', $1::uuid), run_at => now() + interval '30 seconds', job_key => 'sms_reconcile:' || $1)",
        [messageId],
      ),
    );
    helpers.logger.warn(`message ${messageId}: outcome unknown (${(error as Error).message}); it will be reconciled, not resent`);
  }
};

export default task;
