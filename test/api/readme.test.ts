/** Every GraphQL example in the README is valid against the committed schema (data/schema.graphql). */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { buildSchema, parse, validate } from "postgraphile/graphql";
import { describe, expect, it } from "vitest";
import { projectRoot } from "../../src/config.ts";

const schema = buildSchema(readFileSync(resolve(projectRoot, "data/schema.graphql"), "utf8"));
const readme = readFileSync(resolve(projectRoot, "README.md"), "utf8");

/** ```graphql blocks, and the GraphQL documents inside inline `mutation { … }` code spans. */
function examples(): string[] {
  const blocks = [...readme.matchAll(/```graphql\n([\s\S]*?)```/g)].map((m) => m[1]!);
  const found: string[] = [];
  for (const block of blocks) {
    // A block may hold several documents, each starting at column 0 with query/mutation/{ or a comment.
    const docs = block.split(/\n(?=(?:mutation|query)\b|\{)/).map((d) => d.replace(/^#.*$/gm, "").trim()).filter(Boolean);
    found.push(...docs);
  }
  for (const m of readme.matchAll(/`((?:mutation|query) \{[^`]*\})`/g)) found.push(m[1]!);
  return found;
}

describe("README GraphQL examples", () => {
  const docs = examples();
  it("has examples", () => {
    expect(docs.length).toBeGreaterThan(10);
  });
  it.each(docs.map((d) => [d.slice(0, 60).replace(/\s+/g, " "), d]))("valid: %s", (_label, doc) => {
    const errors = validate(schema, parse(doc));
    expect(errors.map((e) => e.message)).toEqual([]);
  });
});
