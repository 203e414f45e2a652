/**
 * A fake Twilio REST server for tests: node:http on 127.0.0.1, a random port, in memory.
 *
 * Point the app at it with `createTwilioClient({ ..., apiBaseUrl: fake.url })`. It speaks the
 * subset of the API Switchboard uses, with Twilio-shaped JSON and errors:
 *   - Messages: create (validates To/Body like Twilio), fetch, list filtered by To/From/DateSent
 *   - AvailablePhoneNumbers/{country}/Local: search (seed with `availableNumbers`)
 *   - IncomingPhoneNumbers: buy, fetch, update webhooks, release
 *   - Messaging v1 Services: create, delete, add a phone number
 * Every request needs HTTP Basic auth with the fake's account sid and auth token.
 *
 * Failure injection: `failNextSends` (Twilio error answers), `acceptButDropResponse` (the message
 * is recorded as accepted, but the client gets a 500 or a dropped connection: a crash between
 * Twilio accepting a message and us recording it). `sendStatusCallback` plays Twilio's signed
 * status callback to the message's StatusCallback URL.
 *
 * Also exports `signTwilioRequest` and `postSignedForm` for webhook tests.
 */
import { randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { isPossiblePhoneNumber } from "libphonenumber-js";
import twilio from "twilio";

export interface FakeMessage {
  sid: string;
  accountSid: string;
  to: string;
  /** null while a Messaging Service has not picked a sender. */
  from: string | null;
  messagingServiceSid: string | null;
  body: string;
  status: string;
  statusCallback: string | null;
  dateCreated: Date;
  dateSent: Date | null;
  errorCode: number | null;
  errorMessage: string | null;
}

export interface FakeCapabilities {
  voice: boolean;
  sms: boolean;
  mms: boolean;
  fax: boolean;
}

export interface FakeNumber {
  sid: string;
  phoneNumber: string;
  friendlyName: string;
  voiceUrl: string | null;
  voiceMethod: string;
  statusCallback: string | null;
  statusCallbackMethod: string;
  smsUrl: string | null;
  smsMethod: string;
  capabilities: FakeCapabilities;
  dateCreated: Date;
}

export interface FakeService {
  sid: string;
  friendlyName: string;
  inboundRequestUrl: string | null;
  inboundMethod: string;
  statusCallback: string | null;
  phoneNumberSids: string[];
  dateCreated: Date;
}

export interface FakeRequest {
  method: string;
  /** The path without the query, e.g. /2010-04-01/Accounts/AC.../Messages.json */
  path: string;
  query: Record<string, string>;
  /** The decoded form body of POST requests. */
  form: Record<string, string>;
}

export interface AvailableNumberSeed {
  phoneNumber: string;
  region?: string | null;
  locality?: string | null;
  capabilities?: Partial<FakeCapabilities>;
}

export interface InjectedError {
  httpStatus: number;
  /** Twilio's error code, e.g. 21610 (unsubscribed recipient), 20429 (too many requests). */
  code?: number | null;
  message?: string;
}

export interface FakeTwilio {
  /** Origin to use as apiBaseUrl, e.g. http://127.0.0.1:40123 */
  readonly url: string;
  readonly accountSid: string;
  readonly authToken: string;
  readonly messages: FakeMessage[];
  readonly numbers: FakeNumber[];
  readonly services: FakeService[];
  readonly requests: FakeRequest[];
  /** The next `n` message creations fail with this error and are not recorded. */
  failNextSends(n: number, error: InjectedError): void;
  /**
   * The next `n` message creations are recorded (status queued/accepted) but the client never
   * sees the success: it gets a 500, or the connection is destroyed ("destroy", the default).
   */
  acceptButDropResponse(n: number, how?: "destroy" | "500"): void;
  /** Search results for an area code (any country); an empty list means none available. */
  availableNumbers(areaCode: string, list: Array<string | AvailableNumberSeed>): void;
  /**
   * Sets the message's status and POSTs Twilio's signed status callback to its StatusCallback URL.
   * Returns the HTTP status the receiver answered with.
   */
  sendStatusCallback(
    sid: string,
    status: string,
    extra?: { errorCode?: number; params?: Record<string, string> },
  ): Promise<number>;
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Webhook helpers

/** The X-Twilio-Signature Twilio would send for a form POST of `params` to `url`. */
export function signTwilioRequest(url: string, params: Record<string, string>, authToken: string): string {
  return twilio.getExpectedTwilioSignature(authToken, url, params);
}

export interface SignedFormResponse {
  status: number;
  text: string;
  headers: Headers;
}

/**
 * POSTs `params` as application/x-www-form-urlencoded to `url` the way Twilio calls webhooks.
 * `signUrl` signs a different URL than the one posted to (e.g. the public URL behind a proxy);
 * `signatureOverride` sends that header value instead; `omitSignature` sends none.
 */
export async function postSignedForm(
  url: string,
  params: Record<string, string>,
  authToken: string,
  opts: { signatureOverride?: string; omitSignature?: boolean; signUrl?: string } = {},
): Promise<SignedFormResponse> {
  const headers: Record<string, string> = {
    "Content-Type": "application/x-www-form-urlencoded",
    "User-Agent": "TwilioProxy/1.1",
  };
  if (!opts.omitSignature) {
    headers["X-Twilio-Signature"] = opts.signatureOverride ?? signTwilioRequest(opts.signUrl ?? url, params, authToken);
  }
  const response = await fetch(url, { method: "POST", headers, body: new URLSearchParams(params).toString() });
  return { status: response.status, text: await response.text(), headers: response.headers };
}

// ---------------------------------------------------------------------------------------------
// Shapes

const E164 = /^\+[1-9]\d{1,14}$/;

/** Twilio rejects numbers that are not E.164 or cannot exist (e.g. +123) with 21211. */
function isDialable(number: string): boolean {
  return E164.test(number) && isPossiblePhoneNumber(number);
}
const API_VERSION = "2010-04-01";

function newSid(prefix: string): string {
  return prefix + randomBytes(16).toString("hex");
}

/** Twilio's API v2010 date format: "Wed, 18 Aug 2010 20:01:40 +0000". */
function rfc2822(date: Date | null): string | null {
  return date ? date.toUTCString().replace(/GMT$/, "+0000") : null;
}

/** Messaging v1 date format: "2015-07-30T20:12:31Z". */
function iso8601(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, "Z");
}

function twilioError(status: number, code: number | null, message: string) {
  return {
    code,
    message,
    more_info: code === null ? null : `https://www.twilio.com/docs/errors/${code}`,
    status,
  };
}

class HttpError extends Error {
  readonly status: number;
  readonly code: number | null;
  constructor(status: number, code: number | null, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function notFound(path: string): HttpError {
  return new HttpError(404, 20404, `The requested resource ${path} was not found`);
}

// ---------------------------------------------------------------------------------------------
// Server

export async function startFakeTwilio(opts: { accountSid: string; authToken: string }): Promise<FakeTwilio> {
  const { accountSid, authToken } = opts;
  const messages: FakeMessage[] = [];
  const numbers: FakeNumber[] = [];
  const services: FakeService[] = [];
  const requests: FakeRequest[] = [];
  const seeded = new Map<string, AvailableNumberSeed[]>();
  const injectedErrors: InjectedError[] = [];
  const drops: Array<"destroy" | "500"> = [];
  const accountPath = `/${API_VERSION}/Accounts/${accountSid}`;

  function messageJson(m: FakeMessage) {
    return {
      account_sid: m.accountSid,
      api_version: API_VERSION,
      body: m.body,
      date_created: rfc2822(m.dateCreated),
      date_sent: rfc2822(m.dateSent),
      date_updated: rfc2822(m.dateSent ?? m.dateCreated),
      direction: "outbound-api",
      error_code: m.errorCode,
      error_message: m.errorMessage,
      from: m.from,
      messaging_service_sid: m.messagingServiceSid,
      num_media: "0",
      num_segments: "1",
      price: null,
      price_unit: "USD",
      sid: m.sid,
      status: m.status,
      subresource_uris: { media: `${accountPath}/Messages/${m.sid}/Media.json` },
      to: m.to,
      uri: `${accountPath}/Messages/${m.sid}.json`,
    };
  }

  function numberJson(n: FakeNumber) {
    return {
      account_sid: accountSid,
      address_requirements: "none",
      address_sid: null,
      api_version: API_VERSION,
      beta: false,
      bundle_sid: null,
      capabilities: n.capabilities,
      date_created: rfc2822(n.dateCreated),
      date_updated: rfc2822(n.dateCreated),
      emergency_address_sid: null,
      emergency_address_status: "unregistered",
      emergency_status: "Inactive",
      friendly_name: n.friendlyName,
      identity_sid: null,
      origin: "twilio",
      phone_number: n.phoneNumber,
      sid: n.sid,
      sms_application_sid: "",
      sms_fallback_method: "POST",
      sms_fallback_url: "",
      sms_method: n.smsMethod,
      sms_url: n.smsUrl ?? "",
      status: "in-use",
      status_callback: n.statusCallback ?? "",
      status_callback_method: n.statusCallbackMethod,
      subresource_uris: {},
      trunk_sid: null,
      type: "local",
      uri: `${accountPath}/IncomingPhoneNumbers/${n.sid}.json`,
      voice_application_sid: "",
      voice_caller_id_lookup: false,
      voice_fallback_method: "POST",
      voice_fallback_url: null,
      voice_method: n.voiceMethod,
      voice_receive_mode: "voice",
      voice_url: n.voiceUrl ?? "",
    };
  }

  function serviceJson(s: FakeService) {
    const url = `https://messaging.twilio.com/v1/Services/${s.sid}`;
    return {
      account_sid: accountSid,
      area_code_geomatch: true,
      date_created: iso8601(s.dateCreated),
      date_updated: iso8601(s.dateCreated),
      fallback_method: "POST",
      fallback_to_long_code: true,
      fallback_url: null,
      friendly_name: s.friendlyName,
      inbound_method: s.inboundMethod,
      inbound_request_url: s.inboundRequestUrl,
      links: { phone_numbers: `${url}/PhoneNumbers` },
      mms_converter: true,
      scan_message_content: "inherit",
      sid: s.sid,
      smart_encoding: true,
      status_callback: s.statusCallback,
      sticky_sender: true,
      synchronous_validation: true,
      url,
      us_app_to_person_registered: false,
      use_inbound_webhook_on_number: false,
      usecase: "undeclared",
      validity_period: 14400,
    };
  }

  function availableFor(areaCode: string): AvailableNumberSeed[] {
    const owned = new Set(numbers.map((n) => n.phoneNumber));
    const list = seeded.get(areaCode) ?? [
      { phoneNumber: `+1${areaCode}555${String(1000 + randomBytes(2).readUInt16BE() % 9000)}` },
      { phoneNumber: `+1${areaCode}555${String(1000 + randomBytes(2).readUInt16BE() % 9000)}` },
    ];
    return list.filter((n) => !owned.has(n.phoneNumber));
  }

  function capabilitiesOf(seed: AvailableNumberSeed | undefined): FakeCapabilities {
    return { voice: true, sms: true, mms: true, fax: false, ...seed?.capabilities };
  }

  // --- Messages -------------------------------------------------------------------------------

  function createMessage(form: Record<string, string>): FakeMessage {
    const to = form.To;
    if (!to) throw new HttpError(400, 21604, "A 'To' phone number is required.");
    if (!isDialable(to)) throw new HttpError(400, 21211, `The 'To' number ${to} is not a valid phone number.`);
    const from = form.From || null;
    const messagingServiceSid = form.MessagingServiceSid || null;
    if (!from && !messagingServiceSid) throw new HttpError(400, 21603, "A 'From' phone number is required.");
    const body = form.Body ?? "";
    if (!body && !form.MediaUrl) throw new HttpError(400, 21602, "Message body is required.");
    if (body.length > 1600) {
      throw new HttpError(400, 21617, "The concatenated message body exceeds the 1600 character limit.");
    }
    const message: FakeMessage = {
      sid: newSid("SM"),
      accountSid,
      to,
      from,
      messagingServiceSid,
      body,
      // A Messaging Service send without From is "accepted" until a sender is picked.
      status: from ? "queued" : "accepted",
      statusCallback: form.StatusCallback || null,
      dateCreated: new Date(),
      dateSent: null,
      errorCode: null,
      errorMessage: null,
    };
    messages.push(message);
    return message;
  }

  function listMessages(query: Record<string, string>, path: string) {
    const time = (m: FakeMessage) => (m.dateSent ?? m.dateCreated).getTime();
    const bound = (key: string): number | null => {
      const value = query[key];
      if (value === undefined) return null;
      const ms = Date.parse(value);
      if (Number.isNaN(ms)) throw new HttpError(400, 20001, `Invalid value for ${key}: ${value}`);
      return ms;
    };
    const after = bound("DateSent>");
    const before = bound("DateSent<");
    const matching = messages
      .map((m, index) => ({ m, index }))
      .filter(({ m }) => (query.To === undefined || m.to === query.To) && (query.From === undefined || m.from === query.From))
      .filter(({ m }) => (after === null || time(m) >= after) && (before === null || time(m) <= before))
      // Newest first; ties (same second) in reverse order of creation.
      .sort((a, b) => time(b.m) - time(a.m) || b.index - a.index)
      .map(({ m }) => m);
    return page("messages", matching.map(messageJson), query, path);
  }

  /** An API v2010 list page, with the page fields twilio's Page class reads. */
  function page(key: string, all: unknown[], query: Record<string, string>, path: string) {
    const pageSize = Math.min(Math.max(Number(query.PageSize ?? 50) || 50, 1), 1000);
    const pageNumber = Math.max(Number(query.Page ?? 0) || 0, 0);
    const items = all.slice(pageNumber * pageSize, (pageNumber + 1) * pageSize);
    const uriFor = (n: number) => {
      const params = new URLSearchParams({ ...query, PageSize: String(pageSize), Page: String(n) });
      return `${path}?${params.toString()}`;
    };
    const hasNext = (pageNumber + 1) * pageSize < all.length;
    return {
      [key]: items,
      end: pageNumber * pageSize + Math.max(items.length - 1, 0),
      first_page_uri: uriFor(0),
      next_page_uri: hasNext ? uriFor(pageNumber + 1) : null,
      page: pageNumber,
      page_size: pageSize,
      previous_page_uri: pageNumber > 0 ? uriFor(pageNumber - 1) : null,
      start: pageNumber * pageSize,
      uri: uriFor(pageNumber),
    };
  }

  // --- Phone numbers --------------------------------------------------------------------------

  function searchLocal(country: string, query: Record<string, string>, path: string) {
    const areaCode = query.AreaCode;
    if (areaCode === undefined) throw new HttpError(400, 20001, "AreaCode is required by this fake");
    const wantSms = query.SmsEnabled === "true";
    const wantVoice = query.VoiceEnabled === "true";
    const list = availableFor(areaCode)
      .filter((n) => (!wantSms || capabilitiesOf(n).sms) && (!wantVoice || capabilitiesOf(n).voice))
      .map((n) => {
        const caps = capabilitiesOf(n);
        return {
          address_requirements: "none",
          beta: false,
          // Twilio's search answers use upper-case SMS/MMS keys.
          capabilities: { voice: caps.voice, SMS: caps.sms, MMS: caps.mms, fax: caps.fax },
          friendly_name: n.phoneNumber.replace(/^\+1(\d{3})(\d{3})(\d{4})$/, "($1) $2-$3"),
          iso_country: country,
          lata: null,
          latitude: null,
          locality: n.locality ?? null,
          longitude: null,
          phone_number: n.phoneNumber,
          postal_code: null,
          rate_center: null,
          region: n.region ?? null,
        };
      });
    return { available_phone_numbers: list, uri: `${path}?${new URLSearchParams(query).toString()}` };
  }

  function applyNumberUpdate(n: FakeNumber, form: Record<string, string>): void {
    if (form.FriendlyName !== undefined) n.friendlyName = form.FriendlyName;
    if (form.VoiceUrl !== undefined) n.voiceUrl = form.VoiceUrl;
    if (form.VoiceMethod !== undefined) n.voiceMethod = form.VoiceMethod;
    if (form.StatusCallback !== undefined) n.statusCallback = form.StatusCallback;
    if (form.StatusCallbackMethod !== undefined) n.statusCallbackMethod = form.StatusCallbackMethod;
    if (form.SmsUrl !== undefined) n.smsUrl = form.SmsUrl;
    if (form.SmsMethod !== undefined) n.smsMethod = form.SmsMethod;
  }

  function buyNumber(form: Record<string, string>): FakeNumber {
    let phoneNumber = form.PhoneNumber;
    let seed: AvailableNumberSeed | undefined;
    if (phoneNumber === undefined) {
      if (form.AreaCode === undefined) throw new HttpError(400, 21450, "PhoneNumber or AreaCode is required");
      seed = availableFor(form.AreaCode)[0];
      if (!seed) throw new HttpError(400, 21452, `No phone numbers found in area code ${form.AreaCode}`);
      phoneNumber = seed.phoneNumber;
    } else {
      if (!isDialable(phoneNumber)) throw new HttpError(400, 21421, `PhoneNumber ${phoneNumber} is invalid`);
      if (numbers.some((n) => n.phoneNumber === phoneNumber)) {
        throw new HttpError(400, 21422, `PhoneNumber ${phoneNumber} is not available`);
      }
      seed = [...seeded.values()].flat().find((s) => s.phoneNumber === phoneNumber);
    }
    const number: FakeNumber = {
      sid: newSid("PN"),
      phoneNumber,
      friendlyName: phoneNumber,
      voiceUrl: null,
      voiceMethod: "POST",
      statusCallback: null,
      statusCallbackMethod: "POST",
      smsUrl: null,
      smsMethod: "POST",
      capabilities: capabilitiesOf(seed),
      dateCreated: new Date(),
    };
    applyNumberUpdate(number, form);
    numbers.push(number);
    return number;
  }

  function findNumber(sid: string, path: string): FakeNumber {
    const number = numbers.find((n) => n.sid === sid);
    if (!number) throw notFound(path);
    return number;
  }

  // --- Messaging Services ---------------------------------------------------------------------

  function createService(form: Record<string, string>): FakeService {
    if (!form.FriendlyName) throw new HttpError(400, 20001, "Missing required parameter FriendlyName in the post body");
    const service: FakeService = {
      sid: newSid("MG"),
      friendlyName: form.FriendlyName,
      inboundRequestUrl: form.InboundRequestUrl || null,
      inboundMethod: form.InboundMethod || "POST",
      statusCallback: form.StatusCallback || null,
      phoneNumberSids: [],
      dateCreated: new Date(),
    };
    services.push(service);
    return service;
  }

  function addServiceNumber(service: FakeService, form: Record<string, string>) {
    const phoneNumberSid = form.PhoneNumberSid;
    if (!phoneNumberSid) throw new HttpError(400, 20001, "Missing required parameter PhoneNumberSid in the post body");
    const number = numbers.find((n) => n.sid === phoneNumberSid);
    if (!number) throw new HttpError(400, 21710, `Phone Number ${phoneNumberSid} does not exist on this account`);
    if (service.phoneNumberSids.includes(phoneNumberSid)) {
      throw new HttpError(409, 21710, "Phone Number or Short Code is already in the Messaging Service.");
    }
    if (services.some((s) => s.phoneNumberSids.includes(phoneNumberSid))) {
      throw new HttpError(409, 21712, "Phone Number is already associated with another Messaging Service.");
    }
    service.phoneNumberSids.push(phoneNumberSid);
    const url = `https://messaging.twilio.com/v1/Services/${service.sid}/PhoneNumbers/${number.sid}`;
    return {
      account_sid: accountSid,
      capabilities: Object.entries(number.capabilities)
        .filter(([, on]) => on)
        .map(([name]) => name.toUpperCase()),
      country_code: "US",
      date_created: iso8601(new Date()),
      date_updated: iso8601(new Date()),
      phone_number: number.phoneNumber,
      service_sid: service.sid,
      sid: number.sid,
      url,
    };
  }

  function findService(sid: string, path: string): FakeService {
    const service = services.find((s) => s.sid === sid);
    if (!service) throw notFound(path);
    return service;
  }

  // --- Routing --------------------------------------------------------------------------------

  type Answer = { status: number; json?: unknown } | "dropped";

  function route(method: string, path: string, query: Record<string, string>, form: Record<string, string>): Answer {
    let m: RegExpMatchArray | null;
    const api = `^/${API_VERSION}/Accounts/(AC[0-9a-fA-F]{32})`;

    if ((m = path.match(new RegExp(`${api}/`))) && m[1] !== accountSid) throw notFound(path);

    if (new RegExp(`${api}/Messages\\.json$`).test(path)) {
      if (method === "GET") return { status: 200, json: listMessages(query, path) };
      if (method === "POST") {
        const injected = injectedErrors.shift();
        if (injected) {
          throw new HttpError(injected.httpStatus, injected.code ?? null, injected.message ?? "Injected failure");
        }
        const message = createMessage(form);
        const drop = drops.shift();
        if (drop === "destroy") return "dropped";
        if (drop === "500") throw new HttpError(500, 20500, "An internal server error has occurred");
        return { status: 201, json: messageJson(message) };
      }
    }
    if ((m = path.match(new RegExp(`${api}/Messages/([A-Za-z0-9]+)\\.json$`))) && method === "GET") {
      const message = messages.find((x) => x.sid === m?.[2]);
      if (!message) throw notFound(path);
      return { status: 200, json: messageJson(message) };
    }
    if ((m = path.match(new RegExp(`${api}/AvailablePhoneNumbers/([A-Z]{2})/Local\\.json$`))) && method === "GET") {
      return { status: 200, json: searchLocal(m[2] ?? "US", query, path) };
    }
    if (new RegExp(`${api}/IncomingPhoneNumbers\\.json$`).test(path) && method === "POST") {
      return { status: 201, json: numberJson(buyNumber(form)) };
    }
    if ((m = path.match(new RegExp(`${api}/IncomingPhoneNumbers/([A-Za-z0-9]+)\\.json$`)))) {
      const number = findNumber(m[2] ?? "", path);
      if (method === "GET") return { status: 200, json: numberJson(number) };
      if (method === "POST") {
        applyNumberUpdate(number, form);
        return { status: 200, json: numberJson(number) };
      }
      if (method === "DELETE") {
        numbers.splice(numbers.indexOf(number), 1);
        for (const s of services) s.phoneNumberSids = s.phoneNumberSids.filter((sid) => sid !== number.sid);
        return { status: 204 };
      }
    }
    if (path === "/v1/Services" && method === "POST") {
      return { status: 201, json: serviceJson(createService(form)) };
    }
    if ((m = path.match(/^\/v1\/Services\/([A-Za-z0-9]+)$/))) {
      const service = findService(m[1] ?? "", path);
      if (method === "GET") return { status: 200, json: serviceJson(service) };
      if (method === "DELETE") {
        services.splice(services.indexOf(service), 1);
        return { status: 204 };
      }
    }
    if ((m = path.match(/^\/v1\/Services\/([A-Za-z0-9]+)\/PhoneNumbers$/)) && method === "POST") {
      return { status: 201, json: addServiceNumber(findService(m[1] ?? "", path), form) };
    }
    throw notFound(path);
  }

  function authorized(req: IncomingMessage): boolean {
    const header = req.headers.authorization ?? "";
    const match = /^Basic (.+)$/i.exec(header);
    if (!match?.[1]) return false;
    const decoded = Buffer.from(match[1], "base64").toString("utf8");
    return decoded === `${accountSid}:${authToken}`;
  }

  function send(res: ServerResponse, status: number, json?: unknown): void {
    if (json === undefined) {
      res.writeHead(status).end();
      return;
    }
    res.writeHead(status, { "Content-Type": "application/json; charset=utf-8" }).end(JSON.stringify(json));
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const url = new URL(req.url ?? "/", "http://fake-twilio");
    const method = req.method ?? "GET";
    const query = Object.fromEntries(url.searchParams);
    const form = method === "POST" ? Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString("utf8"))) : {};
    requests.push({ method, path: url.pathname, query, form });

    if (!authorized(req)) {
      res.setHeader("WWW-Authenticate", 'Basic realm="Twilio API"');
      send(res, 401, { ...twilioError(401, 20003, "Authenticate"), detail: "Your AccountSid or AuthToken was incorrect." });
      return;
    }
    try {
      const answer = route(method, url.pathname, query, form);
      if (answer === "dropped") {
        req.socket.destroy();
        return;
      }
      send(res, answer.status, answer.json);
    } catch (err) {
      if (err instanceof HttpError) {
        send(res, err.status, twilioError(err.status, err.code, err.message));
      } else {
        send(res, 500, twilioError(500, 20500, err instanceof Error ? err.message : String(err)));
      }
    }
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) send(res, 500, twilioError(500, 20500, String(err)));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    accountSid,
    authToken,
    messages,
    numbers,
    services,
    requests,
    failNextSends(n, error) {
      for (let i = 0; i < n; i++) injectedErrors.push(error);
    },
    acceptButDropResponse(n, how = "destroy") {
      for (let i = 0; i < n; i++) drops.push(how);
    },
    availableNumbers(areaCode, list) {
      seeded.set(
        areaCode,
        list.map((entry) => (typeof entry === "string" ? { phoneNumber: entry } : entry)),
      );
    },
    async sendStatusCallback(sid, status, extra = {}) {
      const message = messages.find((m) => m.sid === sid);
      if (!message) throw new Error(`Fake Twilio has no message ${sid}`);
      if (!message.statusCallback) throw new Error(`Message ${sid} was sent without a StatusCallback URL`);
      message.status = status;
      if (!message.from && message.messagingServiceSid) {
        const service = services.find((s) => s.sid === message.messagingServiceSid);
        const sender = numbers.find((n) => service?.phoneNumberSids.includes(n.sid));
        if (sender) message.from = sender.phoneNumber;
      }
      if (["sent", "delivered", "undelivered", "failed"].includes(status)) message.dateSent ??= new Date();
      if (extra.errorCode !== undefined) message.errorCode = extra.errorCode;
      const params: Record<string, string> = {
        AccountSid: accountSid,
        ApiVersion: API_VERSION,
        MessageSid: sid,
        MessageStatus: status,
        SmsSid: sid,
        SmsStatus: status,
        To: message.to,
      };
      if (message.from) params.From = message.from;
      if (message.messagingServiceSid) params.MessagingServiceSid = message.messagingServiceSid;
      if (extra.errorCode !== undefined) params.ErrorCode = String(extra.errorCode);
      Object.assign(params, extra.params);
      const response = await postSignedForm(message.statusCallback, params, authToken);
      return response.status;
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
