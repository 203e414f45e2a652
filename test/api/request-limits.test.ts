/**
 * Issue 14, point 3: request limits over real HTTP against a production-mode server started in this
 * process (so its heap is ours to measure). Each attack is refused with its code; legitimate queries
 * and importLeads still work. Every limit was broken once to see its test fail (README of the PR).
 */
import { runInNewContext } from "node:vm";
import { setFlagsFromString } from "node:v8";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PASSWORD, uniqueEmail } from "../helpers.ts";
import { startTestServer, type TestServer } from "../server.ts";

let prod: TestServer;
let roomy: TestServer; // production, with the token limit raised so the alias and cost rules are reached on their own
let token: string;
const LEADS = 60; // more than the default page size (50)

async function post(server: TestServer, body: string, auth?: string, contentType = "application/json") {
  const response = await fetch(`${server.url}/graphql`, {
    method: "POST",
    headers: {
      "content-type": contentType,
      accept: "application/graphql-response+json, application/json",
      ...(auth ? { authorization: `Bearer ${auth}` } : {}),
    },
    body,
  });
  const json = (await response.json()) as { data?: any; errors?: Array<{ message: string; extensions?: { code?: string } }> };
  return { status: response.status, data: json.data, errors: json.errors, code: json.errors?.[0]?.extensions?.code };
}

const IMPORT = `mutation ($csv: String!) { importLeads(input: { csv: $csv, sourceName: "limits.csv" }) { batch { createdCount rejectedCount } } }`;

function csv(rows: number, padding = "", first = 0): string {
  const lines = ["first_name,last_name,phone,email,city,notes"];
  for (let i = 0; i < rows; i++) {
    lines.push(`Ada${i},Lovelace,+1202555${String(1000 + first + i).padStart(4, "0")},ada${i}-${Date.now()}@example.com,Denver,${padding}`);
  }
  return `${lines.join("\n")}\n`;
}

beforeAll(async () => {
  [prod, roomy] = await Promise.all([
    startTestServer({ NODE_ENV: "production" }),
    startTestServer({ NODE_ENV: "production", GRAPHQL_MAX_TOKENS: "100000", GRAPHQL_MAX_BODY_BYTES: "1048576" }),
  ]);
  const registered = await prod.gql(
    `mutation ($email: String!, $password: String!) { register(input: { email: $email, password: $password, businessName: "Limits Co", timezone: "UTC" }) { result } }`,
    { email: uniqueEmail("limits"), password: PASSWORD },
  );
  expect(registered.errors).toBeUndefined();
  token = registered.data.register.result;
  const imported = await prod.gql(IMPORT, { csv: csv(LEADS) }, token);
  expect(imported.errors).toBeUndefined();
  expect(imported.data.importLeads.batch.createdCount).toBe(LEADS);
});
afterAll(async () => {
  await Promise.all([prod?.close(), roomy?.close()]);
});

describe("bodies and query texts", () => {
  it("an 8 MB body is refused with 413 REQUEST_TOO_LARGE, logged in or not", async () => {
    const body = JSON.stringify({ query: "{ __typename }", variables: { junk: "x".repeat(8 * 1024 * 1024) } });
    const anonymous = await post(prod, body);
    expect([anonymous.status, anonymous.code]).toEqual([413, "REQUEST_TOO_LARGE"]);
    const loggedIn = await post(prod, JSON.stringify({ query: "{ __typename }", variables: { junk: "x".repeat(9 * 1024 * 1024) } }), token);
    expect([loggedIn.status, loggedIn.code]).toEqual([413, "REQUEST_TOO_LARGE"]);
  });

  it("a 2 MB query is refused before it is parsed, also for a logged-in user", async () => {
    const query = `{ ${"__typename ".repeat(190_000)} }`;
    expect(query.length).toBeGreaterThan(2_000_000);
    for (const auth of [undefined, token]) {
      const result = await post(prod, JSON.stringify({ query }), auth);
      expect([result.status, result.code]).toEqual([413, "REQUEST_TOO_LARGE"]);
    }
    // Sent as application/graphql, grafserv reads it with the same cap.
    const raw = await fetch(`${prod.url}/graphql`, { method: "POST", headers: { "content-type": "application/graphql", accept: "application/json" }, body: query });
    expect(raw.status).toBe(413);
    expect(((await raw.json()) as { errors: Array<{ message: string }> }).errors[0]?.message).toMatch(/too much data/i);
  });

  it("a huge token count is refused with TOO_MANY_TOKENS", async () => {
    const result = await post(prod, JSON.stringify({ query: `{ allLeads(first: 1) { nodes { ${"id ".repeat(3000)} } } }` }), token);
    expect([result.status, result.code]).toEqual([400, "TOO_MANY_TOKENS"]);
  });
});

describe("aliases, root fields and cost", () => {
  const aliases = (n: number) => `{ ${Array.from({ length: n }, (_, i) => `a${i}: allLeads(first: 200) { nodes { id } }`).join(" ")} }`;

  it("1,000 aliases of a 200-row connection are refused (tokens first; aliases when tokens are allowed)", async () => {
    const strict = await post(prod, JSON.stringify({ query: aliases(1000) }), token);
    expect(strict.code).toBe("TOO_MANY_TOKENS");
    const result = await post(roomy, JSON.stringify({ query: aliases(1000) }), token);
    expect([result.status, result.code]).toEqual([400, "TOO_MANY_ALIASES"]);
    expect(result.data).toBeUndefined();
  });

  it("many root fields are refused with TOO_MANY_ROOT_FIELDS", async () => {
    const result = await post(prod, JSON.stringify({ query: `{ ${"__typename ".repeat(25)} }` }), token);
    expect([result.status, result.code]).toEqual([400, "TOO_MANY_ROOT_FIELDS"]);
  });

  it("a cost bomb (nested connections with first: 200) is refused with QUERY_TOO_COSTLY", async () => {
    const query = `{ allTenants(first: 200) { nodes { leadsByTenantId(first: 200) { nodes { id } } } } }`;
    const result = await post(prod, JSON.stringify({ query }), token);
    expect([result.status, result.code]).toEqual([400, "QUERY_TOO_COSTLY"]);
    // With the page sizes in a variable's default: the same.
    const viaVariable = await post(prod, JSON.stringify({ query: `query ($n: Int = 200) { allTenants(first: $n) { nodes { leadsByTenantId(first: $n) { nodes { id } } } } }` }), token);
    expect(viaVariable.code).toBe("QUERY_TOO_COSTLY");
  });

  it("the same bomb hidden in fragments (a named one and an inline one) is counted the same", async () => {
    const query = `query { allTenants(first: 200) { nodes { ...Leads } } }
      fragment Leads on Tenant { ... on Tenant { leadsByTenantId(first: 200) { nodes { id } } } }`;
    const result = await post(prod, JSON.stringify({ query }), token);
    expect([result.status, result.code, result.errors?.[0]?.message]).toEqual([400, "QUERY_TOO_COSTLY", expect.stringMatching(/more than 50000 values/)]);
  });
});

describe("page sizes", () => {
  it("allLeads without first gets the default page size, not every row", async () => {
    const result = await post(prod, JSON.stringify({ query: `{ allLeads { totalCount nodes { id } } }` }), token);
    expect(result.errors).toBeUndefined();
    expect(result.data.allLeads.totalCount).toBe(LEADS);
    expect(result.data.allLeads.nodes).toHaveLength(50);
    // A null variable is the same as no argument.
    const nulled = await post(prod, JSON.stringify({ query: `query ($n: Int) { allLeads(first: $n) { nodes { id } } }`, variables: { n: null } }), token);
    expect(nulled.data.allLeads.nodes).toHaveLength(50);
  });

  it("first from a variable's default above the max is refused with PAGE_TOO_LARGE", async () => {
    const result = await post(prod, JSON.stringify({ query: `query ($n: Int = 5000) { allLeads(first: $n) { nodes { id } } }` }), token);
    expect([result.status, result.code]).toEqual([400, "PAGE_TOO_LARGE"]);
    expect(result.errors?.[0]?.message).toMatch(/more than the 200 rows/);
  });

  it("a nested connection over the max is refused with PAGE_TOO_LARGE", async () => {
    const result = await post(prod, JSON.stringify({ query: `{ allTenants(first: 1) { nodes { leadsByTenantId(last: 500) { nodes { id } } } } }` }), token);
    expect([result.status, result.code]).toEqual([400, "PAGE_TOO_LARGE"]);
  });
});

describe("legitimate requests still work", () => {
  it("the README's first query", async () => {
    const result = await prod.gql(
      `{ findLeads(first: 5) { totalCount nodes { fullName status leadScore source } } allAgents(first: 5) { totalCount nodes { displayName kind isActive } } }`,
      {},
      token,
    );
    expect(result.errors).toBeUndefined();
    expect(result.data.findLeads.nodes).toHaveLength(5);
  });

  it("importLeads with a realistic 1 MB CSV (bigger than the GraphQL cap) works for a logged-in user only", async () => {
    const file = csv(2000, "n".repeat(500), LEADS);
    expect(file.length).toBeGreaterThan(1_000_000);
    const body = JSON.stringify({ query: IMPORT, variables: { csv: file } });
    const imported = await post(prod, body, token);
    expect(imported.errors).toBeUndefined();
    expect(imported.data.importLeads.batch.createdCount + imported.data.importLeads.batch.rejectedCount).toBe(2000);
    const anonymous = await post(prod, body);
    expect([anonymous.status, anonymous.code]).toEqual([413, "REQUEST_TOO_LARGE"]);
    // Another operation riding along in a big body is refused, even from a logged-in user.
    const smuggled = JSON.stringify({ query: `mutation ($csv: String!) { importLeads(input: { csv: $csv }) { clientMutationId } logout(input: {}) { result } }`, variables: { csv: file } });
    expect((await post(prod, smuggled, token)).code).toBe("REQUEST_TOO_LARGE");
  });
});

describe("memory", () => {
  it("a burst of oversized and alias-heavy operations is refused without growing the heap past 32 MB", async () => {
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as () => void;
    // Warm up the paths once so code and caches of the framework itself are not counted.
    await post(prod, JSON.stringify({ query: `{ a0: __typename }` }), token);
    gc();
    const before = process.memoryUsage().heapUsed;
    const big = JSON.stringify({ query: `{ ${"__typename ".repeat(190_000)} }` });
    let refused = 0;
    for (let round = 0; round < 10; round++) {
      const results = await Promise.all([
        ...Array.from({ length: 4 }, () => post(prod, big, token)),
        // Distinct texts, so each would be a new entry in a parse cache: 1,000 aliases (refused before parsing,
        // too many tokens) and 150 aliases (parsed, refused by validation, cached by grafserv: the worst case).
        ...Array.from({ length: 10 }, (_, i) =>
          post(prod, JSON.stringify({ query: `{ ${Array.from({ length: 1000 }, (_, j) => `r${round}q${i}a${j}: allLeads(first: 200) { nodes { id } }`).join(" ")} }` }), token),
        ),
        ...Array.from({ length: 10 }, (_, i) =>
          post(prod, JSON.stringify({ query: `{ ${Array.from({ length: 150 }, (_, j) => `r${round}q${i}a${j}: __typename`).join(" ")} }` }), token),
        ),
      ]);
      refused += results.filter((r) => ["REQUEST_TOO_LARGE", "TOO_MANY_TOKENS", "TOO_MANY_ALIASES"].includes(r.code ?? "")).length;
    }
    expect(refused).toBe(240);
    gc();
    const grown = process.memoryUsage().heapUsed - before;
    console.log(`request-limits memory: heap grew by ${(grown / 1024 / 1024).toFixed(1)} MB after 240 refused requests`);
    expect(grown).toBeLessThan(32 * 1024 * 1024);
  });
});
