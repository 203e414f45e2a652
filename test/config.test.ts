/** Start-up configuration: wrong or missing values give a clear message, not a stack trace. */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../src/config.ts";

const created: string[] = [];
const dataDir = () => {
  const dir = mkdtempSync(join(tmpdir(), "switchboard-config-"));
  created.push(dir);
  return dir;
};
afterAll(() => {
  for (const dir of created) rmSync(dir, { recursive: true, force: true });
});

describe("configuration", () => {
  it("needs nothing in development: embedded PostgreSQL, generated secrets kept in the data folder", () => {
    const dir = dataDir();
    const first = loadConfig({ SWITCHBOARD_DATA_DIR: dir });
    expect(first.database.kind).toBe("embedded");
    expect(first.port).toBe(3000);
    expect(first.jwtSecret.length).toBeGreaterThanOrEqual(32);
    // Restarting keeps the same secret, so tokens survive restarts.
    expect(loadConfig({ SWITCHBOARD_DATA_DIR: dir }).jwtSecret).toBe(first.jwtSecret);
  });

  it.each([
    [{ PORT: "eighty" }, /PORT must be a whole number/],
    [{ PORT: "70000" }, /PORT must be between 0 and 65535/],
    [{ DATABASE_URL: "mysql://x@y/z" }, /must start with postgres:\/\//],
    [{ DATABASE_URL: "not a url" }, /DATABASE_URL is not a valid URL/],
    [{ DATABASE_URL: "postgres://u@h:5432/" }, /must name the database/],
    [{ AUTH_DATABASE_URL: "postgres://a@h/db" }, /AUTH_DATABASE_URL is set but DATABASE_URL is not/],
    [{ JWT_SECRET: "short" }, /JWT_SECRET must be at least 32 characters/],
    [{ NODE_ENV: "production" }, /production needs DATABASE_URL/],
    [{ NODE_ENV: "production", DATABASE_URL: "postgres://o@h/db", AUTH_DATABASE_URL: "postgres://a@h/db" }, /JWT_SECRET is required in production/],
    [{ NODE_ENV: "production", DATABASE_URL: "postgres://root@h/db", JWT_SECRET: "x".repeat(40) }, /DATABASE_OWNER_PASSWORD/],
    [{ NODE_ENV: "production", DATABASE_URL: "postgres://o@h/db", AUTH_DATABASE_URL: "postgres://a@h/db", JWT_SECRET: "x".repeat(40), SEED_DEMO: "true" }, /not loaded in production/],
    [{ NODE_ENV: "production", DATABASE_URL: "postgres://o@h/db", AUTH_DATABASE_URL: "postgres://a@h/db", JWT_SECRET: "x".repeat(40) }, /PUBLIC_URL must be the https:\/\/ address/],
    [{ NODE_ENV: "production", DATABASE_URL: "postgres://o@h/db", AUTH_DATABASE_URL: "postgres://a@h/db", JWT_SECRET: "x".repeat(40), PUBLIC_URL: "http://switchboard.example.com" }, /PUBLIC_URL must be the https:\/\/ address.*got 'http:\/\/switchboard/],
    [{ HEALTH_TOKEN: "short" }, /HEALTH_TOKEN must be at least 24 characters/],
    [{ GRAPHQL_DEFAULT_PAGE_SIZE: "300" }, /GRAPHQL_DEFAULT_PAGE_SIZE \(300\) must not be more than GRAPHQL_MAX_PAGE_SIZE \(200\)/],
    [{ GRAPHQL_MAX_TOKENS: "10" }, /GRAPHQL_MAX_TOKENS must be between 50 and 100000/],
    [{ GRAPHQL_MAX_BODY_BYTES: "lots" }, /GRAPHQL_MAX_BODY_BYTES must be a whole number/],
    [{ GRAPHQL_MAX_COST: "0" }, /GRAPHQL_MAX_COST must be between 100 and 100000000/],
    [{ WORKER_ENABLED: "maybe" }, /WORKER_ENABLED must be true or false/],
    [{ DATABASE_VISITOR: "Bad-Role" }, /DATABASE_VISITOR must be a lowercase role name/],
    [{ SMTP_URL: "http://mail.example.com" }, /SMTP_URL must start with smtp:\/\/ or smtps:\/\//],
    [{ SMTP_URL: "smtp://mail.example.com:587" }, /needs EMAIL_FROM/],
    [{ SMTP_URL: "smtp://mail.example.com:587", EMAIL_FROM: "Ace <not an address>" }, /EMAIL_FROM must be an address/],
    [{ EMAIL_PROVIDER: "smtp" }, /EMAIL_PROVIDER=smtp needs SMTP_URL/],
    [{ EMAIL_PROVIDER: "sendgrid" }, /EMAIL_PROVIDER must be smtp or local/],
    [{ SMTP_TIMEOUT_MS: "10" }, /SMTP_TIMEOUT_MS must be between 1000 and 600000/],
    [{ TRUST_PROXY: "true" }, /TRUST_PROXY must be a whole number, got 'true'/],
    [{ TRUST_PROXY: "11" }, /TRUST_PROXY must be between 0 and 10/],
    [{ LOGIN_LIMIT_PER_ADDRESS: "0" }, /LOGIN_LIMIT_PER_ADDRESS must be between 1 and 1000000/],
    [{ LOGIN_LIMIT_PER_ACCOUNT: "-5" }, /LOGIN_LIMIT_PER_ACCOUNT must be a whole number/],
    [{ LOGIN_FREE_ATTEMPTS: "0" }, /LOGIN_FREE_ATTEMPTS must be between 1 and 1000/],
    [{ REGISTER_LIMIT_PER_ADDRESS: "many" }, /REGISTER_LIMIT_PER_ADDRESS must be a whole number/],
    [{ RATE_LIMIT_WINDOW_SECONDS: "5" }, /RATE_LIMIT_WINDOW_SECONDS must be between 10 and 86400/],
    [{ LOGIN_BACKOFF_BASE_SECONDS: "60", LOGIN_BACKOFF_MAX_SECONDS: "30" }, /LOGIN_BACKOFF_MAX_SECONDS \(30\) must be at least LOGIN_BACKOFF_BASE_SECONDS \(60\)/],
  ])("rejects %o with a clear message", (env, message) => {
    const run = () => loadConfig({ SWITCHBOARD_DATA_DIR: dataDir(), ...env });
    expect(run).toThrow(ConfigError);
    expect(run).toThrow(message);
  });

  it("rate limits: on by default, X-Forwarded-For not trusted unless TRUST_PROXY names the proxies in front", () => {
    const defaults = loadConfig({ SWITCHBOARD_DATA_DIR: dataDir() });
    expect(defaults.trustProxy).toBe(0);
    expect(defaults.rateLimits).toEqual({
      windowSeconds: 900,
      loginPerAddress: 30,
      loginPerAccount: 100,
      loginFreeAttempts: 3,
      loginBackoffBaseSeconds: 1,
      loginBackoffMaxSeconds: 900,
      registerPerAddress: 10,
      acceptInvitationPerAddress: 20,
      verifyEmailPerAddress: 20,
      resetPasswordPerAddress: 10,
      resetPasswordPerAccount: 5,
      changePasswordPerAddress: 10,
      changePasswordPerAccount: 10,
    });
    const set = loadConfig({
      SWITCHBOARD_DATA_DIR: dataDir(),
      TRUST_PROXY: "2",
      RATE_LIMIT_WINDOW_SECONDS: "600",
      LOGIN_LIMIT_PER_ADDRESS: "20",
      LOGIN_LIMIT_PER_ACCOUNT: "500",
      LOGIN_FREE_ATTEMPTS: "5",
      LOGIN_BACKOFF_BASE_SECONDS: "2",
      LOGIN_BACKOFF_MAX_SECONDS: "600",
      REGISTER_LIMIT_PER_ADDRESS: "4",
      ACCEPT_INVITATION_LIMIT_PER_ADDRESS: "7",
      VERIFY_EMAIL_LIMIT_PER_ADDRESS: "8",
      RESET_PASSWORD_LIMIT_PER_ADDRESS: "9",
      RESET_PASSWORD_LIMIT_PER_ACCOUNT: "3",
      CHANGE_PASSWORD_LIMIT_PER_ADDRESS: "6",
      CHANGE_PASSWORD_LIMIT_PER_ACCOUNT: "11",
    });
    expect(set.trustProxy).toBe(2);
    expect(set.rateLimits).toEqual({
      windowSeconds: 600,
      loginPerAddress: 20,
      loginPerAccount: 500,
      loginFreeAttempts: 5,
      loginBackoffBaseSeconds: 2,
      loginBackoffMaxSeconds: 600,
      registerPerAddress: 4,
      acceptInvitationPerAddress: 7,
      verifyEmailPerAddress: 8,
      resetPasswordPerAddress: 9,
      resetPasswordPerAccount: 3,
      changePasswordPerAddress: 6,
      changePasswordPerAccount: 11,
    });
  });

  it("email: the local catcher by default; SMTP with SMTP_URL and EMAIL_FROM (a bare address or Name <address>)", () => {
    const local = loadConfig({ SWITCHBOARD_DATA_DIR: dataDir() }).email;
    expect(local).toMatchObject({ provider: "local", smtpUrl: null, from: { address: "no-reply@switchboard.localhost" } });
    const smtp = loadConfig({ SWITCHBOARD_DATA_DIR: dataDir(), SMTP_URL: "smtps://u:p@mail.example.com:465", EMAIL_FROM: "Ace Plumbing <hello@ace.example>" }).email;
    expect(smtp).toEqual({ provider: "smtp", smtpUrl: "smtps://u:p@mail.example.com:465", from: { name: "Ace Plumbing", address: "hello@ace.example" }, timeoutMs: 30_000 });
    expect(loadConfig({ SWITCHBOARD_DATA_DIR: dataDir(), EMAIL_FROM: "hello@ace.example" }).email.from).toEqual({ name: null, address: "hello@ace.example" });
  });

  it("production settings: no IDE, introspection off (see api tests), statement timeout on", () => {
    const config = loadConfig({
      NODE_ENV: "production",
      DATABASE_URL: "postgres://o@h/db",
      AUTH_DATABASE_URL: "postgres://a@h/db",
      JWT_SECRET: "y".repeat(48),
      PUBLIC_URL: "https://switchboard.example.com",
    });
    expect(config.production).toBe(true);
    expect(config.host).toBe("0.0.0.0");
    expect(config.graphql.statementTimeoutMs).toBeGreaterThan(0);
  });
});
