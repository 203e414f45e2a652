/**
 * The outside world as the worker tasks see it: the SMS and email providers, the AI responder,
 * number provisioning, ServiceTitan's settings and shared rate limit, and the public URLs (webhooks, unsubscribe links). Built once from the configuration when the worker starts
 * (makeServices) and read by the tasks (services()); tests install their own (setServices).
 */
import type pg from "pg";
import type { Config, ServiceTitanSettings, WebhookSettings } from "../config.ts";
import type { AiResponder } from "../providers/ai.ts";
import { createAiResponder } from "../providers/aiFactory.ts";
import type { EmailProvider } from "../providers/email.ts";
import { LocalEmailProvider } from "../providers/emailLocal.ts";
import { SmtpEmailProvider } from "../providers/emailSmtp.ts";
import type { NumberProvisioner } from "../providers/numbers.ts";
import { LocalNumberProvisioner } from "../providers/numbersLocal.ts";
import type { RequestLimiter } from "../providers/serviceTitan.ts";
import { pgRequestLimiters } from "../providers/serviceTitanPgLimiter.ts";
import type { SmsProvider } from "../providers/sms.ts";
import { LocalSmsProvider } from "../providers/smsLocal.ts";
import { createTwilioClient, TwilioNumberProvisioner, TwilioSmsProvider } from "../providers/twilio.ts";

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
  email: EmailProvider;
  /** The default sender of emails (EMAIL_FROM); its domain names our Message-IDs. */
  emailFrom: { name: string | null; address: string };
  /** The public base URL, read when a URL is needed (in tests the port is known only after listen). */
  publicUrl: () => string;
  /** How to reach ServiceTitan and decrypt stored credentials; without it ServiceTitan syncs fail with a clear error. */
  serviceTitan?: ServiceTitanSettings;
  /** ServiceTitan's rate limit shared by every worker process (slots in PostgreSQL); without it, per process. */
  serviceTitanLimiter?: (key: string, holdMs: number) => RequestLimiter;
  /** How outbound webhooks are sent; without it, the defaults (10 s, 8 at a time, public addresses only). */
  webhooks?: WebhookSettings;
}

export const defaultWebhookSettings: WebhookSettings = { timeoutMs: 10_000, concurrency: 8, allowPrivateTargets: false };

export function webhookUrls(publicUrl: string): WebhookUrls {
  const base = `${publicUrl.replace(/\/$/, "")}/webhooks/twilio`;
  return { voice: `${base}/voice`, voiceStatus: `${base}/voice/status`, sms: `${base}/sms`, smsStatus: `${base}/sms/status` };
}

export function makeServices(config: Pick<Config, "telephony" | "email" | "serviceTitan" | "webhooks">, ownerPool: pg.Pool, publicUrl: () => string): Services {
  const { telephony, email } = config;
  const ai = createAiResponder(telephony.aiEnv);
  const emailProvider: EmailProvider =
    email.provider === "smtp" && email.smtpUrl
      ? new SmtpEmailProvider({ url: email.smtpUrl, timeoutMs: email.timeoutMs })
      : new LocalEmailProvider(ownerPool);
  const common = {
    ai,
    email: emailProvider,
    emailFrom: email.from,
    publicUrl,
    serviceTitan: config.serviceTitan,
    serviceTitanLimiter: pgRequestLimiters(ownerPool),
    webhooks: config.webhooks,
  };
  if (telephony.smsProvider === "twilio" && telephony.twilio) {
    const client = createTwilioClient(telephony.twilio);
    return { ...common, sms: new TwilioSmsProvider(client), numbers: new TwilioNumberProvisioner(client) };
  }
  return { ...common, sms: new LocalSmsProvider(ownerPool, telephony.webhookAuthToken), numbers: new LocalNumberProvisioner() };
}

let current: Services | null = null;

export function setServices(value: Services | null): void {
  current = value;
}

export function services(): Services {
  if (!current) throw new Error("The worker's services (SMS provider, AI responder) were not set up: call setServices first");
  return current;
}
