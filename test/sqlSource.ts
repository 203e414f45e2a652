/** Splits SQL text into top-level statements (handles comments, quotes, dollar quotes). */
export interface Stmt { text: string; start: number; end: number }
export function splitSql(sql: string): Stmt[] {
  const out: Stmt[] = [];
  let i = 0, start = 0;
  const n = sql.length;
  while (i < n) {
    const c = sql[i];
    if (c === "-" && sql[i + 1] === "-") { const e = sql.indexOf("\n", i); i = e < 0 ? n : e + 1; continue; }
    if (c === "/" && sql[i + 1] === "*") { let depth = 1; i += 2; while (i < n && depth > 0) { if (sql.startsWith("/*", i)) { depth++; i += 2; } else if (sql.startsWith("*/", i)) { depth--; i += 2; } else i++; } continue; }
    if (c === "'") { i++; while (i < n) { if (sql[i] === "'" && sql[i + 1] === "'") i += 2; else if (sql[i] === "'") { i++; break; } else i++; } continue; }
    if (c === '"') { i++; while (i < n && sql[i] !== '"') i++; i++; continue; }
    if (c === "$") { const m = /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/.exec(sql.slice(i, i + 64)); if (m && !/[A-Za-z0-9_]/.test(sql[i - 1] ?? "")) { const tag = m[0]; const e = sql.indexOf(tag, i + tag.length); i = e < 0 ? n : e + tag.length; continue; } }
    if (c === ";") { out.push({ text: sql.slice(start, i + 1), start, end: i + 1 }); start = i + 1; }
    i++;
  }
  if (sql.slice(start).trim()) out.push({ text: sql.slice(start), start, end: n });
  return out;
}
/** Strips leading whitespace and -- comment lines from a statement. */
export function stripLeading(text: string): string {
  let t = text;
  for (;;) { const s = t.replace(/^\s+/, ""); if (s.startsWith("--")) { const e = s.indexOf("\n"); t = e < 0 ? "" : s.slice(e + 1); } else return s; }
}
