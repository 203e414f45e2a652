/**
 * `importLeads`: a CSV in the request, leads in the current tenant. The CSV is parsed and phone
 * numbers normalised here (src/import); everything else happens in SQL through app_public.start_import,
 * import_rows and finish_import. They run on the request's own connection settings:
 * sideEffectWithPgClientTransaction takes `withPgClient` and `pgSettings` from the GraphQL context
 * (executor.context()), so the visitor role, RLS and the manager check apply as for any other mutation
 * (test/api/import.test.ts: an agent gets 42501, another tenant sees nothing).
 * The whole import is one transaction: a failing call writes nothing. Bad rows are not failures:
 * each is recorded as rejected with its reason (ImportBatch.importBatchRowsByTenantIdAndBatchId).
 */
import { sideEffectWithPgClientTransaction } from "postgraphile/@dataplan/pg";
import { object, SafeError, type Step } from "postgraphile/grafast";
import { extendSchema, gql } from "postgraphile/utils";
import { CsvFileError, parseLeadsCsv, type ImportRow } from "../import/csv.ts";
import { CHUNK_SIZE, finishImport, importRows, startImport } from "../import/db.ts";
import { isKnownCountry } from "../import/phone.ts";

/** Bigger files go through the command line (`npm run import`), which streams them in chunks. */
export const MAX_CSV_BYTES = 5 * 1024 * 1024;
export const MAX_CSV_ROWS = 20_000;
/** The HTTP body limit: the CSV plus its JSON escaping and the rest of the request. */
export const MAX_REQUEST_BYTES = MAX_CSV_BYTES + 3 * 1024 * 1024;

interface ImportLeadsInput {
  csv: string;
  mode?: string | null;
  defaultCountry?: string | null;
  sourceName?: string | null;
}

const invalid = (message: string) => new SafeError(message, { code: "22023" });

export const ImportPlugin = extendSchema((build) => {
  const executor = build.input.pgRegistry.pgExecutors.main!;
  const batches = Object.values(build.input.pgRegistry.pgResources).find(
    (r) => !r.parameters && r.codec.extensions?.pg?.schemaName === "app_public" && r.codec.extensions?.pg?.name === "import_batches",
  );
  if (!batches) throw new Error("ImportPlugin: the table app_public.import_batches is missing (it is created in migration 000002).");

  return {
    typeDefs: gql`
      input ImportLeadsInput {
        """
        The CSV text. The first row names the columns, matched to lead fields whatever their case or spacing:
        first_name, last_name, name/full_name (split), phone/phone_number/mobile, email, address, city,
        state/region, zip/postal_code, country, source, tags (separated by ; or ,), status, job_type, urgency,
        estimated_value, event_date, event_type, service_line, customer_segment, language, notes/problem_description.
        Other columns are kept in the lead's attributes. At most 5 MB and 20,000 rows; use \`npm run import\` for more.
        """
        csv: String!
        "skip (default): a row whose phone (or, without a phone, email) matches a live lead is skipped. merge: it fills the lead's empty fields and adds its tags."
        mode: String
        "Two-letter country for phone numbers written without a country code, and for rows without a country (default US)."
        defaultCountry: String
        "A name for this import, e.g. the file name (default: import)."
        sourceName: String
      }
      type ImportLeadsPayload {
        "The import with its counts (created, merged, skipped, rejected) and, through importBatchRowsByTenantIdAndBatchId, what happened to each row."
        batch: ImportBatch
      }
      extend type Mutation {
        """
        Imports leads from a CSV into the current tenant, in one transaction. Each row is created, merged or
        skipped as a duplicate (by phone, or by email when it has no phone), or rejected with the reason (e.g. a
        phone number that isn't one); a bad row never stops the others. Managers and up. Errors: 42501 not allowed;
        22023 a bad mode or country, or a CSV that is too big, has no phone or email column, or can't be read.
        """
        importLeads(input: ImportLeadsInput!): ImportLeadsPayload
      }
    `,
    plans: {
      Mutation: {
        importLeads(_: unknown, fieldArgs: { getRaw(path: string): Step }) {
          const $input = fieldArgs.getRaw("input");
          const $batchId = sideEffectWithPgClientTransaction(executor, $input, async (client, raw) => {
            const input = raw as ImportLeadsInput;
            if (Buffer.byteLength(input.csv, "utf8") > MAX_CSV_BYTES) {
              throw invalid(`csv: at most ${MAX_CSV_BYTES / 1024 / 1024} MB per request; import bigger files with \`npm run import\`.`);
            }
            const scope = { kind: "request" } as const;
            // First, so permissions (42501) and the options (22023) are checked before any parsing.
            const batch = await startImport(client, scope, {
              sourceName: input.sourceName ?? null,
              mode: input.mode ?? "skip",
              defaultCountry: input.defaultCountry ?? "US",
            });
            if (!isKnownCountry(batch.default_country)) throw invalid(`defaultCountry: unknown country code '${batch.default_country}'.`);
            const rows: ImportRow[] = [];
            try {
              for await (const row of parseLeadsCsv(input.csv, { defaultCountry: batch.default_country })) {
                if (rows.length >= MAX_CSV_ROWS) {
                  throw invalid(`csv: at most ${MAX_CSV_ROWS} rows per request; import bigger files with \`npm run import\`.`);
                }
                rows.push(row);
              }
            } catch (error) {
              if (error instanceof CsvFileError) throw invalid(`csv: ${error.message}`);
              throw error;
            }
            try {
              for (let i = 0; i < rows.length; i += CHUNK_SIZE) {
                await importRows(client, scope, batch.id, rows.slice(i, i + CHUNK_SIZE));
              }
            } catch (error) {
              // Two imports of overlapping files at the same moment: one of them has to wait its turn.
              if ((error as { code?: string }).code === "40P01") {
                throw new SafeError("Another import is changing the same leads right now; send the file again.", { code: "40P01" });
              }
              throw error;
            }
            return (await finishImport(client, scope, batch.id)).id;
          });
          return object({ batchId: $batchId });
        },
      },
      ImportLeadsPayload: {
        batch($payload: { get(key: string): Step<string> }) {
          return batches.get({ id: $payload.get("batchId") });
        },
      },
    },
  };
});
