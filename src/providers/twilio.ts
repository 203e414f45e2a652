/**
 * Twilio over its REST API, through the official `twilio` package: the SMS provider (send, fetch,
 * reconcile) and phone-number provisioning (buy a local number with our webhooks, put it in a
 * Messaging Service, release it).
 *
 * `createTwilioClient({ apiBaseUrl })` sends every request, whichever Twilio host it targets
 * (api.twilio.com, messaging.twilio.com, ...), to one origin instead: the fake Twilio server in
 * tests, or a recording proxy. Automatic retries are off: callers own retry policy, and a blind
 * retry of a send could text a lead twice.
 */
import twilio from "twilio";
import type RequestClient from "twilio/lib/base/RequestClient.js";
import type * as TwilioHttpResponse from "twilio/lib/http/response.js";
import type {
  MessageInstance,
  MessageListInstanceCreateOptions,
} from "twilio/lib/rest/api/v2010/account/message.js";
import type {
  BuyLocalNumberOptions,
  CreateMessagingServiceOptions,
  NumberProvisioner,
  NumberWebhookUrls,
  ProvisionedNumber,
} from "./numbers.ts";
import { ProviderError, type OutboundSms, type ProviderMessage, type SmsProvider } from "./sms.ts";

export type TwilioClient = twilio.Twilio;

export interface TwilioClientOptions {
  accountSid: string;
  authToken: string;
  /** An origin such as `http://127.0.0.1:4010`; every request goes there, same path and query. */
  apiBaseUrl?: string | null;
}

/** A RequestClient that keeps each request's path and query but sends it to one fixed origin. */
class FixedOriginRequestClient extends twilio.RequestClient {
  readonly #origin: URL;

  constructor(origin: URL, options: RequestClient.RequestClientOptions) {
    super(options);
    this.#origin = origin;
  }

  override request<TData>(opts: RequestClient.RequestOptions<TData>): Promise<TwilioHttpResponse.default<TData>> {
    const uri = new URL(opts.uri);
    uri.protocol = this.#origin.protocol;
    uri.hostname = this.#origin.hostname;
    uri.port = this.#origin.port;
    return super.request({ ...opts, uri: uri.href });
  }
}

function parseApiBaseUrl(apiBaseUrl: string): URL {
  let url: URL;
  try {
    url = new URL(apiBaseUrl);
  } catch {
    throw new Error(`Twilio API base URL "${apiBaseUrl}" is not a URL; expected an origin such as http://127.0.0.1:4010`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new Error(`Twilio API base URL "${apiBaseUrl}" must use http or https`);
  }
  if (url.pathname !== "/" || url.search || url.hash || url.username || url.password) {
    throw new Error(
      `Twilio API base URL "${apiBaseUrl}" must be an origin only (scheme, host, port), without path, query or credentials`,
    );
  }
  return url;
}

/** A twilio client with auto-retry off, optionally pointed at another origin (see file comment). */
export function createTwilioClient(opts: TwilioClientOptions): TwilioClient {
  const clientOptions: twilio.ClientOpts = { autoRetry: false };
  if (opts.apiBaseUrl) {
    clientOptions.httpClient = new FixedOriginRequestClient(parseApiBaseUrl(opts.apiBaseUrl), { autoRetry: false });
  }
  return twilio(opts.accountSid, opts.authToken, clientOptions);
}

// ---------------------------------------------------------------------------------------------
// Errors

/** Twilio's RestException (and its RFC 9457 variant) both carry a numeric HTTP `status`. */
function restErrorFields(err: unknown): { status: number; code: number | null; message: string } | null {
  if (!(err instanceof Error)) return null;
  const fields = err as Error & { status?: unknown; code?: unknown };
  if (typeof fields.status !== "number") return null;
  return { status: fields.status, code: typeof fields.code === "number" ? fields.code : null, message: err.message };
}

/** True for 4xx answers that will not change on retry; 408 and 429 are worth retrying. */
function isPermanentHttpStatus(status: number): boolean {
  return status >= 400 && status < 500 && status !== 408 && status !== 429;
}

/** Maps anything the twilio package throws to a ProviderError; `action` says what we were doing. */
export function toProviderError(err: unknown, action: string): ProviderError {
  if (err instanceof ProviderError) return err;
  const rest = restErrorFields(err);
  if (rest) {
    const code = rest.code === null ? "" : `Twilio error ${rest.code}, `;
    return new ProviderError(`Twilio could not ${action}: ${rest.message} (${code}HTTP ${rest.status})`, {
      code: rest.code,
      httpStatus: rest.status,
      permanent: isPermanentHttpStatus(rest.status),
      cause: err,
    });
  }
  // No HTTP answer: connection refused/reset, timeout, DNS. The request may or may not have
  // reached Twilio, so this is never permanent.
  const detail = err instanceof Error ? err.message : String(err);
  const errno = (err as { code?: unknown } | null)?.code;
  const suffix = typeof errno === "string" && !detail.includes(errno) ? ` (${errno})` : "";
  return new ProviderError(`Could not reach Twilio to ${action}: ${detail}${suffix}`, {
    permanent: false,
    cause: err,
  });
}

// ---------------------------------------------------------------------------------------------
// SMS

function toProviderMessage(m: MessageInstance): ProviderMessage {
  return {
    sid: m.sid,
    status: m.status,
    to: m.to,
    from: m.from ?? "",
    body: m.body ?? "",
    dateCreated: m.dateCreated instanceof Date ? m.dateCreated : null,
    errorCode: typeof m.errorCode === "number" ? m.errorCode : null,
    errorMessage: m.errorMessage ?? null,
  };
}

const MESSAGE_SID = /^SM[0-9a-fA-F]{32}$|^MM[0-9a-fA-F]{32}$/;

export class TwilioSmsProvider implements SmsProvider {
  readonly name = "twilio";
  readonly #client: TwilioClient;

  constructor(client: TwilioClient) {
    this.#client = client;
  }

  /** Sends through `messagingServiceSid` when set, otherwise from `from`. */
  async send(message: OutboundSms): Promise<ProviderMessage> {
    const params: MessageListInstanceCreateOptions = { to: message.to, body: message.body };
    if (message.messagingServiceSid) {
      params.messagingServiceSid = message.messagingServiceSid;
    } else if (message.from) {
      params.from = message.from;
    } else {
      throw new ProviderError(`Cannot send an SMS to ${message.to}: it needs a 'from' number or a Messaging Service`, {
        permanent: true,
      });
    }
    if (message.statusCallbackUrl) params.statusCallback = message.statusCallbackUrl;
    try {
      return toProviderMessage(await this.#client.messages.create(params));
    } catch (err) {
      throw toProviderError(err, `send an SMS to ${message.to}`);
    }
  }

  async fetch(sid: string): Promise<ProviderMessage | null> {
    if (!MESSAGE_SID.test(sid)) return null;
    try {
      return toProviderMessage(await this.#client.messages(sid).fetch());
    } catch (err) {
      if (restErrorFields(err)?.status === 404) return null;
      throw toProviderError(err, `fetch message ${sid}`);
    }
  }

  /**
   * Twilio's DateSent> filter is documented at day precision, so the `since` cut-off is applied
   * again here on each message's creation time (to the second, as Twilio reports it).
   */
  async findSent(query: { to: string; from: string | null; since: Date }): Promise<ProviderMessage[]> {
    let found: MessageInstance[];
    try {
      found = await this.#client.messages.list({
        to: query.to,
        ...(query.from ? { from: query.from } : {}),
        dateSentAfter: query.since,
        limit: 50,
      });
    } catch (err) {
      throw toProviderError(err, `list messages sent to ${query.to}`);
    }
    const sinceSecond = Math.floor(query.since.getTime() / 1000) * 1000;
    return found
      .map(toProviderMessage)
      .filter((m) => m.dateCreated === null || m.dateCreated.getTime() >= sinceSecond)
      .sort((a, b) => (b.dateCreated?.getTime() ?? 0) - (a.dateCreated?.getTime() ?? 0));
  }
}

// ---------------------------------------------------------------------------------------------
// Phone numbers and Messaging Services

const CAPABILITY_ORDER = ["voice", "sms", "mms", "fax"];

/** Twilio reports capabilities as `{ voice: true, SMS: true, ... }` (key case varies by endpoint). */
function capabilityList(capabilities: unknown): string[] {
  if (!capabilities || typeof capabilities !== "object") return [];
  const enabled = Object.entries(capabilities)
    .filter(([, on]) => on === true)
    .map(([name]) => name.toLowerCase());
  return CAPABILITY_ORDER.filter((name) => enabled.includes(name));
}

function webhookParams(urls: NumberWebhookUrls) {
  return {
    voiceUrl: urls.voiceUrl,
    voiceMethod: "POST",
    statusCallback: urls.voiceStatusCallbackUrl,
    statusCallbackMethod: "POST",
    smsUrl: urls.smsUrl,
    smsMethod: "POST",
  };
}

/** How many search results to try when another buyer takes the first one (Twilio error 21422). */
const PURCHASE_ATTEMPTS = 3;
const NUMBER_NOT_AVAILABLE = 21422;

export class TwilioNumberProvisioner implements NumberProvisioner {
  readonly #client: TwilioClient;

  constructor(client: TwilioClient) {
    this.#client = client;
  }

  /**
   * Buys an SMS- and voice-capable local number in `areaCode` with our webhooks set. Once a number
   * is bought this never throws: if the webhooks could not be confirmed, `webhooksConfigured` is
   * false so the caller can still record the number (it is billed) and fix it later.
   */
  async buyLocalNumber(opts: BuyLocalNumberOptions): Promise<ProvisionedNumber> {
    const country = (opts.country ?? "US").toUpperCase();
    if (!/^\d{1,6}$/.test(opts.areaCode)) {
      throw new ProviderError(`Area code must be digits only (for example 212), got "${opts.areaCode}"`, {
        permanent: true,
      });
    }
    if (!/^[A-Z]{2}$/.test(country)) {
      throw new ProviderError(`Country must be a two-letter ISO code (for example US), got "${opts.country}"`, {
        permanent: true,
      });
    }

    let candidates;
    try {
      candidates = await this.#client.availablePhoneNumbers(country).local.list({
        areaCode: Number(opts.areaCode),
        smsEnabled: true,
        voiceEnabled: true,
        limit: PURCHASE_ATTEMPTS,
      });
    } catch (err) {
      throw toProviderError(err, `search for local numbers in area code ${opts.areaCode}`);
    }
    if (candidates.length === 0) {
      throw new ProviderError(`No local numbers available in area code ${opts.areaCode}`, { permanent: true });
    }

    let lastError: unknown = null;
    for (const candidate of candidates) {
      let bought;
      try {
        bought = await this.#client.incomingPhoneNumbers.create({
          phoneNumber: candidate.phoneNumber,
          friendlyName: opts.friendlyName,
          ...webhookParams(opts),
        });
      } catch (err) {
        lastError = err;
        if (restErrorFields(err)?.code === NUMBER_NOT_AVAILABLE) continue;
        throw toProviderError(err, `buy ${candidate.phoneNumber}`);
      }
      let webhooksConfigured =
        bought.voiceUrl === opts.voiceUrl &&
        bought.smsUrl === opts.smsUrl &&
        bought.statusCallback === opts.voiceStatusCallbackUrl;
      if (!webhooksConfigured) {
        webhooksConfigured = await this.configureWebhooks(bought.sid, opts).then(
          () => true,
          () => false,
        );
      }
      return {
        sid: bought.sid,
        phoneNumber: bought.phoneNumber,
        friendlyName: bought.friendlyName,
        capabilities: capabilityList(bought.capabilities),
        region: candidate.region || null,
        webhooksConfigured,
      };
    }
    throw toProviderError(lastError, `buy a local number in area code ${opts.areaCode} (the numbers found were taken)`);
  }

  /** Points an existing number's voice, call-status and SMS webhooks (all POST) at our URLs. */
  async configureWebhooks(sid: string, urls: NumberWebhookUrls): Promise<void> {
    try {
      await this.#client.incomingPhoneNumbers(sid).update(webhookParams(urls));
    } catch (err) {
      throw toProviderError(err, `set the webhooks of phone number ${sid}`);
    }
  }

  /**
   * Creates a Messaging Service whose inbound messages and status callbacks come to us, and adds
   * the number to it. If adding the number fails the new service is deleted again (best effort).
   */
  async createMessagingService(opts: CreateMessagingServiceOptions): Promise<{ sid: string; friendlyName: string }> {
    const services = this.#client.messaging.v1.services;
    let service;
    try {
      service = await services.create({
        friendlyName: opts.friendlyName,
        inboundRequestUrl: opts.inboundUrl,
        inboundMethod: "POST",
        statusCallback: opts.statusCallbackUrl,
      });
    } catch (err) {
      throw toProviderError(err, `create Messaging Service "${opts.friendlyName}"`);
    }
    try {
      await services(service.sid).phoneNumbers.create({ phoneNumberSid: opts.phoneNumberSid });
    } catch (err) {
      await services(service.sid)
        .remove()
        .catch(() => undefined);
      throw toProviderError(err, `add phone number ${opts.phoneNumberSid} to Messaging Service ${service.sid}`);
    }
    return { sid: service.sid, friendlyName: service.friendlyName };
  }

  /** Releases a number from the account. Releasing a number that is already gone succeeds. */
  async releaseNumber(sid: string): Promise<void> {
    try {
      await this.#client.incomingPhoneNumbers(sid).remove();
    } catch (err) {
      if (restErrorFields(err)?.status === 404) return;
      throw toProviderError(err, `release phone number ${sid}`);
    }
  }
}
