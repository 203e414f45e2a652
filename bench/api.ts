/**
 * The real API server for a benchmark: production settings, in-process on a loopback port, against
 * the benchmark's database, with a GraphQL client and a login helper. Its data folder is temporary.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { loadConfig } from "../src/config.ts";
import type { DatabaseUrls, Roles } from "../src/db/bootstrap.ts";
import { startApiServer } from "../src/api/server.ts";

export interface BenchApi {
  /** The server's address, for raw requests. */
  url: string;
  gql(query: string, variables?: Record<string, unknown>, token?: string): Promise<any>;
  login(email: string, password: string): Promise<string>;
  close(): Promise<void>;
}

/** `env` overrides settings (e.g. rate limits) on top of the production ones below. */
export async function startBenchApi(urls: DatabaseUrls, roles: Roles, ownerPool: pg.Pool, env: Record<string, string> = {}): Promise<BenchApi> {
  const dataDir = mkdtempSync(join(tmpdir(), "switchboard-bench-data-"));
  const config = loadConfig({
    DATABASE_URL: urls.ownerUrl,
    AUTH_DATABASE_URL: urls.authUrl,
    DATABASE_VISITOR: roles.visitor,
    JWT_SECRET: "bench-secret-bench-secret-bench-secret-12",
    NODE_ENV: "production",
    PUBLIC_URL: "https://bench.switchboard.test",
    PORT: "0",
    SWITCHBOARD_DATA_DIR: dataDir,
    STATEMENT_TIMEOUT_MS: "60000",
    ...env,
  });
  const authPool = new pg.Pool({ connectionString: urls.authUrl, max: 8 });
  const api = await startApiServer({ config, authPool, ownerPool, workerState: () => "not in this process", port: 0 });
  const gql = async (query: string, variables: Record<string, unknown> = {}, token?: string) => {
    const response = await fetch(`${api.url}/graphql`, {
      method: "POST",
      headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify({ query, variables }),
    });
    const body = (await response.json()) as { data?: any; errors?: Array<{ message: string }> };
    if (body.errors) throw new Error(`GraphQL error: ${body.errors[0]!.message}`);
    return body.data;
  };
  return {
    url: api.url,
    gql,
    async login(email, password) {
      const data = await gql(`mutation ($email: String!, $password: String!) { login(input: { email: $email, password: $password }) { result } }`, {
        email,
        password,
      });
      return data.login.result as string;
    },
    async close() {
      await api.close();
      await authPool.end();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
