/**
 * The SQL side of an import, called two ways:
 * - as the request (GraphQL): app_public.start_import / import_rows / finish_import, which check
 *   that the caller is a manager or more of the current tenant;
 * - as the owner (the command line): the app_private twins, which take the tenant explicitly.
 * Either way each call is one statement; the caller owns the transaction.
 */
import type { ImportRow } from "./csv.ts";

export type ImportMode = "merge" | "skip";

export interface ImportBatch {
  id: string;
  tenant_id: string;
  source_name: string;
  mode: ImportMode;
  default_country: string;
  status: "running" | "completed" | "failed";
  row_count: number;
  created_count: number;
  merged_count: number;
  skipped_count: number;
  rejected_count: number;
  failure_reason: string | null;
}

export interface RejectedRow {
  row_number: number;
  reason: string;
}

/** Rows per import_rows call (and, on the command line, per transaction). */
export const CHUNK_SIZE = 1000;

export interface StartOptions {
  sourceName: string | null;
  mode: string;
  defaultCountry: string;
}

/** Who the import runs for: the request's own tenant (RLS and role checks apply), or a tenant named by the owner. */
export type ImportScope = { kind: "request" } | { kind: "owner"; tenantId: string };

/** What the functions below need: a pg client or pool, or PostGraphile's PgClient (withPgClient). */
export interface Queryable {
  query<R extends Record<string, any>>(config: { text: string; values?: unknown[] }): Promise<{ rows: readonly R[] }>;
}

async function one(client: Queryable, text: string, values: unknown[]): Promise<ImportBatch> {
  const { rows } = await client.query<ImportBatch>({ text: `select b.* from ${text} b`, values });
  return rows[0]!;
}

export function startImport(client: Queryable, scope: ImportScope, options: StartOptions): Promise<ImportBatch> {
  const values = [options.sourceName, options.mode, options.defaultCountry];
  return scope.kind === "request"
    ? one(client, "app_public.start_import($1, $2, $3)", values)
    : one(client, "app_private.start_import($4, $1, $2, $3)", [...values, scope.tenantId]);
}

export function importRows(client: Queryable, scope: ImportScope, batchId: string, rows: ImportRow[]): Promise<ImportBatch> {
  const json = JSON.stringify(rows);
  return scope.kind === "request"
    ? one(client, "app_public.import_rows($1, $2::jsonb)", [batchId, json])
    : one(client, "app_private.import_lead_rows($3, $1, $2::jsonb)", [batchId, json, scope.tenantId]);
}

export function finishImport(client: Queryable, scope: ImportScope, batchId: string): Promise<ImportBatch> {
  return scope.kind === "request"
    ? one(client, "app_public.finish_import($1)", [batchId])
    : one(client, "app_private.finish_import($2, $1)", [batchId, scope.tenantId]);
}

/** Owner only: the import stopped early (the rows already imported stay). */
export function failImport(client: Queryable, tenantId: string, batchId: string, reason: string): Promise<ImportBatch> {
  return one(client, "app_private.fail_import($1, $2, $3)", [tenantId, batchId, reason]);
}

/** The first rejected rows of a batch, with their reasons. */
export async function rejectedRows(client: Queryable, batch: ImportBatch, limit: number): Promise<readonly RejectedRow[]> {
  const { rows } = await client.query<RejectedRow>({
    text: `select r.row_number, r.reason from app_public.import_batch_rows r
            where r.tenant_id = $1 and r.batch_id = $2 and r.result = 'rejected'
            order by r.row_number limit $3`,
    values: [batch.tenant_id, batch.id, limit],
  });
  return rows;
}

/** Groups an (async) sequence into arrays of `size`. */
export async function* chunked<T>(items: AsyncIterable<T> | Iterable<T>, size: number): AsyncGenerator<T[]> {
  let chunk: T[] = [];
  for await (const item of items) {
    chunk.push(item);
    if (chunk.length >= size) {
      yield chunk;
      chunk = [];
    }
  }
  if (chunk.length > 0) yield chunk;
}
