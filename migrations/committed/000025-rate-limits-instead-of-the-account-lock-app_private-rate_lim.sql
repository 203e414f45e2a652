--! Previous: sha1:08c5d5e13e175f7006516778cf472f36c86e11e8
--! Hash: sha1:e81304108dd855452fd3314ce80195860d3574ea
--! Message: Rate limits instead of the account lock: app_private.rate_limits holds the login and register counters (rate-limiter-flexible's PostgreSQL store, written by the API server through the owner's pool), login no longer locks an account, existing locks are cleared

-- Issue 14, point 4: rate limits instead of the account lock.

-- The counters of the login and register rate limits (src/api/rateLimit.ts). rate-limiter-flexible's
-- RateLimiterPostgres reads and writes this table with its own statements (tableCreated: true, so it
-- never creates it): the columns are the library's, in its order.
create table if not exists app_private.rate_limits (
  key varchar(255) primary key,
  points integer not null default 0,
  expire bigint
);
create index if not exists rate_limits_expire_idx on app_private.rate_limits (expire);
alter table app_private.rate_limits enable row level security;
alter table app_private.rate_limits force row level security;
drop policy if exists owner_all on app_private.rate_limits;
create policy owner_all on app_private.rate_limits for all to :DATABASE_OWNER using (true) with check (true);
-- The API server keeps the counters through the owner's pool; no role a request can become has any
-- right on the table (app_private is never granted to the authenticator or the visitor).

comment on table app_private.rate_limits is 'Counters of the rate limits on login and register, shared by every API process (rate-limiter-flexible''s PostgreSQL store; src/api/rateLimit.ts). Written only by the API server through the owner''s pool, never by a request. Rows expire by themselves and are deleted an hour after.';
comment on column app_private.rate_limits.key is 'What is counted: <flow>:<kind>:<client address and/or a hash of the account''s email>, e.g. login:address:203.0.113.7.';
comment on column app_private.rate_limits.points is 'Attempts counted in the current window (for a wait key: more than 1 means wait until expire).';
comment on column app_private.rate_limits.expire is 'When the window ends, in milliseconds since 1970 (the library''s format); NULL never expires.';

-- The account lock is gone (a stranger could use it to keep the real user out); nobody stays locked.
update app_private.user_secrets set locked_until = null where locked_until is not null;
comment on column app_private.user_secrets.locked_until is 'No longer set (logins are rate limited per client address and per account instead, src/api/rateLimit.ts); kept for history.';

--! Included identity/login.sql
create or replace function app_public.login(email text, password text) returns app_public.jwt_token
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_email text := pg_catalog.btrim(login.email);
  v_user_id uuid;
  v_secret app_private.user_secrets;
  v_tenant_id uuid;
  v_session app_public.user_sessions;
begin
  if v_email is not null and v_email <> '' then
    select u.id into v_user_id from app_public.users u where u.email = v_email::public.citext;
  end if;
  if v_user_id is not null then
    select s.* into v_secret from app_private.user_secrets s where s.user_id = v_user_id for update;
  end if;

  if v_secret.user_id is null then
    -- Unknown email: spend the same time as a real check, then fail.
    perform public.crypt(coalesce(login.password, ''), public.gen_salt('bf', 10));
    return null;
  end if;

  if login.password is null or public.crypt(login.password, v_secret.password_hash) <> v_secret.password_hash then
    update app_private.user_secrets s set
      failed_login_attempts = case
        when s.first_failed_login_at is null or s.first_failed_login_at <= pg_catalog.now() - interval '15 minutes' then 1
        else s.failed_login_attempts + 1
      end,
      first_failed_login_at = case
        when s.first_failed_login_at is null or s.first_failed_login_at <= pg_catalog.now() - interval '15 minutes' then pg_catalog.now()
        else s.first_failed_login_at
      end
    where s.user_id = v_user_id;
    -- No lock: a stranger could use it to keep the real user out. The API rate limits attempts per
    -- client address and per account before this function runs (src/api/rateLimit.ts).
    return null;
  end if;

  update app_private.user_secrets s set
    failed_login_attempts = 0,
    first_failed_login_at = null,
    locked_until = null
  where s.user_id = v_user_id
    and (s.failed_login_attempts <> 0 or s.first_failed_login_at is not null or s.locked_until is not null);

  -- The tenant of the most recently used session that is still a membership, else the oldest membership.
  select s.tenant_id into v_tenant_id
  from app_public.user_sessions s
  join app_public.memberships m on m.tenant_id = s.tenant_id and m.user_id = s.user_id
  where s.user_id = v_user_id
  order by s.last_used_at desc, s.created_at desc
  limit 1;
  if v_tenant_id is null then
    select m.tenant_id into v_tenant_id
    from app_public.memberships m
    where m.user_id = v_user_id
    order by m.created_at, m.tenant_id
    limit 1;
  end if;

  v_session := app_private.create_session(v_user_id, v_tenant_id);
  insert into app_public.user_status (user_id, last_seen_at) values (v_user_id, pg_catalog.now())
    on conflict (user_id) do update set last_seen_at = excluded.last_seen_at;
  return app_private.session_jwt(v_session.id);
end;
$$;

comment on function app_public.login(text, text) is E'@behavior -queryField -mutationField\nLogs in with email and password and returns a token for a new session in your most recently used tenant. Returns null on any failure (unknown email, wrong password) so that the failed attempt is recorded; the API reports that as 28P01 "Incorrect email or password". The account is never locked: the API limits attempts per client address and per account before calling this function (code RATE_LIMITED).';

grant execute on function app_public.login(text,text) to :DATABASE_VISITOR;
--! EndIncluded identity/login.sql
