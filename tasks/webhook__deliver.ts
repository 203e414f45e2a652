/**
 * webhook__deliver — sends the due deliveries of one webhook endpoint (job key webhook_endpoint:<id>,
 * enqueued at the commit of the events it should get, for its next retry, on redelivery and by
 * webhook__sweep).
 *
 * At least once, never lost: app_private.claim_webhook_deliveries leases a batch and counts the attempt
 * before anything is sent, so a worker that dies mid-delivery leaves a lease that runs out, and the
 * next run (or the sweep) sends again. The receiver drops the repeat by webhook-id (the event's id). Each
 * batch's answers are recorded in one call (app_private.record_webhook_attempts), each through
 * app_private.record_webhook_attempt, which holds every rule: delivered, retry
 * with backoff, give up, turn the endpoint off and tell the owners. Running twice is harmless: the
 * second run finds the batch leased or delivered. When nothing is due, the claim enqueues this job for
 * the endpoint's next retry.
 */
import type { Task } from "graphile-worker";
import { postWebhook } from "../src/providers/webhookPoster.ts";
import { defaultWebhookSettings, services } from "../src/worker/services.ts";
import { uuidFromPayload } from "../src/worker/taskPayload.ts";

interface Claimed {
  delivery_id: string;
  event_id: string;
  url: string;
  secrets: string[] | null;
  payload: string;
  attempt: number;
}

/** A run gives the worker back after this long, so one busy endpoint does not hold a slot for ever. */
const RUN_BUDGET_MS = 20_000;

const task: Task = async (payload, helpers) => {
  const endpointId = uuidFromPayload(payload, "endpoint_id", "webhook__deliver");
  const settings = services().webhooks ?? defaultWebhookSettings;
  // Long enough for the batch (sent at once) and its records; a worker that dies holding it delays it this long.
  const leaseSeconds = Math.ceil(settings.timeoutMs / 1000) + 5;
  const started = Date.now();
  for (;;) {
    const { rows } = await helpers.withPgClient((client) =>
      client.query<Claimed>("select * from app_private.claim_webhook_deliveries($1, $2, $3)", [endpointId, settings.concurrency, leaseSeconds]),
    );
    if (rows.length === 0) return;
    const answers = await Promise.all(
      rows.map(async (delivery) => {
        const answer = await postWebhook({
          url: delivery.url,
          id: delivery.event_id,
          payload: delivery.payload,
          secrets: delivery.secrets ?? [],
          timeoutMs: settings.timeoutMs,
          allowPrivateTargets: settings.allowPrivateTargets,
        });
        return {
          delivery_id: delivery.delivery_id,
          status_code: answer.status,
          error: answer.status === null ? (answer.error ?? "no answer") : null,
          duration_ms: answer.durationMs,
          response_body: answer.body,
        };
      }),
    );
    await helpers.withPgClient((client) => client.query("select app_private.record_webhook_attempts($1::jsonb)", [JSON.stringify(answers)]));
    if (Date.now() - started > RUN_BUDGET_MS) {
      await helpers.withPgClient((client) => client.query("select app_private.schedule_webhook_endpoint($1)", [endpointId]));
      return;
    }
  }
};

export default task;
