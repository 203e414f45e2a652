/**
 * Configuration from environment variables, validated once at start.
 * Every problem is reported as a ConfigError with a message a person can act on;
 * main.ts prints it without a stack trace. The full list is in docs/configuration.md.
 */
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseSecretsKey } from "./secrets.ts";

export const projectRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..");

export class ConfigError extends Error {
  override name = "ConfigError";
}

export interface DatabaseSource {
  /** "embedded": we run PostgreSQL ourselves; "external": DATABASE_URL points at a server. */
  kind: "embedded" | "external";
  /** Superuser URL used to create roles/database (null when the owner URL was given directly). */
  rootUrl: string | null;
  /** Owner URL (set when AUTH_DATABASE_URL is given: no bootstrap). */
  ownerUrl: string | null;
  authUrl: string | null;
  shadowUrl: string | null;
  databaseName: string;
}

export interface Config {
  production: boolean;
  host: string;
  port: number;
  dataDir: string;
  embeddedPort: number;
  database: DatabaseSource;
  roles: { owner: string; authenticator: string; visitor: string };
  ownerPassword: string;
  authenticatorPassword: string;
  jwtSecret: string;
  worker: { enabled: boolean; concurrency: number };
  graphql: {
    depthLimit: number;
    maxPageSize: number;
    statementTimeoutMs: number;
    /** GRAPHQL_MAX_BODY_BYTES: any /graphql body, and any query text (only an authenticated importLeads body may be bigger). */
    maxBodyBytes: number;
    maxTokens: number;
    maxAliases: number;
    maxRootFields: number;
    maxCost: number;
    defaultPageSize: number;
  };
  seedDemo: boolean;
  /** HEALTH_TOKEN: shows /healthz's details to whoever sends it (null: only on this machine's loopback). */
  healthToken: string | null;
  telephony: TelephonyConfig;
  email: EmailConfig;
  serviceTitan: ServiceTitanSettings;
  /** TRUST_PROXY: how many reverse proxies in front of the server may set X-Forwarded-For (0: the socket address is the client). */
  trustProxy: number;
  rateLimits: RateLimitSettings;
  forms: FormSettings;
  webhooks: WebhookSettings;
}

/** Outbound webhooks (tasks/webhook__deliver.ts, src/providers/webhookPoster.ts). */
export interface WebhookSettings {
  /** WEBHOOK_TIMEOUT_MS: how long one delivery may take, connection and answer together. */
  timeoutMs: number;
  /** WEBHOOK_CONCURRENCY: deliveries of one endpoint sent at the same time. */
  concurrency: number;
  /** WEBHOOK_ALLOW_PRIVATE_TARGETS: deliver to private, loopback and link-local addresses (tests, a private network); off by default (SSRF). */
  allowPrivateTargets: boolean;
}

/** The public lead forms at /f/<key> (src/webhooks/leadForms.ts). */
export interface FormSettings {
  /** FORM_LIMIT_PER_ADDRESS: submissions one client address may send per window, to any form. */
  perAddress: number;
  /** FORM_LIMIT_PER_FORM: submissions one form takes per window, from everyone. */
  perForm: number;
  /** FORM_LIMIT_WINDOW_SECONDS: the window of both counters. */
  windowSeconds: number;
  /** FORM_MAX_BODY_BYTES: the largest submission body. */
  maxBodyBytes: number;
  /** CAPTCHA_VERIFY_URL: the siteverify endpoint (Cloudflare Turnstile or hCaptcha API shape); null: forms that require a captcha refuse every submission. */
  captchaVerifyUrl: string | null;
  /** CAPTCHA_SECRET: the secret sent to it. */
  captchaSecret: string | null;
}

/** Limits on login, register, the token flows and the password checks (src/api/rateLimit.ts), shared by every API process through PostgreSQL. */
export interface RateLimitSettings {
  /** RATE_LIMIT_WINDOW_SECONDS: the window of the per-address and per-account counters. */
  windowSeconds: number;
  /** LOGIN_LIMIT_PER_ADDRESS: login attempts one client address may make per window, whatever the accounts. */
  loginPerAddress: number;
  /** LOGIN_LIMIT_PER_ACCOUNT: login attempts on one account per window, from all addresses together (a ceiling only many addresses reach). */
  loginPerAccount: number;
  /** LOGIN_FREE_ATTEMPTS: attempts on one account from one address before each further one must wait. */
  loginFreeAttempts: number;
  /** LOGIN_BACKOFF_BASE_SECONDS / LOGIN_BACKOFF_MAX_SECONDS: the first wait, doubled after each further attempt, up to the maximum. */
  loginBackoffBaseSeconds: number;
  loginBackoffMaxSeconds: number;
  /** REGISTER_LIMIT_PER_ADDRESS: registrations one client address may attempt per window. */
  registerPerAddress: number;
  /** ACCEPT_INVITATION_LIMIT_PER_ADDRESS: acceptInvitation attempts one client address may make per window. */
  acceptInvitationPerAddress: number;
  /** VERIFY_EMAIL_LIMIT_PER_ADDRESS: verifyEmail and confirmEmailChange attempts one client address may make per window. */
  verifyEmailPerAddress: number;
  /** RESET_PASSWORD_LIMIT_PER_ADDRESS: requestPasswordReset and resetPassword attempts one client address may make per window. */
  resetPasswordPerAddress: number;
  /** RESET_PASSWORD_LIMIT_PER_ACCOUNT: requestPasswordReset for one address per window, from all client addresses together. */
  resetPasswordPerAccount: number;
  /** CHANGE_PASSWORD_LIMIT_PER_ADDRESS: changePassword and requestEmailChange attempts (they check the current password) per client address per window. */
  changePasswordPerAddress: number;
  /** CHANGE_PASSWORD_LIMIT_PER_ACCOUNT: the same attempts on one account per window, from all client addresses together. */
  changePasswordPerAccount: number;
}

export interface ServiceTitanSettings {
  /** SECRETS_KEY (32 bytes): encrypts connection secrets at rest; null in production without it (connections cannot be saved). */
  secretsKey: Buffer | null;
  /** SERVICETITAN_AUTH_BASE_URL / SERVICETITAN_API_BASE_URL: instead of the environment's hosts (tests, proxies). */
  authBaseUrl: string | null;
  apiBaseUrl: string | null;
  /** SERVICETITAN_TIMEOUT_MS: per HTTP request (default 30000). */
  timeoutMs: number;
}

export interface EmailConfig {
  /** "smtp" sends through SMTP_URL; "local" keeps every email in app_private.local_provider_emails (development). */
  provider: "smtp" | "local";
  /** smtp://user:password@host:587 or smtps://…:465; null with the local provider. */
  smtpUrl: string | null;
  /** The default sender (EMAIL_FROM); its domain also names our Message-IDs. */
  from: { name: string | null; address: string };
  /** SMTP connection, greeting and socket timeout. */
  timeoutMs: number;
}

export interface TelephonyConfig {
  /** Where Twilio reaches this server (webhook URLs are built on it and signatures checked against it); null: the server's own address. */
  publicUrl: string | null;
  /** "twilio" sends through Twilio's REST API; "local" records texts in the database and reports them delivered (development). */
  smsProvider: "twilio" | "local";
  twilio: { accountSid: string; authToken: string; apiBaseUrl: string | null } | null;
  /** The token X-Twilio-Signature is checked with: Twilio's auth token, or a generated one for the local provider. */
  webhookAuthToken: string;
  /** Environment for createAiResponder (AI_PROVIDER, AI_BASE_URL, AI_API_KEY, AI_MODEL, AI_TIMEOUT_MS). */
  aiEnv: Record<string, string | undefined>;
}

type Env = Record<string, string | undefined>;

function int(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  if (!/^\d+$/.test(raw.trim())) {
    throw new ConfigError(`${name} must be a whole number, got '${raw}'.`);
  }
  const value = Number(raw);
  if (value < min || value > max) {
    throw new ConfigError(`${name} must be between ${min} and ${max}, got ${value}.`);
  }
  return value;
}

function bool(env: Env, name: string, fallback: boolean): boolean {
  const raw = env[name]?.trim().toLowerCase();
  if (raw === undefined || raw === "") return fallback;
  if (["1", "true", "yes", "on"].includes(raw)) return true;
  if (["0", "false", "no", "off"].includes(raw)) return false;
  throw new ConfigError(`${name} must be true or false, got '${env[name]}'.`);
}

function postgresUrl(env: Env, name: string): URL | null {
  const raw = env[name];
  if (raw === undefined || raw === "") return null;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(`${name} is not a valid URL (expected postgres://user:password@host:5432/database).`);
  }
  if (url.protocol !== "postgres:" && url.protocol !== "postgresql:") {
    throw new ConfigError(`${name} must start with postgres:// or postgresql://, got '${url.protocol}//'.`);
  }
  if (!url.hostname) throw new ConfigError(`${name} has no host name.`);
  return url;
}

function databaseNameOf(url: URL, name: string): string {
  const db = decodeURIComponent(url.pathname.replace(/^\//, ""));
  if (!/^[a-z_][a-z0-9_]{0,50}$/.test(db)) {
    throw new ConfigError(
      `${name} must name the database in lowercase letters, digits and underscores (e.g. /switchboard), got '${db || "(none)"}'.`,
    );
  }
  return db;
}

const ROLE_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/** Secrets that the embedded/dev setup generates once and keeps in the data folder. */
function devSecrets(dataDir: string): Record<string, string> {
  mkdirSync(dataDir, { recursive: true });
  const file = resolve(dataDir, "dev-secrets.json");
  let secrets: Record<string, string> = {};
  if (existsSync(file)) secrets = JSON.parse(readFileSync(file, "utf8")) as Record<string, string>;
  let changed = false;
  for (const key of ["superuserPassword", "ownerPassword", "authenticatorPassword", "jwtSecret", "localTwilioAuthToken"]) {
    if (!secrets[key]) {
      secrets[key] = randomBytes(24).toString("base64url");
      changed = true;
    }
  }
  // The key of secrets at rest (src/secrets.ts) must be exactly 32 bytes.
  if (!secrets.secretsKey) {
    secrets.secretsKey = randomBytes(32).toString("base64");
    changed = true;
  }
  if (changed) writeFileSync(file, JSON.stringify(secrets, null, 2), { mode: 0o600 });
  return secrets;
}

export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

export function withCredentials(url: string, user: string, password: string): string {
  const u = new URL(url);
  u.username = encodeURIComponent(user);
  u.password = encodeURIComponent(password);
  return u.toString();
}

/** --seed / SEED_DEMO: the demo's users have a published password, so production refuses it. */
function seedDemoOf(env: Env, argv: string[], production: boolean): boolean {
  const seed = argv.includes("--seed") || bool(env, "SEED_DEMO", false);
  if (seed && production) {
    throw new ConfigError("The demo data (--seed, SEED_DEMO) is not loaded in production: its users have a published password.");
  }
  return seed;
}

export function loadConfig(env: Env = process.env, argv: string[] = []): Config {
  const production = env.NODE_ENV === "production";
  const dataDir = resolve(projectRoot, env.SWITCHBOARD_DATA_DIR || ".data");
  const port = int(env, "PORT", 3000, 0, 65535);
  const embeddedPort = int(env, "EMBEDDED_PG_PORT", 54329, 1024, 65535);
  const host = env.HOST || (production ? "0.0.0.0" : "127.0.0.1");

  const dbUrl = postgresUrl(env, "DATABASE_URL");
  const authUrl = postgresUrl(env, "AUTH_DATABASE_URL");
  const rootUrl = postgresUrl(env, "ROOT_DATABASE_URL");
  const shadowUrl = postgresUrl(env, "SHADOW_DATABASE_URL");

  let database: DatabaseSource;
  if (!dbUrl) {
    if (authUrl) throw new ConfigError("AUTH_DATABASE_URL is set but DATABASE_URL is not: set both, or neither to use the embedded PostgreSQL.");
    if (production) throw new ConfigError("NODE_ENV=production needs DATABASE_URL: the embedded PostgreSQL is for development and tests only.");
    database = { kind: "embedded", rootUrl: null, ownerUrl: null, authUrl: null, shadowUrl: null, databaseName: "switchboard" };
  } else {
    const databaseName = databaseNameOf(dbUrl, "DATABASE_URL");
    if (authUrl) {
      // Owner + authenticator given: the roles and database already exist.
      database = {
        kind: "external",
        rootUrl: rootUrl?.toString() ?? null,
        ownerUrl: dbUrl.toString(),
        authUrl: authUrl.toString(),
        shadowUrl: shadowUrl?.toString() ?? null,
        databaseName,
      };
    } else {
      // DATABASE_URL is a superuser: we create roles and database ourselves.
      database = {
        kind: "external",
        rootUrl: rootUrl?.toString() ?? withDatabase(dbUrl.toString(), "postgres"),
        ownerUrl: null,
        authUrl: null,
        shadowUrl: shadowUrl?.toString() ?? null,
        databaseName,
      };
    }
  }

  const roles = {
    owner: env.DATABASE_OWNER || `${database.databaseName}_owner`,
    authenticator: env.DATABASE_AUTHENTICATOR || `${database.databaseName}_authenticator`,
    visitor: env.DATABASE_VISITOR || `${database.databaseName}_visitor`,
  };
  for (const [key, value] of Object.entries(roles)) {
    if (!ROLE_NAME.test(value)) {
      throw new ConfigError(`DATABASE_${key.toUpperCase()} must be a lowercase role name, got '${value}'.`);
    }
  }

  const secrets = production ? {} : devSecrets(dataDir);
  const jwtSecret = env.JWT_SECRET || secrets.jwtSecret || "";
  if (!jwtSecret) throw new ConfigError("JWT_SECRET is required in production (at least 32 characters, e.g. `openssl rand -base64 48`).");
  if (jwtSecret.length < 32) throw new ConfigError(`JWT_SECRET must be at least 32 characters long (it has ${jwtSecret.length}).`);

  const needsRolePasswords = database.ownerUrl === null;
  const ownerPassword = env.DATABASE_OWNER_PASSWORD || secrets.ownerPassword || "";
  const authenticatorPassword = env.DATABASE_AUTHENTICATOR_PASSWORD || secrets.authenticatorPassword || "";
  if (needsRolePasswords && production && (!ownerPassword || !authenticatorPassword)) {
    throw new ConfigError(
      "In production, creating the database roles needs DATABASE_OWNER_PASSWORD and DATABASE_AUTHENTICATOR_PASSWORD (or give AUTH_DATABASE_URL for roles you created).",
    );
  }

  const noWorker = argv.includes("--no-worker");
  return {
    production,
    host,
    port,
    dataDir,
    embeddedPort,
    database,
    roles,
    ownerPassword,
    authenticatorPassword,
    jwtSecret,
    worker: { enabled: !noWorker && bool(env, "WORKER_ENABLED", true), concurrency: int(env, "WORKER_CONCURRENCY", 4, 1, 64) },
    graphql: {
      depthLimit: int(env, "GRAPHQL_DEPTH_LIMIT", 12, 2, 100),
      maxPageSize: int(env, "GRAPHQL_MAX_PAGE_SIZE", 200, 1, 10000),
      statementTimeoutMs: int(env, "STATEMENT_TIMEOUT_MS", production ? 15000 : 0, 0, 3_600_000),
      ...graphqlLimits(env),
    },
    seedDemo: seedDemoOf(env, argv, production),
    healthToken: healthTokenOf(env),
    telephony: telephonyConfig(env, secrets, production),
    email: emailConfig(env),
    serviceTitan: serviceTitanConfig(env, secrets),
    trustProxy: int(env, "TRUST_PROXY", 0, 0, 10),
    rateLimits: rateLimitConfig(env),
    webhooks: {
      timeoutMs: int(env, "WEBHOOK_TIMEOUT_MS", 10_000, 100, 60_000),
      concurrency: int(env, "WEBHOOK_CONCURRENCY", 8, 1, 64),
      allowPrivateTargets: bool(env, "WEBHOOK_ALLOW_PRIVATE_TARGETS", false),
    },
    forms: {
      perAddress: int(env, "FORM_LIMIT_PER_ADDRESS", 10, 1, 1_000_000),
      perForm: int(env, "FORM_LIMIT_PER_FORM", 600, 1, 10_000_000),
      windowSeconds: int(env, "FORM_LIMIT_WINDOW_SECONDS", 600, 1, 86_400),
      maxBodyBytes: int(env, "FORM_MAX_BODY_BYTES", 16_384, 1_024, 1_048_576),
      captchaVerifyUrl: env.CAPTCHA_VERIFY_URL?.trim() || null,
      captchaSecret: env.CAPTCHA_SECRET?.trim() || null,
    },
  };
}

function rateLimitConfig(env: Env): RateLimitSettings {
  const settings: RateLimitSettings = {
    windowSeconds: int(env, "RATE_LIMIT_WINDOW_SECONDS", 900, 10, 86_400),
    loginPerAddress: int(env, "LOGIN_LIMIT_PER_ADDRESS", 30, 1, 1_000_000),
    loginPerAccount: int(env, "LOGIN_LIMIT_PER_ACCOUNT", 100, 1, 1_000_000),
    loginFreeAttempts: int(env, "LOGIN_FREE_ATTEMPTS", 3, 1, 1_000),
    loginBackoffBaseSeconds: int(env, "LOGIN_BACKOFF_BASE_SECONDS", 1, 1, 3_600),
    loginBackoffMaxSeconds: int(env, "LOGIN_BACKOFF_MAX_SECONDS", 900, 1, 86_400),
    registerPerAddress: int(env, "REGISTER_LIMIT_PER_ADDRESS", 10, 1, 1_000_000),
    acceptInvitationPerAddress: int(env, "ACCEPT_INVITATION_LIMIT_PER_ADDRESS", 20, 1, 1_000_000),
    verifyEmailPerAddress: int(env, "VERIFY_EMAIL_LIMIT_PER_ADDRESS", 20, 1, 1_000_000),
    resetPasswordPerAddress: int(env, "RESET_PASSWORD_LIMIT_PER_ADDRESS", 10, 1, 1_000_000),
    resetPasswordPerAccount: int(env, "RESET_PASSWORD_LIMIT_PER_ACCOUNT", 5, 1, 1_000_000),
    changePasswordPerAddress: int(env, "CHANGE_PASSWORD_LIMIT_PER_ADDRESS", 10, 1, 1_000_000),
    changePasswordPerAccount: int(env, "CHANGE_PASSWORD_LIMIT_PER_ACCOUNT", 10, 1, 1_000_000),
  };
  if (settings.loginBackoffMaxSeconds < settings.loginBackoffBaseSeconds) {
    throw new ConfigError(
      `LOGIN_BACKOFF_MAX_SECONDS (${settings.loginBackoffMaxSeconds}) must be at least LOGIN_BACKOFF_BASE_SECONDS (${settings.loginBackoffBaseSeconds}).`,
    );
  }
  return settings;
}

/** Request limits of /graphql (src/api/limits.ts, docs/configuration.md). */
function graphqlLimits(env: Env): Omit<Config["graphql"], "depthLimit" | "maxPageSize" | "statementTimeoutMs"> {
  const maxPageSize = int(env, "GRAPHQL_MAX_PAGE_SIZE", 200, 1, 10000);
  const defaultPageSize = int(env, "GRAPHQL_DEFAULT_PAGE_SIZE", Math.min(50, maxPageSize), 1, 10000);
  if (defaultPageSize > maxPageSize) {
    throw new ConfigError(`GRAPHQL_DEFAULT_PAGE_SIZE (${defaultPageSize}) must not be more than GRAPHQL_MAX_PAGE_SIZE (${maxPageSize}).`);
  }
  return {
    maxBodyBytes: int(env, "GRAPHQL_MAX_BODY_BYTES", 102_400, 1024, 5 * 1024 * 1024),
    maxTokens: int(env, "GRAPHQL_MAX_TOKENS", 2000, 50, 100_000),
    maxAliases: int(env, "GRAPHQL_MAX_ALIASES", 30, 0, 10_000),
    maxRootFields: int(env, "GRAPHQL_MAX_ROOT_FIELDS", 20, 1, 1000),
    maxCost: int(env, "GRAPHQL_MAX_COST", 50_000, 100, 100_000_000),
    defaultPageSize,
  };
}

function serviceTitanConfig(env: Env, secrets: Record<string, string>): ServiceTitanSettings {
  const rawKey = env.SECRETS_KEY?.trim() || secrets.secretsKey || "";
  let secretsKey: Buffer | null = null;
  if (rawKey) {
    try {
      secretsKey = parseSecretsKey(rawKey);
    } catch (error) {
      throw new ConfigError((error as Error).message);
    }
  }
  return {
    secretsKey,
    authBaseUrl: httpUrl(env, "SERVICETITAN_AUTH_BASE_URL"),
    apiBaseUrl: httpUrl(env, "SERVICETITAN_API_BASE_URL"),
    timeoutMs: int(env, "SERVICETITAN_TIMEOUT_MS", 30_000, 1000, 300_000),
  };
}

function httpUrl(env: Env, name: string): string | null {
  const raw = env[name]?.trim();
  if (!raw) return null;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(`${name} is not a valid URL (expected e.g. https://switchboard.example.com).`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new ConfigError(`${name} must start with http:// or https://.`);
  return url.toString().replace(/\/$/, "");
}

function healthTokenOf(env: Env): string | null {
  const token = env.HEALTH_TOKEN?.trim() || null;
  if (token && token.length < 24) throw new ConfigError(`HEALTH_TOKEN must be at least 24 characters long (it has ${token.length}).`);
  return token;
}

function telephonyConfig(env: Env, secrets: Record<string, string>, production: boolean): TelephonyConfig {
  const accountSid = env.TWILIO_ACCOUNT_SID?.trim() || "";
  const authToken = env.TWILIO_AUTH_TOKEN?.trim() || "";
  if (Boolean(accountSid) !== Boolean(authToken)) {
    throw new ConfigError("Set both TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN, or neither (then texts use the local provider).");
  }
  if (accountSid && !/^AC[0-9a-fA-F]{32}$/.test(accountSid)) {
    throw new ConfigError(`TWILIO_ACCOUNT_SID must be AC followed by 32 hexadecimal digits, got '${accountSid}'.`);
  }
  const requested = env.SMS_PROVIDER?.trim().toLowerCase() || (accountSid ? "twilio" : "local");
  if (requested !== "twilio" && requested !== "local") throw new ConfigError(`SMS_PROVIDER must be twilio or local, got '${env.SMS_PROVIDER}'.`);
  if (requested === "twilio" && !accountSid) throw new ConfigError("SMS_PROVIDER=twilio needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN.");
  const publicUrl = httpUrl(env, "PUBLIC_URL");
  if (production && !publicUrl?.startsWith("https://")) {
    // Every Twilio signature is computed over the https address Twilio calls: without it, or over http,
    // every webhook would be refused (and webhook URLs given to Twilio would be wrong).
    throw new ConfigError(
      `In production PUBLIC_URL must be the https:// address Twilio and email recipients reach this server at (got ${publicUrl ? `'${publicUrl}'` : "nothing"}).`,
    );
  }
  // No Twilio and no dev secret (production): nobody can sign a webhook, a random token makes every webhook a 403.
  const webhookAuthToken = authToken || env.LOCAL_TWILIO_AUTH_TOKEN || secrets.localTwilioAuthToken || randomBytes(24).toString("base64url");
  const aiEnv = { AI_PROVIDER: env.AI_PROVIDER, AI_BASE_URL: env.AI_BASE_URL, AI_API_KEY: env.AI_API_KEY, AI_MODEL: env.AI_MODEL, AI_TIMEOUT_MS: env.AI_TIMEOUT_MS };
  return {
    publicUrl,
    smsProvider: requested,
    twilio: accountSid ? { accountSid, authToken, apiBaseUrl: httpUrl(env, "TWILIO_API_BASE_URL") } : null,
    webhookAuthToken,
    aiEnv,
  };
}

const EMAIL_ADDRESS = /^[^\s@<>]+@[^\s@<>]+\.[^\s@<>]+$/;

/** EMAIL_FROM as "Name <address>" or a bare address. */
function parseFrom(raw: string): { name: string | null; address: string } | null {
  const match = /^\s*(?:"?([^"<]*?)"?\s*<([^<>]+)>|([^<>\s]+))\s*$/.exec(raw);
  if (!match) return null;
  const address = (match[2] ?? match[3] ?? "").trim();
  if (!EMAIL_ADDRESS.test(address)) return null;
  return { name: match[1]?.trim() || null, address };
}

function emailConfig(env: Env): EmailConfig {
  const rawUrl = env.SMTP_URL?.trim() || "";
  if (rawUrl) {
    let url: URL;
    try {
      url = new URL(rawUrl);
    } catch {
      throw new ConfigError("SMTP_URL is not a valid URL (expected e.g. smtp://user:password@smtp.example.com:587).");
    }
    if (url.protocol !== "smtp:" && url.protocol !== "smtps:") throw new ConfigError("SMTP_URL must start with smtp:// or smtps://.");
  }
  const requested = env.EMAIL_PROVIDER?.trim().toLowerCase() || (rawUrl ? "smtp" : "local");
  if (requested !== "smtp" && requested !== "local") throw new ConfigError(`EMAIL_PROVIDER must be smtp or local, got '${env.EMAIL_PROVIDER}'.`);
  if (requested === "smtp" && !rawUrl) throw new ConfigError("EMAIL_PROVIDER=smtp needs SMTP_URL (e.g. smtp://user:password@smtp.example.com:587).");
  const rawFrom = env.EMAIL_FROM?.trim() || "";
  if (requested === "smtp" && !rawFrom) throw new ConfigError("Sending through SMTP_URL needs EMAIL_FROM, the sender address (e.g. Switchboard <no-reply@example.com>).");
  const from = rawFrom ? parseFrom(rawFrom) : { name: "Switchboard", address: "no-reply@switchboard.localhost" };
  if (!from) throw new ConfigError(`EMAIL_FROM must be an address or "Name <address>", got '${rawFrom}'.`);
  return { provider: requested, smtpUrl: requested === "smtp" ? rawUrl : null, from, timeoutMs: int(env, "SMTP_TIMEOUT_MS", 30_000, 1_000, 600_000) };
}

/** The superuser password of the embedded cluster (dev only). */
export function embeddedSuperuserPassword(dataDir: string): string {
  return devSecrets(dataDir).superuserPassword ?? "";
}
