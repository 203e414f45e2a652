/**
 * What clients see when things go wrong: our documented SQLSTATEs with a human message, constraint
 * names turned into sentences, everything else masked. And the production guards: no introspection,
 * no IDE, a depth limit and a page-size cap. Plus /healthz.
 */
import { GraphQLError } from "postgraphile/graphql";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { constraintMessage, maskError } from "../../src/api/errors.ts";
import { PASSWORD, rootPool, uniqueEmail } from "../helpers.ts";
import { startTestServer, type TestServer } from "../server.ts";

let dev: TestServer;
let prod: TestServer;
beforeAll(async () => {
  [dev, prod] = await Promise.all([startTestServer(), startTestServer({ NODE_ENV: "production" })]);
});
afterAll(async () => {
  await Promise.all([dev?.close(), prod?.close()]);
});

const REGISTER = `mutation ($email: String!, $password: String!, $tz: String) {
  register(input: { email: $email, password: $password, businessName: "Errors Inc", timezone: $tz }) { result }
}`;

describe("errors reach clients with a code and a clear message, and nothing is written", () => {
  it.each([
    ["malformed email", { email: "nobody-at-example", password: PASSWORD, tz: "UTC" }, /email/i],
    ["weak password", { email: "weak-http@example.test", password: "abc", tz: "UTC" }, /password/i],
    ["invalid timezone", { email: "tz-http@example.test", password: PASSWORD, tz: "Moon/Base" }, /timezone/i],
  ])("%s gives 22023", async (_label, variables, message) => {
    const result = await dev.gql(REGISTER, variables);
    expect(result.errors?.[0]?.extensions?.code).toBe("22023");
    expect(result.errors?.[0]?.message).toMatch(message);
    const { rows } = await rootPool().query("select count(*)::int as n from app_public.users where email = $1", [variables.email]);
    expect(rows[0].n).toBe(0);
  });

  it("a duplicate email gives 23505 with a sentence, not a constraint dump", async () => {
    const email = uniqueEmail("dup");
    expect((await dev.gql(REGISTER, { email, password: PASSWORD, tz: "UTC" })).errors).toBeUndefined();
    const again = await dev.gql(REGISTER, { email, password: PASSWORD, tz: "UTC" });
    expect(again.errors?.[0]?.extensions?.code).toBe("23505");
    expect(again.errors?.[0]?.message).toMatch(/already exists/i);
  });

  it("a check constraint violation through a generated mutation reads as a sentence", async () => {
    const registered = await dev.gql(REGISTER, { email: uniqueEmail("config"), password: PASSWORD, tz: "UTC" });
    const token = registered.data.register.result;
    const bad = await dev.gql(
      `mutation { createSystemConfig(input: { systemConfig: { key: "booking.enabled", value: "yes", valueType: "boolean" } }) { clientMutationId } }`,
      {},
      token,
    );
    expect(bad.errors?.[0]?.extensions?.code).toBe("23514");
    expect(bad.errors?.[0]?.extensions?.constraint).toBe("system_config_value_must_match_value_type");
    expect(bad.errors?.[0]?.message).toBe("System config value must match value type.");
    const { rows } = await rootPool().query("select count(*)::int as n from app_public.system_config where key = 'booking.enabled'");
    expect(rows[0].n).toBe(0);
  });

  it("bad business hours are refused with 22023 and a message naming the day", async () => {
    const registered = await dev.gql(REGISTER, { email: uniqueEmail("hours"), password: PASSWORD, tz: "UTC" });
    const token = registered.data.register.result;
    const settings = await dev.gql(`{ currentTenant { businessSettingByTenantId { id } } }`, {}, token);
    const id = settings.data.currentTenant.businessSettingByTenantId.id;
    const bad = await dev.gql(
      `mutation ($id: ID!) { updateBusinessSetting(input: { id: $id, businessSettingPatch: { businessHours: { monday: { open: "25:00", close: "09:00", enabled: true } } } }) { clientMutationId } }`,
      { id },
      token,
    );
    expect(bad.errors?.[0]?.extensions?.code).toBe("22023");
    expect(bad.errors?.[0]?.message).toMatch(/monday/i);
  });

  it("anything else is masked and logged, not shown", () => {
    const internal = Object.assign(new Error("relation secret_table does not exist"), { code: "42P01" });
    const masked = maskError(new GraphQLError(internal.message, { originalError: internal })) as GraphQLError;
    expect(masked.message).toMatch(/^An error occurred \(logged with hash/);
    expect(masked.message).not.toContain("secret_table");
    const documented = Object.assign(new Error("Unknown timezone"), { code: "22023" });
    const shown = maskError(new GraphQLError(documented.message, { originalError: documented })) as GraphQLError;
    expect(shown.message).toBe("Unknown timezone");
    expect(shown.extensions.code).toBe("22023");
    expect(constraintMessage("memberships_role_must_be_known")).toBe("Memberships role must be known.");
  });
});

describe("production guards", () => {
  it("turns off introspection and the IDE", async () => {
    const introspection = await prod.gql(`{ __schema { queryType { name } } }`);
    expect(introspection.errors?.[0]?.message).toMatch(/introspection/i);
    expect((await fetch(`${prod.url}/graphiql`)).status).toBe(404);
    // Development keeps both.
    expect((await dev.gql(`{ __schema { queryType { name } } }`)).errors).toBeUndefined();
    expect((await fetch(`${dev.url}/graphiql`)).status).toBe(200);
  });

  it("refuses operations nested deeper than the limit", async () => {
    let selection = "id";
    for (let i = 0; i < 14; i++) selection = `tenantByTenantId { businessSettingByTenantId { ${selection} } }`;
    const deep = await prod.gql(`{ currentTenant { businessSettingByTenantId { ${selection} } } }`);
    expect(deep.errors?.[0]?.message).toMatch(/depth/i);
    expect(deep.errors?.[0]?.extensions?.code).toBe("QUERY_TOO_DEEP");
  });

  it("caps page sizes, whether written inline or passed as a variable", async () => {
    const inline = await prod.gql(`{ allMemberships(first: 100000) { nodes { id } } }`);
    expect(inline.status).toBe(400);
    expect(inline.errors?.[0]?.message).toMatch(/more than the 200 rows/);
    const variable = await prod.gql(`query ($n: Int) { allMemberships(first: $n) { nodes { id } } }`, { n: 5000 });
    expect(variable.errors?.[0]?.message).toMatch(/more than the 200 rows/);
    const fine = await prod.gql(`query ($n: Int) { allMemberships(first: $n) { nodes { id } } }`, { n: 50 });
    expect(fine.errors).toBeUndefined();
  });
});

describe("/healthz", () => {
  it("reports the database reachable, migrations current and the worker state", async () => {
    const response = await fetch(`${dev.url}/healthz`);
    const body = (await response.json()) as { migrations: { expected: string } };
    expect(response.status).toBe(200);
    expect(body).toMatchObject({ ok: true, database: { reachable: true }, migrations: { current: true }, worker: { state: "not in this process" } });
    expect(body.migrations.expected).toMatch(/^\d{6}-.*\.sql$/);
  });
});
