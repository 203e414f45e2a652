/**
 * importLeads over real HTTP: a manager imports a CSV and reads the results; an agent gets 42501 and
 * nothing is written; another tenant sees nothing; bad input gets a clear 22023.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PASSWORD, uniqueEmail } from "../helpers.ts";
import { startTestServer, type TestServer } from "../server.ts";
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

async function register(business = "Import Test Co"): Promise<{ email: string; token: string }> {
  const email = uniqueEmail("import");
  const result = await server.gql(REGISTER, { email, password: PASSWORD, business });
  expect(result.errors).toBeUndefined();
  return { email, token: result.data.register.result };
}

/** A new user who joins the owner's tenant with a role; returns their token for that tenant. */
async function member(owner: { token: string }, role: "manager" | "agent"): Promise<string> {
  const them = await register("Their Own Co");
  await joinByInvitation(server, owner.token, them, role);
  const me = await server.gql(`{ currentTenant { rowId } }`, {}, owner.token);
  const switched = await server.gql(`mutation ($t: UUID!) { switchTenant(input: { tenantId: $t }) { result } }`, { t: me.data.currentTenant.rowId }, them.token);
  expect(switched.errors).toBeUndefined();
  return switched.data.switchTenant.result;
}

const IMPORT = `mutation ($csv: String!, $mode: String, $country: String, $name: String) {
  importLeads(input: { csv: $csv, mode: $mode, defaultCountry: $country, sourceName: $name }) {
    batch {
      id sourceName mode status rowCount createdCount mergedCount skippedCount rejectedCount
      importBatchRowsByTenantIdAndBatchId(orderBy: ROW_NUMBER_ASC) { nodes { rowNumber result reason leadId } }
    }
  }
}`;

const CSV = [
  "First Name,Last Name,Phone,Email,Tags,Favourite Colour",
  "Ann,Lee,(202) 555-0141,ann@example.com,vip;roof,blue",
  "Bob,Ray,not a phone,bob@example.com,,",
  "Ann,Again,202.555.0141,,gutter,",
  "Cy,,,cy@example.com,,green",
].join("\n");

describe("importLeads over HTTP", () => {
  it("a manager imports a CSV; each row's outcome and the leads can be queried", async () => {
    const owner = await register();
    const manager = await member(owner, "manager");
    const result = await server.gql(IMPORT, { csv: CSV, mode: "merge", name: "leads.csv" }, manager);
    expect(result.errors).toBeUndefined();
    const batch = result.data.importLeads.batch;
    expect(batch).toMatchObject({
      sourceName: "leads.csv",
      mode: "merge",
      status: "completed",
      rowCount: 4,
      createdCount: 2,
      mergedCount: 1,
      skippedCount: 0,
      rejectedCount: 1,
    });
    const rows = batch.importBatchRowsByTenantIdAndBatchId.nodes;
    expect(rows.map((r: any) => [r.rowNumber, r.result, r.reason])).toEqual([
      [2, "created", null],
      [3, "rejected", "Phone 'not a phone' is not a phone number"],
      [4, "merged", "Merged into the lead with this phone"],
      [5, "created", null],
    ]);
    expect(rows[2].leadId).toBe(rows[0].leadId);

    const leads = await server.gql(
      `{ allLeads(orderBy: FULL_NAME_ASC) { nodes { firstName lastName phone email tags source attributes } } }`,
      {},
      owner.token,
    );
    expect(leads.errors).toBeUndefined();
    expect(leads.data.allLeads.nodes).toEqual([
      { firstName: "Ann", lastName: "Lee", phone: "+12025550141", email: "ann@example.com", tags: ["vip", "roof", "gutter"], source: "import", attributes: { favourite_colour: "blue" } },
      { firstName: "Cy", lastName: null, phone: null, email: "cy@example.com", tags: [], source: "import", attributes: { favourite_colour: "green" } },
    ]);

    // The same file again, mode skip by default: nothing new.
    const again = await server.gql(IMPORT, { csv: CSV }, manager);
    expect(again.errors).toBeUndefined();
    expect(again.data.importLeads.batch).toMatchObject({ mode: "skip", createdCount: 0, skippedCount: 3, rejectedCount: 1 });
    const history = await server.gql(`{ allImportBatches { totalCount } }`, {}, owner.token);
    expect(history.data.allImportBatches.totalCount).toBe(2);

    // Another tenant sees none of it.
    const stranger = await register("Stranger Co");
    const theirs = await server.gql(`{ allImportBatches { totalCount } allImportBatchRows { totalCount } allLeads { totalCount } }`, {}, stranger.token);
    expect(theirs.data).toEqual({ allImportBatches: { totalCount: 0 }, allImportBatchRows: { totalCount: 0 }, allLeads: { totalCount: 0 } });
  });

  it("an agent gets 42501 and nothing is written; so does an anonymous caller (28000)", async () => {
    const owner = await register();
    const agent = await member(owner, "agent");
    const denied = await server.gql(IMPORT, { csv: CSV }, agent);
    expect(denied.errors?.[0]?.extensions?.code, JSON.stringify(denied.errors)).toBe("42501");
    expect(denied.errors?.[0]?.message).toBe("Only owners, admins and managers can import leads");
    const anonymous = await server.gql(IMPORT, { csv: CSV });
    expect(anonymous.errors?.[0]?.extensions?.code).toBe("28000");
    const after = await server.gql(`{ allImportBatches { totalCount } allLeads { totalCount } }`, {}, owner.token);
    expect(after.data).toEqual({ allImportBatches: { totalCount: 0 }, allLeads: { totalCount: 0 } });
  });

  it("bad input gets a clear 22023 and writes nothing", async () => {
    const owner = await register();
    const cases: Array<[Record<string, unknown>, string | RegExp]> = [
      [{ csv: CSV, mode: "overwrite" }, "Invalid mode 'overwrite': use merge or skip"],
      [{ csv: CSV, country: "USA" }, /Invalid default country 'USA'/],
      [{ csv: CSV, country: "ZZ" }, "defaultCountry: unknown country code 'ZZ'."],
      [{ csv: "" }, /csv: The file is empty/],
      [{ csv: "city,zip\nX,1\n" }, /csv: The header row needs a phone or email column/],
      [{ csv: 'phone\n"202 555 0141\n' }, /csv: The file can't be read as CSV/],
      [{ csv: `email\n${"x".repeat(5 * 1024 * 1024)}\n` }, /csv: at most 5 MB per request/],
      [{ csv: `email\n${Array.from({ length: 20_001 }, (_, i) => `l${i}@example.com`).join("\n")}\n` }, /csv: at most 20000 rows per request/],
    ];
    for (const [variables, message] of cases) {
      const result = await server.gql(IMPORT, variables, owner.token);
      expect(result.errors?.[0]?.extensions?.code, `${JSON.stringify(variables).slice(0, 80)} ${JSON.stringify(result.errors)}`).toBe("22023");
      expect(result.errors?.[0]?.message).toMatch(message);
    }
    const after = await server.gql(`{ allImportBatches { totalCount } allLeads { totalCount } }`, {}, owner.token);
    expect(after.data).toEqual({ allImportBatches: { totalCount: 0 }, allLeads: { totalCount: 0 } });
  });
});
