/** A real API server on a loopback port, against the test database, for HTTP-level tests. */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig, type Config } from "../src/config.ts";
import { startApiServer, type ApiServer } from "../src/api/server.ts";
import { makePool } from "../src/db/pools.ts";
import { db } from "./helpers.ts";

export const TEST_JWT_SECRET = "test-secret-that-is-long-enough-0123456789";

export interface TestServer {
  url: string;
  config: Config;
  api: ApiServer;
  gql<T = any>(query: string, variables?: Record<string, unknown>, token?: string, headers?: Record<string, string>): Promise<GqlResponse<T>>;
  close(): Promise<void>;
}

export interface GqlResponse<T> {
  status: number;
  data: T | null | undefined;
  errors: Array<{ message: string; extensions?: Record<string, unknown> }> | undefined;
}

export async function startTestServer(env: Record<string, string> = {}): Promise<TestServer> {
  const dataDir = mkdtempSync(join(tmpdir(), "switchboard-api-"));
  const config = loadConfig({
    DATABASE_URL: db.ownerUrl,
    AUTH_DATABASE_URL: db.authUrl,
    DATABASE_VISITOR: db.roles.visitor,
    DATABASE_OWNER: db.roles.owner,
    DATABASE_AUTHENTICATOR: db.roles.authenticator,
    JWT_SECRET: TEST_JWT_SECRET,
    PORT: "0",
    SWITCHBOARD_DATA_DIR: dataDir,
    // Production refuses to start without an https PUBLIC_URL (webhook signatures are computed over it).
    ...(env.NODE_ENV === "production" ? { PUBLIC_URL: "https://switchboard.test" } : {}),
    // The rate limits' counters live in the test database, shared by every file's servers on 127.0.0.1:
    // out of the way unless a test sets its own (test/api/rate-limits.test.ts).
    LOGIN_LIMIT_PER_ADDRESS: "1000000",
    LOGIN_LIMIT_PER_ACCOUNT: "1000000",
    LOGIN_FREE_ATTEMPTS: "1000",
    REGISTER_LIMIT_PER_ADDRESS: "1000000",
    ACCEPT_INVITATION_LIMIT_PER_ADDRESS: "1000000",
    VERIFY_EMAIL_LIMIT_PER_ADDRESS: "1000000",
    RESET_PASSWORD_LIMIT_PER_ADDRESS: "1000000",
    RESET_PASSWORD_LIMIT_PER_ACCOUNT: "1000000",
    CHANGE_PASSWORD_LIMIT_PER_ADDRESS: "1000000",
    CHANGE_PASSWORD_LIMIT_PER_ACCOUNT: "1000000",
    FORM_LIMIT_PER_ADDRESS: "1000000",
    FORM_LIMIT_PER_FORM: "1000000",
    ...env,
  });
  const ownerPool = makePool(db.ownerUrl, 4, "test server owner", 0);
  const authPool = makePool(db.authUrl, 8, "test server auth", 0);
  const api = await startApiServer({ config, authPool, ownerPool, workerState: () => "not in this process", port: 0 });
  const url = api.url;
  return {
    url,
    config,
    api,
    async gql(query, variables, token, headers = {}) {
      const response = await fetch(`${url}/graphql`, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          accept: "application/graphql-response+json, application/json",
          ...(token ? { authorization: `Bearer ${token}` } : {}),
          ...headers,
        },
        body: JSON.stringify({ query, variables }),
      });
      const body = (await response.json()) as { data?: any; errors?: any };
      return { status: response.status, data: body.data, errors: body.errors };
    },
    async close() {
      await api.close();
      await Promise.all([ownerPool.end(), authPool.end()]);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
