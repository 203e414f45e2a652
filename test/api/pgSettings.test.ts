/** The PostgreSQL settings each GraphQL request runs with. */
import { describe, expect, it } from "vitest";
import { pgSettingsFor } from "../../src/api/auth.ts";

describe("request settings", () => {
  it("always run as the visitor role, with only the verified claims", () => {
    const settings = pgSettingsFor(
      { userId: "11111111-1111-1111-1111-111111111111", tenantId: "22222222-2222-2222-2222-222222222222", sessionId: "33333333-3333-3333-3333-333333333333" },
      "app_visitor",
      0,
    );
    expect(settings).toEqual({
      role: "app_visitor",
      "app.current_user_id": "11111111-1111-1111-1111-111111111111",
      "app.current_tenant_id": "22222222-2222-2222-2222-222222222222",
      "app.current_session_id": "33333333-3333-3333-3333-333333333333",
    });
  });

  it("anonymous requests set nothing but the role; API keys pass the key for PostgreSQL to verify", () => {
    expect(pgSettingsFor({}, "app_visitor", 0)).toEqual({ role: "app_visitor" });
    expect(pgSettingsFor(undefined, "app_visitor", 0)).toEqual({ role: "app_visitor" });
    expect(pgSettingsFor({ apiKey: "sbk_x" }, "app_visitor", 0)).toEqual({ role: "app_visitor", "app.current_api_key": "sbk_x" });
  });

  it("apply the statement timeout when one is configured (production default 15 s)", () => {
    expect(pgSettingsFor({}, "app_visitor", 15000).statement_timeout).toBe("15000");
    expect(pgSettingsFor({}, "app_visitor", 0).statement_timeout).toBeUndefined();
  });
});
