/**
 * The documentation tells the truth, checked against the repository itself:
 * - every GraphQL example in README.md, CONVENTIONS.md and docs/*.md (```graphql blocks and inline
 *   `mutation { … }` / `query { … }` code spans) parses and validates against data/schema.graphql;
 * - every task in tasks/, every top-level folder tracked by git and every npm script of package.json
 *   is named somewhere in those documents;
 * - no markdown file, and no comment in a source file of src/, tasks/, test/, bench/, scripts/ or
 *   migrations/fixtures/, cites a repository path that does not exist, and every relative markdown
 *   link points at a file that exists.
 */
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { buildSchema, parse, validate } from "postgraphile/graphql";
import ts from "typescript";
import { describe, expect, it } from "vitest";
import { projectRoot } from "../../src/config.ts";

const read = (file: string) => readFileSync(resolve(projectRoot, file), "utf8");
const schema = buildSchema(read("data/schema.graphql"));

/** The documents: the front page, the conventions and every guide in docs/. */
const DOCS = [
  "README.md",
  "CONVENTIONS.md",
  ...readdirSync(resolve(projectRoot, "docs"))
    .filter((f) => f.endsWith(".md"))
    .sort()
    .map((f) => `docs/${f}`),
].filter((f) => existsSync(resolve(projectRoot, f)));
const docText = DOCS.map(read).join("\n");

/** ```graphql blocks, and the GraphQL documents inside inline `mutation { … }` / `query { … }` code spans. */
function examples(markdown: string): string[] {
  const found: string[] = [];
  for (const m of markdown.matchAll(/```graphql\n([\s\S]*?)```/g)) {
    // A block may hold several documents, each starting at column 0 with query/mutation/{ or a comment.
    const docs = m[1]!
      .split(/\n(?=(?:mutation|query)\b|\{)/)
      .map((d) => d.replace(/^#.*$/gm, "").trim())
      .filter(Boolean);
    found.push(...docs);
  }
  const outsideBlocks = markdown.replace(/```[\s\S]*?```/g, "");
  for (const m of outsideBlocks.matchAll(/`((?:mutation|query) \{[^`]*\})`/g)) found.push(m[1]!);
  return found;
}

/** Folders at the top of the repository that git tracks (dot-folders excepted). */
function topLevelFolders(): string[] {
  let files: string[];
  try {
    files = execFileSync("git", ["ls-files"], { cwd: projectRoot, encoding: "utf8" }).split("\n");
  } catch {
    // Not a git checkout (e.g. an exported tarball): the folders on disk.
    files = readdirSync(projectRoot)
      .filter((f) => statSync(resolve(projectRoot, f)).isDirectory())
      .map((f) => `${f}/x`);
  }
  return [...new Set(files.filter((f) => f.includes("/")).map((f) => f.split("/")[0]!))]
    .filter((f) => !f.startsWith(".") && f !== "node_modules")
    .sort();
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

describe("GraphQL examples in the documentation", () => {
  const all = DOCS.flatMap((file) => examples(read(file)).map((doc) => ({ file, doc })));
  it("has examples, in the README and in the guides", () => {
    expect(all.length).toBeGreaterThan(20);
    expect(all.some((e) => e.file === "README.md")).toBe(true);
    expect(all.some((e) => e.file.startsWith("docs/"))).toBe(true);
  });
  it.each(all.map((e) => [`${e.file}: ${e.doc.slice(0, 60).replace(/\s+/g, " ")}`, e.doc]))("valid: %s", (_label, doc) => {
    const errors = validate(schema, parse(doc));
    expect(errors.map((e) => e.message)).toEqual([]);
  });
});

describe("the documentation names what exists", () => {
  it("every task in tasks/", () => {
    const tasks = readdirSync(resolve(projectRoot, "tasks"))
      .filter((f) => f.endsWith(".ts"))
      .map((f) => f.slice(0, -3));
    expect(tasks.length).toBeGreaterThan(0);
    const missing = tasks.filter((t) => !new RegExp(`(?<![\\w])${escape(t)}(?![\\w])`).test(docText));
    expect(missing, `tasks not named in ${DOCS.join(", ")}`).toEqual([]);
  });

  it("every top-level folder", () => {
    const folders = topLevelFolders();
    expect(folders).toContain("src");
    const missing = folders.filter((f) => !new RegExp(`(?<![\\w./-])${escape(f)}/`).test(docText));
    expect(missing, `folders not named (as "${folders[0]}/") in ${DOCS.join(", ")}`).toEqual([]);
  });

  it("every npm script", () => {
    const scripts = Object.keys((JSON.parse(read("package.json")) as { scripts: Record<string, string> }).scripts);
    const missing = scripts.filter((s) => {
      const named = ["start", "test"].includes(s) ? `npm (?:run )?${escape(s)}` : `npm run ${escape(s)}`;
      return !new RegExp(`${named}(?![\\w:-])`).test(docText);
    });
    expect(missing, `npm scripts not named (as "npm run <script>") in ${DOCS.join(", ")}`).toEqual([]);
  });
});

/** Every file below folder (relative to the project) whose name ends with one of the extensions. */
function filesUnder(folder: string, extensions: string[]): string[] {
  const root = resolve(projectRoot, folder);
  if (!existsSync(root)) return [];
  return readdirSync(root, { recursive: true, encoding: "utf8" })
    .map((f) => join(folder, f).split("\\").join("/"))
    .filter((f) => extensions.some((e) => f.endsWith(e)) && statSync(resolve(projectRoot, f)).isFile())
    .sort();
}

const SOURCE_FOLDERS = ["src", "tasks", "test", "bench", "scripts", "migrations/fixtures"];
const CHECKED_FILES = [
  ...new Set([...DOCS, ...SOURCE_FOLDERS.flatMap((f) => filesUnder(f, [".ts", ".sql", ".md"]))]),
];

/**
 * Path-like tokens that start with a folder of the repository (including dot-folders such as .ci).
 * Globs and placeholders (a `*`, `<…>`, `…`, `${…}`) are not paths and are skipped, as is a
 * trailing :line or punctuation.
 */
function citedPaths(text: string, folders: string[]): string[] {
  const pattern = new RegExp(`(?<![\\w./@:~-])(?:${folders.map(escape).join("|")})/[^\\s\`'"()\\[\\],;|]*`, "g");
  const found = new Set<string>();
  for (const m of text.matchAll(pattern)) {
    const token = m[0];
    if (/[<>*…{}$]/.test(token)) continue;
    found.add(token.replace(/#.*$/, "").replace(/(?::\d+)+$/, "").replace(/[.:]+$/, ""));
  }
  return [...found];
}

/** The comments of a TypeScript file (TypeScript's own parser finds them, so strings and regexes are not comments). */
function typeScriptComments(file: string, text: string): string {
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const ranges = new Map<number, ts.CommentRange>();
  const visit = (node: ts.Node): void => {
    for (const r of [...(ts.getLeadingCommentRanges(text, node.pos) ?? []), ...(ts.getTrailingCommentRanges(text, node.end) ?? [])]) ranges.set(r.pos, r);
    ts.forEachChild(node, visit);
  };
  visit(source);
  return [...ranges.values()].map((r) => text.slice(r.pos, r.end)).join("\n");
}

/** What a file says in prose: all of a markdown file; the comments of TypeScript and SQL. */
function prose(file: string, text: string): string {
  if (file.endsWith(".ts")) return typeScriptComments(file, text);
  if (file.endsWith(".sql")) return [...text.matchAll(/--[^\n]*|\/\*[\s\S]*?\*\//g)].map((m) => m[0]).join("\n");
  return text;
}

describe("no reference to a file that does not exist", () => {
  const folders = [...topLevelFolders(), ".ci"];
  it.each(CHECKED_FILES)("%s", (file) => {
    const text = prose(file, read(file));
    const missing = citedPaths(text, folders).filter((p) => !existsSync(resolve(projectRoot, p)));
    if (file.endsWith(".md")) {
      for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        const target = m[1]!.replace(/#.*$/, "");
        if (!target || /^[a-z]+:/i.test(target)) continue;
        const path = relative(projectRoot, resolve(projectRoot, dirname(file), target));
        if (!existsSync(resolve(projectRoot, path))) missing.push(`link ${m[1]}`);
      }
    }
    expect(missing).toEqual([]);
  });
});
