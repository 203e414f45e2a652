/**
 * Authentication middleware: verifies the bearer token (a JWT signed by PostGraphile with our
 * secret, or an API key) and turns it into the request's PostgreSQL settings. Whether the session,
 * membership and API key are still valid is decided by PostgreSQL on every statement
 * (app_public.current_tenant_id() and friends), so logout and member removal apply at once.
 */
import type { NextFunction, Request, Response } from "express";
import { errors as joseErrors, jwtVerify } from "jose";

export const JWT_ISSUER = "switchboard";
export const JWT_AUDIENCE = "switchboard";
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const API_KEY = /^sbk_[0-9a-f]{32}_[0-9a-f]{64}$/;

export interface RequestAuth {
  userId?: string;
  tenantId?: string;
  sessionId?: string;
  apiKey?: string;
}

declare global {
  namespace Express {
    interface Request {
      switchboardAuth?: RequestAuth;
    }
  }
}

function reject(res: Response, message: string, code: string): void {
  res.status(401).set("WWW-Authenticate", 'Bearer realm="switchboard"').json({ errors: [{ message, extensions: { code } }] });
}

export function authMiddleware(jwtSecret: string) {
  const key = new TextEncoder().encode(jwtSecret);
  return async (req: Request, res: Response, next: NextFunction): Promise<void> => {
    const header = req.headers.authorization;
    const apiKeyHeader = req.headers["x-api-key"];
    if (typeof apiKeyHeader === "string" && apiKeyHeader !== "") {
      if (!API_KEY.test(apiKeyHeader)) return reject(res, "The API key is malformed.", "INVALID_API_KEY");
      req.switchboardAuth = { apiKey: apiKeyHeader };
      return next();
    }
    if (!header) {
      req.switchboardAuth = {};
      return next();
    }
    const match = /^Bearer\s+(\S+)$/i.exec(header);
    if (!match?.[1]) return reject(res, "The Authorization header must be 'Bearer <token>'.", "INVALID_TOKEN");
    const token = match[1];
    if (token.startsWith("sbk_")) {
      if (!API_KEY.test(token)) return reject(res, "The API key is malformed.", "INVALID_API_KEY");
      req.switchboardAuth = { apiKey: token };
      return next();
    }
    try {
      const { payload } = await jwtVerify(token, key, { algorithms: ["HS256"], issuer: JWT_ISSUER, audience: JWT_AUDIENCE });
      const claim = (name: string) => {
        const value = payload[name];
        return typeof value === "string" && UUID.test(value) ? value : undefined;
      };
      if (typeof payload.exp !== "number") return reject(res, "The token has no expiry.", "INVALID_TOKEN");
      req.switchboardAuth = { userId: claim("user_id"), tenantId: claim("tenant_id"), sessionId: claim("session_id") };
      return next();
    } catch (error) {
      if (error instanceof joseErrors.JWTExpired) return reject(res, "The token has expired: log in again.", "TOKEN_EXPIRED");
      return reject(res, "The token is invalid.", "INVALID_TOKEN");
    }
  };
}

/** PostgreSQL settings for one GraphQL request (applied with `set local` by PostGraphile). */
export function pgSettingsFor(auth: RequestAuth | undefined, visitorRole: string, statementTimeoutMs: number): Record<string, string> {
  const settings: Record<string, string> = { role: visitorRole };
  if (auth?.userId) settings["app.current_user_id"] = auth.userId;
  if (auth?.tenantId) settings["app.current_tenant_id"] = auth.tenantId;
  if (auth?.sessionId) settings["app.current_session_id"] = auth.sessionId;
  if (auth?.apiKey) settings["app.current_api_key"] = auth.apiKey;
  if (statementTimeoutMs > 0) settings.statement_timeout = String(statementTimeoutMs);
  return settings;
}
