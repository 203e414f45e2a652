/**
 * From a tenant's stored ServiceTitan connection (app_private.service_titan_connection_for_sync) to a
 * ServiceTitanClient: the secret is decrypted with SECRETS_KEY, and clients are kept per tenant while
 * the settings stay the same, so a token is reused across sync jobs until it expires.
 */
import type { ServiceTitanSettings } from "../config.ts";
import { decryptSecret } from "../secrets.ts";
import { ServiceTitanClient, type RequestLimiter, type ServiceTitanConfig, type ServiceTitanEnvironment } from "./serviceTitan.ts";

/** A row of app_private.service_titan_connection_for_sync(tenant). */
export interface StoredConnection {
  client_id: string;
  client_secret_encrypted: Buffer;
  key_fingerprint: string;
  app_key: string;
  service_titan_tenant_id: string;
  environment: ServiceTitanEnvironment;
  enabled: boolean;
}

/** The client configuration of a connection; throws SecretsKeyError when the secret can't be decrypted. */
export function connectionConfig(settings: ServiceTitanSettings, connection: Omit<StoredConnection, "enabled">): ServiceTitanConfig {
  if (!settings.secretsKey) throw new Error("SECRETS_KEY is not set: stored ServiceTitan credentials cannot be read.");
  return {
    clientId: connection.client_id,
    clientSecret: decryptSecret(settings.secretsKey, connection.client_secret_encrypted, connection.key_fingerprint),
    appKey: connection.app_key,
    tenantId: connection.service_titan_tenant_id,
    environment: connection.environment,
    authBaseUrl: settings.authBaseUrl,
    apiBaseUrl: settings.apiBaseUrl,
    timeoutMs: settings.timeoutMs,
  };
}

const clients = new Map<string, { signature: string; client: ServiceTitanClient }>();

/**
 * The tenant's client, new when its settings changed since the last call. `limiter` makes the
 * requests of every process count together (services().serviceTitanLimiter); without it the
 * client's limit holds in this process only.
 */
export function clientForTenant(
  tenantId: string,
  settings: ServiceTitanSettings,
  connection: StoredConnection,
  limiter?: (key: string, holdMs: number) => RequestLimiter,
): ServiceTitanClient {
  const signature = JSON.stringify([
    connection.client_id,
    connection.client_secret_encrypted.toString("base64"),
    connection.app_key,
    connection.service_titan_tenant_id,
    connection.environment,
    settings.authBaseUrl,
    settings.apiBaseUrl,
    settings.timeoutMs,
  ]);
  const cached = clients.get(tenantId);
  if (cached?.signature === signature) return cached.client;
  cached?.client.close();
  const client = new ServiceTitanClient(connectionConfig(settings, connection), limiter ? { limiter } : {});
  clients.set(tenantId, { signature, client });
  return client;
}

/** Closes every cached client (worker shutdown, tests). */
export function closeServiceTitanClients(): void {
  for (const { client } of clients.values()) client.close();
  clients.clear();
}
