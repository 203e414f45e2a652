/**
 * The account flows end to end through a mail server: a production-mode API server, the real worker
 * sending the outbox's account emails (email__send) to an SMTP server on loopback (test/fakeSmtp.ts),
 * and every token read from the message that server received, as the person would read it in their
 * mailbox. Register and verify, be invited and accept, reset a forgotten password, change the login
 * address: each step's email, and the notices the account's addresses receive.
 */
import type { Runner } from "graphile-worker";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalAiResponder } from "../../src/providers/aiLocal.ts";
import { SmtpEmailProvider } from "../../src/providers/emailSmtp.ts";
import { LocalNumberProvisioner } from "../../src/providers/numbersLocal.ts";
import { LocalSmsProvider } from "../../src/providers/smsLocal.ts";
import { services, setServices } from "../../src/worker/services.ts";
import { startWorker } from "../../src/worker/start.ts";
import { startFakeSmtp, type FakeSmtp, type ReceivedEmail } from "../fakeSmtp.ts";
import { ownerPool, PASSWORD, uniqueEmail, useOwnDatabase, waitFor } from "../helpers.ts";
import { startTestServer, type TestServer } from "../server.ts";

// Its worker sends email, as other files' workers do: a database of its own keeps their jobs apart.
useOwnDatabase("account_mail");

let smtp: FakeSmtp;
let server: TestServer;
let runner: Runner;

beforeAll(async () => {
  smtp = await startFakeSmtp();
  server = await startTestServer({ NODE_ENV: "production" });
  setServices({
    sms: new LocalSmsProvider(ownerPool(), "unused", -1),
    ai: new LocalAiResponder(),
    numbers: new LocalNumberProvisioner(),
    email: new SmtpEmailProvider({ url: smtp.url, timeoutMs: 5_000 }),
    emailFrom: { name: "Switchboard", address: "accounts@switchboard.example" },
    publicUrl: () => server.url,
  });
  runner = await startWorker(ownerPool(), 2, { only: ["email__send"] });
});

afterAll(async () => {
  await runner?.stop();
  await services().email.close();
  setServices(null);
  await server?.close();
  await smtp?.close();
});

/** The newest message the mail server received for an address with a subject, once it arrives. */
async function mailTo(address: string, subject: RegExp, after = 0): Promise<ReceivedEmail> {
  return waitFor(`"${subject.source}" to ${address}`, async () =>
    smtp.received.slice(after).filter((m) => m.envelope.to.includes(address) && subject.test(m.subject ?? "")).at(-1),
  );
}

function tokenIn(mail: ReceivedEmail, prefix: "sbv" | "sbi" | "sbr" | "sbe"): string {
  const token = new RegExp(`${prefix}_[0-9a-f]{64}`).exec(mail.text ?? "")?.[0];
  expect(token, `a ${prefix} token in "${mail.subject}"`).toBeTruthy();
  return token!;
}

const REGISTER = `mutation ($email: String!, $password: String!, $business: String) {
  register(input: { email: $email, password: $password, businessName: $business, timezone: "America/New_York" }) { result }
}`;
const LOGIN = `mutation ($email: String!, $password: String!) { login(input: { email: $email, password: $password }) { result } }`;

async function registerAndVerify(business: string): Promise<{ email: string; token: string }> {
  const email = uniqueEmail("mail");
  const registered = await server.gql(REGISTER, { email, password: PASSWORD, business });
  expect(registered.errors).toBeUndefined();
  const mail = await mailTo(email, /^Confirm your email address for Switchboard$/);
  const verified = await server.gql(`mutation ($t: String!) { verifyEmail(input: { token: $t }) { result } }`, { t: tokenIn(mail, "sbv") });
  expect(verified.errors).toBeUndefined();
  return { email, token: registered.data.register.result };
}

describe("account flows through a mail server (production mode)", () => {
  it("register and verify, be invited and accept: every token comes from a received email", async () => {
    const owner = await registerAndVerify("Mail Co");
    const member = await registerAndVerify("Member's Own Co");
    const invited = await server.gql(`mutation ($e: String!) { inviteMember(input: { email: $e, role: "manager" }) { result { invitationId } } }`, { e: member.email }, owner.token);
    expect(invited.errors).toBeUndefined();
    const invitation = await mailTo(member.email, /^You are invited to join Mail Co/);
    const accepted = await server.gql(`mutation ($t: String!) { acceptInvitation(input: { token: $t }) { result } }`, { t: tokenIn(invitation, "sbi") }, member.token);
    expect(accepted.errors).toBeUndefined();
    const tenants = await server.gql(`{ currentUserTenants { nodes { businessName role } } }`, {}, member.token);
    expect(tenants.data.currentUserTenants.nodes).toContainEqual({ businessName: "Mail Co", role: "manager" });
  });

  it("a forgotten password: the reset email, the new password, the notice; the old sessions are out", async () => {
    const person = await registerAndVerify("Forgetful Co");
    const before = smtp.received.length;
    expect((await server.gql(`mutation ($e: String!) { requestPasswordReset(input: { email: $e }) { result } }`, { e: person.email })).errors).toBeUndefined();
    const mail = await mailTo(person.email, /^Reset your Switchboard password$/, before);
    expect(mail.text).toMatch(/expires in 1 hour/);
    const reset = await server.gql(`mutation ($t: String!) { resetPassword(input: { token: $t, newPassword: "remembered-now-1" }) { result } }`, {
      t: tokenIn(mail, "sbr"),
    });
    expect(reset.errors).toBeUndefined();
    const notice = await mailTo(person.email, /^Your Switchboard password was reset$/, before);
    expect(notice.text).toMatch(/If this was not you, reset your password at once/);
    expect((await server.gql(`{ currentUser { rowId } }`, {}, person.token)).data.currentUser).toBeNull();
    expect((await server.gql(LOGIN, { email: person.email, password: "remembered-now-1" })).errors).toBeUndefined();
    // Nobody else was mailed a token.
    expect(smtp.received.slice(before).every((m) => m.envelope.to.includes(person.email))).toBe(true);
  });

  it("a change of login address: the token goes to the new mailbox, the notices to the old one", async () => {
    const person = await registerAndVerify("Moving Co");
    const newAddress = uniqueEmail("moved");
    const before = smtp.received.length;
    const asked = await server.gql(
      `mutation ($e: String!, $p: String!) { requestEmailChange(input: { newEmail: $e, password: $p }) { result } }`,
      { e: newAddress, p: PASSWORD },
      person.token,
    );
    expect(asked.errors).toBeUndefined();
    const confirmation = await mailTo(newAddress, /^Confirm your new email address for Switchboard$/, before);
    const warned = await mailTo(person.email, /^A change of your Switchboard email address was requested$/, before);
    expect(warned.text).toContain(newAddress);
    expect(warned.text).not.toMatch(/sbe_/); // the token only goes to the new mailbox
    const confirmed = await server.gql(`mutation ($t: String!) { confirmEmailChange(input: { token: $t }) { result } }`, { t: tokenIn(confirmation, "sbe") });
    expect(confirmed.errors).toBeUndefined();
    const told = await mailTo(person.email, /^Your Switchboard email address was changed$/, before);
    expect(told.text).toContain(newAddress);
    expect((await server.gql(LOGIN, { email: newAddress, password: PASSWORD })).errors).toBeUndefined();
  });
});
