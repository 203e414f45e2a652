/**
 * The phone-number provisioning interface every implementation (Twilio, the local development
 * provisioner) follows: buy a local number with our webhooks set, put it in a Messaging Service.
 * Failures are ProviderError (sms.ts), whose `permanent` tells phone_number__provision whether to
 * give up or retry. Moved here from services.ts and twilio.ts so the local provisioner needs neither.
 */

export interface NumberWebhookUrls {
  /** Incoming calls (POST). */
  voiceUrl: string;
  /** Call status changes (POST). */
  voiceStatusCallbackUrl: string;
  /** Incoming messages (POST); a Messaging Service's inbound URL takes precedence when the number is in one. */
  smsUrl: string;
}

export interface BuyLocalNumberOptions extends NumberWebhookUrls {
  areaCode: string;
  /** ISO country code; default US. */
  country?: string;
  friendlyName: string;
}

export interface ProvisionedNumber {
  sid: string;
  phoneNumber: string;
  friendlyName: string;
  /** Enabled capabilities, in the order voice, sms, mms, fax. */
  capabilities: string[];
  /** State or region of the number, when Twilio's search reported it. */
  region: string | null;
  /** False when the number was bought but setting its webhooks failed: call configureWebhooks again. */
  webhooksConfigured: boolean;
}

export interface CreateMessagingServiceOptions {
  friendlyName: string;
  inboundUrl: string;
  statusCallbackUrl: string;
  phoneNumberSid: string;
}

export interface NumberProvisioner {
  buyLocalNumber(opts: BuyLocalNumberOptions): Promise<ProvisionedNumber>;
  createMessagingService(opts: CreateMessagingServiceOptions): Promise<{ sid: string; friendlyName: string }>;
}
