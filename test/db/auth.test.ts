/**
 * Identity and tenancy in SQL, as the roles that use them: register, login throttling, logout,
 * switching tenants, inviting and removing members, API keys, and role rules inside a tenant.
 */
import { describe, expect, it } from "vitest";
import {
  addMember,
  becomeAnonymous,
  becomeApiKey,
  becomeRoot,
  becomeUser,
  expectSqlError,
  PASSWORD,
  registerUser,
  uniqueEmail,
  withRootDb,
} from "../helpers.ts";

describe("register", () => {
  it("creates the user, a tenant they own, their profile, settings and a session, and returns a token", async () => {
    await withRootDb(async (client) => {
      await becomeAnonymous(client);
      const email = uniqueEmail("Founder");
      const { rows } = await client.query(
        "select t.* from app_public.register($1, $2, 'Acme Heating', 'Ada', 'Lovelace', 'America/Denver') t",
        [email, PASSWORD],
      );
      const token = rows[0];
      expect(token.user_id).toMatch(/^[0-9a-f-]{36}$/);
      expect(Number(token.exp)).toBeGreaterThan(Date.now() / 1000);
      await becomeRoot(client);
      const check = await client.query(
        `select u.email::text, m.role, t.business_name, s.timezone, p.first_name,
                (select count(*) from app_public.user_sessions where user_id = u.id and revoked_at is null) as sessions,
                exists(select 1 from app_public.user_preferences where user_id = u.id) as prefs,
                exists(select 1 from app_public.user_status where user_id = u.id) as status
           from app_public.users u
           join app_public.memberships m on m.user_id = u.id
           join app_public.tenants t on t.id = m.tenant_id
           join app_public.business_settings s on s.tenant_id = t.id
           join app_public.user_profiles p on p.user_id = u.id and p.tenant_id = t.id
          where u.id = $1`,
        [token.user_id],
      );
      expect(check.rows).toEqual([
        { email, role: "owner", business_name: "Acme Heating", timezone: "America/Denver", first_name: "Ada", sessions: "1", prefs: true, status: true },
      ]);
      // Same email, different case: still the same account.
      await becomeAnonymous(client);
      const dup = await expectSqlError(client, "23505", () =>
        client.query("select app_public.register($1, $2, 'Other', null, null, null)", [email.toUpperCase(), PASSWORD]),
      );
      expect(dup.message).toMatch(/already exists/i);
    });
  });

  it.each([
    ["a malformed email", "not-an-email", PASSWORD, "Biz", "America/New_York", /email/i],
    ["a weak password", "weak@example.test", "short1", "Biz", "America/New_York", /password/i],
    ["a password without a digit or symbol", "weak2@example.test", "onlylettersherefolks", "Biz", "America/New_York", /password/i],
    ["an invalid timezone", "tz@example.test", PASSWORD, "Biz", "Mars/Olympus_Mons", /timezone/i],
    ["a blank business name", "blank@example.test", PASSWORD, "   ", "America/New_York", /business name/i],
  ])("rejects %s with 22023 and writes nothing", async (_label, email, password, business, timezone, message) => {
    await withRootDb(async (client) => {
      await becomeAnonymous(client);
      const error = await expectSqlError(client, "22023", () =>
        client.query("select app_public.register($1, $2, $3, null, null, $4)", [email, password, business, timezone]),
      );
      expect(error.message).toMatch(message);
      await becomeRoot(client);
      const { rows } = await client.query("select count(*)::int as n from app_public.users where email = $1", [email]);
      expect(rows[0].n).toBe(0);
      const tenants = await client.query("select count(*)::int as n from app_public.tenants where business_name = $1", [business]);
      expect(tenants.rows[0].n).toBe(0);
    });
  });
});

describe("login", () => {
  it("returns a token for the right password and NULL for a wrong password or unknown email", async () => {
    await withRootDb(async (client) => {
      const user = await registerUser(client);
      await becomeAnonymous(client);
      const ok = await client.query("select t.* from app_public.login($1, $2) t", [user.email.toUpperCase(), PASSWORD]);
      expect(ok.rows[0].user_id).toBe(user.user_id);
      expect(ok.rows[0].tenant_id).toBe(user.tenant_id);
      expect(ok.rows[0].session_id).not.toBe(user.session_id);
      const wrong = await client.query("select app_public.login($1, 'wrong-password-1') is null as failed", [user.email]);
      expect(wrong.rows[0].failed).toBe(true);
      const unknown = await client.query("select app_public.login($1, $2) is null as failed", [uniqueEmail("nobody"), PASSWORD]);
      expect(unknown.rows[0].failed).toBe(true);
    });
  });

  it("never locks the account: failures are recorded, and the right password still works after many (the API rate limits instead)", async () => {
    await withRootDb(async (client) => {
      const user = await registerUser(client);
      await becomeAnonymous(client);
      for (let i = 0; i < 8; i++) {
        const r = await client.query("select app_public.login($1, 'wrong-password-1') is null as failed", [user.email]);
        expect(r.rows[0].failed).toBe(true);
      }
      await becomeRoot(client);
      const recorded = await client.query(
        "select failed_login_attempts, first_failed_login_at is not null as started, locked_until from app_private.user_secrets where user_id = $1",
        [user.user_id],
      );
      expect(recorded.rows[0]).toEqual({ failed_login_attempts: 8, started: true, locked_until: null });
      await becomeAnonymous(client);
      const ok = await client.query("select app_public.login($1, $2) is null as failed", [user.email, PASSWORD]);
      expect(ok.rows[0].failed).toBe(false);
      await becomeRoot(client);
      const reset = await client.query("select failed_login_attempts, first_failed_login_at from app_private.user_secrets where user_id = $1", [user.user_id]);
      expect(reset.rows[0]).toEqual({ failed_login_attempts: 0, first_failed_login_at: null });
    });
  });

  it("a lock set before the rate limits existed is ignored", async () => {
    await withRootDb(async (client) => {
      const user = await registerUser(client);
      await becomeRoot(client);
      await client.query("update app_private.user_secrets set locked_until = now() + interval '1 hour' where user_id = $1", [user.user_id]);
      await becomeAnonymous(client);
      const ok = await client.query("select app_public.login($1, $2) is null as failed", [user.email, PASSWORD]);
      expect(ok.rows[0].failed).toBe(false);
    });
  });
});

describe("sessions and tenants", () => {
  it("logout revokes the session at once", async () => {
    await withRootDb(async (client) => {
      const user = await registerUser(client);
      await becomeUser(client, user);
      expect((await client.query("select app_public.current_user_id() as id")).rows[0].id).toBe(user.user_id);
      expect((await client.query("select app_public.logout() as ok")).rows[0].ok).toBe(true);
      const after = await client.query("select app_public.current_user_id() as u, app_public.current_tenant_id() as t");
      expect(after.rows[0]).toEqual({ u: null, t: null });
      expect((await client.query("select count(*)::int as n from app_public.tenants")).rows[0].n).toBe(0);
    });
  });

  it("switch_tenant only moves to a tenant the user belongs to", async () => {
    await withRootDb(async (client) => {
      const user = await registerUser(client, { businessName: "First" });
      const other = await registerUser(client, { businessName: "Second" });
      const stranger = await registerUser(client, { businessName: "Stranger" });
      await client.query("insert into app_public.memberships (tenant_id, user_id, role) values ($1, $2, 'agent')", [other.tenant_id, user.user_id]);
      await becomeUser(client, user);
      const switched = await client.query("select t.* from app_public.switch_tenant($1) t", [other.tenant_id]);
      expect(switched.rows[0].tenant_id).toBe(other.tenant_id);
      expect(switched.rows[0].session_id).toBe(user.session_id);
      const notMember = await expectSqlError(client, "42501", () => client.query("select app_public.switch_tenant($1)", [stranger.tenant_id]));
      expect(notMember.message).toMatch(/not a member/i);
      // An unknown tenant id gives the same answer: existence is not revealed.
      await expectSqlError(client, "42501", () => client.query("select app_public.switch_tenant(gen_random_uuid())"));
      await becomeAnonymous(client);
      await expectSqlError(client, "28000", () => client.query("select app_public.switch_tenant($1)", [other.tenant_id]));
    });
  });
});

describe("members and roles", () => {
  it("an invitation is pending until the invited address, verified, accepts it with the emailed token: registering or being invited joins nobody", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const existing = await registerUser(client);
      await becomeUser(client, owner);
      const toExisting = await client.query("select r.* from app_public.invite_member($1, 'manager') r", [existing.email]);
      const newcomer = uniqueEmail("newcomer");
      const toNewcomer = await client.query("select r.* from app_public.invite_member($1, 'agent') r", [newcomer]);
      // Same shape either way: nothing says whether the address has an account.
      for (const r of [toExisting.rows[0], toNewcomer.rows[0]]) {
        expect(r.membership_id).toBeNull();
        expect(r.user_id).toBeNull();
        expect(r.invitation_id).toBeTypeOf("string");
      }
      const members = await client.query("select user_id from app_public.memberships");
      expect(members.rows.map((r) => r.user_id)).toEqual([owner.user_id]);

      // The newcomer registers without a business: an account, a verification email, no membership.
      await becomeAnonymous(client);
      const { rows } = await client.query("select t.* from app_public.register($1, $2, null, null, null, null) t", [newcomer, PASSWORD]);
      expect(rows[0].tenant_id).toBeNull();
      await becomeRoot(client);
      expect((await client.query("select count(*)::int as n from app_public.memberships where user_id = $1", [rows[0].user_id])).rows[0].n).toBe(0);
      const tokenOf = async (to: string, pattern: RegExp) => {
        await becomeRoot(client);
        const email = await client.query("select body_text, purpose, tenant_id from app_public.email_messages where to_email = $1 and body_text ~ $2 order by created_at desc limit 1", [to, pattern.source]);
        expect(email.rows[0].purpose).toBe("transactional");
        expect(email.rows[0].tenant_id).toBeNull();
        return pattern.exec(email.rows[0].body_text)![0];
      };
      const invitationToken = await tokenOf(newcomer, /sbi_[0-9a-f]{64}/);
      // Only the hash is stored.
      const stored = await client.query("select count(*)::int as n from app_private.invitation_tokens where token_hash = digest($1, 'sha256')", [invitationToken]);
      expect(stored.rows[0].n).toBe(1);
      const newcomerSession = { user_id: rows[0].user_id, tenant_id: null, session_id: rows[0].session_id };
      await becomeUser(client, newcomerSession);
      await expectSqlError(client, "55000", () => client.query("select app_public.accept_invitation($1)", [invitationToken]));
      await becomeAnonymous(client);
      const verificationToken = await tokenOf(newcomer, /sbv_[0-9a-f]{64}/);
      await becomeAnonymous(client);
      expect((await client.query("select app_public.verify_email($1) as ok", [verificationToken])).rows[0].ok).toBe(true);
      await expectSqlError(client, "P0002", () => client.query("select app_public.verify_email($1)", [verificationToken]));
      await becomeUser(client, newcomerSession);
      const joined = await client.query("select app_public.accept_invitation($1) as t", [invitationToken]);
      expect(joined.rows[0].t).toBe(owner.tenant_id);
      await becomeRoot(client);
      const role = await client.query("select role from app_public.memberships where tenant_id = $1 and user_id = $2", [owner.tenant_id, rows[0].user_id]);
      expect(role.rows[0].role).toBe("agent");

      // The existing user joins only when they accept (verified here by hand; verifyEmail is tested above).
      const existingToken = await tokenOf(existing.email, /sbi_[0-9a-f]{64}/);
      await client.query("update app_public.users set email_verified_at = now() where id = $1", [existing.user_id]);
      await becomeUser(client, existing);
      await client.query("select app_public.accept_invitation($1)", [existingToken]);
      await becomeUser(client, owner);
      const after = await client.query("select user_id, role from app_public.memberships order by role");
      expect(after.rows).toContainEqual({ user_id: existing.user_id, role: "manager" });
      await expectSqlError(client, "23505", () => client.query("select app_public.invite_member($1, 'agent')", [existing.email]));
    });
  });

  it("agents can't invite, admins can't appoint or remove owners, and the last owner stays", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const admin = await addMember(client, owner.tenant_id!, "admin");
      const agent = await addMember(client, owner.tenant_id!, "agent");
      await becomeUser(client, agent);
      await expectSqlError(client, "42501", () => client.query("select app_public.invite_member($1, 'agent')", [uniqueEmail()]));
      await expectSqlError(client, "42501", () => client.query("select app_public.remove_member($1)", [admin.user_id]));
      await becomeUser(client, admin);
      await expectSqlError(client, "42501", () => client.query("select app_public.invite_member($1, 'owner')", [uniqueEmail()]));
      await expectSqlError(client, "42501", () => client.query("select app_public.remove_member($1)", [owner.user_id]));
      await expectSqlError(client, "P0002", () => client.query("select app_public.remove_member(gen_random_uuid())"));
      await becomeUser(client, owner);
      const last = await expectSqlError(client, "42501", () => client.query("select app_public.remove_member($1)", [owner.user_id]));
      expect(last.message).toMatch(/owner/i);
    });
  });

  it("a removed member sees nothing on their very next statement", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const agent = await addMember(client, owner.tenant_id!, "agent");
      await becomeUser(client, agent);
      expect((await client.query("select count(*)::int as n from app_public.tenants")).rows[0].n).toBe(1);
      await becomeUser(client, owner);
      expect((await client.query("select app_public.remove_member($1) as ok", [agent.user_id])).rows[0].ok).toBe(true);
      await becomeUser(client, agent);
      expect((await client.query("select app_public.current_tenant_id() as t")).rows[0].t).toBeNull();
      expect((await client.query("select count(*)::int as n from app_public.tenants")).rows[0].n).toBe(0);
      expect((await client.query("select count(*)::int as n from app_public.business_settings")).rows[0].n).toBe(0);
    });
  });

  it("agents and managers can read but not change tenant settings; admins can", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      const admin = await addMember(client, owner.tenant_id!, "admin");
      for (const role of ["agent", "manager"] as const) {
        const member = await addMember(client, owner.tenant_id!, role);
        await becomeUser(client, member);
        expect((await client.query("select count(*)::int as n from app_public.business_settings")).rows[0].n).toBe(1);
        const e = await expectSqlError(client, "42501", () => client.query("update app_public.business_settings set auto_response_message = 'hi'"));
        expect(e.message).toMatch(/owners and admins/i);
        await expectSqlError(client, "42501", () => client.query("update app_public.tenants set business_name = 'Hijacked'"));
        await expectSqlError(client, "42501", () =>
          client.query("insert into app_public.system_config (key, value, value_type) values ('x.y', '1', 'number')"),
        );
      }
      await becomeUser(client, admin);
      const updated = await client.query("update app_public.business_settings set auto_response_message = 'We will call you back' returning auto_response_message");
      expect(updated.rows[0].auto_response_message).toBe("We will call you back");
    });
  });

  it("settings are validated: IANA timezone, business hours shape, typed config values", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      await becomeUser(client, owner);
      const tz = await expectSqlError(client, "22023", () => client.query("update app_public.business_settings set timezone = 'Europe/Atlantis'"));
      expect(tz.message).toMatch(/timezone/i);
      const hours = await expectSqlError(client, "22023", () =>
        client.query(`update app_public.business_settings set business_hours = '{"monday": {"open": "18:00", "close": "09:00", "enabled": true}}'`),
      );
      expect(hours.message).toMatch(/monday.*before close/i);
      await expectSqlError(client, "23514", () =>
        client.query("insert into app_public.system_config (key, value, value_type) values ('a.flag', '\"yes\"', 'boolean')"),
      );
      const ok = await client.query("update app_public.business_settings set timezone = 'Europe/Paris' returning timezone");
      expect(ok.rows[0].timezone).toBe("Europe/Paris");
    });
  });
});

describe("API keys", () => {
  it("are shown once, stored hashed, act for their tenant, and stop working when revoked", async () => {
    await withRootDb(async (client) => {
      const owner = await registerUser(client);
      await becomeUser(client, owner);
      const created = await client.query("select k.* from app_public.create_api_key('CRM sync', 'agent') k");
      const key = created.rows[0];
      const secret: string = key.secret;
      expect(secret).toMatch(/^sbk_[0-9a-f]{32}_[0-9a-f]{64}$/);
      await becomeRoot(client);
      const stored = await client.query("select encode(key_hash, 'hex') as h from app_private.api_key_secrets where tenant_id = $1", [owner.tenant_id]);
      expect(stored.rows).toHaveLength(1);
      expect(JSON.stringify(stored.rows)).not.toContain(secret.split("_")[2]);
      await becomeApiKey(client, secret);
      expect((await client.query("select app_public.current_tenant_id() as t")).rows[0].t).toBe(owner.tenant_id);
      expect((await client.query("select count(*)::int as n from app_public.tenants")).rows[0].n).toBe(1);
      // One changed character: not a key.
      const tampered = secret.slice(0, -1) + (secret.endsWith("0") ? "1" : "0");
      await becomeApiKey(client, tampered);
      expect((await client.query("select app_public.current_tenant_id() as t")).rows[0].t).toBeNull();
      await becomeUser(client, owner);
      const apiKeyId = (await client.query("select id from app_public.api_keys where name = 'CRM sync'")).rows[0].id;
      await client.query("select app_public.revoke_api_key($1)", [apiKeyId]);
      await becomeApiKey(client, secret);
      expect((await client.query("select app_public.current_tenant_id() as t")).rows[0].t).toBeNull();
    });
  });
});
