/**
 * Email over real parts: GraphQL queueEmail → the worker's email__send → a fake SMTP server on
 * loopback; the one-click unsubscribe link over HTTP (GET changes nothing, POST records the opt-out,
 * tampered links are refused); SMTP refusals, temporary failures and a lost answer; the local catcher
 * and a worker that died after its claim (settled from the catcher, never resent).
 */
import type { Runner } from "graphile-worker";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalAiResponder } from "../../src/providers/aiLocal.ts";
import { LocalEmailProvider } from "../../src/providers/emailLocal.ts";
import { SmtpEmailProvider } from "../../src/providers/emailSmtp.ts";
import { LocalNumberProvisioner } from "../../src/providers/numbersLocal.ts";
import { LocalSmsProvider } from "../../src/providers/smsLocal.ts";
import { services, setServices, type Services } from "../../src/worker/services.ts";
import { startWorker } from "../../src/worker/start.ts";
import { findHeader, startFakeSmtp, type FakeSmtp } from "../fakeSmtp.ts";
import { ownerPool, registerUser, rootPool, uniqueEmail, useOwnDatabase, type RegisteredUser, waitFor } from "../helpers.ts";
import { startTestServer, type TestServer } from "../server.ts";

// Its worker runs tasks other files run too: a database of its own keeps their jobs apart.
useOwnDatabase("email");

let smtp: FakeSmtp;
let server: TestServer;
let runner: Runner;
let owner: RegisteredUser;
let token: string;
let smtpServices: Services;

async function newLead(email: string): Promise<string> {
  const { rows } = await rootPool().query("insert into app_public.leads (tenant_id, email, first_name, source) values ($1, $2, 'Dana', 'web') returning id", [
    owner.tenant_id,
    email,
  ]);
  return rows[0].id;
}

const QUEUE = `mutation ($lead: UUID!, $subject: String!, $body: String!, $html: String) {
  queueEmail(input: { leadId: $lead, subject: $subject, body: $body, bodyHtml: $html }) { result { rowId status purpose toEmail } }
}`;

const emailStatus = async (id: string) =>
  (await rootPool().query("select status, error_code, error_message, attempts, message_id_header from app_public.email_messages where id = $1", [id])).rows[0];

beforeAll(async () => {
  smtp = await startFakeSmtp({ auth: { user: "switchboard", pass: "s3cret" } });
  server = await startTestServer();
  smtpServices = {
    sms: new LocalSmsProvider(ownerPool(), "unused", -1),
    ai: new LocalAiResponder(),
    numbers: new LocalNumberProvisioner(),
    email: new SmtpEmailProvider({ url: smtp.url, timeoutMs: 3_000 }),
    emailFrom: { name: "Switchboard", address: "news@mail.example.com" },
    publicUrl: () => server.url,
  };
  setServices(smtpServices);
  const root = await rootPool().connect();
  try {
    owner = await registerUser(root, { businessName: "Ace Plumbing" });
  } finally {
    root.release();
  }
  const login = await server.gql(`mutation ($email: String!, $password: String!) { login(input: { email: $email, password: $password }) { result } }`, {
    email: owner.email,
    password: owner.password,
  });
  token = login.data.login.result;
  runner = await startWorker(ownerPool(), 2, { only: ["email__send", "email__reconcile"] });
});

afterAll(async () => {
  await runner?.stop();
  await smtpServices?.email.close();
  setServices(null);
  await server?.close();
  await smtp?.close();
});

describe("marketing email through GraphQL and SMTP", () => {
  it("arrives once with our Message-ID, the business as sender name, an unsubscribe footer and RFC 8058 one-click headers", async () => {
    const to = uniqueEmail("dana");
    const lead = await newLead(to);
    const answer = await server.gql(QUEUE, { lead, subject: "Spring tune-up — 20% off", body: "Book before May.", html: "<p>Book before <b>May</b>.</p>" }, token);
    expect(answer.errors).toBeUndefined();
    const queued = answer.data.queueEmail.result;
    expect(queued).toMatchObject({ status: "queued", purpose: "marketing", toEmail: to });

    const mail = await waitFor("the email at the SMTP server", async () => smtp.received.find((m) => m.envelope.to.includes(to)));
    expect(mail.messageId).toBe(`<${queued.rowId}@mail.example.com>`);
    expect(findHeader(mail, "from")).toContain("Ace Plumbing");
    expect(findHeader(mail, "from")).toContain("news@mail.example.com");
    expect(mail.subject).toBe("Spring tune-up — 20% off");
    const url = findHeader(mail, "list-unsubscribe")!.replace(/^<|>$/g, "");
    expect(url).toMatch(new RegExp(`^${server.url}/email/unsubscribe/${queued.rowId}\\.[A-Za-z0-9_-]{43}$`));
    expect(findHeader(mail, "list-unsubscribe-post")).toBe("List-Unsubscribe=One-Click");
    expect(mail.text).toContain("Book before May.");
    expect(mail.text).toContain(url);
    expect(mail.html).toContain(`<a href="${url}">Unsubscribe</a>`);
    const recorded = await waitFor("sent", async () => {
      const row = await emailStatus(queued.rowId);
      return row.status === "sent" ? row : null;
    });
    expect(recorded).toMatchObject({ attempts: 1, message_id_header: mail.messageId });
    expect(smtp.received.filter((m) => m.envelope.to.includes(to))).toHaveLength(1);
  });

  it("the unsubscribe link: GET shows a page and changes nothing, the mail program's one-click POST records the opt-out, and the API then refuses with SB001", async () => {
    const to = uniqueEmail("lee");
    const lead = await newLead(to);
    const first = (await server.gql(QUEUE, { lead, subject: "News", body: "Hello" }, token)).data.queueEmail.result;
    const mail = await waitFor("the email", async () => smtp.received.find((m) => m.envelope.to.includes(to)));
    const url = findHeader(mail, "list-unsubscribe")!.replace(/^<|>$/g, "");

    const page = await fetch(url);
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toContain("Ace Plumbing");
    expect(html).toContain(to);
    expect(html).toContain('<form method="post">');
    const suppressed = async () => (await rootPool().query("select source, email_message_id from app_public.email_suppressions where tenant_id = $1 and email = $2", [owner.tenant_id, to])).rows;
    expect(await suppressed()).toEqual([]);

    const click = await fetch(url, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: "List-Unsubscribe=One-Click" });
    expect(click.status).toBe(200);
    expect(await click.text()).toContain("You are unsubscribed");
    expect(await suppressed()).toEqual([{ source: "list_unsubscribe", email_message_id: first.rowId }]);
    // The page button, later, changes nothing more.
    expect((await fetch(url, { method: "POST" })).status).toBe(200);
    expect(await suppressed()).toHaveLength(1);

    const refused = await server.gql(QUEUE, { lead, subject: "More news", body: "Hello again" }, token);
    expect(refused.errors?.[0]?.message).toMatch(/unsubscribed or is on the email suppression list/);
    expect(refused.errors?.[0]?.extensions?.code).toBe("SB001");
  });

  it("a cut or tampered link gets 400 and a link of a deleted email 404, writing nothing", async () => {
    const to = uniqueEmail("kim");
    const lead = await newLead(to);
    const queued = (await server.gql(QUEUE, { lead, subject: "News", body: "Hello" }, token)).data.queueEmail.result;
    const mail = await waitFor("the email", async () => smtp.received.find((m) => m.envelope.to.includes(to)));
    const url = findHeader(mail, "list-unsubscribe")!.replace(/^<|>$/g, "");
    for (const bad of [url.slice(0, -3), `${url.slice(0, -1)}${url.endsWith("x") ? "y" : "x"}`, `${server.url}/email/unsubscribe/%3Cscript%3E`]) {
      const res = await fetch(bad, { method: "POST" });
      expect(res.status).toBe(400);
      expect(await res.text()).not.toContain("<script>");
    }
    await waitFor("sent", async () => (await emailStatus(queued.rowId)).status === "sent");
    await rootPool().query("delete from app_public.email_messages where id = $1", [queued.rowId]);
    expect((await fetch(url)).status).toBe(404);
    expect((await rootPool().query("select count(*)::int as n from app_public.email_suppressions where email = $1", [to])).rows[0].n).toBe(0);
  });
});

describe("when the SMTP server says no, later, or nothing", () => {
  const queueTo = async (label: string) => {
    const to = uniqueEmail(label);
    const { rows } = await rootPool().query("select id from app_private.queue_email($1, $2, 'Hi', 'Body', 'notification')", [owner.tenant_id, to]);
    return { to, id: rows[0].id as string };
  };

  it("a 550 refusal fails the email for good with the code", async () => {
    smtp.rejectNext(1, 550, "No such user here", "rcpt");
    const { id } = await queueTo("gone");
    const row = await waitFor("failed", async () => {
      const r = await emailStatus(id);
      return r.status === "failed" ? r : null;
    });
    expect(row.error_code).toBe(550);
    expect(row.error_message).toContain("No such user");
  });

  it("a 451 answer puts it back in the queue for a later try, not failed and not sent", async () => {
    smtp.rejectNext(1, 451, "Try again later", "data");
    const { id, to } = await queueTo("busy");
    const row = await waitFor("queued again", async () => {
      const r = await emailStatus(id);
      return r.status === "queued" && r.attempts === 1 ? r : null;
    });
    expect(row.error_message).toContain("Try again later");
    expect(smtp.received.filter((m) => m.envelope.to.includes(to))).toHaveLength(0);
  });

  it("a connection lost after the message was transmitted makes it uncertain, and it is not sent again", async () => {
    smtp.dropAfterDataNext(1);
    const { id, to } = await queueTo("lost");
    const row = await waitFor("uncertain", async () => {
      const r = await emailStatus(id);
      return r.status === "uncertain" ? r : null;
    });
    expect(row.error_message).toMatch(/not resent/);
    await new Promise((r) => setTimeout(r, 300));
    expect(smtp.received.filter((m) => m.envelope.to.includes(to))).toHaveLength(1);
  });
});

describe("the local catcher (no SMTP server configured)", () => {
  it("keeps the whole message, and settles an email whose worker died after the claim from what it caught, never resending", async () => {
    const local = new LocalEmailProvider(ownerPool());
    setServices({ ...smtpServices, email: local });
    try {
      const to = uniqueEmail("local");
      const { rows } = await rootPool().query("select id from app_private.queue_email($1, $2, 'Local hello', 'Body', 'marketing')", [owner.tenant_id, to]);
      await waitFor("sent", async () => (await emailStatus(rows[0].id)).status === "sent");
      const caught = (await rootPool().query("select to_email, subject, raw from app_private.local_provider_emails where to_email = $1", [to])).rows;
      expect(caught).toHaveLength(1);
      expect(caught[0].raw).toMatch(/^List-Unsubscribe-Post: List-Unsubscribe=One-Click\r?$/m);

      // Two emails claimed by a worker that then died: one had reached the catcher, one had not.
      await runner.stop();
      const claimAndDie = async (label: string, reachedProvider: boolean) => {
        const address = uniqueEmail(label);
        const { rows: q } = await rootPool().query("select id from app_private.queue_email($1, $2, 'Crash', 'Body', 'marketing')", [owner.tenant_id, address]);
        const { rows: c } = await rootPool().query("select * from app_private.claim_outbound_email($1, $2, 'mail.example.com')", [q[0].id, server.url]);
        if (reachedProvider) {
          await local.send({ id: c[0].id, messageId: c[0].message_id, from: { name: null, address: "news@mail.example.com" }, to: address, replyTo: null,
            subject: c[0].subject, text: c[0].body_text, html: null, unsubscribeUrl: c[0].unsubscribe_url });
        }
        return { id: q[0].id as string, address };
      };
      const reached = await claimAndDie("reached", true);
      const lost = await claimAndDie("lost", false);
      const { rows: swept } = await rootPool().query("select * from app_private.sweep_email_outbox(interval '0')");
      expect(swept[0].to_settle).toBeGreaterThanOrEqual(2);
      runner = await startWorker(ownerPool(), 2, { only: ["email__send", "email__reconcile"] });
      await waitFor("both sent", async () => (await emailStatus(reached.id)).status === "sent" && (await emailStatus(lost.id)).status === "sent");
      for (const { address } of [reached, lost]) {
        expect((await rootPool().query("select count(*)::int as n from app_private.local_provider_emails where to_email = $1", [address])).rows[0].n).toBe(1);
      }
      expect((await emailStatus(reached.id)).attempts).toBe(1);
      expect((await emailStatus(lost.id)).attempts).toBe(2);
    } finally {
      setServices(smtpServices);
    }
    expect(services().email).toBe(smtpServices.email);
  });
});
