/**
 * Consent over GraphQL (issue 17): a client sees SB002 with a sentence when it texts marketing to a
 * number without a recorded consent, records the consent with its evidence (recordConsent), reads it
 * back with its evidence hash, and records a revocation (revokeConsent). Another tenant gets nothing.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PASSWORD, rootPool, uniqueEmail } from "../helpers.ts";
import { startTestServer, type TestServer } from "../server.ts";

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(async () => {
  await server?.close();
});

const REGISTER = `mutation ($email: String!, $password: String!) {
  register(input: { email: $email, password: $password, businessName: "Consent Plumbing", timezone: "America/New_York" }) { result }
}`;
const QUEUE = `mutation ($lead: UUID!) { queueSms(input: { leadId: $lead, body: "Spring tune-up, $79 this week" }) { result { rowId status purpose } } }`;
const RECORD = `mutation ($lead: UUID!, $disclosure: String, $ip: InternetAddress) {
  recordConsent(input: { leadId: $lead, channel: "sms", purpose: "marketing", disclosure: $disclosure, method: "form",
                         pageUrl: "https://consent.example/quote", ip: $ip, userAgent: "Mozilla/5.0 (api test)" }) {
    result { rowId phone method evidenceHash revokedAt }
  }
}`;

async function business(): Promise<{ token: string; tenant: string; lead: string }> {
  const registered = await server.gql(REGISTER, { email: uniqueEmail("consent"), password: PASSWORD });
  const token = registered.data.register.result as string;
  const me = await server.gql(`{ currentTenant { rowId } }`, {}, token);
  const tenant = me.data.currentTenant.rowId as string;
  const suffix = String(Date.now() % 10_000_000).padStart(7, "0");
  await rootPool().query(
    "insert into app_public.phone_numbers (tenant_id, phone_number, phone_number_sid, area_code, status, date_provisioned) values ($1, $2, 'PN' || md5(random()::text), '786', 'active', now())",
    [tenant, `+1786${suffix}`],
  );
  const { rows } = await rootPool().query("insert into app_public.leads (tenant_id, phone, timezone, source) values ($1, $2, 'America/New_York', 'web') returning id", [
    tenant,
    `+1212${suffix}`,
  ]);
  return { token, tenant, lead: rows[0].id };
}

describe("consent over GraphQL", () => {
  it("SB002 with a sentence before consent; recordConsent with its evidence; then the text is queued; revokeConsent ends it", async () => {
    const b = await business();
    const refused = await server.gql(QUEUE, { lead: b.lead }, b.token);
    expect(refused.errors?.[0]?.extensions?.code).toBe("SB002");
    expect(refused.errors?.[0]?.message).toMatch(/no current consent to marketing texts .* record the consent the person gave/);

    const missing = await server.gql(RECORD, { lead: b.lead, disclosure: null, ip: "198.51.100.9" }, b.token);
    expect(missing.errors?.[0]?.extensions?.code).toBe("23514");
    expect(missing.errors?.[0]?.message).toBe("Consent records marketing needs the disclosure shown.");

    const recorded = await server.gql(RECORD, { lead: b.lead, disclosure: "I agree to receive marketing texts from Consent Plumbing. Reply STOP to stop.", ip: "198.51.100.9" }, b.token);
    expect(recorded.errors).toBeUndefined();
    expect(recorded.data.recordConsent.result).toMatchObject({ method: "form", revokedAt: null });
    expect(recorded.data.recordConsent.result.evidenceHash).toMatch(/^[0-9a-f]{64}$/);

    const queued = await server.gql(QUEUE, { lead: b.lead }, b.token);
    expect(queued.errors).toBeUndefined();
    expect(queued.data.queueSms.result).toMatchObject({ status: "queued", purpose: "marketing" });

    const listed = await server.gql(`{ allConsentRecords { nodes { rowId purpose channel } } }`, {}, b.token);
    expect(listed.data.allConsentRecords.nodes).toHaveLength(1);

    // Another business sees none of it and cannot revoke it.
    const other = await business();
    expect((await server.gql(`{ allConsentRecords { nodes { rowId } } }`, {}, other.token)).data.allConsentRecords.nodes).toEqual([]);
    const foreign = await server.gql(`mutation ($lead: UUID!) { revokeConsent(input: { leadId: $lead, channel: "sms" }) { result } }`, { lead: b.lead }, other.token);
    expect(foreign.errors?.[0]?.extensions?.code).toBe("P0002");

    const revoked = await server.gql(`mutation ($lead: UUID!) { revokeConsent(input: { leadId: $lead, channel: "sms" }) { result } }`, { lead: b.lead }, b.token);
    expect(revoked.data.revokeConsent.result).toBe(1);
    expect((await server.gql(QUEUE, { lead: b.lead }, b.token)).errors?.[0]?.extensions?.code).toBe("SB002");
    // A stranger without a token cannot record anything.
    const stranger = await server.gql(RECORD, { lead: b.lead, disclosure: "I agree to receive marketing texts from anyone at all.", ip: "198.51.100.9" });
    expect(stranger.errors?.[0]).toBeDefined();
    const { rows } = await rootPool().query("select count(*)::int as n from app_public.consent_records where tenant_id = $1", [b.tenant]);
    expect(rows[0].n).toBe(1);
  });
});
