/**
 * Auth flows over real HTTP against a running server: register, login, logout, switchTenant,
 * inviteMember/removeMember (invitations themselves: test/api/invitations.test.ts), API keys, and what happens to expired, tampered and revoked tokens.
 */
import { SignJWT, decodeJwt } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PASSWORD, uniqueEmail } from "../helpers.ts";
import { startTestServer, TEST_JWT_SECRET, type TestServer } from "../server.ts";
import { joinByInvitation } from "../fixtures/accountEmails.ts";

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(async () => {
  await server?.close();
});

const REGISTER = `mutation ($email: String!, $password: String!, $business: String) {
  register(input: { email: $email, password: $password, businessName: $business, timezone: "America/New_York" }) { result }
}`;
const LOGIN = `mutation ($email: String!, $password: String!) { login(input: { email: $email, password: $password }) { result } }`;
const ME = `{ currentUser { id email } currentTenant { id businessName } }`;

async function register(business: string | null = "HTTP Plumbing"): Promise<{ email: string; token: string }> {
  const email = uniqueEmail("http");
  const result = await server.gql(REGISTER, { email, password: PASSWORD, business });
  expect(result.errors).toBeUndefined();
  return { email, token: result.data.register.result };
}

describe("auth over HTTP", () => {
  it("register returns a signed token naming user, tenant and session; the token opens the tenant", async () => {
    const { email, token } = await register("Token Test Co");
    const claims = decodeJwt(token);
    expect(claims).toMatchObject({ iss: "switchboard", aud: "switchboard" });
    expect(claims.user_id).toBeTypeOf("string");
    expect(claims.tenant_id).toBeTypeOf("string");
    expect(claims.session_id).toBeTypeOf("string");
    const me = await server.gql(ME, {}, token);
    expect(me.errors).toBeUndefined();
    expect(me.data.currentUser.email).toBe(email);
    expect(me.data.currentTenant.businessName).toBe("Token Test Co");
  });

  it("login works with the right password and gives one clear error otherwise", async () => {
    const { email } = await register();
    const ok = await server.gql(LOGIN, { email, password: PASSWORD });
    expect(ok.errors).toBeUndefined();
    expect(ok.data.login.result).toBeTypeOf("string");
    const wrong = await server.gql(LOGIN, { email, password: "not-the-password-1" });
    const unknown = await server.gql(LOGIN, { email: uniqueEmail("ghost"), password: PASSWORD });
    for (const failed of [wrong, unknown]) {
      expect(failed.errors?.[0]?.message).toBe("Incorrect email or password.");
      expect(failed.errors?.[0]?.extensions?.code).toBe("28P01");
    }
  });

  it("repeated failures from another address don't lock the account: the user logs in (rate limits: test/api/rate-limits.test.ts)", async () => {
    const { email } = await register();
    // This server's limits are out of the way (test/server.ts), so this is the SQL function's behaviour: no lock.
    for (let i = 0; i < 8; i++) {
      const failed = await server.gql(LOGIN, { email, password: "not-the-password-1" });
      expect(failed.errors?.[0]?.extensions?.code).toBe("28P01");
    }
    const ok = await server.gql(LOGIN, { email, password: PASSWORD });
    expect(ok.errors).toBeUndefined();
    expect(ok.data.login.result).toBeTypeOf("string");
  });

  it("logout revokes the session: the same, still validly signed, token sees nothing", async () => {
    const { token } = await register();
    const out = await server.gql(`mutation { logout(input: {}) { result } }`, {}, token);
    expect(out.errors).toBeUndefined();
    expect(out.data.logout.result).toBe(true);
    const me = await server.gql(ME, {}, token);
    expect(me.data).toEqual({ currentUser: null, currentTenant: null });
  });

  it("an expired token gets 401 TOKEN_EXPIRED and a tampered one 401 INVALID_TOKEN", async () => {
    const { token } = await register();
    const claims = decodeJwt(token);
    const expired = await new SignJWT({ ...claims, exp: Math.floor(Date.now() / 1000) - 60 })
      .setProtectedHeader({ alg: "HS256" })
      .sign(new TextEncoder().encode(TEST_JWT_SECRET));
    const e = await server.gql(ME, {}, expired);
    expect(e.status).toBe(401);
    expect(e.errors?.[0]?.extensions?.code).toBe("TOKEN_EXPIRED");

    const [header, payload, signature] = token.split(".");
    const forgedPayload = Buffer.from(JSON.stringify({ ...claims, tenant_id: "00000000-0000-0000-0000-000000000000" })).toString("base64url");
    for (const bad of [`${header}.${forgedPayload}.${signature}`, `${header}.${payload}.${signature!.slice(0, -2)}xx`, "garbage"]) {
      const r = await server.gql(ME, {}, bad);
      expect(r.status).toBe(401);
      expect(r.errors?.[0]?.extensions?.code).toBe("INVALID_TOKEN");
    }
    // Signed with another secret.
    const foreign = await new SignJWT(claims).setProtectedHeader({ alg: "HS256" }).sign(new TextEncoder().encode("another-secret-another-secret-1234567"));
    expect((await server.gql(ME, {}, foreign)).status).toBe(401);
  });

  it("switchTenant moves to a tenant the user belongs to, and nowhere else", async () => {
    const owner = await register("Home Tenant");
    const other = await register("Second Tenant");
    await joinByInvitation(server, other.token, owner, "agent");
    const otherTenant = decodeJwt(other.token).tenant_id as string;
    const switched = await server.gql(`mutation ($t: UUID!) { switchTenant(input: { tenantId: $t }) { result } }`, { t: otherTenant }, owner.token);
    expect(switched.errors).toBeUndefined();
    const newToken: string = switched.data.switchTenant.result;
    expect(decodeJwt(newToken).tenant_id).toBe(otherTenant);
    const me = await server.gql(ME, {}, newToken);
    expect(me.data.currentTenant.businessName).toBe("Second Tenant");

    const stranger = await register("Stranger Tenant");
    const denied = await server.gql(
      `mutation ($t: UUID!) { switchTenant(input: { tenantId: $t }) { result } }`,
      { t: decodeJwt(stranger.token).tenant_id },
      owner.token,
    );
    expect(denied.errors?.[0]?.extensions?.code).toBe("42501");
    expect(denied.errors?.[0]?.message).toMatch(/not a member/i);
  });

  it("a removed member loses access on the very next request", async () => {
    const owner = await register("Removal Co");
    const member = await register("Member's Own Co");
    await joinByInvitation(server, owner.token, member, "agent");
    const ownerTenant = decodeJwt(owner.token).tenant_id as string;
    const switched = await server.gql(`mutation ($t: UUID!) { switchTenant(input: { tenantId: $t }) { result } }`, { t: ownerTenant }, member.token);
    const memberToken: string = switched.data.switchTenant.result;
    expect((await server.gql(ME, {}, memberToken)).data.currentTenant.businessName).toBe("Removal Co");
    const removed = await server.gql(
      `mutation ($u: UUID!) { removeMember(input: { userId: $u }) { result } }`,
      { u: decodeJwt(member.token).user_id },
      owner.token,
    );
    expect(removed.errors).toBeUndefined();
    const after = await server.gql(ME, {}, memberToken);
    expect(after.data.currentTenant).toBeNull();
  });

  it("API keys authenticate server-to-server clients until revoked", async () => {
    const owner = await register("API Key Co");
    const created = await server.gql(`mutation { createApiKey(input: { name: "Zapier", role: "agent" }) { result { rowId secret } } }`, {}, owner.token);
    expect(created.errors).toBeUndefined();
    const { rowId: id, secret } = created.data.createApiKey.result;
    const viaHeader = await server.gql(`{ currentTenant { businessName } }`, {}, undefined, { "x-api-key": secret });
    expect(viaHeader.data.currentTenant.businessName).toBe("API Key Co");
    const viaBearer = await server.gql(`{ currentTenant { businessName } }`, {}, secret);
    expect(viaBearer.data.currentTenant.businessName).toBe("API Key Co");
    const malformed = await server.gql(`{ currentTenant { businessName } }`, {}, undefined, { "x-api-key": "sbk_nope" });
    expect(malformed.status).toBe(401);
    await server.gql(`mutation ($id: UUID!) { revokeApiKey(input: { id: $id }) { clientMutationId } }`, { id }, owner.token);
    const revoked = await server.gql(`{ currentTenant { businessName } }`, {}, secret);
    expect(revoked.data.currentTenant).toBeNull();
  });
});
