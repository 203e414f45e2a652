/**
 * phone_number__provision — enqueued by app_public.request_phone_number (job key provision:<id>).
 * Buys a local number in the area code with our webhooks, puts it in a Messaging Service, and records
 * it (app_private.complete_phone_number_provisioning; only a row still provisioning changes). A
 * permanent provider refusal (e.g. no numbers in the area code) marks the row failed with the reason;
 * a transient one throws, so graphile-worker retries with backoff.
 */
import type { Task } from "graphile-worker";
import { ProviderError } from "../src/providers/sms.ts";
import { services, webhookUrls } from "../src/worker/services.ts";
import { uuidFromPayload } from "../src/worker/taskPayload.ts";

const task: Task = async (payload, helpers) => {
  const id = uuidFromPayload(payload, "phone_number_id", "phone_number__provision");
  const { rows } = await helpers.withPgClient((client) =>
    client.query<{ area_code: string; friendly_name: string | null }>(
      "select area_code, friendly_name from app_public.phone_numbers where id = $1 and status = 'provisioning'",
      [id],
    ),
  );
  const request = rows[0];
  if (!request) return;
  const { numbers, publicUrl } = services();
  const urls = webhookUrls(publicUrl());
  try {
    const bought = await numbers.buyLocalNumber({
      areaCode: request.area_code,
      voiceUrl: urls.voice,
      voiceStatusCallbackUrl: urls.voiceStatus,
      smsUrl: urls.sms,
      friendlyName: request.friendly_name ?? `Switchboard ${request.area_code}`,
    });
    let service: { sid: string; friendlyName: string } | null = null;
    try {
      service = await numbers.createMessagingService({
        friendlyName: bought.friendlyName,
        inboundUrl: urls.sms,
        statusCallbackUrl: urls.smsStatus,
        phoneNumberSid: bought.sid,
      });
    } catch (error) {
      helpers.logger.warn(`number ${bought.phoneNumber} bought, but its Messaging Service could not be created: ${(error as Error).message}`);
    }
    await helpers.withPgClient((client) =>
      client.query("select app_private.complete_phone_number_provisioning($1, $2)", [
        id,
        JSON.stringify({
          phone_number: bought.phoneNumber,
          phone_number_sid: bought.sid,
          friendly_name: bought.friendlyName,
          region: bought.region,
          capabilities: bought.capabilities,
          webhooks_configured: bought.webhooksConfigured,
          voice_webhook_url: urls.voice,
          sms_webhook_url: urls.sms,
          status_callback_url: urls.voiceStatus,
          messaging_service: service ? { sid: service.sid, friendly_name: service.friendlyName, status_callback: urls.smsStatus } : null,
        }),
      ]),
    );
  } catch (error) {
    if (error instanceof ProviderError && error.permanent) {
      await helpers.withPgClient((client) => client.query("select app_private.fail_phone_number_provisioning($1, $2)", [id, error.message]));
      return;
    }
    throw error;
  }
};

export default task;
