/**
 * `saveServiceTitanConnection`: saves the current tenant's ServiceTitan settings and tests them, in one
 * transaction on the request's own connection settings (visitor role, RLS, the admin check of
 * app_hidden.save_service_titan_connection). The client secret is encrypted here with SECRETS_KEY
 * (src/secrets.ts) so that neither the key nor the secret reaches SQL; GraphQL can never read it back.
 * The test asks ServiceTitan for a token and one technician; its outcome is stored
 * (service_titan_connections.status) and returned. The first working connection starts a full sync.
 */
import { sideEffectWithPgClientTransaction } from "postgraphile/@dataplan/pg";
import { access, object, SafeError, type Step } from "postgraphile/grafast";
import { extendSchema, gql } from "postgraphile/utils";
import type { ServiceTitanSettings } from "../config.ts";
import { ServiceTitanClient, type ServiceTitanEnvironment } from "../providers/serviceTitan.ts";
import { encryptSecret, keyFingerprint } from "../secrets.ts";

interface SaveInput {
  clientId: string;
  clientSecret: string;
  appKey: string;
  serviceTitanTenantId: string;
  environment?: string | null;
}

/** The test gives up sooner than a sync would: a person is waiting for the answer. */
const TEST_TIMEOUT_MS = 15_000;

export function makeServiceTitanPlugin(settings: ServiceTitanSettings): GraphileConfig.Plugin {
  return extendSchema((build) => {
    const executor = build.input.pgRegistry.pgExecutors.main!;
    const connections = Object.values(build.input.pgRegistry.pgResources).find(
      (r) => !r.parameters && r.codec.extensions?.pg?.schemaName === "app_public" && r.codec.extensions?.pg?.name === "service_titan_connections",
    );
    if (!connections) throw new Error("ServiceTitanPlugin: the table app_public.service_titan_connections is missing (migration 000017).");

    return {
      typeDefs: gql`
        input SaveServiceTitanConnectionInput {
          "The OAuth client id of the tenant's ServiceTitan app connection."
          clientId: String!
          "The OAuth client secret. Stored encrypted; never readable again through the API."
          clientSecret: String!
          "The application key (ST-App-Key)."
          appKey: String!
          "ServiceTitan's numeric tenant id."
          serviceTitanTenantId: String!
          "production (default) or integration."
          environment: String
        }
        type SaveServiceTitanConnectionPayload {
          "The saved connection, with the outcome of the test in status and lastTestError."
          connection: ServiceTitanConnection
          "True when ServiceTitan gave a token and answered a request with these settings."
          ok: Boolean!
          "Why the test failed, in words; null when it worked."
          error: String
        }
        extend type Mutation {
          """
          Saves the current tenant's ServiceTitan connection and tests it at once (a token and one technician).
          The settings are saved even when the test fails (status failed, with the reason), so they can be fixed;
          syncs run only for a connection whose last test worked. The first working connection starts a full sync
          of every table. Owners and admins. Errors: 42501 not allowed; 22023 an empty or malformed value;
          55000 the server has no SECRETS_KEY to encrypt the secret with.
          """
          saveServiceTitanConnection(input: SaveServiceTitanConnectionInput!): SaveServiceTitanConnectionPayload
        }
      `,
      plans: {
        Mutation: {
          saveServiceTitanConnection(_: unknown, fieldArgs: { getRaw(path: string): Step }) {
            const $input = fieldArgs.getRaw("input");
            const $result = sideEffectWithPgClientTransaction(executor, $input, async (client, raw) => {
              const input = raw as SaveInput;
              if (!settings.secretsKey) {
                throw new SafeError("The server has no SECRETS_KEY, so it cannot store credentials: set it and restart.", { code: "55000" });
              }
              if (!input.clientSecret || input.clientSecret.trim() === "" || input.clientSecret.length > 500) {
                throw new SafeError("clientSecret must not be empty (and at most 500 characters)", { code: "22023" });
              }
              const environment = input.environment ?? "production";
              // SQL checks the role and the values first, before anything leaves for ServiceTitan.
              const saved = await client.query<{ tenant_id: string }>({
                text: "select tenant_id from app_hidden.save_service_titan_connection($1, $2, $3, $4, $5, $6)",
                values: [
                  input.clientId,
                  encryptSecret(settings.secretsKey, input.clientSecret.trim()),
                  keyFingerprint(settings.secretsKey),
                  input.appKey,
                  input.serviceTitanTenantId,
                  environment,
                ],
              });
              const tenantId = saved.rows[0]!.tenant_id;
              let error: string | null = null;
              const st = new ServiceTitanClient({
                clientId: input.clientId.trim(),
                clientSecret: input.clientSecret.trim(),
                appKey: input.appKey.trim(),
                tenantId: input.serviceTitanTenantId,
                environment: environment as ServiceTitanEnvironment,
                authBaseUrl: settings.authBaseUrl,
                apiBaseUrl: settings.apiBaseUrl,
                timeoutMs: Math.min(settings.timeoutMs, TEST_TIMEOUT_MS),
                maxAttempts: 2,
              });
              try {
                await st.testConnection();
              } catch (e) {
                error = (e as Error).message;
              } finally {
                st.close();
              }
              await client.query({ text: "select app_hidden.record_service_titan_connection_test($1)", values: [error] });
              return { tenantId, ok: error === null, error };
            });
            return object({ result: $result });
          },
        },
        SaveServiceTitanConnectionPayload: {
          connection($payload: { get(key: string): Step }) {
            const $result = $payload.get("result");
            return connections.get({ tenant_id: access($result, "tenantId") });
          },
          ok($payload: { get(key: string): Step }) {
            return access($payload.get("result"), "ok");
          },
          error($payload: { get(key: string): Step }) {
            return access($payload.get("result"), "error");
          },
        },
      },
    };
  });
}
