/**
 * A leads CSV to normalised import rows, with csv-parse. The header row names the columns; they are
 * matched to lead fields case-, space- and punctuation-insensitively ("First Name", "first_name",
 * "PHONE NUMBER"), and any other column lands in the lead's attributes. Each row becomes
 * { row_number, raw, lead, error }: a row that can't be read (a bad phone number, too many values)
 * carries its reason instead of throwing, so one bad row never stops a file. Everything else a lead
 * must satisfy is checked by the database (app_private.import_lead_row), which records the reason.
 */
import { isIP } from "node:net";
import { Readable } from "node:stream";
import { parse, CsvError, type Options } from "csv-parse";
import type { CountryCode } from "libphonenumber-js/max";
import { isKnownCountry, normalizePhone } from "./phone.ts";

/** The lead fields a file can set (see app_private.import_lead_fields() in SQL). */
export interface LeadFields {
  first_name?: string;
  last_name?: string;
  phone?: string;
  email?: string;
  address?: string;
  city?: string;
  region?: string;
  postal_code?: string;
  country?: string;
  timezone?: string;
  source?: string;
  tags?: string[];
  status?: string;
  problem_description?: string;
  job_type?: string;
  urgency?: string;
  estimated_value?: string;
  event_date?: string;
  event_type?: string;
  service_line?: string;
  customer_segment?: string;
  language?: string;
  attributes?: Record<string, string>;
}

/**
 * The consent to marketing texts a row records (app_private.import_consent_problem says the rules:
 * the disclosure and the time given are required), from columns such as "Consent Disclosure" and
 * "Consent At".
 */
export interface RowConsent {
  disclosure?: string;
  given_at?: string;
  page_url?: string;
  ip?: string;
  user_agent?: string;
}

/** One row of the file, ready for app_public.import_rows / app_private.import_lead_rows. */
export interface ImportRow {
  /** The row's number as a spreadsheet shows it: the header is row 1, the first lead row 2. */
  row_number: number;
  /** The row as it was: column name (as in the header) to value. */
  raw: Record<string, string>;
  lead: LeadFields | null;
  /** Why the row can't be imported, or null. */
  error: string | null;
  /** The consent to marketing texts the row carries, if any. */
  consent?: RowConsent;
}

/** Normalised header -> consent field. */
const CONSENT_ALIASES: Record<string, keyof RowConsent> = {};
const consentAlias = (field: keyof RowConsent, ...names: string[]) => names.forEach((n) => (CONSENT_ALIASES[n] = field));
consentAlias("disclosure", "consent_disclosure", "consent_text", "consent_language", "sms_consent_disclosure");
consentAlias("given_at", "consent_at", "consent_given_at", "consent_date", "consent_timestamp", "consented_at");
consentAlias("page_url", "consent_url", "consent_page", "consent_page_url");
consentAlias("ip", "consent_ip", "consent_ip_address");
consentAlias("user_agent", "consent_user_agent");

/**
 * The row's consent made ready for the database, or why it can't be recorded. The database checks the
 * same rules for every client (app_private.import_consent_problem); they are read here too so that one
 * bad consent rejects its row, not the whole chunk of the file.
 */
function readConsent(consent: RowConsent): { consent: RowConsent } | { error: string } {
  const disclosure = consent.disclosure?.trim() ?? "";
  if (disclosure.length < 20 || disclosure.length > 4000) {
    return { error: "The consent needs its disclosure: the words the person agreed to, 20 to 4000 characters" };
  }
  const given = consent.given_at === undefined ? Number.NaN : Date.parse(normalizeDate(consent.given_at));
  if (Number.isNaN(given)) return { error: "The consent needs the date and time it was given (e.g. 2026-11-30T15:04:05Z)" };
  if (given > Date.now() + 5 * 60_000) return { error: "The consent cannot be given in the future" };
  if (consent.page_url !== undefined && !(/^https?:\/\/\S+$/i.test(consent.page_url) && consent.page_url.length <= 2048)) {
    return { error: "The consent page URL must be an http or https address of at most 2048 characters" };
  }
  if (consent.ip !== undefined && isIP(consent.ip) === 0) return { error: "The consent IP must be an IP address" };
  if (consent.user_agent !== undefined && consent.user_agent.length > 1000) return { error: "The consent user agent must be at most 1000 characters" };
  return { consent: { ...consent, disclosure, given_at: new Date(given).toISOString() } };
}

/** The file as a whole can't be read (no header, an unclosed quote…); the message says where. */
export class CsvFileError extends Error {
  override name = "CsvFileError";
}

type TextField = Exclude<keyof LeadFields, "tags" | "attributes">;
/** What a column can be: a lead field, a full name to split, or tags. */
type Target = TextField | "name" | "tags";

/** Normalised header -> what it means. Anything not here goes to attributes. */
const ALIASES: Record<string, Target> = {};
const alias = (target: Target, ...names: string[]) => names.forEach((n) => (ALIASES[n] = target));
alias("first_name", "first_name", "firstname", "first", "given_name", "fname");
alias("last_name", "last_name", "lastname", "last", "surname", "family_name", "lname");
alias("name", "name", "full_name", "fullname", "contact_name", "customer_name");
alias("phone", "phone", "phone_number", "phonenumber", "mobile", "mobile_phone", "mobile_number", "cell", "cell_phone", "telephone", "tel");
alias("email", "email", "email_address", "e_mail");
alias("address", "address", "street", "street_address", "address1", "address_1", "address_line_1");
alias("city", "city", "town");
alias("region", "state", "region", "province", "state_province");
alias("postal_code", "zip", "zip_code", "zipcode", "postal_code", "postcode", "post_code");
alias("country", "country", "country_code");
alias("timezone", "timezone", "time_zone");
alias("source", "source", "lead_source");
alias("tags", "tags", "tag", "labels");
alias("status", "status", "lead_status");
alias("job_type", "job_type");
alias("urgency", "urgency");
alias("estimated_value", "estimated_value", "value");
alias("event_date", "event_date");
alias("event_type", "event_type");
alias("service_line", "service_line");
alias("customer_segment", "customer_segment", "segment");
alias("language", "language", "lang");
alias("problem_description", "problem_description", "notes", "note", "description", "comments");

/** "First Name " -> "first_name"; "E-mail" -> "e_mail". */
export function normalizeHeader(header: string): string {
  return header
    .trim()
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "_")
    .replace(/^_+|_+$/g, "");
}

/** What a header column means: a lead field, a name to split, tags, or an attribute key. */
export function columnTarget(header: string): { field: Target } | { attribute: string } | { consent: keyof RowConsent } {
  const key = normalizeHeader(header);
  const consent = CONSENT_ALIASES[key];
  if (consent) return { consent };
  const field = ALIASES[key];
  return field ? { field } : { attribute: key || "column" };
}

/** "Mary Ann Smith" -> Mary Ann / Smith; "Smith, John" -> John / Smith; "Cher" -> Cher. */
export function splitName(full: string): { first_name?: string; last_name?: string } {
  const text = full.trim().replace(/\s+/g, " ");
  if (text === "") return {};
  const comma = text.indexOf(",");
  if (comma > 0) {
    const last = text.slice(0, comma).trim();
    const first = text.slice(comma + 1).trim();
    return { ...(first ? { first_name: first } : {}), ...(last ? { last_name: last } : {}) };
  }
  const space = text.lastIndexOf(" ");
  if (space < 0) return { first_name: text };
  return { first_name: text.slice(0, space), last_name: text.slice(space + 1) };
}

/** "vip; Roof, vip" -> ["vip", "Roof"]. */
export function splitTags(value: string): string[] {
  return [...new Set(value.split(/[;,]/).map((t) => t.trim()).filter((t) => t !== ""))];
}

/** "$1,250.50" -> "1250.50"; anything else is passed on for the database to judge. */
function normalizeMoney(value: string): string {
  const match = /^[$€£]?\s*(\d{1,3}(,\d{3})+|\d+)(\.\d+)?$/.exec(value.replace(/\s+/g, ""));
  return match ? value.replace(/[$€£,\s]/g, "") : value;
}

/** US-style 6/1/2025 -> 2025-06-01; ISO and anything else are passed on for the database to judge. */
function normalizeDate(value: string): string {
  const match = /^(\d{1,2})\/(\d{1,2})\/(\d{4})$/.exec(value);
  return match ? `${match[3]}-${match[1]!.padStart(2, "0")}-${match[2]!.padStart(2, "0")}` : value;
}

/** Lower case, spaces to underscores: "Contacted" -> "contacted", "High" -> "high". */
const keyword = (value: string) => value.trim().toLowerCase().replace(/\s+/g, "_");

export interface Columns {
  headers: string[];
  targets: Array<{ field: Target } | { attribute: string } | { consent: keyof RowConsent }>;
}

/** Reads the header row. Raises CsvFileError when it can't name a phone or email column. */
export function readHeader(record: string[]): Columns {
  const headers = record.map((h, i) => h.trim() || `column ${i + 1}`);
  const targets = headers.map(columnTarget);
  const has = (f: Target) => targets.some((t) => "field" in t && t.field === f);
  if (!has("phone") && !has("email")) {
    throw new CsvFileError(
      `The header row needs a phone or email column (it has: ${headers.join(", ")}). Column names are matched without regard to case or spaces, e.g. "Phone Number" or "Email".`,
    );
  }
  return { headers, targets };
}

/**
 * One data record to an import row. `rowNumber` is the spreadsheet row (header = 1). Blank values
 * are left out; a column mapped to a field that is already filled goes to attributes.
 */
export function mapRecord(record: string[], columns: Columns, rowNumber: number, defaultCountry: CountryCode): ImportRow {
  const raw: Record<string, string> = {};
  columns.headers.forEach((h, i) => {
    const key = h in raw ? `${h} (${i + 1})` : h;
    raw[key] = record[i] ?? "";
  });
  if (record.length > columns.headers.length) {
    record.slice(columns.headers.length).forEach((v, i) => (raw[`column ${columns.headers.length + i + 1}`] = v));
    return {
      row_number: rowNumber,
      raw,
      lead: null,
      error: `The row has ${record.length} values but the header has ${columns.headers.length} columns`,
    };
  }

  const lead: LeadFields = {};
  const consent: RowConsent = {};
  const attributes: Record<string, string> = {};
  let fullName: string | null = null;
  columns.targets.forEach((target, i) => {
    const value = (record[i] ?? "").trim();
    if (value === "") return;
    if ("consent" in target) {
      consent[target.consent] ??= value;
    } else if ("attribute" in target) {
      attributes[target.attribute in attributes ? `${target.attribute}_${i + 1}` : target.attribute] = value;
    } else if (target.field === "tags") {
      lead.tags = [...new Set([...(lead.tags ?? []), ...splitTags(value)])];
    } else if (target.field === "name") {
      fullName ??= value;
    } else if (lead[target.field] === undefined) {
      lead[target.field] = value;
    } else {
      attributes[normalizeHeader(columns.headers[i]!) || target.field] = value;
    }
  });
  if (fullName !== null) {
    const { first_name, last_name } = splitName(fullName);
    if (lead.first_name === undefined && lead.last_name === undefined) {
      if (first_name) lead.first_name = first_name;
      if (last_name) lead.last_name = last_name;
    } else {
      attributes.name = fullName;
    }
  }
  if (lead.tags?.length === 0) delete lead.tags;

  if (lead.country !== undefined && /^[a-z]{2}$/i.test(lead.country)) lead.country = lead.country.toUpperCase();
  if (lead.status !== undefined) lead.status = keyword(lead.status);
  if (lead.urgency !== undefined) lead.urgency = keyword(lead.urgency);
  if (lead.estimated_value !== undefined) lead.estimated_value = normalizeMoney(lead.estimated_value);
  if (lead.event_date !== undefined) lead.event_date = normalizeDate(lead.event_date);

  // A number without a country code belongs to the row's own country when it names one.
  const country = lead.country !== undefined && isKnownCountry(lead.country) ? lead.country : defaultCountry;
  const phone = normalizePhone(lead.phone, country);
  if (!phone.ok) return { row_number: rowNumber, raw, lead: null, error: phone.reason };
  if (phone.phone === null) delete lead.phone;
  else lead.phone = phone.phone;
  if (phone.ok && phone.extension) attributes.phone_extension = phone.extension;

  if (Object.keys(attributes).length > 0) lead.attributes = attributes;
  if (Object.keys(lead).length === 0) return { row_number: rowNumber, raw, lead: null, error: "The row is empty" };
  if (Object.keys(consent).length > 0) {
    if (lead.phone === undefined) return { row_number: rowNumber, raw, lead: null, error: "The consent to texts needs the row's phone number" };
    const read = readConsent(consent);
    if ("error" in read) return { row_number: rowNumber, raw, lead: null, error: read.error };
    return { row_number: rowNumber, raw, lead, error: null, consent: read.consent };
  }
  return { row_number: rowNumber, raw, lead, error: null };
}

/**
 * The field delimiter, from the header line: comma, semicolon or tab, whichever it has most of
 * (comma when none). Decided here rather than by csv-parse's delimiter_auto, which fails on rows
 * with quoted values.
 */
export function detectDelimiter(headerLine: string): string {
  const count = (c: string) => headerLine.split(c).length - 1;
  const [best] = [",", ";", "\t"].map((c) => ({ c, n: count(c) })).sort((a, b) => b.n - a.n);
  return best && best.n > 0 ? best.c : ",";
}

/** The stream's text up to its first line break (at most 64 KB), and the whole stream again. */
async function peekFirstLine(source: Readable): Promise<{ firstLine: string; stream: Readable }> {
  const iterator = source[Symbol.asyncIterator]() as AsyncIterator<Buffer | string>;
  const head: Array<Buffer | string> = [];
  let text = "";
  while (!/[\r\n]/.test(text) && text.length < 65536) {
    const next = await iterator.next();
    if (next.done) break;
    head.push(next.value);
    text += next.value.toString();
  }
  const rest = { [Symbol.asyncIterator]: () => iterator };
  const stream = Readable.from((async function* () {
    yield* head;
    yield* rest;
  })(), { objectMode: false });
  return { firstLine: text.replace(/^\uFEFF/, "").split(/\r?\n|\r/)[0] ?? "", stream };
}

function describeCsvError(error: unknown): Error {
  if (error instanceof CsvError) {
    const at = (error as CsvError & { lines?: number }).lines;
    return new CsvFileError(`The file can't be read as CSV${at ? ` near line ${at}` : ""}: ${error.message}`);
  }
  return error as Error;
}

/** The records of a CSV (text or stream), as arrays of strings; file-level problems as CsvFileError. */
async function* csvRecords(input: string | Readable): AsyncGenerator<string[]> {
  const { firstLine, stream } = typeof input === "string"
    ? { firstLine: input.replace(/^\uFEFF/, "").split(/\r?\n|\r/)[0] ?? "", stream: Readable.from([input]) }
    : await peekFirstLine(input);
  // A BOM is dropped, ragged rows are allowed (mapRecord reports extra values), stray quotes inside values are kept.
  const options: Options = { bom: true, delimiter: detectDelimiter(firstLine), relax_column_count: true, relax_quotes: true };
  const parser = parse(options);
  stream.on("error", (error) => parser.destroy(error));
  stream.pipe(parser);
  try {
    for await (const record of parser as AsyncIterable<string[]>) yield record;
  } catch (error) {
    throw describeCsvError(error);
  } finally {
    stream.unpipe(parser);
    if (!parser.destroyed) parser.destroy();
    if (!stream.destroyed) stream.destroy();
  }
}

/**
 * A leads CSV (its text, or a stream of it) to import rows, one at a time, in file order. Rows whose
 * values are all blank are left out (their row numbers are still counted). Throws CsvFileError for
 * a file without a usable header or one that isn't CSV at all (e.g. a quote that never closes).
 */
export async function* parseLeadsCsv(input: string | Readable, options: { defaultCountry: CountryCode }): AsyncGenerator<ImportRow> {
  let columns: Columns | null = null;
  let rowNumber = 0;
  for await (const record of csvRecords(input)) {
    rowNumber += 1;
    if (columns === null) {
      if (record.every((v) => v.trim() === "")) continue; // blank lines before the header
      columns = readHeader(record);
      continue;
    }
    if (record.every((v) => v.trim() === "")) continue;
    yield mapRecord(record, columns, rowNumber, options.defaultCountry);
  }
  if (columns === null) throw new CsvFileError("The file is empty: it needs a header row and a row per lead.");
}

/**
 * Reads a whole CSV once without importing it: checks its header and that it parses to the end, and
 * counts the rows with values (for a progress bar). Throws CsvFileError as parseLeadsCsv would.
 */
export async function scanLeadsCsv(input: string | Readable): Promise<{ rows: number }> {
  let header = false;
  let rows = 0;
  for await (const record of csvRecords(input)) {
    if (record.every((v) => v.trim() === "")) continue;
    if (!header) {
      readHeader(record);
      header = true;
    } else {
      rows += 1;
    }
  }
  if (!header) throw new CsvFileError("The file is empty: it needs a header row and a row per lead.");
  return { rows };
}
