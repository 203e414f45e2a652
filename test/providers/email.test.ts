/**
 * The SMTP email provider (src/providers/emailSmtp.ts) against the fake SMTP server
 * (test/fakeSmtp.ts): what arrives (Message-ID, From, Subject, bodies, List-Unsubscribe), and how
 * every failure is classified: refused for good, refused for now, or outcome unknown.
 * The local catcher is checked against the real database (app_private.local_provider_emails).
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { EmailError, type OutboundEmail } from "../../src/providers/email.ts";
import { randomUUID } from "node:crypto";
import { LocalEmailProvider } from "../../src/providers/emailLocal.ts";
import { SmtpEmailProvider } from "../../src/providers/emailSmtp.ts";
import {
  decodeHeaderWords,
  findHeader,
  parseEmail,
  startFakeSmtp,
  startSilentServer,
  type FakeSmtp,
} from "../fakeSmtp.ts";
import { ownerPool } from "../helpers.ts";

const AUTH = { user: "switchboard", pass: "s3cret:p@ss" };

let fake: FakeSmtp;
let smtp: SmtpEmailProvider;

beforeEach(async () => {
  fake = await startFakeSmtp({ auth: AUTH });
  smtp = new SmtpEmailProvider({ url: fake.url, timeoutMs: 5_000 });
});

afterEach(async () => {
  await smtp.close();
  await fake.close();
});

let counter = 0;
function outbound(overrides: Partial<OutboundEmail> = {}): OutboundEmail {
  counter++;
  const id = `00000000-0000-4000-8000-${String(counter).padStart(12, "0")}`;
  return {
    id,
    messageId: `<${id}@mail.switchboard.test>`,
    from: { name: "Acme Plumbing", address: "hello@acme.test" },
    to: "lead@example.com",
    replyTo: null,
    subject: "Your quote is ready",
    text: "Hi Sam,\n\nYour quote is ready.\n",
    html: null,
    unsubscribeUrl: null,
    ...overrides,
  };
}

async function emailErrorFrom(promise: Promise<unknown>): Promise<EmailError> {
  const err = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(EmailError);
  return err as EmailError;
}

describe("SmtpEmailProvider.send", () => {
  it("delivers with our Message-ID, From name and address, Reply-To and the SMTP envelope", async () => {
    const email = outbound({ replyTo: "sales@acme.test" });
    const sent = await smtp.send(email);
    expect(sent.messageId).toBe(email.messageId);
    expect(sent.response).toMatch(/^250 /);

    const [received] = fake.received;
    expect(fake.received).toHaveLength(1);
    expect(received?.messageId).toBe(email.messageId);
    expect(received?.envelope).toEqual({ from: "hello@acme.test", to: ["lead@example.com"] });
    expect(findHeader(received!, "From")).toBe("Acme Plumbing <hello@acme.test>");
    expect(findHeader(received!, "To")).toBe("lead@example.com");
    expect(findHeader(received!, "Reply-To")).toBe("sales@acme.test");
    expect(received?.subject).toBe("Your quote is ready");
    expect(received?.text).toBe("Hi Sam,\n\nYour quote is ready.\n");
    expect(received?.html).toBeNull();
  });

  it("sends a bare address as From when there is no name, and no Reply-To when none is given", async () => {
    await smtp.send(outbound({ from: { name: null, address: "noreply@acme.test" } }));
    const [received] = fake.received;
    expect(findHeader(received!, "From")).toBe("noreply@acme.test");
    expect(findHeader(received!, "Reply-To")).toBeNull();
  });

  it("keeps non-ASCII subjects, names and bodies, and lines longer than 998 characters, intact", async () => {
    const longLine = "Grüße aus München — ".repeat(60) + "x".repeat(1200);
    expect(longLine.length).toBeGreaterThan(998);
    const text = `Bonjour Zoë,\n${longLine}\nÀ bientôt ☕\n`;
    const html = "<p>Café — <b>20% off</b> für Sie</p>";
    await smtp.send(
      outbound({ from: { name: "Café Müller, Inc.", address: "cafe@acme.test" }, subject: "Café — 20% off", text, html }),
    );
    const [received] = fake.received;
    expect(received?.subject).toBe("Café — 20% off");
    expect(decodeHeaderWords(findHeader(received!, "From") ?? "")).toMatch(/^"?Café Müller, Inc\."? <cafe@acme\.test>$/);
    expect(received?.text).toBe(text);
    expect(received?.html).toBe(html);
    // Still valid SMTP: 7-bit, no line over 998 characters.
    for (const line of received!.raw.split("\r\n")) expect(line.length).toBeLessThanOrEqual(998);
    expect(received!.raw).toMatch(/^[\x00-\x7f]*$/);
  });

  it("adds List-Unsubscribe and List-Unsubscribe-Post (RFC 8058) exactly when there is an unsubscribe URL", async () => {
    const url = "https://app.switchboard.test/unsubscribe/e/0f3b2c1d-aaaa-bbbb-cccc-1234567890ab?token=abcdef0123456789";
    await smtp.send(outbound({ unsubscribeUrl: url }));
    await smtp.send(outbound({ unsubscribeUrl: null }));
    const [marketing, transactional] = fake.received;

    expect(marketing?.headers.get("list-unsubscribe")).toEqual([`<${url}>`]);
    expect(marketing?.headers.get("list-unsubscribe-post")).toEqual(["List-Unsubscribe=One-Click"]);
    expect(findHeader(transactional!, "List-Unsubscribe")).toBeNull();
    expect(findHeader(transactional!, "List-Unsubscribe-Post")).toBeNull();
  });

  it("sends several emails at once, each over its own connection", async () => {
    const emails = [outbound(), outbound(), outbound()];
    const sending = Promise.all(emails.map((email) => smtp.send(email)));
    const received = await fake.waitFor(3, 5_000);
    expect(received.map((r) => r.messageId).sort()).toEqual(emails.map((e) => e.messageId).sort());
    expect((await sending).map((s) => s.messageId)).toEqual(emails.map((e) => e.messageId));
  });
});

describe("SmtpEmailProvider error mapping", () => {
  it("maps a wrong password (535) to a permanent error", async () => {
    const wrong = new SmtpEmailProvider({ url: fake.url.replace(encodeURIComponent(AUTH.pass), "wrong"), timeoutMs: 5_000 });
    const err = await emailErrorFrom(wrong.send(outbound()));
    expect(err).toMatchObject({ permanent: true, notAccepted: true, responseCode: 535 });
    expect(fake.received).toHaveLength(0);
  });

  it("maps a server that requires AUTH, when we send none, to a permanent refusal", async () => {
    const anonymous = new SmtpEmailProvider({ url: `smtp://127.0.0.1:${fake.port}`, timeoutMs: 5_000 });
    const err = await emailErrorFrom(anonymous.send(outbound()));
    expect(err).toMatchObject({ permanent: true, notAccepted: true });
    expect(err.responseCode).toBeGreaterThanOrEqual(500);
    expect(fake.received).toHaveLength(0);
  });

  for (const at of ["rcpt", "data"] as const) {
    it(`maps 550 at ${at === "rcpt" ? "RCPT TO" : "the end of DATA"} to a permanent refusal`, async () => {
      fake.rejectNext(1, 550, "5.1.1 No such user", at);
      const err = await emailErrorFrom(smtp.send(outbound()));
      expect(err).toMatchObject({ permanent: true, notAccepted: true, responseCode: 550 });
      expect(err.message).toMatch(/No such user/);
      expect(fake.received).toHaveLength(0);
    });

    it(`maps 451 at ${at === "rcpt" ? "RCPT TO" : "the end of DATA"} to a refusal worth retrying`, async () => {
      fake.rejectNext(1, 451, "4.7.1 Greylisted, try again later", at);
      const err = await emailErrorFrom(smtp.send(outbound()));
      expect(err).toMatchObject({ permanent: false, notAccepted: true, responseCode: 451 });
      expect(fake.received).toHaveLength(0);

      // The next attempt goes through.
      await smtp.send(outbound());
      expect(fake.received).toHaveLength(1);
    });
  }

  it("maps a refused connection to not accepted, worth retrying", async () => {
    const closed = await startFakeSmtp();
    await closed.close();
    const offline = new SmtpEmailProvider({ url: closed.url, timeoutMs: 5_000 });
    const err = await emailErrorFrom(offline.send(outbound()));
    expect(err).toMatchObject({ permanent: false, notAccepted: true, responseCode: null });
    expect(err.message).toMatch(/ECONNREFUSED/);
  });

  it("maps a server that never greets to not accepted once timeoutMs has passed", async () => {
    const silent = await startSilentServer();
    try {
      const impatient = new SmtpEmailProvider({ url: silent.url, timeoutMs: 300 });
      const started = Date.now();
      const err = await emailErrorFrom(impatient.send(outbound()));
      expect(err).toMatchObject({ permanent: false, notAccepted: true, responseCode: null });
      expect(err.message).toMatch(/ETIMEDOUT|Greeting never received/);
      expect(Date.now() - started).toBeLessThan(3_000);
      expect(silent.connections()).toBe(1);
    } finally {
      await silent.close();
    }
  });

  it("reports the outcome unknown when the connection drops after the whole message was sent", async () => {
    fake.dropAfterDataNext(1);
    const email = outbound();
    const err = await emailErrorFrom(smtp.send(email));
    expect(err).toMatchObject({ permanent: false, notAccepted: false, responseCode: null });
    // The server did take it: exactly why it must not be resent blindly.
    expect(fake.received.map((r) => r.messageId)).toEqual([email.messageId]);
  });

  it("maps an invalid recipient address to a permanent refusal without sending anything", async () => {
    const err = await emailErrorFrom(smtp.send(outbound({ to: "" })));
    expect(err).toMatchObject({ permanent: true, notAccepted: true });
    expect(fake.received).toHaveLength(0);
  });
});

describe("SmtpEmailProvider configuration and lookup", () => {
  it("cannot tell whether a message was taken: lookup returns null", async () => {
    const sent = await smtp.send(outbound());
    expect(await smtp.lookup(sent.messageId)).toBeNull();
  });

  it("sends to a server without auth, with nodemailer options in the URL's query", async () => {
    const open = await startFakeSmtp();
    try {
      expect(open.url).toMatch(/^smtp:\/\/127\.0\.0\.1:\d+$/);
      const provider = new SmtpEmailProvider({ url: `${open.url}?tls.rejectUnauthorized=false&ignoreTLS=true` });
      await provider.send(outbound());
      expect(open.received).toHaveLength(1);
    } finally {
      await open.close();
    }
  });

  it("rejects URLs that are not smtp:// or smtps://", () => {
    expect(() => new SmtpEmailProvider({ url: "http://mail.example.com" })).toThrow(/smtp:\/\/ or smtps:\/\//);
    expect(() => new SmtpEmailProvider({ url: "not a url" })).toThrow(/not a URL/);
  });
});

describe("LocalEmailProvider (the real database)", () => {
  const caught = async (messageId: string) =>
    (await ownerPool().query("select message_id, to_email, from_email, subject, raw from app_private.local_provider_emails where message_id = $1", [messageId])).rows;

  it("stores the same message the SMTP provider sends, keyed by Message-ID, once, and finds it again", async () => {
    const local = new LocalEmailProvider(ownerPool());
    const email = outbound({
      messageId: `<${randomUUID()}@mail.switchboard.test>`,
      subject: "Café — 20% off",
      html: "<p>Hi</p>",
      unsubscribeUrl: "https://app.switchboard.test/u/1",
    });
    const sent = await local.send(email);
    expect(sent).toEqual({ messageId: email.messageId, response: "250 stored by the local catcher" });
    // A second hand-over of the same Message-ID keeps one copy.
    await local.send(email);
    const rows = await caught(email.messageId);
    expect(rows).toHaveLength(1);
    expect([rows[0].message_id, rows[0].to_email, rows[0].from_email, rows[0].subject]).toEqual([email.messageId, email.to, email.from.address, email.subject]);
    const stored = parseEmail(rows[0].raw as string, { from: null, to: [] });
    await smtp.send(email);
    const [delivered] = fake.received;
    for (const header of ["message-id", "from", "to", "subject", "list-unsubscribe", "list-unsubscribe-post"]) {
      expect(stored.headers.get(header)).toEqual(delivered?.headers.get(header));
    }
    expect([stored.text, stored.html]).toEqual([email.text, email.html]);

    expect(await local.lookup(email.messageId)).toBe(true);
    expect(await local.lookup(`<${randomUUID()}@mail.switchboard.test>`)).toBe(false);
  });

  it("fails permanently, storing nothing, when the email has no recipient", async () => {
    const messageId = `<${randomUUID()}@mail.switchboard.test>`;
    const err = await emailErrorFrom(new LocalEmailProvider(ownerPool()).send(outbound({ to: "", messageId })));
    expect(err).toMatchObject({ permanent: true, notAccepted: true });
    expect(await caught(messageId)).toEqual([]);
  });
});
