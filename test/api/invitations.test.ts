/**
 * Invitations and email verification, attacked over real HTTP against a production-mode server.
 * Every token is read from the email the outbox holds (app_public.email_messages, as the owner role):
 * the person proves they own the address by reading their mail. The attacks: a stranger registers an
 * invited address; an existing user is added without consent; the invite reply tells whether an
 * account exists; expired, reused, tampered, revoked, unknown and other people's tokens; an unverified
 * account accepting; lower roles and other tenants listing, resending and revoking.
 */
import { randomBytes } from "node:crypto";
import { decodeJwt } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ownerPool, PASSWORD, uniqueEmail } from "../helpers.ts";
import { startTestServer, type GqlResponse, type TestServer } from "../server.ts";
import {
  ACCEPT_INVITATION,
  INVITE_MEMBER,
  joinByInvitation,
  latestAccountEmail,
  tokenFromEmail,
  VERIFY_EMAIL,
  verifyByEmail,
} from "../fixtures/accountEmails.ts";

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({ NODE_ENV: "production" });
});
afterAll(async () => {
  await server?.close();
});

const REGISTER = `mutation ($email: String!, $password: String!, $business: String) {
  register(input: { email: $email, password: $password, businessName: $business, timezone: "America/New_York" }) { result }
}`;
const PENDING = `{ pendingInvitations { nodes { rowId email role expiresAt sendCount } } }`;
const RESEND = `mutation ($id: UUID!) { resendInvitation(input: { invitationId: $id }) { result { rowId expiresAt sendCount } } }`;
const REVOKE = `mutation ($id: UUID!) { revokeInvitation(input: { invitationId: $id }) { result { rowId revokedAt } } }`;
const SWITCH = `mutation ($t: UUID!) { switchTenant(input: { tenantId: $t }) { result } }`;
const INVALID = "This invitation is not valid: it may have expired, been used or revoked, or be meant for another email address";

interface Person {
  email: string;
  token: string;
}

async function register(business: string | null = "Invitations Co", email = uniqueEmail("inv")): Promise<Person> {
  const result = await server.gql(REGISTER, { email, password: PASSWORD, business });
  expect(result.errors).toBeUndefined();
  return { email, token: result.data.register.result };
}

async function verified(business: string | null = "Their Own Co"): Promise<Person> {
  const person = await register(business);
  await verifyByEmail(server, person.email);
  return person;
}

async function invite(owner: Person, email: string, role = "agent"): Promise<string> {
  const r = await server.gql(INVITE_MEMBER, { email, role }, owner.token);
  expect(r.errors).toBeUndefined();
  return r.data.inviteMember.result.invitationId;
}

const tenantOf = (p: Person) => decodeJwt(p.token).tenant_id as string;
const userOf = (p: Person) => decodeJwt(p.token).user_id as string;

/** What the database holds about an invitation and its tenant: the rows an attack must not change. */
async function state(tenantId: string, invitationId: string) {
  const { rows } = await ownerPool().query(
    `select (select count(*)::int from app_public.memberships m where m.tenant_id = $1) as members,
            (select accepted_at from app_public.invitations i where i.id = $2) as accepted_at,
            (select revoked_at from app_public.invitations i where i.id = $2) as revoked_at,
            (select encode(token_hash, 'hex') from app_private.invitation_tokens t where t.invitation_id = $2) as token_hash`,
    [tenantId, invitationId],
  );
  return rows[0];
}

async function isMember(tenantId: string, person: Person): Promise<string | null> {
  const { rows } = await ownerPool().query<{ role: string }>("select role from app_public.memberships where tenant_id = $1 and user_id = $2", [
    tenantId,
    userOf(person),
  ]);
  return rows[0]?.role ?? null;
}

function expectInvalid(reply: { errors?: Array<{ message: string; extensions?: Record<string, unknown> }> }): void {
  expect(reply.errors?.[0]?.extensions?.code).toBe("P0002");
  expect(reply.errors?.[0]?.message).toBe(INVALID);
}

describe("invitations over HTTP (production mode)", () => {
  it("a stranger who registers an invited address does not join; the invited person who verifies and accepts does, with the role", async () => {
    const owner = await register("Takeover Target Co");
    const carol = uniqueEmail("carol");
    const invitationId = await invite(owner, carol, "admin");
    const before = await state(tenantOf(owner), invitationId);

    // The stranger registers carol's address (no business: they were invited) and gets in nowhere.
    const stranger = await register(null, carol);
    expect(decodeJwt(stranger.token).tenant_id).toBeNull();
    expect(await isMember(tenantOf(owner), stranger)).toBeNull();
    expect((await server.gql(`{ currentTenant { rowId } }`, {}, stranger.token)).data.currentTenant).toBeNull();
    const switched = await server.gql(SWITCH, { t: tenantOf(owner) }, stranger.token);
    expect(switched.errors?.[0]?.extensions?.code).toBe("42501");
    // Guessing gets nothing; even the real token (it is in carol's mailbox) needs a verified address.
    expectInvalid(await server.gql(ACCEPT_INVITATION, { token: `sbi_${randomBytes(32).toString("hex")}` }, stranger.token));
    const unverified = await server.gql(ACCEPT_INVITATION, { token: await tokenFromEmail(carol, "invitation") }, stranger.token);
    expect(unverified.errors?.[0]?.extensions?.code).toBe("55000");
    expect(unverified.errors?.[0]?.message).toMatch(/verify your email address first/i);
    expect(await state(tenantOf(owner), invitationId)).toEqual(before);

    // The invited person (their own address) registers, verifies from their mail, accepts: a member with the role.
    const dave = uniqueEmail("dave");
    const daveInvitation = await invite(owner, dave, "manager");
    const invited = await register(null, dave);
    await verifyByEmail(server, dave);
    const accepted = await server.gql(ACCEPT_INVITATION, { token: await tokenFromEmail(dave, "invitation") }, invited.token);
    expect(accepted.errors).toBeUndefined();
    expect(accepted.data.acceptInvitation.result).toBe(tenantOf(owner));
    expect(await isMember(tenantOf(owner), invited)).toBe("manager");
    const after = await state(tenantOf(owner), daveInvitation);
    expect(after.accepted_at).not.toBeNull();
    expect(after.token_hash).toBeNull(); // used up
    const inTenant = await server.gql(SWITCH, { t: tenantOf(owner) }, invited.token);
    expect(inTenant.errors).toBeUndefined();
    const me = await server.gql(`{ currentTenant { businessName } }`, {}, inTenant.data.switchTenant.result);
    expect(me.data.currentTenant.businessName).toBe("Takeover Target Co");
  });

  it("an existing user is not a member until they accept", async () => {
    const owner = await register("Consent Co");
    const existing = await verified();
    const invitationId = await invite(owner, existing.email, "agent");
    expect(await isMember(tenantOf(owner), existing)).toBeNull();
    const tenants = await server.gql(`{ currentUserTenants { nodes { tenantId } } }`, {}, existing.token);
    expect(tenants.data.currentUserTenants.nodes.map((n: { tenantId: string }) => n.tenantId)).toEqual([tenantOf(existing)]);
    const members = await server.gql(`{ allMemberships { nodes { userId } } }`, {}, owner.token);
    expect(members.data.allMemberships.nodes.map((n: { userId: string }) => n.userId)).not.toContain(userOf(existing));
    expect((await state(tenantOf(owner), invitationId)).accepted_at).toBeNull();

    const accepted = await server.gql(ACCEPT_INVITATION, { token: await tokenFromEmail(existing.email, "invitation") }, existing.token);
    expect(accepted.errors).toBeUndefined();
    expect(await isMember(tenantOf(owner), existing)).toBe("agent");
  });

  it("inviteMember answers the same whether or not the address has an account", async () => {
    const owner = await register("Enumeration Co");
    const existing = await verified();
    const unknown = uniqueEmail("nobody");
    const shape = (r: GqlResponse<any>) => ({
      status: r.status,
      errors: r.errors,
      result: { ...r.data.inviteMember.result, invitationId: typeof r.data.inviteMember.result.invitationId, email: "…" },
    });
    const a = await server.gql(INVITE_MEMBER, { email: existing.email, role: "agent" }, owner.token);
    const b = await server.gql(INVITE_MEMBER, { email: unknown, role: "agent" }, owner.token);
    expect(shape(a)).toEqual(shape(b));
    expect(a.data.inviteMember.result).toMatchObject({ membershipId: null, userId: null, role: "agent" });
    // Both get the same email, through the outbox, as transactional mail.
    for (const to of [existing.email, unknown]) {
      const email = await latestAccountEmail(to, "invitation");
      expect(email?.purpose).toBe("transactional");
      expect(email?.body).toContain("Enumeration Co");
      expect(email?.body).toContain("acceptInvitation");
    }
  });

  it("expired, reused, tampered, revoked, unknown and another user's tokens are refused with one error, and nothing is written", async () => {
    const owner = await register("Token Attack Co");
    const tenant = tenantOf(owner);
    const victim = await verified();
    const other = await verified();

    // Another user's token: `other` (verified) holds the token meant for the victim.
    const victimInvitation = await invite(owner, victim.email, "admin");
    const victimToken = await tokenFromEmail(victim.email, "invitation");
    let before = await state(tenant, victimInvitation);
    expectInvalid(await server.gql(ACCEPT_INVITATION, { token: victimToken }, other.token));
    // Tampered: one character changed; unknown: random; and input that is no token at all.
    const tampered = victimToken.slice(0, -1) + (victimToken.endsWith("0") ? "1" : "0");
    expectInvalid(await server.gql(ACCEPT_INVITATION, { token: tampered }, victim.token));
    expectInvalid(await server.gql(ACCEPT_INVITATION, { token: `sbi_${randomBytes(32).toString("hex")}` }, victim.token));
    expectInvalid(await server.gql(ACCEPT_INVITATION, { token: "x".repeat(5000) }, victim.token));
    expect(await state(tenant, victimInvitation)).toEqual(before);
    expect(await isMember(tenant, other)).toBeNull();

    // Reused: accepted once, then the same token again (by the same person).
    expect((await server.gql(ACCEPT_INVITATION, { token: victimToken }, victim.token)).errors).toBeUndefined();
    before = await state(tenant, victimInvitation);
    expectInvalid(await server.gql(ACCEPT_INVITATION, { token: victimToken }, victim.token));
    expect(await state(tenant, victimInvitation)).toEqual(before);

    // Revoked.
    const revokedInvitation = await invite(owner, other.email, "agent");
    const revokedToken = await tokenFromEmail(other.email, "invitation");
    expect((await server.gql(REVOKE, { id: revokedInvitation }, owner.token)).errors).toBeUndefined();
    before = await state(tenant, revokedInvitation);
    expect(before.revoked_at).not.toBeNull();
    expectInvalid(await server.gql(ACCEPT_INVITATION, { token: revokedToken }, other.token));
    expect(await state(tenant, revokedInvitation)).toEqual(before);

    // Expired: 7 days and a minute later on the tenant's clock.
    const late = await verified();
    const lateInvitation = await invite(owner, late.email, "agent");
    const lateToken = await tokenFromEmail(late.email, "invitation");
    await ownerPool().query("select app_private.advance_clock($1, interval '7 days 1 minute')", [tenant]);
    before = await state(tenant, lateInvitation);
    expectInvalid(await server.gql(ACCEPT_INVITATION, { token: lateToken }, late.token));
    expect(await state(tenant, lateInvitation)).toEqual(before);
    expect(await isMember(tenant, late)).toBeNull();
    expect(await isMember(tenant, other)).toBeNull();
  });

  it("an unverified account can't accept (55000) until it verifies; verification tokens are single-use, and their errors are one", async () => {
    const owner = await register("Verify First Co");
    const newcomer = uniqueEmail("unverified");
    const invitationId = await invite(owner, newcomer, "agent");
    const person = await register(null, newcomer);
    const me = await server.gql(`{ currentUser { emailVerifiedAt } }`, {}, person.token);
    expect(me.data.currentUser.emailVerifiedAt).toBeNull();
    const invitationToken = await tokenFromEmail(newcomer, "invitation");
    const before = await state(tenantOf(owner), invitationId);
    const refused = await server.gql(ACCEPT_INVITATION, { token: invitationToken }, person.token);
    expect(refused.errors?.[0]?.extensions?.code).toBe("55000");
    expect(await state(tenantOf(owner), invitationId)).toEqual(before);

    // A verification email asked for again replaces the first: the first token stops working.
    const first = await tokenFromEmail(newcomer, "verification");
    const tooSoon = await server.gql(`mutation { resendVerificationEmail(input: {}) { result } }`, {}, person.token);
    expect(tooSoon.errors?.[0]?.extensions?.code).toBe("55000"); // once a minute
    await ownerPool().query(
      "update app_private.email_verification_tokens set created_at = created_at - interval '2 minutes' where user_id = $1",
      [userOf(person)],
    );
    const resent = await server.gql(`mutation { resendVerificationEmail(input: {}) { result } }`, {}, person.token);
    expect(resent.errors).toBeUndefined();
    const second = await tokenFromEmail(newcomer, "verification");
    expect(second).not.toBe(first);
    const wrong = [first, second.slice(0, -1) + (second.endsWith("0") ? "1" : "0"), "sbv_nothing"];
    for (const token of wrong) {
      const r = await server.gql(VERIFY_EMAIL, { token });
      expect(r.errors?.[0]?.extensions?.code).toBe("P0002");
      expect(r.errors?.[0]?.message).toBe("This verification token is not valid: it may have expired or been used already");
    }
    expect((await server.gql(`{ currentUser { emailVerifiedAt } }`, {}, person.token)).data.currentUser.emailVerifiedAt).toBeNull();
    expect((await server.gql(VERIFY_EMAIL, { token: second })).errors).toBeUndefined();
    expect((await server.gql(VERIFY_EMAIL, { token: second })).errors?.[0]?.extensions?.code).toBe("P0002"); // used
    expect((await server.gql(`{ currentUser { emailVerifiedAt } }`, {}, person.token)).data.currentUser.emailVerifiedAt).not.toBeNull();
    // An expired verification token is refused the same way.
    const later = await register("Later Co");
    await ownerPool().query(
      "update app_private.email_verification_tokens set expires_at = now() - interval '1 second' where user_id = $1",
      [userOf(later)],
    );
    const expired = await server.gql(VERIFY_EMAIL, { token: await tokenFromEmail(later.email, "verification") });
    expect(expired.errors?.[0]?.extensions?.code).toBe("P0002");

    expect((await server.gql(ACCEPT_INVITATION, { token: invitationToken }, person.token)).errors).toBeUndefined();
    expect(await isMember(tenantOf(owner), person)).toBe("agent");
  });

  it("owners and admins list, resend and revoke invitations; managers and agents get 42501; account emails stay out of the tenant's outbox", async () => {
    const owner = await register("Invitation Admin Co");
    const tenant = tenantOf(owner);
    const tokenIn = async (role: "admin" | "manager" | "agent") => {
      const person = await verified();
      await joinByInvitation(server, owner.token, person, role);
      const switched = await server.gql(SWITCH, { t: tenant }, person.token);
      return switched.data.switchTenant.result as string;
    };
    const admin = await tokenIn("admin");
    const manager = await tokenIn("manager");
    const agent = await tokenIn("agent");

    const invitee = uniqueEmail("pending");
    const invitationId = await invite(owner, invitee, "agent");
    for (const token of [owner.token, admin]) {
      const listed = await server.gql(PENDING, {}, token);
      expect(listed.errors).toBeUndefined();
      expect(listed.data.pendingInvitations.nodes).toEqual([expect.objectContaining({ rowId: invitationId, email: invitee, role: "agent", sendCount: 1 })]);
    }
    for (const token of [manager, agent]) {
      const listed = await server.gql(PENDING, {}, token);
      expect(listed.errors?.[0]?.extensions?.code).toBe("42501");
      const table = await server.gql(`{ allInvitations { nodes { rowId } } }`, {}, token);
      expect(table.data.allInvitations.nodes).toEqual([]); // row-level security: invitations are for owners and admins
      expect((await server.gql(RESEND, { id: invitationId }, token)).errors?.[0]?.extensions?.code).toBe("42501");
      expect((await server.gql(REVOKE, { id: invitationId }, token)).errors?.[0]?.extensions?.code).toBe("42501");
    }
    // Nobody in the tenant reads an account email (the tokens are in them), not even the owner.
    const outbox = await server.gql(`{ allEmailMessages { nodes { toEmail } } }`, {}, owner.token);
    expect(outbox.errors).toBeUndefined();
    expect(outbox.data.allEmailMessages.nodes).toEqual([]);

    // Resend: at most once a minute; then a new token, and the old one stops working.
    const firstToken = await tokenFromEmail(invitee, "invitation");
    const tooSoon = await server.gql(RESEND, { id: invitationId }, admin);
    expect(tooSoon.errors?.[0]?.extensions?.code).toBe("55000");
    await ownerPool().query("select app_private.advance_clock($1, interval '2 minutes')", [tenant]);
    const resent = await server.gql(RESEND, { id: invitationId }, admin);
    expect(resent.errors).toBeUndefined();
    expect(resent.data.resendInvitation.result.sendCount).toBe(2);
    const secondToken = await tokenFromEmail(invitee, "invitation");
    expect(secondToken).not.toBe(firstToken);
    const person = await register(null, invitee);
    await verifyByEmail(server, invitee);
    expectInvalid(await server.gql(ACCEPT_INVITATION, { token: firstToken }, person.token));

    // Revoke: by an admin; then the invitation is gone from the list and its token refused.
    const revoked = await server.gql(REVOKE, { id: invitationId }, admin);
    expect(revoked.errors).toBeUndefined();
    expect(revoked.data.revokeInvitation.result.revokedAt).not.toBeNull();
    expect((await server.gql(PENDING, {}, owner.token)).data.pendingInvitations.nodes).toEqual([]);
    expectInvalid(await server.gql(ACCEPT_INVITATION, { token: secondToken }, person.token));
    expect((await server.gql(REVOKE, { id: invitationId }, owner.token)).errors?.[0]?.extensions?.code).toBe("P0002");
  });

  it("another tenant's invitations are invisible: not listed, not readable, not resendable or revocable", async () => {
    const a = await register("Tenant A Invites");
    const b = await register("Tenant B Invites");
    const aInvitation = await invite(a, uniqueEmail("a-invitee"), "agent");
    const listed = await server.gql(PENDING, {}, b.token);
    expect(listed.data.pendingInvitations.nodes).toEqual([]);
    const byId = await server.gql(`query ($id: UUID!) { invitationByRowId(rowId: $id) { rowId } }`, { id: aInvitation }, b.token);
    expect(byId.data.invitationByRowId).toBeNull();
    const unknownId = "00000000-0000-4000-8000-000000000000";
    for (const mutation of [RESEND, REVOKE]) {
      const theirs = await server.gql(mutation, { id: aInvitation }, b.token);
      const none = await server.gql(mutation, { id: unknownId }, b.token);
      expect(theirs.errors?.[0]?.extensions?.code).toBe("P0002");
      expect(theirs.errors?.[0]?.message).toBe(none.errors?.[0]?.message);
    }
    const still = await state(tenantOf(a), aInvitation);
    expect(still.revoked_at).toBeNull();
    expect(still.token_hash).not.toBeNull();
  });
});
