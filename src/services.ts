/**
 * The outside world as the worker tasks see it: the SMS provider, the AI responder, number
 * provisioning and the public webhook URLs. Built once from the configuration when the worker starts
 * (makeServices) and read by the tasks (services()); tests install their own (setServices).
 */
import type pg from "pg";
import type { TelephonyConfig } from "./config.ts";
import { createAiResponder, type AiResponder } from "./providers/ai.ts";
import { LocalNumberProvisioner } from "./providers/numbersLocal.ts";
import type { SmsProvider } from "./providers/sms.ts";
import { LocalSmsProvider } from "./providers/smsLocal.ts";
import {
  createTwilioClient,
  TwilioNumberProvisioner,
  TwilioSmsProvider,
  type BuyLocalNumberOptions,
  type CreateMessagingServiceOptions,
  type ProvisionedNumber,
} from "./providers/twilio.ts";

export interface NumberProvisioner {
  buyLocalNumber(opts: BuyLocalNumberOptions): Promise<ProvisionedNumber>;
  createMessagingService(opts: CreateMessagingServiceOptions): Promise<{ sid: string; friendlyName: string }>;
}

export interface WebhookUrls {
  voice: string;
  voiceStatus: string;
  sms: string;
  smsStatus: string;
}

export interface Services {
  sms: SmsProvider;
  ai: AiResponder;
  numbers: NumberProvisioner;
  /** The public base URL, read when a URL is needed (in tests the port is known only after listen). */
  publicUrl: () => string;
}

export function webhookUrls(publicUrl: string): WebhookUrls {
  const base = `${publicUrl.replace(/\/$/, "")}/webhooks/twilio`;
  return { voice: `${base}/voice`, voiceStatus: `${base}/voice/status`, sms: `${base}/sms`, smsStatus: `${base}/sms/status` };
}

export function makeServices(telephony: TelephonyConfig, ownerPool: pg.Pool, publicUrl: () => string): Services {
  const ai = createAiResponder(telephony.aiEnv);
  if (telephony.smsProvider === "twilio" && telephony.twilio) {
    const client = createTwilioClient(telephony.twilio);
    return { sms: new TwilioSmsProvider(client), ai, numbers: new TwilioNumberProvisioner(client), publicUrl };
  }
  return { sms: new LocalSmsProvider(ownerPool, telephony.webhookAuthToken), ai, numbers: new LocalNumberProvisioner(), publicUrl };
}

let current: Services | null = null;

export function setServices(value: Services | null): void {
  current = value;
}

export function services(): Services {
  if (!current) throw new Error("The worker's services (SMS provider, AI responder) were not set up: call setServices first");
  return current;
}
