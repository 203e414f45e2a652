/**
 * `node src/main.ts import <file> --tenant <id>` end to end, as a child process against the test
 * database (connected as the owner, like `npm run import` with DATABASE_URL/AUTH_DATABASE_URL set):
 * exit codes, the summary, the progress output, the rows in the database, and one-line errors.
 */
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { projectRoot } from "../../src/config.ts";
import { db, registerUser, rootPool, type RegisteredUser } from "../helpers.ts";

const dir = mkdtempSync(join(tmpdir(), "switchboard-import-cli-"));

function runImport(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const env = {
    ...process.env,
    PATH: `${resolve(projectRoot, "node_modules/.bin")}:${process.env.PATH ?? ""}`,
    NODE_ENV: "development",
    DATABASE_URL: db.ownerUrl,
    AUTH_DATABASE_URL: db.authUrl,
    DATABASE_OWNER: db.roles.owner,
    DATABASE_AUTHENTICATOR: db.roles.authenticator,
    DATABASE_VISITOR: db.roles.visitor,
    SWITCHBOARD_DATA_DIR: join(dir, "data"),
  };
  return new Promise((done, fail) => {
    const child = spawn("node", ["src/main.ts", "import", ...args], { cwd: projectRoot, env });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("error", fail);
    child.on("close", (code) => done({ code, stdout, stderr }));
  });
}

function csvFile(name: string, text: string): string {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

/** 1200 leads over three chunks, with two bad rows in the middle and a duplicate near the end. */
function bigCsv(): string {
  const lines = ["First Name,Last Name,Phone,Email,Tags"];
  for (let i = 0; i < 1200; i++) {
    const phone = i === 3 ? "abc" : i === 700 ? "555-0100" : `(202) 555-${String(1000 + i).padStart(4, "0")}`;
    lines.push(`Lead,${i},${phone},lead${i}@example.com,cli;batch`);
  }
  lines.push("Lead,Again,202-555-1000,,again");
  return `${lines.join("\n")}\n`;
}

let tenant: RegisteredUser;
beforeAll(async () => {
  const client = await rootPool().connect();
  try {
    tenant = await registerUser(client, { businessName: "CLI Import Co" });
  } finally {
    client.release();
  }
});
afterAll(async () => {
  await rootPool().query("delete from app_public.tenants where id = $1", [tenant.tenant_id]);
  await rootPool().query("delete from app_public.users where id = $1", [tenant.user_id]);
});

async function tenantCounts(): Promise<{ leads: number; batches: number }> {
  const { rows } = await rootPool().query<{ leads: number; batches: number }>(
    `select (select count(*)::int from app_public.leads where tenant_id = $1) as leads,
            (select count(*)::int from app_public.import_batches where tenant_id = $1) as batches`,
    [tenant.tenant_id],
  );
  return rows[0]!;
}

/** One line on stderr, no stack trace. */
function expectOneLineError(stderr: string, message: string | RegExp): void {
  const lines = stderr.trim().split("\n");
  expect(lines, stderr).toHaveLength(1);
  expect(lines[0]).toMatch(message);
  expect(stderr).not.toMatch(/\n\s+at /);
}

describe("npm run import (command line)", () => {
  it("imports a file in chunks with progress, prints the summary, and a re-run creates nothing", { timeout: 180_000 }, async () => {
    const file = csvFile("leads.csv", bigCsv());
    const first = await runImport([file, "--tenant", tenant.tenant_id!]);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toContain(`Imported ${file} into tenant ${tenant.tenant_id}`);
    expect(first.stdout).toContain("1201 rows: 1198 created, 0 merged, 1 skipped, 2 rejected.");
    expect(first.stdout).toContain("row 5: Phone 'abc' is not a phone number");
    expect(first.stdout).toContain("row 702: Phone '555-0100' is not a valid US number");
    expect(first.stderr).toMatch(/Importing .*1201\/1201 rows \| \d+ rows\/s/);

    const { rows: batches } = await rootPool().query(
      "select source_name, mode, status, row_count, created_count, created_by_user_id from app_public.import_batches where tenant_id = $1",
      [tenant.tenant_id],
    );
    expect(batches).toEqual([{ source_name: "leads.csv", mode: "skip", status: "completed", row_count: 1201, created_count: 1198, created_by_user_id: null }]);
    const { rows: leads } = await rootPool().query(
      "select count(*)::int as n, count(*) filter (where tags = '{cli,batch}')::int as tagged from app_public.leads where tenant_id = $1",
      [tenant.tenant_id],
    );
    expect(leads[0]).toEqual({ n: 1198, tagged: 1198 });

    const again = await runImport([file, "--tenant", tenant.tenant_id!, "--mode", "merge", "--source-name", "second run"]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain("1201 rows: 0 created, 1199 merged, 0 skipped, 2 rejected.");
    expect((await tenantCounts()).leads).toBe(1198);
    const { rows: tags } = await rootPool().query("select tags from app_public.leads where tenant_id = $1 and phone = '+12025551000'", [tenant.tenant_id]);
    expect(tags).toEqual([{ tags: ["cli", "batch", "again"] }]);
  });

  it("reads a semicolon-separated file with another default country", { timeout: 60_000 }, async () => {
    const file = csvFile("uk.csv", "Name;Mobile;Email\nMary Smith;020 7946 0958;mary@example.co.uk\n");
    const result = await runImport([file, "--tenant", tenant.tenant_id!, "--country", "gb"]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain("1 rows: 1 created");
    const { rows } = await rootPool().query("select first_name, last_name, phone, country from app_public.leads where email = 'mary@example.co.uk'");
    expect(rows).toEqual([{ first_name: "Mary", last_name: "Smith", phone: "+442079460958", country: "GB" }]);
  });

  it("a bad flag, a missing file, an unknown tenant or a broken file: one line, non-zero exit, nothing written", { timeout: 120_000 }, async () => {
    const before = await tenantCounts();
    const good = csvFile("small.csv", "phone\n202-555-0190\n");
    const cases: Array<[string[], number, string | RegExp]> = [
      [[good, "--tenant", tenant.tenant_id!, "--mode", "replace"], 2, "[switchboard] --mode must be merge or skip, got 'replace'."],
      [[good, "--tenant", tenant.tenant_id!, "--colour", "blue"], 2, /^\[switchboard\] Unknown option '--colour'.*Usage: npm run import/],
      [[good, "--tenant", "acme"], 2, "[switchboard] --tenant must be a tenant id (a uuid), got 'acme'."],
      [[good], 2, /^\[switchboard\] --tenant is required/],
      [[good, "--tenant", tenant.tenant_id!, "--country", "XX"], 2, /^\[switchboard\] --country must be a two-letter country code/],
      [[join(dir, "nope.csv"), "--tenant", tenant.tenant_id!], 2, `[switchboard] File not found: ${join(dir, "nope.csv")}`],
      [[good, "--tenant", randomUUID()], 1, /^\[switchboard\] Tenant [0-9a-f-]+ not found$/],
      [[csvFile("broken.csv", 'phone,name\n202-555-0191,Ann\n"202-555-0192,Bob\n'), "--tenant", tenant.tenant_id!], 1, /broken\.csv: The file can't be read as CSV near line \d+: Quote Not Closed/],
      [[csvFile("nocontact.csv", "city,zip\nX,1\n"), "--tenant", tenant.tenant_id!], 1, /nocontact\.csv: The header row needs a phone or email column/],
    ];
    for (const [args, code, message] of cases) {
      const result = await runImport(args);
      expect(result.code, `${args.join(" ")}\n${result.stderr}`).toBe(code);
      expectOneLineError(result.stderr, typeof message === "string" ? new RegExp(`^${message.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`) : message);
      expect(result.stdout).toBe("");
    }
    expect(await tenantCounts()).toEqual(before);
  });
});
