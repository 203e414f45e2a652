/** The CSV side of an import: header mapping, normalisation, per-row errors and file-level errors. */
import { createReadStream, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { columnTarget, CsvFileError, detectDelimiter, parseLeadsCsv, scanLeadsCsv, splitName, splitTags, type ImportRow } from "../../src/import/csv.ts";

async function rows(input: Parameters<typeof parseLeadsCsv>[0], defaultCountry: "US" | "GB" = "US"): Promise<ImportRow[]> {
  const out: ImportRow[] = [];
  for await (const row of parseLeadsCsv(input, { defaultCountry })) out.push(row);
  return out;
}

async function fileError(input: string): Promise<string> {
  try {
    await rows(input);
  } catch (error) {
    expect(error).toBeInstanceOf(CsvFileError);
    return (error as Error).message;
  }
  throw new Error("expected a CsvFileError");
}

describe("header mapping", () => {
  it.each([
    ["First Name", "first_name"],
    ["FIRST_NAME", "first_name"],
    ["  first name ", "first_name"],
    ["Full Name", "name"],
    ["name", "name"],
    ["Phone Number", "phone"],
    ["phone_number", "phone"],
    ["Mobile", "phone"],
    ["E-mail", "email"],
    ["State", "region"],
    ["ZIP", "postal_code"],
    ["Postal Code", "postal_code"],
    ["Notes", "problem_description"],
    ["problem description", "problem_description"],
    ["Tags", "tags"],
    ["Estimated Value", "estimated_value"],
    ["Event-Date", "event_date"],
    ["Customer Segment", "customer_segment"],
  ])("%s -> %s", (header, field) => {
    expect(columnTarget(header)).toEqual({ field });
  });

  it("unknown columns become attribute keys", () => {
    expect(columnTarget("Favourite Colour")).toEqual({ attribute: "favourite_colour" });
    expect(columnTarget("Referred by (agent)")).toEqual({ attribute: "referred_by_agent" });
  });

  it("splits names and tags", () => {
    expect(splitName("Mary Ann Smith")).toEqual({ first_name: "Mary Ann", last_name: "Smith" });
    expect(splitName("Smith, John")).toEqual({ first_name: "John", last_name: "Smith" });
    expect(splitName("Cher")).toEqual({ first_name: "Cher" });
    expect(splitTags("vip; Roof, vip,, ")).toEqual(["vip", "Roof"]);
  });

  it("detects comma, semicolon and tab separated files from the header", () => {
    expect(detectDelimiter("name,phone,email")).toBe(",");
    expect(detectDelimiter("name;phone;email")).toBe(";");
    expect(detectDelimiter("name\tphone\temail")).toBe("\t");
    expect(detectDelimiter("email")).toBe(",");
  });
});

describe("parseLeadsCsv", () => {
  it("maps a typical export: names, E.164 phones, tags, keywords, money, US dates, attributes", async () => {
    const csv =
      "\uFEFFFirst Name,Last Name,Phone Number,E-mail,Tags,Favourite Colour,State,ZIP,Status,Urgency,Estimated Value,Event Date,Notes\r\n" +
      'Ann,Lee,(202) 555-0143,ann@example.com,"vip; roof, vip",blue,DC,20001,Contacted,High,"$1,250.50",6/1/2025,"Leaky ""tap"", kitchen"\r\n';
    expect(await rows(csv)).toEqual([
      {
        row_number: 2,
        raw: {
          "First Name": "Ann",
          "Last Name": "Lee",
          "Phone Number": "(202) 555-0143",
          "E-mail": "ann@example.com",
          Tags: "vip; roof, vip",
          "Favourite Colour": "blue",
          State: "DC",
          ZIP: "20001",
          Status: "Contacted",
          Urgency: "High",
          "Estimated Value": "$1,250.50",
          "Event Date": "6/1/2025",
          Notes: 'Leaky "tap", kitchen',
        },
        lead: {
          first_name: "Ann",
          last_name: "Lee",
          phone: "+12025550143",
          email: "ann@example.com",
          tags: ["vip", "roof"],
          region: "DC",
          postal_code: "20001",
          status: "contacted",
          urgency: "high",
          estimated_value: "1250.50",
          event_date: "2025-06-01",
          problem_description: 'Leaky "tap", kitchen',
          attributes: { favourite_colour: "blue" },
        },
        error: null,
      },
    ]);
  });

  it("splits a full name, reads semicolon files, and uses the row's country for its phone", async () => {
    const csv = "name;mobile;email;country\nMary Ann Smith;020 7946 0958;mary@example.com;gb\nCher;;cher@example.com;\n";
    const result = await rows(csv);
    expect(result.map((r) => r.lead)).toEqual([
      { first_name: "Mary Ann", last_name: "Smith", phone: "+442079460958", email: "mary@example.com", country: "GB" },
      { first_name: "Cher", email: "cher@example.com" },
    ]);
  });

  it("turns a bad phone, extra values or an empty row into that row's error, and keeps going", async () => {
    const csv = ["phone,email,city", "abc,a@example.com,X", "202-555-0143,b@example.com,Y,surplus", ",,", "202-555-0144,,Z", ""].join("\n");
    const result = await rows(csv);
    expect(result.map((r) => [r.row_number, r.error])).toEqual([
      [2, "Phone 'abc' is not a phone number"],
      [3, "The row has 4 values but the header has 3 columns"],
      [5, null],
    ]);
    expect(result[0]!.lead).toBeNull();
    expect(result[1]!.raw).toEqual({ phone: "202-555-0143", email: "b@example.com", city: "Y", "column 4": "surplus" });
    expect(result[2]!.lead).toEqual({ phone: "+12025550144", city: "Z" });
  });

  it("keeps a second column for the same field, and an extension, in attributes", async () => {
    const csv = "Phone,Mobile,Email,Name,First Name\n202-555-0143 x7,202-555-0199,a@example.com,Ann Lee,Annie\n";
    const [row] = await rows(csv);
    expect(row!.lead).toEqual({
      phone: "+12025550143",
      email: "a@example.com",
      first_name: "Annie",
      attributes: { mobile: "202-555-0199", name: "Ann Lee", phone_extension: "7" },
    });
  });

  it("passes values it can't normalise to the database unchanged (it gives the reason there)", async () => {
    const [row] = await rows("email,estimated_value,event_date,country\na@example.com,lots,tomorrow,USA\n");
    expect(row!.lead).toEqual({ email: "a@example.com", estimated_value: "lots", event_date: "tomorrow", country: "USA" });
    expect(row!.error).toBeNull();
  });

  it("reads a file as a stream, row by row", async () => {
    const dir = mkdtempSync(join(tmpdir(), "import-csv-"));
    const file = join(dir, "leads.csv");
    const lines = ["Email,Phone"];
    for (let i = 0; i < 3000; i++) lines.push(`lead${i}@example.com,202-555-${String(1000 + (i % 9000)).padStart(4, "0")}`);
    writeFileSync(file, lines.join("\n"));
    const result = await rows(createReadStream(file, { highWaterMark: 1024 }));
    expect(result).toHaveLength(3000);
    expect(result[2999]).toMatchObject({ row_number: 3001, lead: { email: "lead2999@example.com" }, error: null });
    expect(await scanLeadsCsv(createReadStream(file, { highWaterMark: 1024 }))).toEqual({ rows: 3000 });
  });

  it("refuses files it can't use, with a message that says why", async () => {
    expect(await fileError("")).toContain("The file is empty");
    expect(await fileError("\n\n")).toContain("The file is empty");
    expect(await fileError("city,zip\nX,1\n")).toContain("The header row needs a phone or email column (it has: city, zip)");
    expect(await fileError('phone,name\n"2025550143,Ann\n')).toMatch(/can't be read as CSV near line \d+: Quote Not Closed/);
    await expect(scanLeadsCsv("city\nX\n")).rejects.toBeInstanceOf(CsvFileError);
  });
});

describe("consent columns (issue 17)", () => {
  it("a row's consent columns become its consent, the time in UTC; a consent without its disclosure or time rejects the row, not the file", async () => {
    const disclosure = "I agree to receive marketing texts from Ace Plumbing. Reply STOP to stop.";
    const read = await rows(
      "Phone,Consent Disclosure,Consent At,Consent URL,Consent IP\n" +
        `(212) 555-0101,${disclosure},2026-10-01T08:00:00-04:00,https://ace.example/quote,192.0.2.1\n` +
        "(212) 555-0102,I agree,2026-10-01T08:00:00Z,,\n" +
        `(212) 555-0103,${disclosure},not a date,,\n` +
        `(212) 555-0104,${disclosure},2026-10-01T08:00:00Z,,300.1.1.1\n` +
        "(212) 555-0105,,,,\n",
    );
    expect(read[0]).toMatchObject({ error: null, consent: { disclosure, given_at: "2026-10-01T12:00:00.000Z", page_url: "https://ace.example/quote", ip: "192.0.2.1" } });
    expect(read[0]!.lead).toEqual({ phone: "+12125550101" });
    expect(read[1]!.error).toMatch(/needs its disclosure/);
    expect(read[2]!.error).toMatch(/date and time it was given/);
    expect(read[3]!.error).toMatch(/must be an IP address/);
    expect(read[4]).toMatchObject({ error: null, lead: { phone: "+12125550105" } });
    expect(read[4]!.consent).toBeUndefined();
    const [mailOnly] = await rows(`Email,Consent Disclosure,Consent At\nann@example.com,${disclosure},2026-10-01T08:00:00Z\n`);
    expect(mailOnly!.error).toMatch(/needs the row's phone number/);
  });
});

