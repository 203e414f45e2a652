/**
 * `npm run import -- <file.csv> --tenant <tenant id> [--mode merge|skip] [--country US] [--source-name NAME]`
 *
 * Imports a leads CSV into one tenant, connected as the database owner (no user session: the
 * app_private functions take the tenant explicitly). The file is read once to check it and count its
 * rows, then streamed in chunks of 1,000 rows (the next one read while the database imports the
 * current one), each chunk one transaction, so a large file never sits in
 * memory and an interrupted import keeps what it finished. Progress goes to stderr, the summary to stdout.
 * A bad row is recorded as rejected and never stops the import.
 */
import { constants, createReadStream } from "node:fs";
import { access, stat } from "node:fs/promises";
import { basename } from "node:path";
import { parseArgs } from "node:util";
import { SingleBar } from "cli-progress";
import type { CountryCode } from "libphonenumber-js/max";
import type pg from "pg";
import { CsvFileError, parseLeadsCsv, scanLeadsCsv } from "./csv.ts";
import { CHUNK_SIZE, chunked, failImport, finishImport, importRows, rejectedRows, startImport, type ImportBatch, type ImportMode, type ImportScope, type RejectedRow } from "./db.ts";
import { isKnownCountry } from "./phone.ts";

export const IMPORT_USAGE =
  "Usage: npm run import -- <file.csv> --tenant <tenant id> [--mode merge|skip] [--country US] [--source-name NAME]";

/** A problem the person running the command can fix; printed as one line, without a stack trace. */
export class ImportCliError extends Error {
  override name = "ImportCliError";
  readonly exitCode: number;
  constructor(message: string, exitCode = 2) {
    super(message);
    this.exitCode = exitCode;
  }
}

export interface ImportCliOptions {
  file: string;
  tenantId: string;
  mode: ImportMode;
  country: CountryCode;
  sourceName: string;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The command's arguments, checked. Throws ImportCliError with the usage for anything wrong. */
export function parseImportArgs(argv: string[]): ImportCliOptions {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        tenant: { type: "string" },
        mode: { type: "string", default: "skip" },
        country: { type: "string", default: "US" },
        "source-name": { type: "string" },
      },
    });
  } catch (error) {
    throw new ImportCliError(`${(error as Error).message.split("\n")[0]} ${IMPORT_USAGE}`);
  }
  const { values, positionals } = parsed;
  if (positionals.length !== 1) {
    throw new ImportCliError(`${positionals.length === 0 ? "Which file? " : "Import one file at a time. "}${IMPORT_USAGE}`);
  }
  if (!values.tenant) throw new ImportCliError(`--tenant is required (the tenant's id). ${IMPORT_USAGE}`);
  if (!UUID.test(values.tenant)) throw new ImportCliError(`--tenant must be a tenant id (a uuid), got '${values.tenant}'.`);
  const mode = values.mode.trim().toLowerCase();
  if (mode !== "merge" && mode !== "skip") throw new ImportCliError(`--mode must be merge or skip, got '${values.mode}'.`);
  const country = values.country.trim().toUpperCase();
  if (!isKnownCountry(country)) {
    throw new ImportCliError(`--country must be a two-letter country code such as US or GB, got '${values.country}'.`);
  }
  const file = positionals[0]!;
  return { file, tenantId: values.tenant.toLowerCase(), mode, country, sourceName: values["source-name"]?.trim() || basename(file) };
}

/** The file must exist and be a readable regular file. */
export async function assertReadableFile(file: string): Promise<void> {
  try {
    const info = await stat(file);
    if (!info.isFile()) throw new ImportCliError(`${file} is not a file.`);
    await access(file, constants.R_OK);
  } catch (error) {
    if (error instanceof ImportCliError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    throw new ImportCliError(code === "ENOENT" ? `File not found: ${file}` : `Cannot read ${file}: ${(error as Error).message}`);
  }
}

interface Output {
  out: NodeJS.WritableStream;
  err: NodeJS.WritableStream;
}

const RETRYABLE = new Set(["40001", "40P01"]);

/** One chunk in one transaction, retried when it collided with a concurrent import (deadlock/serialization). */
async function importChunk(pool: pg.Pool, scope: ImportScope, batchId: string, rows: Parameters<typeof importRows>[3]): Promise<ImportBatch> {
  for (let attempt = 1; ; attempt++) {
    const client = await pool.connect();
    try {
      await client.query("begin");
      const batch = await importRows(client, scope, batchId, rows);
      await client.query("commit");
      return batch;
    } catch (error) {
      await client.query("rollback").catch(() => {});
      const code = (error as { code?: string }).code;
      if (!code || !RETRYABLE.has(code) || attempt >= 5) throw error;
      await new Promise((r) => setTimeout(r, 50 * attempt + Math.random() * 100));
    } finally {
      client.release();
    }
  }
}

function summary(options: ImportCliOptions, batch: ImportBatch, rejected: readonly RejectedRow[]): string {
  const lines = [
    `${batch.status === "failed" ? "Partly imported" : "Imported"} ${options.file} into tenant ${batch.tenant_id} (batch ${batch.id}, mode ${batch.mode}, status ${batch.status}).`,
    `  ${batch.row_count} rows: ${batch.created_count} created, ${batch.merged_count} merged, ${batch.skipped_count} skipped, ${batch.rejected_count} rejected.`,
  ];
  if (rejected.length > 0) {
    lines.push(batch.rejected_count > rejected.length ? `  First ${rejected.length} rejected rows:` : "  Rejected rows:");
    for (const r of rejected) lines.push(`    row ${r.row_number}: ${r.reason}`);
    if (batch.rejected_count > rejected.length) {
      lines.push(`  All of them: select row_number, reason from app_public.import_batch_rows where batch_id = '${batch.id}' and result = 'rejected';`);
    }
  }
  if (batch.status === "failed") {
    lines.push(`  The import stopped early: ${batch.failure_reason}. Running the same file again imports the rest (rows already imported count as duplicates).`);
  }
  return `${lines.join("\n")}\n`;
}

/**
 * Runs the import (the file was checked by assertReadableFile). Returns the exit code: 0 when the
 * file was imported (rejected rows included), 1 when it stopped early; ImportCliError for an unknown
 * tenant or a file that isn't a usable CSV (nothing is written then).
 */
export async function runImport(options: ImportCliOptions, pool: pg.Pool, io: Output = { out: process.stdout, err: process.stderr }): Promise<number> {
  let total: number;
  try {
    ({ rows: total } = await scanLeadsCsv(createReadStream(options.file)));
  } catch (error) {
    if (error instanceof CsvFileError) throw new ImportCliError(`${options.file}: ${error.message}`, 1);
    throw error;
  }

  const scope: ImportScope = { kind: "owner", tenantId: options.tenantId };
  let batch: ImportBatch;
  try {
    batch = await startImport(pool, scope, { sourceName: options.sourceName, mode: options.mode, defaultCountry: options.country });
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === "P0002" || code === "22023") throw new ImportCliError((error as Error).message, code === "P0002" ? 1 : 2);
    throw error;
  }

  let interrupted = false;
  const onSignal = () => {
    if (interrupted) process.exit(130);
    interrupted = true;
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  const started = Date.now();
  const bar = new SingleBar({
    stream: io.err,
    format: "Importing {bar} {percentage}% | {value}/{total} rows | {rate} rows/s | ETA {eta_formatted}",
    barsize: 30,
    hideCursor: null,
    noTTYOutput: true,
    notTTYSchedule: 2000,
    etaBuffer: 20,
  });
  bar.start(total, 0, { rate: "0" });
  let failure: Error | null = null;
  // The next chunk is read and normalised while the database imports the current one.
  const chunks = chunked(parseLeadsCsv(createReadStream(options.file), { defaultCountry: options.country }), CHUNK_SIZE);
  let next = chunks.next();
  next.catch(() => {}); // awaited below; this only keeps an early failure from going unhandled
  try {
    for (let current = await next; !current.done; current = await next) {
      next = chunks.next();
      next.catch(() => {});
      batch = await importChunk(pool, scope, batch.id, current.value);
      const seconds = Math.max((Date.now() - started) / 1000, 0.001);
      bar.update(Math.min(batch.row_count, total), { rate: (batch.row_count / seconds).toFixed(0) });
      if (interrupted) {
        failure = new Error(`Interrupted after ${batch.row_count} of ${total} rows`);
        break;
      }
    }
  } catch (error) {
    failure = error as Error;
  } finally {
    await chunks.return(undefined).catch(() => {});
    bar.stop();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }

  if (failure) {
    // The chunks already committed stay; the batch says where and why it stopped.
    try {
      batch = await failImport(pool, options.tenantId, batch.id, failure.message);
    } catch {
      throw failure; // the database is gone too: report the original problem
    }
  } else {
    batch = await finishImport(pool, scope, batch.id);
  }
  io.out.write(summary(options, batch, await rejectedRows(pool, batch, 10)));
  return failure ? 1 : 0;
}
