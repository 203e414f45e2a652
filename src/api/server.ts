/**
 * The HTTP server: Express 4 with /healthz, Twilio webhooks at /webhooks/twilio, the unsubscribe link of
 * emails at /email/unsubscribe, public lead forms at /f, the auth middleware and PostGraphile (grafserv) at /graphql.
 */
import express from "express";
import { createHash, timingSafeEqual } from "node:crypto";
import { createServer, type Server } from "node:http";
import type pg from "pg";
import { postgraphile, type PostGraphileInstance } from "postgraphile";
import { grafserv } from "postgraphile/grafserv/express/v4";
import type { Config } from "../config.ts";
import { latestCommittedMigration } from "../db/migrate.ts";
import { authMiddleware } from "./auth.ts";
import { MAX_REQUEST_BYTES } from "./importPlugin.ts";
import { graphqlBodyParser } from "./limits.ts";
import { makePreset } from "./preset.ts";
import { twilioWebhooks } from "../webhooks/twilio.ts";
import { unsubscribeRoutes } from "../webhooks/unsubscribe.ts";
import { leadFormRoutes } from "../webhooks/leadForms.ts";

export interface ApiServer {
  server: Server;
  pgl: PostGraphileInstance;
  url: string;
  close(): Promise<void>;
}

export type WorkerState = () => "running" | "stopped" | "not in this process";

interface Health {
  ok: boolean;
  database: { reachable: boolean; error?: string };
  migrations: { current: boolean; expected: string | null; applied: string | null };
  worker: { state: string };
}

async function health(ownerPool: pg.Pool, workerState: WorkerState): Promise<Health> {
  const latest = latestCommittedMigration();
  const result: Health = {
    ok: false,
    database: { reachable: false },
    migrations: { current: false, expected: latest?.file ?? null, applied: null },
    worker: { state: workerState() },
  };
  try {
    await ownerPool.query("select 1");
    result.database.reachable = true;
    const { rows } = await ownerPool.query<{ filename: string; hash: string }>(
      "select filename, hash from graphile_migrate.migrations order by date desc, filename desc limit 1",
    );
    result.migrations.applied = rows[0]?.filename ?? null;
    result.migrations.current = (rows[0]?.hash ?? null) === (latest?.hash ?? null);
  } catch (error) {
    result.database.error = (error as Error).message;
  }
  result.ok = result.database.reachable && result.migrations.current && result.worker.state !== "stopped";
  return result;
}

const sha256 = (text: string) => createHash("sha256").update(text).digest();

/**
 * /healthz shows its details (database error, migration file names, worker state) only to operators:
 * a request with the HEALTH_TOKEN (as `Authorization: Bearer …` or `X-Health-Token`), or one made on
 * this machine directly (loopback, and no proxy header: a reverse proxy on the same host forwards
 * strangers from loopback too). Everyone else learns only up (200) or down (503).
 */
export function healthDetailsAllowed(req: express.Request, healthToken: string | null): boolean {
  const given = req.header("x-health-token") ?? /^Bearer\s+(.+)$/i.exec(req.header("authorization") ?? "")?.[1];
  if (healthToken && given && timingSafeEqual(sha256(given), sha256(healthToken))) return true;
  const remote = req.socket.remoteAddress ?? "";
  const loopback = /^(?:127\.|::1$|::ffff:127\.)/.test(remote);
  return loopback && req.header("x-forwarded-for") === undefined && req.header("forwarded") === undefined && req.header("x-real-ip") === undefined;
}

export async function startApiServer(options: {
  config: Config;
  authPool: pg.Pool;
  ownerPool: pg.Pool;
  workerState: WorkerState;
  port?: number;
}): Promise<ApiServer> {
  const { config } = options;
  const app = express();
  app.disable("x-powered-by");
  const server = createServer(app);
  app.get("/healthz", async (req, res) => {
    const body = await health(options.ownerPool, options.workerState);
    res.status(body.ok ? 200 : 503).json(healthDetailsAllowed(req, config.healthToken) ? body : { ok: body.ok });
  });
  let ownUrl = "";
  app.use(
    "/webhooks/twilio",
    twilioWebhooks({ ownerPool: options.ownerPool, authToken: config.telephony.webhookAuthToken, publicUrl: () => config.telephony.publicUrl ?? ownUrl }),
  );
  app.use("/email/unsubscribe", unsubscribeRoutes({ ownerPool: options.ownerPool }));
  app.use("/f", leadFormRoutes({ ownerPool: options.ownerPool, settings: config.forms, jwtSecret: config.jwtSecret, trustProxy: config.trustProxy }));
  app.use("/graphql", authMiddleware(config.jwtSecret));
  // Request limits start here: the body is read with its cap before grafserv sees it (src/api/limits.ts).
  app.use("/graphql", graphqlBodyParser(config.graphql.maxBodyBytes, MAX_REQUEST_BYTES, config.graphql));
  const pgl = postgraphile(makePreset(config, options.authPool, options.ownerPool));
  // Build the GraphQL schema before listening: a request that arrives while it is still being built
  // would otherwise wait at most grafserv's schemaWaitTime and then fail ("Schema isn't ready"), which
  // a busy machine reaches.
  await pgl.getSchema();
  const serv = pgl.createServ(grafserv);
  await serv.addTo(app, server);
  const port = options.port ?? config.port;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, config.host, () => resolve());
  });
  const address = server.address();
  const actualPort = typeof address === "object" && address ? address.port : port;
  const shownHost = config.host === "0.0.0.0" ? "localhost" : config.host;
  ownUrl = `http://${shownHost}:${actualPort}`;
  return {
    server,
    pgl,
    url: `http://${shownHost}:${actualPort}`,
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      await pgl.release();
    },
  };
}
