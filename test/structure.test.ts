/**
 * The module structure of src/ and tasks/: no import cycles.
 *
 * Every .ts file under src/ and tasks/ is parsed (TypeScript's parser, no type checking) and each
 * relative module specifier becomes an edge of the import graph. What counts as an import:
 * `import … from`, `import type … from`, `export … from` (type-only too) and type-level
 * `import("…")` — a type-only import still couples the two modules (one cannot be read, moved or
 * changed without the other), so it counts. A dynamic `import(…)` call is deliberate lazy loading
 * and does not count. Every strongly connected component of the graph is a set of modules that
 * import each other; the test fails listing each one, with the imports inside it and one cycle.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import ts from "typescript";
import { describe, expect, it } from "vitest";
import { projectRoot } from "../src/config.ts";

const ROOTS = ["src", "tasks"];

function sourceFiles(): string[] {
  const files: string[] = [];
  for (const root of ROOTS) {
    for (const entry of readdirSync(join(projectRoot, root), { recursive: true, encoding: "utf8" })) {
      if (entry.endsWith(".ts") && !entry.endsWith(".d.ts")) files.push(join(root, entry).split("\\").join("/"));
    }
  }
  return files.sort();
}

/** The relative module specifiers a file imports or re-exports, type-only ones included. */
function relativeImports(file: string): string[] {
  const text = readFileSync(join(projectRoot, file), "utf8");
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const found: string[] = [];
  const visit = (node: ts.Node): void => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier)) {
      found.push(node.moduleSpecifier.text);
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument) && ts.isStringLiteral(node.argument.literal)) {
      found.push(node.argument.literal.text);
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found.filter((specifier) => specifier.startsWith("./") || specifier.startsWith("../"));
}

interface Graph {
  files: string[];
  edges: Map<string, string[]>;
  /** Relative imports that name no file (the graph would silently miss them). */
  unresolved: string[];
}

function importGraph(): Graph {
  const files = sourceFiles();
  const edges = new Map<string, string[]>();
  const unresolved: string[] = [];
  for (const file of files) {
    const targets = new Set<string>();
    for (const specifier of relativeImports(file)) {
      const absolute = resolve(projectRoot, dirname(file), specifier);
      const target = relative(projectRoot, absolute).split("\\").join("/");
      if (!existsSync(absolute)) unresolved.push(`${file} -> ${specifier}`);
      // Imports leaving src/ and tasks/ (package.json, ...) cannot close a cycle here.
      else if (ROOTS.some((root) => target.startsWith(`${root}/`))) targets.add(target);
    }
    edges.set(file, [...targets].sort());
  }
  return { files, edges, unresolved };
}

/** Tarjan's strongly connected components with more than one module, or one module importing itself. */
function cyclicComponents(graph: Graph): string[][] {
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const components: string[][] = [];
  const connect = (v: string): void => {
    index.set(v, counter);
    low.set(v, counter);
    counter++;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.edges.get(v) ?? []) {
      if (!index.has(w)) {
        connect(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, index.get(w)!));
      }
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1 || (graph.edges.get(v) ?? []).includes(v)) components.push(component.sort());
    }
  };
  for (const file of graph.files) if (!index.has(file)) connect(file);
  return components;
}

/** A shortest cycle through `start` inside its component (breadth-first search back to it). */
function cycleThrough(graph: Graph, component: string[], start: string): string[] {
  const inside = new Set(component);
  const previous = new Map<string, string>();
  const queue = [start];
  while (queue.length > 0) {
    const v = queue.shift()!;
    for (const w of graph.edges.get(v) ?? []) {
      if (!inside.has(w)) continue;
      if (w === start) {
        const path = [start];
        for (let at = v; at !== start; at = previous.get(at)!) path.splice(1, 0, at);
        return [...path, start];
      }
      if (!previous.has(w)) {
        previous.set(w, v);
        queue.push(w);
      }
    }
  }
  return [start];
}

function describeCycles(graph: Graph, components: string[][]): string {
  return components
    .map((component, i) => {
      const inside = new Set(component);
      const imports = component.flatMap((from) => (graph.edges.get(from) ?? []).filter((to) => inside.has(to)).map((to) => `    ${from} -> ${to}`));
      return [
        `cycle ${i + 1}: ${component.length} module(s) import each other`,
        `  e.g. ${cycleThrough(graph, component, component[0]!).join(" -> ")}`,
        "  imports inside it:",
        ...imports,
      ].join("\n");
    })
    .join("\n");
}

describe("module structure", () => {
  const graph = importGraph();

  it("reads the imports of src/ and tasks/ (the check below is only as good as this)", () => {
    expect(graph.unresolved).toEqual([]);
    expect(graph.files).toContain("src/main.ts");
    expect(graph.files.filter((f) => f.startsWith("tasks/")).length).toBeGreaterThan(10);
    // A type-only import and a task importing src/ are both edges.
    expect(graph.edges.get("src/providers/aiLocal.ts")).toContain("src/providers/ai.ts");
    expect(graph.edges.get("tasks/lead__route.ts")).toContain("src/worker/taskPayload.ts");
  });

  it("has no import cycles (type-only imports count)", () => {
    const components = cyclicComponents(graph);
    expect(components, `Import cycles in src/ and tasks/:\n${describeCycles(graph, components)}\n`).toEqual([]);
  });

  it("enqueues jobs one way: through app_private.add_job, never graphile-worker's addJob or add_job directly", () => {
    const direct = /\b(?:addJobs?|quickAddJob)\s*\(|graphile_worker\s*\.\s*add_jobs?\b/;
    const offenders = graph.files.filter((file) => direct.test(readFileSync(join(projectRoot, file), "utf8")));
    expect(offenders).toEqual([]);
    // The pattern is not vacuous: the SQL entry point itself calls graphile_worker.add_job.
    expect(direct.test(readFileSync(join(projectRoot, "migrations/fixtures/platform/add_job.sql"), "utf8"))).toBe(true);
    expect(direct.test("await helpers.addJob('x', {})")).toBe(true);
  });
});
