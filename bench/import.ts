/**
 * Import benchmark (issue 16, point 4): the CSV import of a large file (by default 100,000 rows) with
 * phone normalisation, dedupe and full history, against, in the same run and on the same rows:
 *
 * - a plain batched insert: the parsed rows (duplicates of a phone left out, bad rows left out)
 *   inserted 500 per statement, one transaction per chunk, into another tenant of the same size,
 *   with every trigger of leads on (the history a lead always gets);
 * - a bare batched insert: the same, with triggers off (session_replication_role = replica), i.e.
 *   what PostgreSQL needs to store the rows and their indexes and nothing else.
 *
 * The file has messy phone formats, 5% rows repeating an earlier phone (merged), 2% repeating a lead
 * the tenant already had, and 1% bad rows (rejected). It prints rows per second and the ratios.
 *
 *   npm run bench:import
 *   BENCH_IMPORT_ROWS=20000 npm run bench:import
 *   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres npm run bench:import
 */
import "../src/env.ts";
import { createReadStream, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { Writable } from "node:stream";
import pg from "pg";
import { parseLeadsCsv } from "../src/import/csv.ts";
import { runImport } from "../src/import/cli.ts";
import { CHUNK_SIZE, chunked } from "../src/import/db.ts";
import { openBenchDatabase } from "./database.ts";

const ROWS = Number(process.env.BENCH_IMPORT_ROWS ?? 100_000);
const EXISTING = Number(process.env.BENCH_IMPORT_EXISTING ?? 20_000);
const roles = { owner: "switchboard_bench_owner", authenticator: "switchboard_bench_authenticator", visitor: "switchboard_bench_visitor" };
const log = (line: string) => process.stderr.write(`${line}\n`);

const FIRST = ["James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David", "Elizabeth", "Maria", "Carlos"];
const LAST = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez", "Nguyen"];
const CITIES = ["Austin", "Dallas", "Houston", "Miami", "Tampa", "Denver"];

/** The n-th phone number of the file, in one of the formats people type. */
function phone(n: number): string {
  const digits = String(5_122_000_000 + n);
  const [a, b, c] = [digits.slice(0, 3), digits.slice(3, 6), digits.slice(6)];
  switch (n % 4) {
    case 0: return `(${a}) ${b}-${c}`;
    case 1: return `+1 ${a} ${b} ${c}`;
    case 2: return `${a}.${b}.${c}`;
    default: return `1-${a}-${b}-${c}`;
  }
}

function csvFile(dir: string): string {
  const lines = ["Name,Phone,Email,City,State,Source,Tags,Notes"];
  for (let i = 0; i < ROWS; i++) {
    const r = i % 100;
    // 5% repeat an earlier phone of the file, 2% a lead the tenant already has, 1% are bad.
    const n = r < 5 && i > 100 ? i - 97 : r < 7 ? ROWS + (i % EXISTING) : i;
    const bad = r === 99;
    const name = `${FIRST[i % FIRST.length]} ${LAST[(i >> 3) % LAST.length]}`;
    const email = i % 3 === 0 ? `lead${n}@example.com` : "";
    lines.push(
      [name, bad ? "12" : phone(n), bad ? "not-an-email" : email, CITIES[i % CITIES.length], "TX", "csv", `imported;batch${i % 7}`, `"Row ${i}, called about a quote"`].join(","),
    );
  }
  const file = join(dir, "leads.csv");
  writeFileSync(file, `${lines.join("\n")}\n`);
  return file;
}

async function tenant(root: pg.Client, name: string): Promise<string> {
  const { rows } = await root.query<{ id: string }>(
    "insert into app_public.tenants (business_name, trade_type) values ($1, 'plumbing') returning id",
    [name],
  );
  // The tenant's time zone, as a real one has (the report rollups count its days).
  await root.query("insert into app_public.business_settings (tenant_id, timezone) values ($1, 'America/Chicago')", [rows[0]!.id]);
  return rows[0]!.id;
}

/** Leads the tenant already has: the EXISTING phones after the file's own (the file repeats some). */
async function existingLeads(root: pg.Client, tenantId: string): Promise<void> {
  await root.query(
    `insert into app_public.leads (tenant_id, first_name, phone, source)
     select $1, 'Existing', '+1' || (5122000000 + $2 + g)::text, 'manual' from generate_series(0, $3 - 1) g`,
    [tenantId, ROWS, EXISTING],
  );
}

const INSERT = `
  insert into app_public.leads (tenant_id, first_name, last_name, phone, email, city, region, source, tags, attributes, country)
  select $1, r.first_name, r.last_name, r.phone, r.email, r.city, r.region, r.source, coalesce(r.tags, '{}'), coalesce(r.attributes, '{}'), 'US'
    from jsonb_to_recordset($2::jsonb) as r(first_name text, last_name text, phone text, email text, city text, region text,
                                          source text, tags text[], attributes jsonb)`;

/** The parsed rows a plain insert can take: no bad row, each phone once, none the tenant already has. */
async function insertableRows(file: string): Promise<object[]> {
  const seen = new Set<string>();
  const rows: object[] = [];
  for await (const row of parseLeadsCsv(createReadStream(file), { defaultCountry: "US" })) {
    if (row.error || !row.lead?.phone || seen.has(row.lead.phone)) continue;
    const n = Number(row.lead.phone.slice(2)) - 5_122_000_000;
    if (n >= ROWS) continue;
    seen.add(row.lead.phone);
    rows.push(row.lead);
  }
  return rows;
}

async function batchedInsert(pool: pg.Pool, tenantId: string, rows: object[], bare: boolean): Promise<number> {
  const start = performance.now();
  for await (const chunk of chunked(rows, CHUNK_SIZE)) {
    const client = await pool.connect();
    try {
      await client.query("begin");
      if (bare) await client.query("set local session_replication_role = replica");
      await client.query(INSERT, [tenantId, JSON.stringify(chunk)]);
      await client.query("commit");
    } finally {
      client.release();
    }
  }
  return (performance.now() - start) / 1000;
}

async function main(): Promise<void> {
  const bench = await openBenchDatabase("switchboard_bench_import", roles, log);
  const dir = mkdtempSync(join(tmpdir(), "switchboard-bench-import-"));
  try {
    const root = new pg.Client({ connectionString: bench.rootUrl });
    root.on("error", (error) => log(`root connection: ${error.message}`));
    await root.connect();
    const pool = new pg.Pool({ connectionString: bench.urls.ownerUrl, max: 2 });
    const rootPool = new pg.Pool({ connectionString: bench.rootUrl, max: 2 });

    log(`Writing a CSV file of ${ROWS.toLocaleString()} rows…`);
    const file = csvFile(dir);
    const importTenant = await tenant(root, "Import tenant");
    const plainTenant = await tenant(root, "Plain insert tenant");
    const bareTenant = await tenant(root, "Bare insert tenant");
    for (const t of [importTenant, plainTenant, bareTenant]) await existingLeads(root, t);
    await root.query("analyze app_public.leads");
    const rows = await insertableRows(file);

    log(`Bare batched insert of ${rows.length.toLocaleString()} rows (triggers off)…`);
    const bare = await batchedInsert(rootPool, bareTenant, rows, true);
    log(`Plain batched insert of ${rows.length.toLocaleString()} rows (every trigger on)…`);
    const plain = await batchedInsert(pool, plainTenant, rows, false);

    log(`npm run import of the ${ROWS.toLocaleString()}-row file (progress below)…`);
    let summary = "";
    const out = new Writable({ write(chunk, _encoding, done) { summary += String(chunk); done(); } });
    const start = performance.now();
    const code = await runImport({ file, tenantId: importTenant, mode: "merge", country: "US", sourceName: "bench.csv" }, pool, { out, err: process.stderr });
    const imported = (performance.now() - start) / 1000;
    if (code !== 0) throw new Error(`the import failed:\n${summary}`);

    const { rows: counts } = await root.query<{ tenant_id: string; n: string }>(
      "select tenant_id, count(*) as n from app_public.leads where tenant_id = any($1) group by tenant_id",
      [[importTenant, plainTenant, bareTenant]],
    );
    const count = (t: string) => Number(counts.find((c) => c.tenant_id === t)?.n ?? 0) - EXISTING;
    // The import did the work it is measured for: 92% of the rows are new leads, and each phone is one lead.
    if (count(importTenant) !== rows.length) throw new Error(`the import created ${count(importTenant)} leads, expected ${rows.length}:\n${summary}`);
    const rate = (n: number, s: number) => `${Math.round(n / s).toLocaleString()} rows/s`;
    console.log(`\nImport benchmark — ${ROWS.toLocaleString()} CSV rows into a tenant of ${EXISTING.toLocaleString()} leads`);
    console.log(summary.trimEnd());
    console.log(`  import (parse, normalise, dedupe, full history): ${imported.toFixed(1)} s, ${rate(ROWS, imported)} (${count(importTenant).toLocaleString()} leads created)`);
    console.log(`  plain batched insert, every trigger on:           ${plain.toFixed(1)} s, ${rate(rows.length, plain)}`);
    console.log(`  bare batched insert, triggers off:                ${bare.toFixed(1)} s, ${rate(rows.length, bare)}`);
    const ratioPlain = ROWS / imported / (rows.length / plain);
    const ratioBare = ROWS / imported / (rows.length / bare);
    console.log(`  import / plain insert: ${ratioPlain.toFixed(2)}x   import / bare insert: ${ratioBare.toFixed(2)}x (goal ≥ 0.2x: ${ratioBare >= 0.2 ? "met" : "missed"})`);
    await pool.end();
    await rootPool.end();
    await root.end();
  } catch (error) {
    console.error(error);
    process.exitCode = 1;
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await bench.close();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
