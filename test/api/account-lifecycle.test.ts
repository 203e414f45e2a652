/**
 * The account lifecycle, attacked over real HTTP against a production-mode server: password reset by
 * emailed token, change of password, change of email address, one's own sessions, and role changes.
 * Every token is read from the email the outbox holds, as the person would read it from their mail.
 * The attacks: unknown, expired, reused and tampered tokens; a weak or unchanged password; the wrong
 * current password; a stolen session; an API key; another user's session id; another tenant's user;
 * a lower role; two owners demoting each other at once; a stranger who registered the address first.
 */
import { randomBytes } from "node:crypto";
import { decodeJwt } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ownerPool, PASSWORD, uniqueEmail } from "../helpers.ts";
import { startTestServer, type GqlResponse, type TestServer } from "../server.ts";
import { accountEmailCount, joinByInvitation, latestAccountEmail, tokenFromEmail, verifyByEmail } from "../fixtures/accountEmails.ts";

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({ NODE_ENV: "production" });
});
afterAll(async () => {
  await server?.close();
});

const NEW_PASSWORD = "new-battery-staple-7";
const REGISTER = `mutation ($email: String!, $password: String!, $business: String) {
  register(input: { email: $email, password: $password, businessName: $business, timezone: "America/New_York" }) { result }
}`;
const LOGIN = `mutation ($email: String!, $password: String!) { login(input: { email: $email, password: $password }) { result } }`;
const REQUEST_RESET = `mutation ($email: String!) { requestPasswordReset(input: { email: $email }) { result } }`;
const RESET = `mutation ($token: String!, $password: String!) { resetPassword(input: { token: $token, newPassword: $password }) { result } }`;
const CHANGE_PASSWORD = `mutation ($current: String!, $next: String!) { changePassword(input: { currentPassword: $current, newPassword: $next }) { result } }`;
const REQUEST_EMAIL_CHANGE = `mutation ($email: String!, $password: String!) { requestEmailChange(input: { newEmail: $email, password: $password }) { result } }`;
const CONFIRM_EMAIL_CHANGE = `mutation ($token: String!) { confirmEmailChange(input: { token: $token }) { result } }`;
const SESSIONS = `{ allUserSessions { nodes { rowId userId isCurrent revokedAt } } }`;
const REVOKE_SESSION = `mutation ($id: UUID!) { revokeSession(input: { sessionId: $id }) { result { rowId revokedAt } } }`;
const REVOKE_OTHERS = `mutation { revokeOtherSessions(input: {}) { result } }`;
const CHANGE_ROLE = `mutation ($user: UUID!, $role: String!) { changeMemberRole(input: { userId: $user, role: $role }) { result { userId role } } }`;
const REMOVE = `mutation ($user: UUID!) { removeMember(input: { userId: $user }) { result } }`;
const ME = `{ currentUser { rowId email emailVerifiedAt } }`;

interface Person {
  email: string;
  token: string;
}

async function register(business: string | null = "Lifecycle Co", email = uniqueEmail("life"), password = PASSWORD): Promise<Person> {
  const r = await server.gql(REGISTER, { email, password, business });
  expect(r.errors).toBeUndefined();
  return { email, token: r.data.register.result };
}

async function verified(business: string | null = "Lifecycle Co"): Promise<Person> {
  const person = await register(business);
  await verifyByEmail(server, person.email);
  return person;
}

async function login(email: string, password: string): Promise<GqlResponse<any>> {
  return server.gql(LOGIN, { email, password });
}

async function loginToken(email: string, password = PASSWORD): Promise<string> {
  const r = await login(email, password);
  expect(r.errors).toBeUndefined();
  return r.data.login.result;
}

/** Whether a token still works: a revoked or ended session is nobody (currentUser null). */
async function works(token: string): Promise<boolean> {
  const r = await server.gql(ME, {}, token);
  expect(r.errors).toBeUndefined();
  return r.data.currentUser !== null;
}

const userOf = (p: { token: string }) => decodeJwt(p.token).user_id as string;
const tenantOf = (p: { token: string }) => decodeJwt(p.token).tenant_id as string;
const codeOf = (r: GqlResponse<unknown>) => r.errors?.[0]?.extensions?.code;

async function passwordHash(userId: string): Promise<string> {
  const { rows } = await ownerPool().query<{ h: string }>("select password_hash as h from app_private.user_secrets where user_id = $1", [userId]);
  return rows[0]!.h;
}

async function roleIn(tenantId: string, userId: string): Promise<string | null> {
  const { rows } = await ownerPool().query<{ role: string }>("select role from app_public.memberships where tenant_id = $1 and user_id = $2", [tenantId, userId]);
  return rows[0]?.role ?? null;
}

async function createKey(owner: Person, role: string): Promise<{ id: string; secret: string }> {
  const r = await server.gql(`mutation ($role: String!) { createApiKey(input: { name: "Key", role: $role }) { result { rowId secret } } }`, { role }, owner.token);
  expect(r.errors).toBeUndefined();
  return { id: r.data.createApiKey.result.rowId, secret: r.data.createApiKey.result.secret };
}

async function keyRevoked(id: string): Promise<boolean> {
  const { rows } = await ownerPool().query<{ revoked: boolean }>("select revoked_at is not null as revoked from app_public.api_keys where id = $1", [id]);
  return rows[0]!.revoked;
}

async function invite(owner: { token: string }, email: string, role: string): Promise<string> {
  const r = await server.gql(`mutation ($e: String!, $r: String) { inviteMember(input: { email: $e, role: $r }) { result { invitationId } } }`, { e: email, r: role }, owner.token);
  expect(r.errors).toBeUndefined();
  return r.data.inviteMember.result.invitationId;
}

async function invitationRevoked(id: string): Promise<boolean> {
  const { rows } = await ownerPool().query<{ revoked: boolean }>("select revoked_at is not null as revoked from app_public.invitations where id = $1", [id]);
  return rows[0]!.revoked;
}

describe("password reset by emailed token (production mode)", () => {
  it("resets with the emailed token: the old password and every session stop working, a notice is sent, the token works once", async () => {
    const person = await verified();
    const otherSession = await loginToken(person.email);
    const hashBefore = await passwordHash(userOf(person));

    const asked = await server.gql(REQUEST_RESET, { email: person.email });
    expect(asked.errors).toBeUndefined();
    expect(asked.data.requestPasswordReset.result).toBe(true);
    const email = await latestAccountEmail(person.email, "reset");
    expect(email!.purpose).toBe("transactional");
    expect(email!.body).toMatch(/expires in 1 hour/);
    // Only the token's SHA-256 is stored.
    const stored = await ownerPool().query("select token_hash = digest($2, 'sha256') as same, position($2 in encode(token_hash, 'escape')) as found from app_private.password_reset_tokens where user_id = $1", [
      userOf(person),
      email!.token,
    ]);
    expect(stored.rows[0]).toEqual({ same: true, found: 0 });

    const reset = await server.gql(RESET, { token: email!.token, password: NEW_PASSWORD });
    expect(reset.errors).toBeUndefined();
    expect(reset.data.resetPassword.result).toBe(true);

    expect(await passwordHash(userOf(person))).not.toBe(hashBefore);
    expect(codeOf(await login(person.email, PASSWORD))).toBe("28P01");
    expect(await works(await loginToken(person.email, NEW_PASSWORD))).toBe(true);
    expect(await works(person.token)).toBe(false);
    expect(await works(otherSession)).toBe(false);
    expect(await accountEmailCount(person.email, "Your Switchboard password was reset")).toBe(1);

    const reused = await server.gql(RESET, { token: email!.token, password: "yet-another-pass-1" });
    expect(codeOf(reused)).toBe("P0002");
    expect(reused.errors?.[0]?.message).toMatch(/not valid: it may have expired or been used already/);
    expect(await works(await loginToken(person.email, NEW_PASSWORD))).toBe(true);
  });

  it("the same answer for an unknown address, and no email goes out", async () => {
    const nobody = uniqueEmail("nobody");
    const r = await server.gql(REQUEST_RESET, { email: nobody });
    expect(r.errors).toBeUndefined();
    expect(r.data.requestPasswordReset.result).toBe(true);
    expect(await accountEmailCount(nobody)).toBe(0);
    const bad = await server.gql(REQUEST_RESET, { email: "not an address" });
    expect(codeOf(bad)).toBe("22023");
  });

  it("asking again within a minute gives the same answer and sends nothing more; the first token still works", async () => {
    const person = await verified();
    for (let i = 0; i < 5; i++) {
      const r = await server.gql(REQUEST_RESET, { email: person.email.toUpperCase() });
      expect(r.data.requestPasswordReset.result).toBe(true);
    }
    expect(await accountEmailCount(person.email, "Reset your Switchboard password")).toBe(1);
    const reset = await server.gql(RESET, { token: await tokenFromEmail(person.email, "reset"), password: NEW_PASSWORD });
    expect(reset.errors).toBeUndefined();
  });

  it("a weak password is refused and the token still works; tampered, unknown, oversized and expired tokens are refused and change nothing", async () => {
    const person = await verified();
    await server.gql(REQUEST_RESET, { email: person.email });
    const token = await tokenFromEmail(person.email, "reset");
    const hashBefore = await passwordHash(userOf(person));

    for (const weak of ["short1!", "onlyletterslong", "", "1234567890"]) {
      const r = await server.gql(RESET, { token, password: weak });
      expect(codeOf(r)).toBe("22023");
      expect(r.errors?.[0]?.message).toMatch(/at least 10 characters/);
    }
    const tampered = token.slice(0, -1) + (token.endsWith("0") ? "1" : "0");
    for (const bad of [tampered, `sbr_${randomBytes(32).toString("hex")}`, "sbr_", "x".repeat(100_000), await tokenFromEmail(person.email, "verification")]) {
      const r = await server.gql(RESET, { token: bad, password: NEW_PASSWORD });
      expect(codeOf(r)).toBe("P0002");
    }
    expect(await passwordHash(userOf(person))).toBe(hashBefore);
    expect(await works(person.token)).toBe(true);

    await ownerPool().query("update app_private.password_reset_tokens set expires_at = now() - interval '1 second' where user_id = $1", [userOf(person)]);
    expect(codeOf(await server.gql(RESET, { token, password: NEW_PASSWORD }))).toBe("P0002");
    expect(await passwordHash(userOf(person))).toBe(hashBefore);
    expect(await works(await loginToken(person.email))).toBe(true);
  });

  it("two resets racing on one token: exactly one wins", async () => {
    const person = await verified();
    await server.gql(REQUEST_RESET, { email: person.email });
    const token = await tokenFromEmail(person.email, "reset");
    const replies = await Promise.all(["first-racer-pass-1", "second-racer-pass-2", "third-racer-pass-3"].map((p) => server.gql(RESET, { token, password: p })));
    expect(replies.filter((r) => r.errors === undefined)).toHaveLength(1);
    expect(replies.filter((r) => codeOf(r) === "P0002")).toHaveLength(2);
  });

  it("a stranger asking again does not cancel the token in the owner's mailbox; one reset uses up every token", async () => {
    const person = await verified();
    await server.gql(REQUEST_RESET, { email: person.email });
    const first = await tokenFromEmail(person.email, "reset");
    // A minute later, someone asks again: a second email, and the first token still works.
    await ownerPool().query("update app_private.password_reset_tokens set created_at = created_at - interval '2 minutes' where user_id = $1", [userOf(person)]);
    await server.gql(REQUEST_RESET, { email: person.email });
    const second = await tokenFromEmail(person.email, "reset");
    expect(second).not.toBe(first);
    expect((await server.gql(RESET, { token: first, password: NEW_PASSWORD })).errors).toBeUndefined();
    expect(codeOf(await server.gql(RESET, { token: second, password: "another-pass-22" }))).toBe("P0002");
    expect(await works(await loginToken(person.email, NEW_PASSWORD))).toBe(true);
  });

  it("a reset racing a password change never fails with an unexplained error", async () => {
    for (let round = 0; round < 12; round++) {
      const person = await verified();
      await server.gql(REQUEST_RESET, { email: person.email });
      const token = await tokenFromEmail(person.email, "reset");
      const [reset, changed] = await Promise.all([
        server.gql(RESET, { token, password: NEW_PASSWORD }),
        server.gql(CHANGE_PASSWORD, { current: PASSWORD, next: "changed-pass-33" }, person.token),
      ]);
      for (const reply of [reset, changed]) {
        // The loser is told why: the token was used up, or the password it gave is no longer the current one, or its session was ended by the reset.
        if (reply.errors) expect(["P0002", "28P01", "28000"]).toContain(codeOf(reply));
      }
      expect(reset.errors === undefined || changed.errors === undefined).toBe(true);
    }
  });

  it("a stranger who registered someone's address first loses the account, its sessions and its API keys when the real owner resets", async () => {
    const address = uniqueEmail("victim");
    const stranger = await register("Squatter Co", address, "stranger-pass-99");
    const key = await createKey(stranger, "admin");
    expect((await server.gql(`{ currentTenant { rowId } }`, {}, key.secret)).data.currentTenant).not.toBeNull();
    const squatterInvitation = await invite(stranger, uniqueEmail("accomplice"), "owner");

    // The real owner of the address can't register it, so they reset the password from their mailbox.
    const blocked = await server.gql(REGISTER, { email: address, password: PASSWORD, business: "Real Co" });
    expect(codeOf(blocked)).toBe("23505");
    await server.gql(REQUEST_RESET, { email: address });
    const reset = await server.gql(RESET, { token: await tokenFromEmail(address, "reset"), password: NEW_PASSWORD });
    expect(reset.errors).toBeUndefined();

    expect(await works(stranger.token)).toBe(false);
    expect(codeOf(await login(address, "stranger-pass-99"))).toBe("28P01");
    expect(await keyRevoked(key.id)).toBe(true);
    expect((await server.gql(`{ currentTenant { rowId } }`, {}, key.secret)).data.currentTenant).toBeNull();
    expect(await invitationRevoked(squatterInvitation)).toBe(true);
    const owner = await loginToken(address, NEW_PASSWORD);
    const me = await server.gql(ME, {}, owner);
    expect(me.data.currentUser.emailVerifiedAt).not.toBeNull(); // the reset proved the address
  });
});

describe("change of password (production mode)", () => {
  it("asks for the current password; ends the other sessions but not this one; a pending reset token stops working; a notice is sent", async () => {
    const person = await verified();
    const other = await loginToken(person.email);
    await server.gql(REQUEST_RESET, { email: person.email });
    const resetToken = await tokenFromEmail(person.email, "reset");

    const changed = await server.gql(CHANGE_PASSWORD, { current: PASSWORD, next: NEW_PASSWORD }, person.token);
    expect(changed.errors).toBeUndefined();
    expect(await works(person.token)).toBe(true);
    expect(await works(other)).toBe(false);
    expect(codeOf(await login(person.email, PASSWORD))).toBe("28P01");
    expect(await works(await loginToken(person.email, NEW_PASSWORD))).toBe(true);
    expect(codeOf(await server.gql(RESET, { token: resetToken, password: "attacker-pass-1" }))).toBe("P0002");
    expect(await accountEmailCount(person.email, "Your Switchboard password was changed")).toBe(1);
  });

  it("a stolen session without the password, a weak or unchanged password, an API key and a stranger change nothing", async () => {
    const person = await verified();
    const other = await loginToken(person.email);
    const hash = await passwordHash(userOf(person));

    const wrong = await server.gql(CHANGE_PASSWORD, { current: "not-the-password-1", next: NEW_PASSWORD }, person.token);
    expect(codeOf(wrong)).toBe("28P01");
    expect(wrong.errors?.[0]?.message).toBe("Your current password is not correct");
    const same = await server.gql(CHANGE_PASSWORD, { current: PASSWORD, next: PASSWORD }, person.token);
    expect(codeOf(same)).toBe("22023");
    expect(codeOf(await server.gql(CHANGE_PASSWORD, { current: PASSWORD, next: "weak" }, person.token))).toBe("22023");
    expect(codeOf(await server.gql(CHANGE_PASSWORD, { current: PASSWORD, next: NEW_PASSWORD }))).toBe("28000");
    const key = await createKey(person, "admin");
    expect(codeOf(await server.gql(CHANGE_PASSWORD, { current: PASSWORD, next: NEW_PASSWORD }, key.secret))).toBe("28000");

    expect(await passwordHash(userOf(person))).toBe(hash);
    expect(await works(other)).toBe(true);
    expect(await accountEmailCount(person.email, "Your Switchboard password was changed")).toBe(0);
  });
});

describe("change of email address (production mode)", () => {
  it("the new address confirms with its token; then the account logs in with it, verified, and the old address is told", async () => {
    const person = await verified("Address Co");
    const newAddress = uniqueEmail("moved");
    const asked = await server.gql(REQUEST_EMAIL_CHANGE, { email: newAddress, password: PASSWORD }, person.token);
    expect(asked.errors).toBeUndefined();
    expect(await accountEmailCount(person.email, "A change of your Switchboard email address was requested")).toBe(1);
    // Nothing changes before the confirmation.
    expect((await server.gql(ME, {}, person.token)).data.currentUser.email).toBe(person.email);
    await server.gql(REQUEST_RESET, { email: person.email });
    const oldReset = await tokenFromEmail(person.email, "reset");

    const confirmed = await server.gql(CONFIRM_EMAIL_CHANGE, { token: await tokenFromEmail(newAddress, "emailChange") });
    expect(confirmed.errors).toBeUndefined();
    const me = await server.gql(ME, {}, person.token);
    expect(me.data.currentUser.email).toBe(newAddress);
    expect(me.data.currentUser.emailVerifiedAt).not.toBeNull();
    expect(await works(await loginToken(newAddress))).toBe(true);
    expect(codeOf(await login(person.email, PASSWORD))).toBe("28P01");
    const profile = await server.gql(`{ allUserProfiles { nodes { userId email } } }`, {}, person.token);
    expect(profile.data.allUserProfiles.nodes.find((p: { userId: string }) => p.userId === userOf(person)).email).toBe(newAddress);
    expect(await accountEmailCount(person.email, "Your Switchboard email address was changed")).toBe(1);
    // A reset token sent to the old address no longer opens the account.
    expect(codeOf(await server.gql(RESET, { token: oldReset, password: "attacker-pass-1" }))).toBe("P0002");
    // The token works once.
    expect(codeOf(await server.gql(CONFIRM_EMAIL_CHANGE, { token: await tokenFromEmail(newAddress, "emailChange") }))).toBe("P0002");
  });

  it("a change of address asked for with a stolen password dies when the owner changes the password, ends the other sessions, or cancels it", async () => {
    for (const defence of ["changePassword", "revokeOtherSessions", "cancelEmailChange"] as const) {
      const person = await verified();
      const thief = await loginToken(person.email); // the thief knows the password
      const thiefAddress = uniqueEmail("thief");
      expect((await server.gql(REQUEST_EMAIL_CHANGE, { email: thiefAddress, password: PASSWORD }, thief)).errors).toBeUndefined();
      const token = await tokenFromEmail(thiefAddress, "emailChange");
      if (defence === "changePassword") {
        expect((await server.gql(CHANGE_PASSWORD, { current: PASSWORD, next: NEW_PASSWORD }, person.token)).errors).toBeUndefined();
      } else if (defence === "revokeOtherSessions") {
        expect((await server.gql(REVOKE_OTHERS, {}, person.token)).data.revokeOtherSessions.result).toBe(1);
      } else {
        const cancelled = await server.gql(`mutation { cancelEmailChange(input: {}) { result } }`, {}, person.token);
        expect(cancelled.data.cancelEmailChange.result).toBe(true);
      }
      expect(codeOf(await server.gql(CONFIRM_EMAIL_CHANGE, { token }))).toBe("P0002");
      expect((await server.gql(ME, {}, person.token)).data.currentUser.email).toBe(person.email);
    }
  });

  it("asking does not tell whether another account uses the address; confirming then refuses and changes nothing", async () => {
    const person = await verified();
    const other = await verified();
    const asked = await server.gql(REQUEST_EMAIL_CHANGE, { email: other.email, password: PASSWORD }, person.token);
    expect(asked.errors).toBeUndefined();
    expect(asked.data.requestEmailChange.result).toBe(true);
    const confirmed = await server.gql(CONFIRM_EMAIL_CHANGE, { token: await tokenFromEmail(other.email, "emailChange") });
    expect(codeOf(confirmed)).toBe("23505");
    expect((await server.gql(ME, {}, person.token)).data.currentUser.email).toBe(person.email);
    expect((await server.gql(ME, {}, other.token)).data.currentUser.email).toBe(other.email);
  });

  it("the wrong password, an API key, a stranger, the same address, a second request within a minute and bad tokens are refused", async () => {
    const person = await verified();
    const target = uniqueEmail("target");
    expect(codeOf(await server.gql(REQUEST_EMAIL_CHANGE, { email: target, password: "not-the-password-1" }, person.token))).toBe("28P01");
    expect(codeOf(await server.gql(REQUEST_EMAIL_CHANGE, { email: target, password: PASSWORD }))).toBe("28000");
    const key = await createKey(person, "admin");
    expect(codeOf(await server.gql(REQUEST_EMAIL_CHANGE, { email: target, password: PASSWORD }, key.secret))).toBe("28000");
    expect(codeOf(await server.gql(REQUEST_EMAIL_CHANGE, { email: person.email.toUpperCase(), password: PASSWORD }, person.token))).toBe("22023");
    expect(codeOf(await server.gql(REQUEST_EMAIL_CHANGE, { email: "nope", password: PASSWORD }, person.token))).toBe("22023");
    expect(await accountEmailCount(target)).toBe(0);

    expect((await server.gql(REQUEST_EMAIL_CHANGE, { email: target, password: PASSWORD }, person.token)).errors).toBeUndefined();
    expect(codeOf(await server.gql(REQUEST_EMAIL_CHANGE, { email: uniqueEmail("second"), password: PASSWORD }, person.token))).toBe("55000");
    for (const bad of [`sbe_${randomBytes(32).toString("hex")}`, "", "y".repeat(5000), await tokenFromEmail(person.email, "verification")]) {
      expect(codeOf(await server.gql(CONFIRM_EMAIL_CHANGE, { token: bad }))).toBe("P0002");
    }
    await ownerPool().query("update app_private.email_change_requests set expires_at = now() - interval '1 second' where user_id = $1", [userOf(person)]);
    expect(codeOf(await server.gql(CONFIRM_EMAIL_CHANGE, { token: await tokenFromEmail(target, "emailChange") }))).toBe("P0002");
    expect((await server.gql(ME, {}, person.token)).data.currentUser.email).toBe(person.email);
  });
});

describe("one's own sessions (production mode)", () => {
  it("lists only your sessions, marks the current one, and ends one or all the others", async () => {
    const person = await verified();
    const second = await loginToken(person.email);
    const third = await loginToken(person.email);
    const stranger = await verified();

    const listed = await server.gql(SESSIONS, {}, person.token);
    expect(listed.errors).toBeUndefined();
    const nodes = listed.data.allUserSessions.nodes as Array<{ rowId: string; userId: string; isCurrent: boolean }>;
    expect(nodes).toHaveLength(3);
    expect(new Set(nodes.map((n) => n.userId))).toEqual(new Set([userOf(person)]));
    expect(nodes.filter((n) => n.isCurrent).map((n) => n.rowId)).toEqual([decodeJwt(person.token).session_id]);

    // Another user's session id is answered like an unknown one, and their session goes on.
    const theirs = decodeJwt(stranger.token).session_id as string;
    const refused = await server.gql(REVOKE_SESSION, { id: theirs }, person.token);
    expect(codeOf(refused)).toBe("P0002");
    expect(await works(stranger.token)).toBe(true);
    expect(codeOf(await server.gql(REVOKE_SESSION, { id: theirs }))).toBe("28000");

    const ended = await server.gql(REVOKE_SESSION, { id: decodeJwt(second).session_id }, person.token);
    expect(ended.errors).toBeUndefined();
    expect(ended.data.revokeSession.result.revokedAt).not.toBeNull();
    expect(await works(second)).toBe(false);
    expect(codeOf(await server.gql(REVOKE_SESSION, { id: decodeJwt(second).session_id }, person.token))).toBe("P0002");

    const others = await server.gql(REVOKE_OTHERS, {}, person.token);
    expect(others.data.revokeOtherSessions.result).toBe(1);
    expect(await works(third)).toBe(false);
    expect(await works(person.token)).toBe(true);
  });
});

describe("role changes (production mode)", () => {
  async function team() {
    const owner = await verified("Roles Co");
    const admin = await verified("Admin Own Co");
    const agent = await verified("Agent Own Co");
    const tenantId = tenantOf(owner);
    await joinByInvitation(server, owner.token, admin, "admin");
    await joinByInvitation(server, owner.token, agent, "agent");
    const inTenant = async (p: Person) => {
      const r = await server.gql(`mutation ($t: UUID!) { switchTenant(input: { tenantId: $t }) { result } }`, { t: tenantId }, p.token);
      return { ...p, token: r.data.switchTenant.result as string };
    };
    return { owner, admin: await inTenant(admin), agent: await inTenant(agent), tenantId };
  }

  it("owners and admins change roles, which apply to the very next request", async () => {
    const { owner, admin, agent, tenantId } = await team();
    const invite = `mutation { inviteMember(input: { email: "${uniqueEmail("later")}", role: "agent" }) { result { invitationId } } }`;
    expect(codeOf(await server.gql(invite, {}, agent.token))).toBe("42501");
    const promoted = await server.gql(CHANGE_ROLE, { user: userOf(agent), role: "manager" }, admin.token);
    expect(promoted.errors).toBeUndefined();
    expect(promoted.data.changeMemberRole.result.role).toBe("manager");
    const toAdmin = await server.gql(CHANGE_ROLE, { user: userOf(agent), role: "admin" }, owner.token);
    expect(toAdmin.errors).toBeUndefined();
    expect((await server.gql(invite, {}, agent.token)).errors).toBeUndefined();
    expect(await roleIn(tenantId, userOf(agent))).toBe("admin");
    const bad = await server.gql(CHANGE_ROLE, { user: userOf(agent), role: "superuser" }, owner.token);
    expect(codeOf(bad)).toBe("22023");
  });

  it("lower roles, admins touching owners, API keys, strangers and other tenants' members are refused and change nothing", async () => {
    const { owner, admin, agent, tenantId } = await team();
    const outsider = await verified("Elsewhere Co");
    expect(codeOf(await server.gql(CHANGE_ROLE, { user: userOf(admin), role: "agent" }, agent.token))).toBe("42501");
    expect(codeOf(await server.gql(CHANGE_ROLE, { user: userOf(agent), role: "owner" }, admin.token))).toBe("42501");
    expect(codeOf(await server.gql(CHANGE_ROLE, { user: userOf(admin), role: "owner" }, admin.token))).toBe("42501");
    expect(codeOf(await server.gql(CHANGE_ROLE, { user: userOf(owner), role: "agent" }, admin.token))).toBe("42501");
    expect(codeOf(await server.gql(CHANGE_ROLE, { user: userOf(agent), role: "admin" }))).toBe("28000");
    const key = await createKey(owner, "admin");
    const viaKey = await server.gql(CHANGE_ROLE, { user: userOf(agent), role: "admin" }, key.secret);
    expect(codeOf(viaKey)).toBe("42501");
    expect(viaKey.errors?.[0]?.message).toMatch(/not with an API key/);
    // Another tenant's member, and another tenant's owner acting on this tenant's member.
    expect(codeOf(await server.gql(CHANGE_ROLE, { user: userOf(outsider), role: "admin" }, owner.token))).toBe("P0002");
    expect(codeOf(await server.gql(CHANGE_ROLE, { user: userOf(agent), role: "owner" }, outsider.token))).toBe("P0002");
    expect(await roleIn(tenantId, userOf(owner))).toBe("owner");
    expect(await roleIn(tenantId, userOf(admin))).toBe("admin");
    expect(await roleIn(tenantId, userOf(agent))).toBe("agent");
    expect(await roleIn(tenantOf(outsider), userOf(outsider))).toBe("owner");
  });

  it("the last owner can never be demoted or removed, even by two owners demoting each other at once", async () => {
    const { owner, admin, tenantId } = await team();
    const last = await server.gql(CHANGE_ROLE, { user: userOf(owner), role: "admin" }, owner.token);
    expect(codeOf(last)).toBe("42501");
    expect(last.errors?.[0]?.message).toMatch(/last owner cannot be demoted/);
    expect(codeOf(await server.gql(REMOVE, { user: userOf(owner) }, owner.token))).toBe("42501");

    for (let round = 0; round < 5; round++) {
      expect((await server.gql(CHANGE_ROLE, { user: userOf(admin), role: "owner" }, owner.token)).errors).toBeUndefined();
      // Each owner demotes the other at the same moment: one wins, the other finds they are no longer an owner.
      const replies = await Promise.all([
        server.gql(CHANGE_ROLE, { user: userOf(admin), role: "admin" }, owner.token),
        server.gql(CHANGE_ROLE, { user: userOf(owner), role: "admin" }, admin.token),
      ]);
      expect(replies.filter((r) => r.errors === undefined)).toHaveLength(1);
      const { rows } = await ownerPool().query<{ n: number }>("select count(*)::int as n from app_public.memberships where tenant_id = $1 and role = 'owner'", [tenantId]);
      expect(rows[0]!.n).toBe(1);
      // Put the original owner back in place for the next round.
      if ((await roleIn(tenantId, userOf(owner))) !== "owner") {
        expect((await server.gql(CHANGE_ROLE, { user: userOf(owner), role: "owner" }, admin.token)).errors).toBeUndefined();
        expect((await server.gql(CHANGE_ROLE, { user: userOf(admin), role: "admin" }, owner.token)).errors).toBeUndefined();
      }
    }
  });

  it("a demoted or removed member's API keys above their new role, and the invitations they could no longer send, stop working", async () => {
    const { owner, admin, agent } = await team();
    const adminKey = await createKey(admin, "admin");
    const agentKey = await createKey(admin, "agent");
    const alt = await verified("Alt Co");
    const altInvitation = await invite(admin, alt.email, "admin");
    expect((await server.gql(CHANGE_ROLE, { user: userOf(admin), role: "manager" }, owner.token)).errors).toBeUndefined();
    expect(await keyRevoked(adminKey.id)).toBe(true);
    expect(await keyRevoked(agentKey.id)).toBe(false);
    expect(await invitationRevoked(altInvitation)).toBe(true);
    expect(codeOf(await server.gql(`mutation ($t: String!) { acceptInvitation(input: { token: $t }) { result } }`, { t: await tokenFromEmail(alt.email, "invitation") }, alt.token))).toBe("P0002");
    // A key makes no keys, and removes nobody: what a key could hand out, removing its maker takes back.
    const viaKey = await server.gql(`mutation { createApiKey(input: { name: "Child", role: "agent" }) { result { rowId } } }`, {}, agentKey.secret);
    expect(codeOf(viaKey)).toBe("42501");
    expect(codeOf(await server.gql(REMOVE, { user: userOf(agent) }, adminKey.secret))).toBe("28000"); // revoked: nobody
    const ownerKey = await createKey(owner, "admin");
    expect(codeOf(await server.gql(REMOVE, { user: userOf(agent) }, ownerKey.secret))).toBe("42501");
    expect(await roleIn(tenantOf(owner), userOf(agent))).toBe("agent");
    expect((await server.gql(REMOVE, { user: userOf(admin) }, owner.token)).errors).toBeUndefined();
    expect(await keyRevoked(agentKey.id)).toBe(true);
    expect((await server.gql(`{ currentTenant { rowId } }`, {}, agentKey.secret)).data.currentTenant).toBeNull();
  });
});
