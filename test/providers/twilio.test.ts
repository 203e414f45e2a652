/**
 * The Twilio provider (src/providers/twilio.ts) against the fake Twilio REST server
 * (test/fakeTwilio.ts): sending and error mapping, reconciling a send whose answer was lost,
 * buying and configuring numbers, Messaging Services, and signed status callbacks.
 * No database is needed.
 */
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import twilio from "twilio";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { ProviderError, type OutboundSms } from "../../src/providers/sms.ts";
import {
  createTwilioClient,
  TwilioNumberProvisioner,
  TwilioSmsProvider,
  type TwilioClient,
} from "../../src/providers/twilio.ts";
import { postSignedForm, signTwilioRequest, startFakeTwilio, type FakeTwilio } from "../fakeTwilio.ts";

const accountSid = "AC" + "0123456789abcdef".repeat(2);
const authToken = "fake-auth-token-0123456789";
const FROM = "+12125550100";
const TO = "+14155550123";

let fake: FakeTwilio;
let client: TwilioClient;
let sms: TwilioSmsProvider;
let numbers: TwilioNumberProvisioner;

beforeEach(async () => {
  fake = await startFakeTwilio({ accountSid, authToken });
  client = createTwilioClient({ accountSid, authToken, apiBaseUrl: fake.url });
  sms = new TwilioSmsProvider(client);
  numbers = new TwilioNumberProvisioner(client);
});

afterEach(async () => {
  await fake.close();
});

function outbound(overrides: Partial<OutboundSms> = {}): OutboundSms {
  return {
    to: TO,
    from: FROM,
    messagingServiceSid: null,
    body: "Hi from Switchboard",
    statusCallbackUrl: "https://app.example.com/twilio/status?tenant=t1",
    ...overrides,
  };
}

async function providerErrorFrom(promise: Promise<unknown>): Promise<ProviderError> {
  const err = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ProviderError);
  return err as ProviderError;
}

describe("createTwilioClient", () => {
  it("sends requests for both api.twilio.com and messaging.twilio.com to the base URL, same paths", async () => {
    await sms.send(outbound());
    await client.messaging.v1.services.create({ friendlyName: "Routing check" });
    expect(fake.requests.map((r) => `${r.method} ${r.path}`)).toEqual([
      `POST /2010-04-01/Accounts/${accountSid}/Messages.json`,
      "POST /v1/Services",
    ]);
  });

  it("keeps the query string when rewriting the origin", async () => {
    await sms.findSent({ to: TO, from: FROM, since: new Date("2024-05-01T10:00:00Z") });
    const request = fake.requests[0];
    expect(request?.query).toMatchObject({ To: TO, From: FROM, "DateSent>": "2024-05-01T10:00:00Z", PageSize: "50" });
  });

  it("rejects a base URL that is not an origin", () => {
    expect(() => createTwilioClient({ accountSid, authToken, apiBaseUrl: "http://127.0.0.1:9/twilio" })).toThrow(
      /must be an origin only/,
    );
    expect(() => createTwilioClient({ accountSid, authToken, apiBaseUrl: "not a url" })).toThrow(/is not a URL/);
    expect(() => createTwilioClient({ accountSid, authToken, apiBaseUrl: "ftp://127.0.0.1:9" })).toThrow(
      /must use http or https/,
    );
  });
});

describe("TwilioSmsProvider.send", () => {
  it("sends To, From, Body and StatusCallback and returns Twilio's sid and status", async () => {
    const sent = await sms.send(outbound());
    expect(sent).toMatchObject({ status: "queued", to: TO, from: FROM, body: "Hi from Switchboard", errorCode: null });
    expect(sent.sid).toMatch(/^SM[0-9a-f]{32}$/);
    expect(sent.dateCreated).toBeInstanceOf(Date);
    expect(fake.messages).toHaveLength(1);
    expect(fake.messages[0]).toMatchObject({
      sid: sent.sid,
      to: TO,
      from: FROM,
      messagingServiceSid: null,
      body: "Hi from Switchboard",
      statusCallback: "https://app.example.com/twilio/status?tenant=t1",
    });
  });

  it("sends through a Messaging Service instead of From when one is given", async () => {
    const serviceSid = "MG" + "a".repeat(32);
    const sent = await sms.send(outbound({ messagingServiceSid: serviceSid, statusCallbackUrl: null }));
    expect(sent.status).toBe("accepted");
    expect(sent.from).toBe("");
    expect(fake.messages[0]).toMatchObject({ messagingServiceSid: serviceSid, from: null, statusCallback: null });
    expect(fake.requests[0]?.form).not.toHaveProperty("From");
  });

  it("refuses a message with neither a from number nor a Messaging Service, without calling Twilio", async () => {
    const err = await providerErrorFrom(sms.send(outbound({ from: null })));
    expect(err.permanent).toBe(true);
    expect(err.message).toMatch(/needs a 'from' number or a Messaging Service/);
    expect(fake.requests).toHaveLength(0);
  });

  it("maps an invalid To number (400, 21211) to a permanent error with Twilio's code", async () => {
    const err = await providerErrorFrom(sms.send(outbound({ to: "+123" })));
    expect(err).toMatchObject({ name: "ProviderError", permanent: true, code: 21211, httpStatus: 400 });
    expect(err.message).toContain("The 'To' number +123 is not a valid phone number.");
    expect(fake.messages).toHaveLength(0);
  });

  it("maps a missing body (21602) to a permanent error", async () => {
    const err = await providerErrorFrom(sms.send(outbound({ body: "" })));
    expect(err).toMatchObject({ permanent: true, code: 21602, httpStatus: 400 });
  });

  it("maps an unsubscribed recipient (21610) to a permanent error", async () => {
    fake.failNextSends(1, { httpStatus: 400, code: 21610, message: "Attempt to send to unsubscribed recipient" });
    const err = await providerErrorFrom(sms.send(outbound()));
    expect(err).toMatchObject({ permanent: true, code: 21610, httpStatus: 400 });
  });

  it("maps 500 and 429 to transient errors and does not retry by itself", async () => {
    fake.failNextSends(1, { httpStatus: 500, code: 20500, message: "An internal server error has occurred" });
    fake.failNextSends(1, { httpStatus: 429, code: 20429, message: "Too Many Requests" });
    const serverError = await providerErrorFrom(sms.send(outbound()));
    expect(serverError).toMatchObject({ permanent: false, code: 20500, httpStatus: 500 });
    const tooMany = await providerErrorFrom(sms.send(outbound()));
    expect(tooMany).toMatchObject({ permanent: false, code: 20429, httpStatus: 429 });
    expect(fake.requests).toHaveLength(2);
    expect(fake.messages).toHaveLength(0);

    const sent = await sms.send(outbound());
    expect(fake.messages.map((m) => m.sid)).toEqual([sent.sid]);
  });

  it("maps a dropped connection to a transient error without an HTTP status", async () => {
    fake.acceptButDropResponse(1);
    const err = await providerErrorFrom(sms.send(outbound()));
    expect(err).toMatchObject({ permanent: false, code: null, httpStatus: null });
    expect(err.message).toMatch(/^Could not reach Twilio to send an SMS to \+14155550123/);
  });

  it("maps an unreachable Twilio to a transient error", async () => {
    const closed = await startFakeTwilio({ accountSid, authToken });
    await closed.close();
    const offline = new TwilioSmsProvider(createTwilioClient({ accountSid, authToken, apiBaseUrl: closed.url }));
    const err = await providerErrorFrom(offline.send(outbound()));
    expect(err).toMatchObject({ permanent: false, httpStatus: null });
    expect(err.message).toMatch(/ECONNREFUSED/);
  });

  it("maps bad credentials (401, 20003) to a permanent error", async () => {
    const wrong = new TwilioSmsProvider(createTwilioClient({ accountSid, authToken: "wrong", apiBaseUrl: fake.url }));
    const err = await providerErrorFrom(wrong.send(outbound()));
    expect(err).toMatchObject({ permanent: true, code: 20003, httpStatus: 401 });
    expect(fake.messages).toHaveLength(0);
  });
});

describe("reconciling a send whose answer was lost", () => {
  for (const how of ["destroy", "500"] as const) {
    it(`findSent finds the message Twilio accepted when the answer was ${how === "500" ? "a 500" : "a dropped connection"}`, async () => {
      const since = new Date(Date.now() - 60_000);
      fake.acceptButDropResponse(1, how);
      const err = await providerErrorFrom(sms.send(outbound({ body: "Your quote is ready" })));
      expect(err.permanent).toBe(false);
      expect(fake.messages).toHaveLength(1);

      const found = await sms.findSent({ to: TO, from: FROM, since });
      expect(found).toHaveLength(1);
      expect(found[0]).toMatchObject({ sid: fake.messages[0]?.sid, to: TO, from: FROM, body: "Your quote is ready" });
    });
  }

  it("findSent filters by recipient, sender and time, newest first", async () => {
    const since = new Date(Date.now() - 60_000);
    const first = await sms.send(outbound({ body: "first" }));
    const second = await sms.send(outbound({ body: "second" }));
    await sms.send(outbound({ to: "+14155550999", body: "other lead" }));
    await sms.send(outbound({ from: "+12125550199", body: "other sender" }));

    const found = await sms.findSent({ to: TO, from: FROM, since });
    expect(found.map((m) => m.sid)).toEqual([second.sid, first.sid]);

    const anySender = await sms.findSent({ to: TO, from: null, since });
    expect(anySender.map((m) => m.body).sort()).toEqual(["first", "other sender", "second"]);
    expect(fake.requests.at(-1)?.query).not.toHaveProperty("From");

    const later = await sms.findSent({ to: TO, from: FROM, since: new Date(Date.now() + 3_600_000) });
    expect(later).toEqual([]);
  });
});

describe("TwilioSmsProvider.fetch", () => {
  it("returns null for a sid Twilio does not know", async () => {
    expect(await sms.fetch("SM" + "f".repeat(32))).toBeNull();
    expect(await sms.fetch("not-a-sid")).toBeNull();
  });

  it("returns the current status of a message, including delivery errors", async () => {
    const receiver = await startReceiver();
    try {
      const sent = await sms.send(outbound({ statusCallbackUrl: receiver.url }));
      await fake.sendStatusCallback(sent.sid, "undelivered", { errorCode: 30003 });
      const fetched = await sms.fetch(sent.sid);
      expect(fetched).toMatchObject({ sid: sent.sid, status: "undelivered", errorCode: 30003, to: TO, from: FROM });
    } finally {
      await receiver.close();
    }
  });

  it("throws a permanent error on bad credentials rather than reporting the message unknown", async () => {
    const sent = await sms.send(outbound());
    const wrong = new TwilioSmsProvider(createTwilioClient({ accountSid, authToken: "wrong", apiBaseUrl: fake.url }));
    const err = await providerErrorFrom(wrong.fetch(sent.sid));
    expect(err).toMatchObject({ permanent: true, httpStatus: 401 });
  });
});

describe("TwilioNumberProvisioner", () => {
  const webhooks = {
    voiceUrl: "https://app.example.com/twilio/voice",
    voiceStatusCallbackUrl: "https://app.example.com/twilio/call-status",
    smsUrl: "https://app.example.com/twilio/sms",
  };

  it("buys a voice- and SMS-capable local number in the area code with our webhooks set", async () => {
    fake.availableNumbers("212", [{ phoneNumber: "+12125551234", region: "NY" }, "+12125555678"]);
    const bought = await numbers.buyLocalNumber({ areaCode: "212", friendlyName: "Acme main line", ...webhooks });

    expect(bought).toMatchObject({
      phoneNumber: "+12125551234",
      friendlyName: "Acme main line",
      capabilities: ["voice", "sms", "mms"],
      region: "NY",
      webhooksConfigured: true,
    });
    expect(bought.sid).toMatch(/^PN[0-9a-f]{32}$/);

    const search = fake.requests.find((r) => r.path.endsWith("/AvailablePhoneNumbers/US/Local.json"));
    expect(search?.query).toMatchObject({ AreaCode: "212", SmsEnabled: "true", VoiceEnabled: "true" });
    expect(fake.numbers).toEqual([
      expect.objectContaining({
        sid: bought.sid,
        phoneNumber: "+12125551234",
        voiceUrl: webhooks.voiceUrl,
        voiceMethod: "POST",
        statusCallback: webhooks.voiceStatusCallbackUrl,
        smsUrl: webhooks.smsUrl,
        smsMethod: "POST",
      }),
    ]);
  });

  it("skips numbers without SMS and reports only the capabilities the number has", async () => {
    fake.availableNumbers("305", [
      { phoneNumber: "+13055550001", capabilities: { sms: false } },
      { phoneNumber: "+13055550002", capabilities: { mms: false } },
    ]);
    const bought = await numbers.buyLocalNumber({ areaCode: "305", friendlyName: "Miami", ...webhooks });
    expect(bought.phoneNumber).toBe("+13055550002");
    expect(bought.capabilities).toEqual(["voice", "sms"]);
  });

  it("generates numbers for any area code by default", async () => {
    const bought = await numbers.buyLocalNumber({ areaCode: "415", friendlyName: "SF", ...webhooks });
    expect(bought.phoneNumber).toMatch(/^\+1415555\d{4}$/);
    expect(bought.region).toBeNull();
  });

  it("fails permanently with a clear message when the area code has no numbers", async () => {
    fake.availableNumbers("212", []);
    const err = await providerErrorFrom(numbers.buyLocalNumber({ areaCode: "212", friendlyName: "x", ...webhooks }));
    expect(err.permanent).toBe(true);
    expect(err.message).toBe("No local numbers available in area code 212");
    expect(fake.numbers).toHaveLength(0);
  });

  it("rejects an area code that is not digits without calling Twilio", async () => {
    const err = await providerErrorFrom(numbers.buyLocalNumber({ areaCode: "21a", friendlyName: "x", ...webhooks }));
    expect(err.permanent).toBe(true);
    expect(err.message).toMatch(/Area code must be digits only/);
    expect(fake.requests).toHaveLength(0);
  });

  it("fails permanently on bad credentials", async () => {
    const wrong = new TwilioNumberProvisioner(createTwilioClient({ accountSid, authToken: "nope", apiBaseUrl: fake.url }));
    const err = await providerErrorFrom(wrong.buyLocalNumber({ areaCode: "212", friendlyName: "x", ...webhooks }));
    expect(err).toMatchObject({ permanent: true, code: 20003, httpStatus: 401 });
  });

  it("configureWebhooks points an existing number at new URLs", async () => {
    const bought = await numbers.buyLocalNumber({ areaCode: "646", friendlyName: "x", ...webhooks });
    await numbers.configureWebhooks(bought.sid, {
      voiceUrl: "https://new.example.com/voice",
      voiceStatusCallbackUrl: "https://new.example.com/call-status",
      smsUrl: "https://new.example.com/sms",
    });
    expect(fake.numbers[0]).toMatchObject({
      voiceUrl: "https://new.example.com/voice",
      statusCallback: "https://new.example.com/call-status",
      smsUrl: "https://new.example.com/sms",
      smsMethod: "POST",
    });
  });

  it("configureWebhooks on an unknown number is a permanent 404", async () => {
    const err = await providerErrorFrom(numbers.configureWebhooks("PN" + "0".repeat(32), webhooks));
    expect(err).toMatchObject({ permanent: true, httpStatus: 404, code: 20404 });
  });

  it("creates a Messaging Service with our URLs and adds the number to it", async () => {
    const bought = await numbers.buyLocalNumber({ areaCode: "212", friendlyName: "x", ...webhooks });
    const service = await numbers.createMessagingService({
      friendlyName: "Acme SMS",
      inboundUrl: "https://app.example.com/twilio/sms",
      statusCallbackUrl: "https://app.example.com/twilio/status",
      phoneNumberSid: bought.sid,
    });
    expect(service.sid).toMatch(/^MG[0-9a-f]{32}$/);
    expect(service.friendlyName).toBe("Acme SMS");
    expect(fake.services).toEqual([
      expect.objectContaining({
        sid: service.sid,
        inboundRequestUrl: "https://app.example.com/twilio/sms",
        inboundMethod: "POST",
        statusCallback: "https://app.example.com/twilio/status",
        phoneNumberSids: [bought.sid],
      }),
    ]);
    expect(fake.requests.map((r) => `${r.method} ${r.path}`)).toContain(`POST /v1/Services/${service.sid}/PhoneNumbers`);
  });

  it("deletes the new Messaging Service again when the number cannot be added", async () => {
    const err = await providerErrorFrom(
      numbers.createMessagingService({
        friendlyName: "Broken",
        inboundUrl: "https://app.example.com/twilio/sms",
        statusCallbackUrl: "https://app.example.com/twilio/status",
        phoneNumberSid: "PN" + "0".repeat(32),
      }),
    );
    expect(err.permanent).toBe(true);
    expect(err.message).toMatch(/add phone number PN0+ to Messaging Service MG/);
    expect(fake.services).toHaveLength(0);
  });

  it("releases a number, and releasing it again succeeds", async () => {
    const bought = await numbers.buyLocalNumber({ areaCode: "212", friendlyName: "x", ...webhooks });
    await numbers.releaseNumber(bought.sid);
    expect(fake.numbers).toHaveLength(0);
    await expect(numbers.releaseNumber(bought.sid)).resolves.toBeUndefined();
  });
});

// ---------------------------------------------------------------------------------------------
// Signed callbacks

interface Received {
  url: string;
  signature: string | undefined;
  params: Record<string, string>;
}

async function startReceiver(status = 204): Promise<{ url: string; received: Received[]; close(): Promise<void> }> {
  const received: Received[] = [];
  const server: Server = createServer((req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      received.push({
        url: req.url ?? "",
        signature: req.headers["x-twilio-signature"] as string | undefined,
        params: Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString("utf8"))),
      });
      res.writeHead(status).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/twilio/status?tenant=t1`,
    received,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe("fake Twilio status callbacks", () => {
  let receiver: Awaited<ReturnType<typeof startReceiver>>;
  beforeAll(async () => {
    receiver = await startReceiver();
  });
  afterAll(async () => {
    await receiver.close();
  });
  beforeEach(() => {
    receiver.received.length = 0;
  });

  it("posts a status callback whose signature twilio.validateRequest accepts for the target URL", async () => {
    const sent = await sms.send(outbound({ statusCallbackUrl: receiver.url }));
    const status = await fake.sendStatusCallback(sent.sid, "delivered");
    expect(status).toBe(204);

    const [callback] = receiver.received;
    expect(callback?.params).toMatchObject({
      MessageSid: sent.sid,
      MessageStatus: "delivered",
      AccountSid: accountSid,
      To: TO,
      From: FROM,
    });
    expect(callback?.params).not.toHaveProperty("ErrorCode");
    expect(twilio.validateRequest(authToken, callback?.signature ?? "", receiver.url, callback?.params ?? {})).toBe(true);
    expect(twilio.validateRequest("other-token", callback?.signature ?? "", receiver.url, callback?.params ?? {})).toBe(false);
    expect(fake.messages[0]?.status).toBe("delivered");
  });

  it("includes ErrorCode for failed messages", async () => {
    const sent = await sms.send(outbound({ statusCallbackUrl: receiver.url }));
    await fake.sendStatusCallback(sent.sid, "failed", { errorCode: 30007 });
    expect(receiver.received[0]?.params).toMatchObject({ MessageStatus: "failed", ErrorCode: "30007" });
  });

  it("refuses to call back for an unknown message or one sent without a callback URL", async () => {
    await expect(fake.sendStatusCallback("SM" + "0".repeat(32), "delivered")).rejects.toThrow(/has no message/);
    const sent = await sms.send(outbound({ statusCallbackUrl: null }));
    await expect(fake.sendStatusCallback(sent.sid, "delivered")).rejects.toThrow(/without a StatusCallback URL/);
  });

  it("postSignedForm can sign another URL, override the signature or omit it", async () => {
    const params = { MessageSid: "SM" + "1".repeat(32), MessageStatus: "sent" };
    const publicUrl = "https://public.example.com/twilio/status?tenant=t1";

    await postSignedForm(receiver.url, params, authToken);
    await postSignedForm(receiver.url, params, authToken, { signUrl: publicUrl });
    await postSignedForm(receiver.url, params, authToken, { signatureOverride: "forged" });
    await postSignedForm(receiver.url, params, authToken, { omitSignature: true });

    const [plain, proxied, forged, unsigned] = receiver.received;
    expect(plain?.signature).toBe(signTwilioRequest(receiver.url, params, authToken));
    expect(twilio.validateRequest(authToken, proxied?.signature ?? "", publicUrl, params)).toBe(true);
    expect(twilio.validateRequest(authToken, proxied?.signature ?? "", receiver.url, params)).toBe(false);
    expect(forged?.signature).toBe("forged");
    expect(unsigned?.signature).toBeUndefined();
  });
});
