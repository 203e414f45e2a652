--! Previous: -
--! Hash: sha1:5e6d7d0143cc40317d1955ec7efc454e34f938d3
--! Message: foundation: tenants, identity, auth, RLS

--------------------------------------------------------------------------------
-- Switchboard foundation schema: tenants, users, memberships, sessions, settings,
-- API keys, and the row-level security that keeps tenants apart.
--
-- This file is idempotent (graphile-migrate re-runs it on every change): it drops
-- and recreates its four schemas. It runs as :DATABASE_OWNER, which therefore owns
-- every object created here. Read docs/CONTRACT-foundation.md for the interface the
-- TypeScript side relies on (settings, helpers, functions, SQLSTATEs).
--------------------------------------------------------------------------------

drop schema if exists app_public, app_hidden, app_private, raw cascade;

-- Functions we create must not be executable by PUBLIC unless we say so.
-- (Global form: a per-schema "revoke" cannot remove the built-in PUBLIC grant.)
alter default privileges revoke execute on functions from public;

create schema app_public;
create schema app_hidden;
create schema app_private;
create schema raw;

comment on schema app_public is $$Switchboard's public API: the tables, types and functions that PostGraphile exposes as GraphQL.

Row-level security is enabled AND forced on every table in app_public, app_hidden, app_private and raw. Because it is forced, the owner role (:DATABASE_OWNER: migrations, the worker and SECURITY DEFINER functions) is subject to policies too, so every table has a policy "owner_all" (for all to :DATABASE_OWNER using (true) with check (true)). The request role :DATABASE_VISITOR gets narrow per-command policies that read the request context only through app_public.current_tenant_id() and friends.

Errors raised by Switchboard functions use only these SQLSTATEs (messages are written for people):
  22023  invalid input; the message names the field (email, password, timezone, business hours, role, ...)
  23505  duplicate (e.g. "An account with this email already exists")
  28P01  wrong email or password, or account locked (login returns NULL; the API raises 28P01 with one message for all three)
  28000  not logged in / no valid session
  42501  not allowed (role rules, not a member of the tenant, row-level security)
  P0002  not found
Constraint violations keep PostgreSQL's own codes (23514 check, 23503 foreign key, 23502 not null, 23505 unique) and carry constraint names that read as sentences (e.g. tenants_business_name_must_not_be_blank), which the API turns into messages.$$;
comment on schema app_hidden is 'Helpers the request role may execute (policy helpers, validators) but that are not exposed through GraphQL. Row-level security is forced on any table here; see the comment on schema app_public.';
comment on schema app_private is 'Secrets (password and API-key hashes) and SECURITY DEFINER internals. Never granted to the request role. Row-level security is forced on every table here, with an owner_all policy for :DATABASE_OWNER.';
comment on schema raw is 'Caches of external systems (ServiceTitan), written by the worker. Row-level security is forced on every table here, with an owner_all policy for :DATABASE_OWNER.';

grant usage on schema app_public, app_hidden, raw to :DATABASE_VISITOR;
-- Nothing in app_private is granted to the visitor.

--------------------------------------------------------------------------------
-- Request context helpers (docs/CONTRACT-foundation.md, "Helpers").
-- Written in PL/pgSQL so they can be created before the tables they read.
--------------------------------------------------------------------------------

create function app_private.uuid_setting(setting_name text) returns uuid
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_value text := pg_catalog.current_setting(setting_name, true);
begin
  -- Missing, '' (pooled connections reset settings to '') and garbage all become NULL.
  if v_value is not null
     and v_value ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
    return v_value::uuid;
  end if;
  return null;
end;
$$;
comment on function app_private.uuid_setting(text) is 'The named setting as a uuid, or NULL when it is missing, empty or not a canonical uuid. Never raises.';

create function app_public.current_session_id() returns uuid
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_session_id uuid := app_private.uuid_setting('app.current_session_id');
  v_user_id uuid := app_private.uuid_setting('app.current_user_id');
begin
  if v_session_id is null or v_user_id is null then
    return null;
  end if;
  return (
    select s.id
    from app_public.user_sessions s
    where s.id = v_session_id
      and s.user_id = v_user_id
      and s.revoked_at is null
      and s.expires_at > pg_catalog.now()
  );
end;
$$;
comment on function app_public.current_session_id() is 'The id of the current session: only if it exists, is not revoked, has not expired and belongs to the current user; otherwise null.';

create function app_public.current_user_id() returns uuid
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  -- current_session_id() already checked that the session belongs to this user.
  if app_public.current_session_id() is null then
    return null;
  end if;
  return app_private.uuid_setting('app.current_user_id');
end;
$$;
comment on function app_public.current_user_id() is 'The id of the logged-in user (the user of a valid session), or null.';

create function app_public.current_api_key_id() returns uuid
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_key text := pg_catalog.current_setting('app.current_api_key', true);
  v_hex text;
begin
  if v_key is null or v_key = '' then
    return null;
  end if;
  -- Format: sbk_<api key id, 32 hex digits>_<secret, 64 hex digits>
  v_hex := pg_catalog.substring(v_key, '^sbk_([0-9a-f]{32})_[0-9a-f]{64}$');
  if v_hex is null then
    return null;
  end if;
  return (
    select k.id
    from app_public.api_keys k
    join app_private.api_key_secrets s on s.api_key_id = k.id and s.tenant_id = k.tenant_id
    where k.id = v_hex::uuid
      and k.revoked_at is null
      and s.key_hash = public.digest(v_key, 'sha256')
  );
end;
$$;
comment on function app_public.current_api_key_id() is 'The id of the API key this request authenticated with (its SHA-256 matches and it is not revoked), or null.';

create function app_public.current_tenant_id() returns uuid
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid := app_private.uuid_setting('app.current_tenant_id');
  v_user_id uuid;
  v_key_id uuid;
  v_key_tenant_id uuid;
begin
  if v_tenant_id is not null then
    v_user_id := app_public.current_user_id();
    if v_user_id is not null and exists (
      select 1 from app_public.memberships m
      where m.tenant_id = v_tenant_id and m.user_id = v_user_id
    ) then
      return v_tenant_id;
    end if;
  end if;

  v_key_id := app_public.current_api_key_id();
  if v_key_id is not null then
    select k.tenant_id into v_key_tenant_id from app_public.api_keys k where k.id = v_key_id;
    -- An API key only ever acts in its own tenant; the tenant setting may be omitted.
    if v_tenant_id is null or v_tenant_id = v_key_tenant_id then
      return v_key_tenant_id;
    end if;
  end if;

  return null;
end;
$$;
comment on function app_public.current_tenant_id() is 'The tenant this request acts in: the token''s tenant if the session is valid and the user is (still) a member of it, or the tenant of a valid API key; otherwise null. Checked on every statement, so logout and member removal apply at once.';

create function app_public.current_user_role() returns text
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid := app_public.current_tenant_id();
  v_role text;
begin
  if v_tenant_id is null then
    return null;
  end if;
  select m.role into v_role
  from app_public.memberships m
  where m.tenant_id = v_tenant_id and m.user_id = app_public.current_user_id();
  if v_role is null then
    select k.role into v_role
    from app_public.api_keys k
    where k.id = app_public.current_api_key_id() and k.tenant_id = v_tenant_id;
  end if;
  return v_role;
end;
$$;
comment on function app_public.current_user_role() is 'Your role in the current tenant (owner, admin, manager or agent), or the role of the API key in use; null outside a tenant.';

create function app_hidden.current_user_has_role(minimum text) returns boolean
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select coalesce(
    pg_catalog.array_position(array['agent', 'manager', 'admin', 'owner']::text[], app_public.current_user_role())
      >= pg_catalog.array_position(array['agent', 'manager', 'admin', 'owner']::text[], minimum),
    false
  );
$$;
comment on function app_hidden.current_user_has_role(text) is 'True when the current role in the current tenant is at least the given one (owner > admin > manager > agent). False outside a tenant or for an unknown role name.';

--------------------------------------------------------------------------------
-- Validators
--------------------------------------------------------------------------------

create function app_hidden.is_valid_email(email text) returns boolean
  language sql immutable
  set search_path to pg_catalog, public, pg_temp
as $$
  select email is not null
    and pg_catalog.length(email) <= 254
    and email ~ '^[A-Za-z0-9.!#$%&''*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$';
$$;
comment on function app_hidden.is_valid_email(text) is 'True for a plausible email address (the HTML living standard''s rule, with a dot in the domain, at most 254 characters).';

create function app_hidden.business_hours_problem(hours jsonb) returns text
  language plpgsql immutable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_day text;
  v_value jsonb;
  v_open text;
  v_close text;
begin
  if hours is null then
    return 'Business hours are required';
  end if;
  if pg_catalog.jsonb_typeof(hours) <> 'object' then
    return 'Business hours must be an object keyed by day, e.g. {"monday": {"open": "09:00", "close": "17:00", "enabled": true}}';
  end if;
  for v_day, v_value in select e.key, e.value from pg_catalog.jsonb_each(hours) e loop
    if v_day not in ('monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday') then
      return pg_catalog.format('Invalid business hours: unknown day "%s" (use monday to sunday)', v_day);
    end if;
    if pg_catalog.jsonb_typeof(v_value) <> 'object'
       or not (v_value ? 'open' and v_value ? 'close' and v_value ? 'enabled')
       or exists (select 1 from pg_catalog.jsonb_object_keys(v_value) k where k not in ('open', 'close', 'enabled')) then
      return pg_catalog.format('Invalid business hours for %s: use exactly {"open": "HH:MM", "close": "HH:MM", "enabled": true|false}', v_day);
    end if;
    if pg_catalog.jsonb_typeof(v_value -> 'enabled') <> 'boolean' then
      return pg_catalog.format('Invalid business hours for %s: enabled must be true or false', v_day);
    end if;
    v_open := v_value ->> 'open';
    v_close := v_value ->> 'close';
    if pg_catalog.jsonb_typeof(v_value -> 'open') <> 'string' or v_open !~ '^([01][0-9]|2[0-3]):[0-5][0-9]$' then
      return pg_catalog.format('Invalid business hours for %s: open must be a 24-hour time like "09:00"', v_day);
    end if;
    if pg_catalog.jsonb_typeof(v_value -> 'close') <> 'string' or v_close !~ '^([01][0-9]|2[0-3]):[0-5][0-9]$' then
      return pg_catalog.format('Invalid business hours for %s: close must be a 24-hour time like "17:00"', v_day);
    end if;
    if v_open >= v_close then
      return pg_catalog.format('Invalid business hours for %s: open (%s) must be before close (%s)', v_day, v_open, v_close);
    end if;
  end loop;
  return null;
end;
$$;
comment on function app_hidden.business_hours_problem(jsonb) is 'What is wrong with a business hours document, as a message for people, or null when it is valid.';

create function app_public.is_valid_business_hours(hours jsonb) returns boolean
  language sql immutable
  set search_path to pg_catalog, public, pg_temp
as $$
  select app_hidden.business_hours_problem(hours) is null;
$$;
comment on function app_public.is_valid_business_hours(jsonb) is 'True when the document is valid business hours: an object whose keys are days (monday to sunday; a missing day is closed), each {"open": "HH:MM", "close": "HH:MM", "enabled": true|false} with open before close.';

create function app_public.is_valid_timezone(timezone text) returns boolean
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select is_valid_timezone.timezone is not null
    and exists (select 1 from pg_catalog.pg_timezone_names z where z.name = is_valid_timezone.timezone);
$$;
comment on function app_public.is_valid_timezone(text) is 'True when the name is an IANA time zone this server knows, such as America/New_York.';

create function app_private.validate_email(email text) returns public.citext
  language plpgsql immutable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_email text := pg_catalog.btrim(email);
begin
  if not coalesce(app_hidden.is_valid_email(v_email), false) then
    raise exception 'Invalid email address' using errcode = '22023';
  end if;
  return v_email::public.citext;
end;
$$;
comment on function app_private.validate_email(text) is 'Trims and checks an email address; raises 22023 "Invalid email address" when it is not one.';

create function app_private.validate_password(password text) returns void
  language plpgsql immutable
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if password is null
     or pg_catalog.length(password) < 10
     or password !~ '[[:alpha:]]'
     or password !~ '[^[:alpha:][:space:]]' then
    raise exception 'Invalid password: use at least 10 characters, with a letter and a digit or symbol' using errcode = '22023';
  end if;
end;
$$;
comment on function app_private.validate_password(text) is 'Raises 22023 unless the password has at least 10 characters, a letter, and a digit or symbol.';

create function app_private.validate_timezone(timezone text) returns void
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if not app_public.is_valid_timezone(timezone) then
    raise exception 'Unknown timezone ''%'': use an IANA name such as America/New_York', timezone using errcode = '22023';
  end if;
end;
$$;
comment on function app_private.validate_timezone(text) is 'Raises 22023 unless the name is a known IANA time zone.';

--------------------------------------------------------------------------------
-- Generic trigger functions
--------------------------------------------------------------------------------

create function app_private.tg__timestamps() returns trigger
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  NEW.created_at := (case when TG_OP = 'INSERT' then pg_catalog.now() else OLD.created_at end);
  NEW.updated_at := (case
    when TG_OP = 'UPDATE' and OLD.updated_at >= pg_catalog.now() then OLD.updated_at + interval '1 millisecond'
    else pg_catalog.now()
  end);
  return NEW;
end;
$$;
comment on function app_private.tg__timestamps() is 'Trigger (_100_timestamps): sets created_at on insert and keeps it on update; sets updated_at, always moving forward.';

create function app_private.tg__require_tenant_role() returns trigger
  language plpgsql volatile
  -- SECURITY INVOKER on purpose: it must see who is really acting.
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_minimum text := coalesce(TG_ARGV[0], 'admin');
  v_what text := coalesce(TG_ARGV[1], pg_catalog.replace(TG_TABLE_NAME, '_', ' '));
  v_trusted boolean;
begin
  -- The table owner (migrations, worker, SECURITY DEFINER functions) and superusers are trusted.
  select r.rolsuper or c.relowner = r.oid into v_trusted
  from pg_catalog.pg_class c, pg_catalog.pg_roles r
  where c.oid = TG_RELID and r.rolname = current_user;

  if not coalesce(v_trusted, false) and not app_hidden.current_user_has_role(v_minimum) then
    raise exception 'Only % can change %',
      case v_minimum
        when 'owner' then 'owners'
        when 'admin' then 'owners and admins'
        when 'manager' then 'owners, admins and managers'
        else 'members'
      end,
      v_what
      using errcode = '42501';
  end if;

  if TG_OP = 'DELETE' then
    return OLD;
  end if;
  return NEW;
end;
$$;
comment on function app_private.tg__require_tenant_role() is 'Trigger: raises 42501 "Only owners and admins can change <what>" unless the current role in the tenant is at least TG_ARGV[0] (default admin). TG_ARGV[1] names what is being changed. Gives a clear error where a policy would silently change 0 rows.';

create function app_private.add_job(
  identifier text,
  payload json default '{}',
  queue_name text default null,
  run_at timestamptz default null,
  max_attempts integer default null,
  job_key text default null,
  priority integer default null
) returns bigint
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_job_id bigint;
begin
  select j.id into v_job_id
  from graphile_worker.add_job(
    identifier => add_job.identifier,
    payload => coalesce(add_job.payload, '{}'::json),
    queue_name => add_job.queue_name,
    run_at => add_job.run_at,
    max_attempts => add_job.max_attempts,
    job_key => add_job.job_key,
    priority => add_job.priority
  ) j;
  return v_job_id;
end;
$$;
comment on function app_private.add_job(text, json, text, timestamptz, integer, text, integer) is 'Enqueues a graphile-worker job in the current transaction (so it only runs if the change commits). Returns the job id.';

create function app_private.tg__add_job() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_id uuid;
begin
  if TG_OP = 'DELETE' then
    v_id := OLD.id;
  else
    v_id := NEW.id;
  end if;
  perform app_private.add_job(TG_ARGV[0], pg_catalog.json_build_object(coalesce(TG_ARGV[1], 'id'), v_id));
  return null;
end;
$$;
comment on function app_private.tg__add_job() is 'AFTER trigger: enqueues job TG_ARGV[0] with payload {"id": <row id>}, or {"<TG_ARGV[1]>": <row id>} when a key is given.';

--------------------------------------------------------------------------------
-- Tenants
--------------------------------------------------------------------------------

create table app_public.tenants (
  id uuid primary key default gen_random_uuid(),
  business_name text not null,
  business_address text,
  business_latitude numeric(10, 8),
  business_longitude numeric(11, 8),
  trade_type text,
  service_area_radius integer not null default 25,
  onboarding_completed boolean not null default false,
  onboarding_step integer not null default 1,
  initialized_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint tenants_business_name_must_not_be_blank check (pg_catalog.btrim(business_name) <> ''),
  constraint tenants_business_name_must_be_at_most_255_characters check (pg_catalog.length(business_name) <= 255),
  constraint tenants_business_latitude_must_be_between_minus_90_and_90 check (business_latitude between -90 and 90),
  constraint tenants_business_longitude_must_be_between_minus_180_and_180 check (business_longitude between -180 and 180),
  constraint tenants_trade_type_must_not_be_blank check (pg_catalog.btrim(trade_type) <> ''),
  constraint tenants_service_area_radius_must_be_positive check (service_area_radius > 0),
  constraint tenants_onboarding_step_must_be_at_least_1 check (onboarding_step >= 1)
);
comment on table app_public.tenants is 'A business using Switchboard. Everything else (members, settings, leads) belongs to exactly one tenant; you only ever see your current tenant.';
comment on column app_public.tenants.id is 'The tenant''s id.';
comment on column app_public.tenants.business_name is 'The business''s name, shown to customers and team members.';
comment on column app_public.tenants.business_address is 'The business''s street address.';
comment on column app_public.tenants.business_latitude is 'Latitude of the business address, in degrees (-90 to 90).';
comment on column app_public.tenants.business_longitude is 'Longitude of the business address, in degrees (-180 to 180).';
comment on column app_public.tenants.trade_type is 'The trade the business is in, e.g. plumbing, hvac, electrical.';
comment on column app_public.tenants.service_area_radius is 'How far from the business address it takes jobs, in miles.';
comment on column app_public.tenants.onboarding_completed is 'True once the onboarding wizard is finished.';
comment on column app_public.tenants.onboarding_step is 'The onboarding wizard step to show next (starts at 1).';
comment on column app_public.tenants.initialized_at is 'When the tenant''s default configuration was created (by the tenant__initialize job); null until then.';
comment on column app_public.tenants.created_at is 'When the tenant was created.';
comment on column app_public.tenants.updated_at is 'When the tenant was last changed.';

create index tenants_trade_type_idx on app_public.tenants (trade_type);
create index tenants_onboarding_idx on app_public.tenants (onboarding_completed, onboarding_step);

--------------------------------------------------------------------------------
-- Users (global: one account, possibly several tenants)
--------------------------------------------------------------------------------

create table app_public.users (
  id uuid primary key default gen_random_uuid(),
  email public.citext not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint users_email_must_be_unique unique (email),
  constraint users_email_must_be_valid check (app_hidden.is_valid_email(email::text))
);
comment on table app_public.users is 'A person who can log in. A user may belong to several tenants (see memberships); you can see yourself and the members of your current tenant.';
comment on column app_public.users.id is 'The user''s id.';
comment on column app_public.users.email is 'The email address the user logs in with (case-insensitive, unique across Switchboard).';
comment on column app_public.users.created_at is 'When the account was created.';
comment on column app_public.users.updated_at is 'When the account was last changed.';

create table app_private.user_secrets (
  user_id uuid primary key,
  password_hash text not null,
  failed_login_attempts integer not null default 0,
  first_failed_login_at timestamptz,
  locked_until timestamptz,
  password_changed_at timestamptz not null default now(),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint user_secrets_user_must_exist foreign key (user_id) references app_public.users (id) on delete cascade,
  constraint user_secrets_failed_login_attempts_must_not_be_negative check (failed_login_attempts >= 0)
);
comment on table app_private.user_secrets is 'Password hash and login throttling state of each user. Never readable by the request role.';
comment on column app_private.user_secrets.user_id is 'The user these secrets belong to.';
comment on column app_private.user_secrets.password_hash is 'bcrypt hash of the password (pgcrypto crypt() with gen_salt(''bf'', 10)).';
comment on column app_private.user_secrets.failed_login_attempts is 'Failed logins in the current 15-minute window.';
comment on column app_private.user_secrets.first_failed_login_at is 'When the current window of failed logins started.';
comment on column app_private.user_secrets.locked_until is 'Logins are refused until this time (set after 5 failures within 15 minutes).';
comment on column app_private.user_secrets.password_changed_at is 'When the password was last set.';
comment on column app_private.user_secrets.created_at is 'When the row was created.';
comment on column app_private.user_secrets.updated_at is 'When the row was last changed.';

--------------------------------------------------------------------------------
-- Memberships
--------------------------------------------------------------------------------

create table app_public.memberships (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null default app_public.current_tenant_id(),
  user_id uuid not null,
  role text not null default 'agent',
  invited_by uuid,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint memberships_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint memberships_user_must_exist foreign key (user_id) references app_public.users (id) on delete cascade,
  constraint memberships_user_must_be_unique_per_tenant unique (tenant_id, user_id),
  constraint memberships_inviter_must_be_a_member foreign key (tenant_id, invited_by)
    references app_public.memberships (tenant_id, user_id) on delete set null (invited_by),
  constraint memberships_role_must_be_known check (role in ('owner', 'admin', 'manager', 'agent'))
);
comment on table app_public.memberships is 'Who belongs to which tenant, with which role. Changed only through invite_member, remove_member and register.';
comment on column app_public.memberships.id is 'The membership''s id.';
comment on column app_public.memberships.tenant_id is 'The tenant.';
comment on column app_public.memberships.user_id is 'The member.';
comment on column app_public.memberships.role is 'The member''s role: owner, admin, manager or agent (owner > admin > manager > agent).';
comment on column app_public.memberships.invited_by is 'The member who invited this one; null for the tenant''s creator or when the inviter has left.';
comment on column app_public.memberships.created_at is 'When the user joined the tenant.';
comment on column app_public.memberships.updated_at is 'When the membership was last changed.';

create index memberships_user_id_idx on app_public.memberships (user_id);
create index memberships_tenant_id_invited_by_idx on app_public.memberships (tenant_id, invited_by);

--------------------------------------------------------------------------------
-- Invitations
--------------------------------------------------------------------------------

create table app_public.invitations (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null default app_public.current_tenant_id(),
  email public.citext not null,
  role text not null default 'agent',
  invited_by uuid,
  accepted_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint invitations_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint invitations_inviter_must_be_a_member foreign key (tenant_id, invited_by)
    references app_public.memberships (tenant_id, user_id) on delete set null (invited_by),
  constraint invitations_email_must_be_valid check (app_hidden.is_valid_email(email::text)),
  constraint invitations_role_must_be_known check (role in ('owner', 'admin', 'manager', 'agent'))
);
comment on table app_public.invitations is 'An invitation to join a tenant, sent to an email address that has no account yet. Registering with that email turns it into a membership.';
comment on column app_public.invitations.id is 'The invitation''s id.';
comment on column app_public.invitations.tenant_id is 'The tenant the person is invited to.';
comment on column app_public.invitations.email is 'The invited email address (case-insensitive).';
comment on column app_public.invitations.role is 'The role the person gets on joining: owner, admin, manager or agent.';
comment on column app_public.invitations.invited_by is 'The member who sent the invitation; null when sent with an API key or when the inviter has left.';
comment on column app_public.invitations.accepted_at is 'When the invitation was accepted (the person registered); null while pending.';
comment on column app_public.invitations.created_at is 'When the invitation was sent.';
comment on column app_public.invitations.updated_at is 'When the invitation was last changed.';

create unique index invitations_pending_email_must_be_unique_per_tenant
  on app_public.invitations (tenant_id, email) where accepted_at is null;
create index invitations_tenant_id_invited_by_idx on app_public.invitations (tenant_id, invited_by);
create index invitations_pending_email_idx on app_public.invitations (email) where accepted_at is null;

--------------------------------------------------------------------------------
-- User profiles (per tenant), preferences and status (per user)
--------------------------------------------------------------------------------

create table app_public.user_profiles (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null default app_public.current_tenant_id(),
  user_id uuid not null default app_public.current_user_id(),
  first_name text,
  last_name text,
  email public.citext,
  phone_number text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint user_profiles_user_must_be_a_member foreign key (tenant_id, user_id)
    references app_public.memberships (tenant_id, user_id) on delete cascade,
  constraint user_profiles_user_must_be_unique_per_tenant unique (tenant_id, user_id),
  constraint user_profiles_first_name_must_be_at_most_100_characters check (pg_catalog.length(first_name) <= 100),
  constraint user_profiles_last_name_must_be_at_most_100_characters check (pg_catalog.length(last_name) <= 100),
  constraint user_profiles_email_must_be_valid check (email is null or app_hidden.is_valid_email(email::text)),
  constraint user_profiles_phone_number_must_be_e164 check (phone_number ~ '^\+[1-9][0-9]{1,14}$')
);
comment on table app_public.user_profiles is 'How a member appears within one tenant (name, contact details). One per member per tenant; removed with the membership.';
comment on column app_public.user_profiles.id is 'The profile''s id.';
comment on column app_public.user_profiles.tenant_id is 'The tenant this profile belongs to.';
comment on column app_public.user_profiles.user_id is 'The member this profile describes.';
comment on column app_public.user_profiles.first_name is 'First name.';
comment on column app_public.user_profiles.last_name is 'Last name.';
comment on column app_public.user_profiles.email is 'Contact email within this tenant (may differ from the login email).';
comment on column app_public.user_profiles.phone_number is 'Contact phone number in E.164 format, e.g. +15551234567.';
comment on column app_public.user_profiles.created_at is 'When the profile was created.';
comment on column app_public.user_profiles.updated_at is 'When the profile was last changed.';

create table app_public.user_preferences (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null,
  notification_email boolean not null default true,
  notification_sms boolean not null default true,
  notification_push boolean not null default true,
  ai_takeover_delay integer not null default 60,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint user_preferences_user_must_exist foreign key (user_id) references app_public.users (id) on delete cascade,
  constraint user_preferences_user_must_be_unique unique (user_id),
  constraint user_preferences_ai_takeover_delay_must_not_be_negative check (ai_takeover_delay >= 0)
);
comment on table app_public.user_preferences is 'Your personal preferences (one row per user, across all your tenants). Only you can see and change them.';
comment on column app_public.user_preferences.id is 'The row''s id.';
comment on column app_public.user_preferences.user_id is 'The user these preferences belong to.';
comment on column app_public.user_preferences.notification_email is 'Notify me by email.';
comment on column app_public.user_preferences.notification_sms is 'Notify me by text message.';
comment on column app_public.user_preferences.notification_push is 'Notify me by push notification.';
comment on column app_public.user_preferences.ai_takeover_delay is 'Seconds to wait for me to answer a conversation before the AI assistant takes over (0 = at once).';
comment on column app_public.user_preferences.created_at is 'When the row was created.';
comment on column app_public.user_preferences.updated_at is 'When the preferences were last changed.';

create table app_public.user_status (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null,
  is_active boolean not null default true,
  is_online boolean not null default false,
  status text not null default 'available',
  last_seen_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint user_status_user_must_exist foreign key (user_id) references app_public.users (id) on delete cascade,
  constraint user_status_user_must_be_unique unique (user_id),
  constraint user_status_status_must_be_known check (status in ('available', 'busy', 'away', 'offline'))
);
comment on table app_public.user_status is 'Presence of each user (one row per user). You can change your own; members of your current tenant can see each other''s.';
comment on column app_public.user_status.id is 'The row''s id.';
comment on column app_public.user_status.user_id is 'The user.';
comment on column app_public.user_status.is_active is 'False when the account is deactivated.';
comment on column app_public.user_status.is_online is 'True while the user has the app open.';
comment on column app_public.user_status.status is 'Availability: available, busy, away or offline.';
comment on column app_public.user_status.last_seen_at is 'When the user last logged in or was last active.';
comment on column app_public.user_status.created_at is 'When the row was created.';
comment on column app_public.user_status.updated_at is 'When the status was last changed.';

--------------------------------------------------------------------------------
-- Sessions
--------------------------------------------------------------------------------

create table app_public.user_sessions (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null,
  tenant_id uuid,
  last_used_at timestamptz not null default now(),
  expires_at timestamptz not null default (now() + interval '14 days'),
  revoked_at timestamptz,
  user_agent text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint user_sessions_user_must_exist foreign key (user_id) references app_public.users (id) on delete cascade,
  constraint user_sessions_tenant_must_be_a_membership foreign key (tenant_id, user_id)
    references app_public.memberships (tenant_id, user_id) on delete set null (tenant_id)
);
comment on table app_public.user_sessions is 'Your login sessions. The signed token carries the session id; a session stops working when it expires or is revoked (logout).';
comment on column app_public.user_sessions.id is 'The session id (carried in the token as session_id).';
comment on column app_public.user_sessions.user_id is 'The user who logged in.';
comment on column app_public.user_sessions.tenant_id is 'The tenant the session last switched to; null when the user belongs to no tenant (or left it).';
comment on column app_public.user_sessions.last_used_at is 'When the session was last used to log in or switch tenants.';
comment on column app_public.user_sessions.expires_at is 'When the session stops working (14 days after login).';
comment on column app_public.user_sessions.revoked_at is 'When the session was ended by logout; null while active.';
comment on column app_public.user_sessions.user_agent is 'The client that created the session, when known.';
comment on column app_public.user_sessions.created_at is 'When the session was created (login or registration).';
comment on column app_public.user_sessions.updated_at is 'When the session row was last changed.';

create index user_sessions_user_id_idx on app_public.user_sessions (user_id, last_used_at desc);
create index user_sessions_tenant_id_user_id_idx on app_public.user_sessions (tenant_id, user_id);
create index user_sessions_expires_at_idx on app_public.user_sessions (expires_at);

--------------------------------------------------------------------------------
-- Business settings
--------------------------------------------------------------------------------

create table app_public.business_settings (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null default app_public.current_tenant_id(),
  business_hours jsonb not null default '{"monday":{"open":"09:00","close":"17:00","enabled":true},"tuesday":{"open":"09:00","close":"17:00","enabled":true},"wednesday":{"open":"09:00","close":"17:00","enabled":true},"thursday":{"open":"09:00","close":"17:00","enabled":true},"friday":{"open":"09:00","close":"17:00","enabled":true},"saturday":{"open":"09:00","close":"17:00","enabled":false},"sunday":{"open":"09:00","close":"17:00","enabled":false}}',
  timezone text not null default 'America/New_York',
  auto_response_enabled boolean not null default true,
  auto_response_message text not null default 'Hi! Sorry we missed your call. How can we help?',
  ai_greeting_template text not null default 'Hello! I''m here to help with your [TRADE] needs. What can I assist you with today?',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint business_settings_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint business_settings_tenant_must_be_unique unique (tenant_id),
  constraint business_settings_business_hours_must_be_valid check (app_public.is_valid_business_hours(business_hours)),
  constraint business_settings_auto_response_message_must_not_be_blank check (pg_catalog.btrim(auto_response_message) <> ''),
  constraint business_settings_ai_greeting_template_must_not_be_blank check (pg_catalog.btrim(ai_greeting_template) <> '')
);
comment on table app_public.business_settings is 'The tenant''s opening hours, time zone and automatic replies (one row per tenant). Members can read them; owners and admins can change them.';
comment on column app_public.business_settings.id is 'The row''s id.';
comment on column app_public.business_settings.tenant_id is 'The tenant these settings belong to.';
comment on column app_public.business_settings.business_hours is 'Opening hours per day: {"monday": {"open": "09:00", "close": "17:00", "enabled": true}, ...} (days monday to sunday; a missing or disabled day is closed; open before close; times in the tenant''s time zone).';
comment on column app_public.business_settings.timezone is 'The tenant''s IANA time zone, e.g. America/New_York.';
comment on column app_public.business_settings.auto_response_enabled is 'Send the automatic reply when a call is missed.';
comment on column app_public.business_settings.auto_response_message is 'The text sent to a caller whose call was missed.';
comment on column app_public.business_settings.ai_greeting_template is 'The AI assistant''s first message; [TRADE] is replaced with the tenant''s trade.';
comment on column app_public.business_settings.created_at is 'When the settings were created.';
comment on column app_public.business_settings.updated_at is 'When the settings were last changed.';

create function app_private.tg_business_settings__validate() returns trigger
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_problem text := app_hidden.business_hours_problem(NEW.business_hours);
begin
  if v_problem is not null then
    raise exception '%', v_problem using errcode = '22023';
  end if;
  -- The time zone lookup reads the server's tz database (tens of ms): only when it changes.
  if (TG_OP = 'INSERT' or NEW.timezone is distinct from OLD.timezone)
     and not app_public.is_valid_timezone(NEW.timezone) then
    raise exception 'Unknown timezone ''%'': use an IANA name such as America/New_York', NEW.timezone using errcode = '22023';
  end if;
  return NEW;
end;
$$;
comment on function app_private.tg_business_settings__validate() is 'Trigger: raises 22023 with a clear message for invalid business hours or an unknown time zone (the CHECK on business_hours is the declarative backstop).';

--------------------------------------------------------------------------------
-- System configuration (per tenant key/value)
--------------------------------------------------------------------------------

create table app_public.system_config (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null default app_public.current_tenant_id(),
  key text not null,
  value jsonb not null,
  value_type text not null,
  description text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint system_config_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint system_config_key_must_be_unique_per_tenant unique (tenant_id, key),
  constraint system_config_key_must_be_a_lowercase_dotted_identifier check (key ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$' and pg_catalog.length(key) <= 100),
  constraint system_config_value_type_must_be_known check (value_type in ('string', 'number', 'boolean', 'json')),
  constraint system_config_value_must_match_value_type check (
    case value_type
      when 'json' then pg_catalog.jsonb_typeof(value) in ('object', 'array')
      else pg_catalog.jsonb_typeof(value) = value_type
    end
  )
);
comment on table app_public.system_config is 'Tenant configuration as typed key/value pairs (e.g. routing.offer_timeout_seconds). Members can read them; owners and admins can change them.';
comment on column app_public.system_config.id is 'The row''s id.';
comment on column app_public.system_config.tenant_id is 'The tenant this setting belongs to.';
comment on column app_public.system_config.key is 'The setting''s name: a lowercase dotted identifier such as routing.offer_timeout_seconds.';
comment on column app_public.system_config.value is 'The value, as JSON of the type named by value_type.';
comment on column app_public.system_config.value_type is 'The type of value: string, number, boolean or json (an object or array).';
comment on column app_public.system_config.description is 'What the setting does, for people.';
comment on column app_public.system_config.created_at is 'When the setting was created.';
comment on column app_public.system_config.updated_at is 'When the setting was last changed.';

--------------------------------------------------------------------------------
-- API keys
--------------------------------------------------------------------------------

create table app_public.api_keys (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null default app_public.current_tenant_id(),
  name text not null,
  role text not null default 'agent',
  prefix text not null,
  created_by uuid,
  last_used_at timestamptz,
  revoked_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint api_keys_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint api_keys_id_must_be_unique_per_tenant unique (tenant_id, id),
  constraint api_keys_creator_must_be_a_member foreign key (tenant_id, created_by)
    references app_public.memberships (tenant_id, user_id) on delete set null (created_by),
  constraint api_keys_name_must_not_be_blank check (pg_catalog.btrim(name) <> ''),
  constraint api_keys_name_must_be_at_most_100_characters check (pg_catalog.length(name) <= 100),
  constraint api_keys_role_must_be_admin_manager_or_agent check (role in ('admin', 'manager', 'agent'))
);
comment on table app_public.api_keys is 'Keys for server-to-server access to one tenant (send as "Authorization: Bearer sbk_..."). Visible to owners and admins; created with create_api_key (the secret is shown once) and ended with revoke_api_key.';
comment on column app_public.api_keys.id is 'The key''s id (also embedded in the key string).';
comment on column app_public.api_keys.tenant_id is 'The tenant the key acts in.';
comment on column app_public.api_keys.name is 'A name to recognise the key by, e.g. "Website form".';
comment on column app_public.api_keys.role is 'The role requests made with this key have: admin, manager or agent.';
comment on column app_public.api_keys.prefix is 'The first characters of the key, to recognise it without revealing it.';
comment on column app_public.api_keys.created_by is 'The member who created the key; null when created with another API key or when that member has left.';
comment on column app_public.api_keys.last_used_at is 'When the key was last used, when recorded.';
comment on column app_public.api_keys.revoked_at is 'When the key was revoked; a revoked key no longer works.';
comment on column app_public.api_keys.created_at is 'When the key was created.';
comment on column app_public.api_keys.updated_at is 'When the key was last changed.';

create index api_keys_tenant_id_created_by_idx on app_public.api_keys (tenant_id, created_by);

create table app_private.api_key_secrets (
  api_key_id uuid primary key,
  tenant_id uuid not null,
  key_hash bytea not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint api_key_secrets_api_key_must_exist foreign key (tenant_id, api_key_id)
    references app_public.api_keys (tenant_id, id) on delete cascade,
  constraint api_key_secrets_api_key_must_be_unique_per_tenant unique (tenant_id, api_key_id),
  constraint api_key_secrets_key_hash_must_be_a_sha256 check (pg_catalog.length(key_hash) = 32)
);
comment on table app_private.api_key_secrets is 'SHA-256 of each API key string. Never readable by the request role.';
comment on column app_private.api_key_secrets.api_key_id is 'The API key.';
comment on column app_private.api_key_secrets.tenant_id is 'The API key''s tenant.';
comment on column app_private.api_key_secrets.key_hash is 'digest(<whole key string>, ''sha256'').';
comment on column app_private.api_key_secrets.created_at is 'When the row was created.';
comment on column app_private.api_key_secrets.updated_at is 'When the row was last changed.';

--------------------------------------------------------------------------------
-- Helpers used by policies
--------------------------------------------------------------------------------

create function app_hidden.visible_user_ids() returns uuid[]
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  -- An array (not a set) so that policies become "id = any($initplan)", which can use an index.
  select pg_catalog.array_agg(x.id)
  from (
    select app_public.current_user_id() as id
    union
    select m.user_id from app_public.memberships m where m.tenant_id = app_public.current_tenant_id()
  ) x
  where x.id is not null;
$$;
comment on function app_hidden.visible_user_ids() is 'Ids of the users the request may see: the current user and the members of the current tenant (null when none). Used by policies on users and user_status.';

--------------------------------------------------------------------------------
-- Row-level security, policies, grants and triggers, table by table.
-- Policies come before grants; visitor policies call helpers as (select ...) so
-- they run once per statement.
--------------------------------------------------------------------------------

-- tenants
alter table app_public.tenants enable row level security;
alter table app_public.tenants force row level security;
create policy owner_all on app_public.tenants for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current on app_public.tenants for select to :DATABASE_VISITOR
  using (id = (select app_public.current_tenant_id()));
create policy update_current on app_public.tenants for update to :DATABASE_VISITOR
  using (id = (select app_public.current_tenant_id()))
  with check (id = (select app_public.current_tenant_id()));
grant select on app_public.tenants to :DATABASE_VISITOR;
grant update (business_name, business_address, business_latitude, business_longitude, trade_type,
  service_area_radius, onboarding_completed, onboarding_step) on app_public.tenants to :DATABASE_VISITOR;
create trigger _050_require_tenant_role before update on app_public.tenants
  for each row execute function app_private.tg__require_tenant_role('admin', 'the business details');
create trigger _100_timestamps before insert or update on app_public.tenants
  for each row execute function app_private.tg__timestamps();
create trigger _900_enqueue_initialize after insert on app_public.tenants
  for each row execute function app_private.tg__add_job('tenant__initialize', 'tenant_id');

-- users
alter table app_public.users enable row level security;
alter table app_public.users force row level security;
create policy owner_all on app_public.users for all to :DATABASE_OWNER using (true) with check (true);
create policy select_self_and_tenant_members on app_public.users for select to :DATABASE_VISITOR
  using (id = any ((select app_hidden.visible_user_ids())::uuid[]));
grant select on app_public.users to :DATABASE_VISITOR;
create trigger _100_timestamps before insert or update on app_public.users
  for each row execute function app_private.tg__timestamps();

-- user_secrets (owner only)
alter table app_private.user_secrets enable row level security;
alter table app_private.user_secrets force row level security;
create policy owner_all on app_private.user_secrets for all to :DATABASE_OWNER using (true) with check (true);
create trigger _100_timestamps before insert or update on app_private.user_secrets
  for each row execute function app_private.tg__timestamps();

-- memberships (writes only through functions)
alter table app_public.memberships enable row level security;
alter table app_public.memberships force row level security;
create policy owner_all on app_public.memberships for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.memberships for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.memberships to :DATABASE_VISITOR;
create trigger _100_timestamps before insert or update on app_public.memberships
  for each row execute function app_private.tg__timestamps();

-- invitations (writes only through functions)
alter table app_public.invitations enable row level security;
alter table app_public.invitations force row level security;
create policy owner_all on app_public.invitations for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.invitations for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.invitations to :DATABASE_VISITOR;
create trigger _100_timestamps before insert or update on app_public.invitations
  for each row execute function app_private.tg__timestamps();

-- user_profiles: members read all profiles of the tenant; you write your own, admins write any.
alter table app_public.user_profiles enable row level security;
alter table app_public.user_profiles force row level security;
create policy owner_all on app_public.user_profiles for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.user_profiles for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()));
create policy insert_own_or_as_admin on app_public.user_profiles for insert to :DATABASE_VISITOR
  with check (
    tenant_id = (select app_public.current_tenant_id())
    and (user_id = (select app_public.current_user_id()) or (select app_hidden.current_user_has_role('admin')))
  );
create policy update_own_or_as_admin on app_public.user_profiles for update to :DATABASE_VISITOR
  using (
    tenant_id = (select app_public.current_tenant_id())
    and (user_id = (select app_public.current_user_id()) or (select app_hidden.current_user_has_role('admin')))
  )
  with check (
    tenant_id = (select app_public.current_tenant_id())
    and (user_id = (select app_public.current_user_id()) or (select app_hidden.current_user_has_role('admin')))
  );
grant select on app_public.user_profiles to :DATABASE_VISITOR;
grant insert (tenant_id, user_id, first_name, last_name, email, phone_number) on app_public.user_profiles to :DATABASE_VISITOR;
grant update (first_name, last_name, email, phone_number) on app_public.user_profiles to :DATABASE_VISITOR;
create trigger _100_timestamps before insert or update on app_public.user_profiles
  for each row execute function app_private.tg__timestamps();

-- user_preferences: your own only.
alter table app_public.user_preferences enable row level security;
alter table app_public.user_preferences force row level security;
create policy owner_all on app_public.user_preferences for all to :DATABASE_OWNER using (true) with check (true);
create policy select_own on app_public.user_preferences for select to :DATABASE_VISITOR
  using (user_id = (select app_public.current_user_id()));
create policy update_own on app_public.user_preferences for update to :DATABASE_VISITOR
  using (user_id = (select app_public.current_user_id()))
  with check (user_id = (select app_public.current_user_id()));
grant select on app_public.user_preferences to :DATABASE_VISITOR;
grant update (notification_email, notification_sms, notification_push, ai_takeover_delay) on app_public.user_preferences to :DATABASE_VISITOR;
create trigger _100_timestamps before insert or update on app_public.user_preferences
  for each row execute function app_private.tg__timestamps();

-- user_status: your own (read/write) and your current tenant's members (read).
alter table app_public.user_status enable row level security;
alter table app_public.user_status force row level security;
create policy owner_all on app_public.user_status for all to :DATABASE_OWNER using (true) with check (true);
create policy select_own_and_tenant_members on app_public.user_status for select to :DATABASE_VISITOR
  using (user_id = any ((select app_hidden.visible_user_ids())::uuid[]));
create policy update_own on app_public.user_status for update to :DATABASE_VISITOR
  using (user_id = (select app_public.current_user_id()))
  with check (user_id = (select app_public.current_user_id()));
grant select on app_public.user_status to :DATABASE_VISITOR;
grant update (is_online, status, last_seen_at) on app_public.user_status to :DATABASE_VISITOR;
create trigger _100_timestamps before insert or update on app_public.user_status
  for each row execute function app_private.tg__timestamps();

-- user_sessions: your own, read-only (logout() revokes).
alter table app_public.user_sessions enable row level security;
alter table app_public.user_sessions force row level security;
create policy owner_all on app_public.user_sessions for all to :DATABASE_OWNER using (true) with check (true);
create policy select_own on app_public.user_sessions for select to :DATABASE_VISITOR
  using (user_id = (select app_public.current_user_id()));
grant select on app_public.user_sessions to :DATABASE_VISITOR;
create trigger _100_timestamps before insert or update on app_public.user_sessions
  for each row execute function app_private.tg__timestamps();

-- business_settings: members read; owners and admins write (clear error from the trigger).
alter table app_public.business_settings enable row level security;
alter table app_public.business_settings force row level security;
create policy owner_all on app_public.business_settings for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.business_settings for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()));
create policy insert_current_tenant on app_public.business_settings for insert to :DATABASE_VISITOR
  with check (tenant_id = (select app_public.current_tenant_id()));
create policy update_current_tenant on app_public.business_settings for update to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()))
  with check (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.business_settings to :DATABASE_VISITOR;
grant insert (tenant_id, business_hours, timezone, auto_response_enabled, auto_response_message, ai_greeting_template)
  on app_public.business_settings to :DATABASE_VISITOR;
grant update (business_hours, timezone, auto_response_enabled, auto_response_message, ai_greeting_template)
  on app_public.business_settings to :DATABASE_VISITOR;
create trigger _050_require_tenant_role before insert or update or delete on app_public.business_settings
  for each row execute function app_private.tg__require_tenant_role('admin', 'business settings');
create trigger _100_timestamps before insert or update on app_public.business_settings
  for each row execute function app_private.tg__timestamps();
create trigger _200_validate before insert or update of business_hours, timezone on app_public.business_settings
  for each row execute function app_private.tg_business_settings__validate();

-- system_config: members read; owners and admins write (clear error from the trigger).
alter table app_public.system_config enable row level security;
alter table app_public.system_config force row level security;
create policy owner_all on app_public.system_config for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.system_config for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()));
create policy insert_current_tenant on app_public.system_config for insert to :DATABASE_VISITOR
  with check (tenant_id = (select app_public.current_tenant_id()));
create policy update_current_tenant on app_public.system_config for update to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()))
  with check (tenant_id = (select app_public.current_tenant_id()));
create policy delete_current_tenant on app_public.system_config for delete to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()));
grant select, delete on app_public.system_config to :DATABASE_VISITOR;
grant insert (tenant_id, key, value, value_type, description) on app_public.system_config to :DATABASE_VISITOR;
grant update (value, value_type, description) on app_public.system_config to :DATABASE_VISITOR;
create trigger _050_require_tenant_role before insert or update or delete on app_public.system_config
  for each row execute function app_private.tg__require_tenant_role('admin', 'system configuration');
create trigger _100_timestamps before insert or update on app_public.system_config
  for each row execute function app_private.tg__timestamps();

-- api_keys: owners and admins read; writes only through functions.
alter table app_public.api_keys enable row level security;
alter table app_public.api_keys force row level security;
create policy owner_all on app_public.api_keys for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant_as_admin on app_public.api_keys for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()) and (select app_hidden.current_user_has_role('admin')));
grant select on app_public.api_keys to :DATABASE_VISITOR;
create trigger _100_timestamps before insert or update on app_public.api_keys
  for each row execute function app_private.tg__timestamps();

-- api_key_secrets (owner only)
alter table app_private.api_key_secrets enable row level security;
alter table app_private.api_key_secrets force row level security;
create policy owner_all on app_private.api_key_secrets for all to :DATABASE_OWNER using (true) with check (true);
create trigger _100_timestamps before insert or update on app_private.api_key_secrets
  for each row execute function app_private.tg__timestamps();

--------------------------------------------------------------------------------
-- Types returned by functions
--------------------------------------------------------------------------------

create type app_public.jwt_token as (
  role text,
  user_id uuid,
  tenant_id uuid,
  session_id uuid,
  exp bigint
);
comment on type app_public.jwt_token is 'A signed token (JWT) identifying you: send it as "Authorization: Bearer <token>".';
comment on column app_public.jwt_token.role is 'Your role in the token''s tenant (owner, admin, manager or agent); informational only, null without a tenant.';
comment on column app_public.jwt_token.user_id is 'Your user id.';
comment on column app_public.jwt_token.tenant_id is 'The tenant requests with this token act in; null when you belong to no tenant.';
comment on column app_public.jwt_token.session_id is 'The session this token belongs to; logging out revokes it.';
comment on column app_public.jwt_token.exp is 'When the token expires, in seconds since 1970-01-01 UTC (the session''s expiry).';

create type app_public.invite_result as (
  membership_id uuid,
  invitation_id uuid,
  user_id uuid,
  email public.citext,
  role text
);
comment on type app_public.invite_result is 'The outcome of invite_member: exactly one of membership_id (the person already had an account and is now a member) and invitation_id (an invitation now waits for them to register) is set.';
comment on column app_public.invite_result.membership_id is 'The new membership, when the email belonged to an existing account.';
comment on column app_public.invite_result.invitation_id is 'The pending invitation, when the email has no account yet.';
comment on column app_public.invite_result.user_id is 'The invited user, when the email belonged to an existing account.';
comment on column app_public.invite_result.email is 'The invited email address.';
comment on column app_public.invite_result.role is 'The role the person has (or will have) in the tenant.';

create type app_public.created_api_key as (
  id uuid,
  tenant_id uuid,
  name text,
  role text,
  prefix text,
  created_at timestamptz,
  secret text
);
comment on type app_public.created_api_key is 'A newly created API key, with its secret. The secret is shown only this once: store it safely.';
comment on column app_public.created_api_key.id is 'The key''s id.';
comment on column app_public.created_api_key.tenant_id is 'The tenant the key acts in.';
comment on column app_public.created_api_key.name is 'The key''s name.';
comment on column app_public.created_api_key.role is 'The role requests made with the key have.';
comment on column app_public.created_api_key.prefix is 'The first characters of the key, shown in lists.';
comment on column app_public.created_api_key.created_at is 'When the key was created.';
comment on column app_public.created_api_key.secret is 'The whole key (sbk_...): send it as "Authorization: Bearer <key>" or "X-API-Key: <key>". Shown only once.';

create type app_public.user_tenant as (
  tenant_id uuid,
  business_name text,
  trade_type text,
  role text,
  joined_at timestamptz,
  is_current boolean
);
comment on type app_public.user_tenant is 'A tenant you belong to, for a tenant switcher.';
comment on column app_public.user_tenant.tenant_id is 'The tenant''s id (pass it to switchTenant).';
comment on column app_public.user_tenant.business_name is 'The tenant''s business name.';
comment on column app_public.user_tenant.trade_type is 'The tenant''s trade.';
comment on column app_public.user_tenant.role is 'Your role in that tenant.';
comment on column app_public.user_tenant.joined_at is 'When you joined that tenant.';
comment on column app_public.user_tenant.is_current is 'True for the tenant your current token acts in.';

--------------------------------------------------------------------------------
-- Internal building blocks (app_private, owner only)
--------------------------------------------------------------------------------

create function app_private.create_user(email text, password text) returns app_public.users
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_email public.citext := app_private.validate_email(create_user.email);
  v_user app_public.users;
begin
  perform app_private.validate_password(create_user.password);
  begin
    insert into app_public.users (email) values (v_email) returning * into v_user;
  exception when unique_violation then
    raise exception 'An account with this email already exists' using errcode = '23505';
  end;
  insert into app_private.user_secrets (user_id, password_hash)
    values (v_user.id, public.crypt(create_user.password, public.gen_salt('bf', 10)));
  insert into app_public.user_preferences (user_id) values (v_user.id);
  insert into app_public.user_status (user_id) values (v_user.id);
  return v_user;
end;
$$;
comment on function app_private.create_user(text, text) is 'Creates a user with a bcrypt-hashed password, default preferences and status. Raises 22023 for an invalid email or weak password, 23505 when the email is taken.';

create function app_private.add_member(
  tenant_id uuid,
  user_id uuid,
  role text,
  invited_by uuid default null,
  first_name text default null,
  last_name text default null
) returns app_public.memberships
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_membership app_public.memberships;
begin
  if add_member.role is null or add_member.role not in ('owner', 'admin', 'manager', 'agent') then
    raise exception 'Invalid role ''%'': use owner, admin, manager or agent', add_member.role using errcode = '22023';
  end if;
  begin
    insert into app_public.memberships (tenant_id, user_id, role, invited_by)
      values (add_member.tenant_id, add_member.user_id, add_member.role, add_member.invited_by)
      returning * into v_membership;
  exception when unique_violation then
    raise exception 'That user is already a member of this tenant' using errcode = '23505';
  end;
  insert into app_public.user_profiles (tenant_id, user_id, first_name, last_name, email)
    select add_member.tenant_id, u.id, nullif(pg_catalog.btrim(add_member.first_name), ''),
           nullif(pg_catalog.btrim(add_member.last_name), ''), u.email
    from app_public.users u where u.id = add_member.user_id
    on conflict (tenant_id, user_id) do nothing;
  -- Per-user rows normally exist already (create_user); make sure anyway.
  insert into app_public.user_preferences (user_id) values (add_member.user_id) on conflict (user_id) do nothing;
  insert into app_public.user_status (user_id) values (add_member.user_id) on conflict (user_id) do nothing;
  return v_membership;
end;
$$;
comment on function app_private.add_member(uuid, uuid, text, uuid, text, text) is 'Adds a user to a tenant with a role, and creates their profile there. Raises 22023 for an unknown role, 23505 when already a member. No permission checks: callers check.';

create function app_private.create_tenant(
  business_name text,
  owner_user_id uuid,
  timezone text default 'America/New_York',
  trade_type text default null,
  owner_first_name text default null,
  owner_last_name text default null
) returns app_public.tenants
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_name text := nullif(pg_catalog.btrim(create_tenant.business_name), '');
  v_timezone text := coalesce(nullif(pg_catalog.btrim(create_tenant.timezone), ''), 'America/New_York');
  v_tenant app_public.tenants;
begin
  if v_name is null then
    raise exception 'Business name is required' using errcode = '22023';
  end if;
  -- The time zone is validated by business_settings' _200_validate trigger (22023).
  insert into app_public.tenants (business_name, trade_type)
    values (v_name, nullif(pg_catalog.btrim(create_tenant.trade_type), ''))
    returning * into v_tenant;
  perform app_private.add_member(v_tenant.id, create_tenant.owner_user_id, 'owner', null,
    create_tenant.owner_first_name, create_tenant.owner_last_name);
  insert into app_public.business_settings (tenant_id, timezone) values (v_tenant.id, v_timezone);
  return v_tenant;
end;
$$;
comment on function app_private.create_tenant(text, uuid, text, text, text, text) is 'Creates a tenant owned by the given user, with default business settings in the given time zone (the tenant__initialize job adds the default configuration). Raises 22023 for a blank name or unknown time zone.';

create function app_private.create_session(user_id uuid, tenant_id uuid) returns app_public.user_sessions
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_session app_public.user_sessions;
begin
  insert into app_public.user_sessions (user_id, tenant_id)
    values (create_session.user_id, create_session.tenant_id)
    returning * into v_session;
  return v_session;
end;
$$;
comment on function app_private.create_session(uuid, uuid) is 'Starts a 14-day session for the user in the given tenant (null for none).';

create function app_private.session_jwt(session_id uuid) returns app_public.jwt_token
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select (
    m.role,
    s.user_id,
    s.tenant_id,
    s.id,
    pg_catalog.floor(pg_catalog.date_part('epoch', s.expires_at))::bigint
  )::app_public.jwt_token
  from app_public.user_sessions s
  left join app_public.memberships m on m.tenant_id = s.tenant_id and m.user_id = s.user_id
  where s.id = session_id;
$$;
comment on function app_private.session_jwt(uuid) is 'The token for a session: its user, tenant, id, the member''s role and exp = the session''s expiry.';

create function app_private.require_tenant_role(minimum text, action text) returns uuid
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid := app_public.current_tenant_id();
begin
  if v_tenant_id is null then
    if app_public.current_user_id() is null and app_public.current_api_key_id() is null then
      raise exception 'You must be logged in to %', action using errcode = '28000';
    end if;
    raise exception 'You are not a member of that tenant' using errcode = '42501';
  end if;
  if not app_hidden.current_user_has_role(minimum) then
    raise exception 'Only % can %',
      case minimum
        when 'owner' then 'owners'
        when 'admin' then 'owners and admins'
        when 'manager' then 'owners, admins and managers'
        else 'members'
      end,
      action
      using errcode = '42501';
  end if;
  return v_tenant_id;
end;
$$;
comment on function app_private.require_tenant_role(text, text) is 'Returns the current tenant id if the caller''s role there is at least the minimum; raises 28000 when not logged in, 42501 "Only owners and admins can <action>" otherwise.';

create function app_private.initialize_tenant(tenant_id uuid) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
begin
  -- Lock the tenant so concurrent runs do not race; a deleted tenant is simply done.
  perform 1 from app_public.tenants t where t.id = initialize_tenant.tenant_id for no key update;
  if not found then
    return false;
  end if;
  insert into app_public.system_config (tenant_id, key, value, value_type, description)
  values
    (initialize_tenant.tenant_id, 'routing.offer_timeout_seconds', '120', 'number',
      'Seconds an agent has to accept an offered lead before it is offered to someone else.'),
    (initialize_tenant.tenant_id, 'routing.direct_assignment', 'false', 'boolean',
      'Assign leads directly instead of offering them to agents first.'),
    (initialize_tenant.tenant_id, 'messaging.quiet_hours_enforced', 'true', 'boolean',
      'Hold automated messages outside the hours the law allows in the recipient''s time zone.')
  on conflict (tenant_id, key) do nothing;
  update app_public.tenants t
    set initialized_at = coalesce(t.initialized_at, pg_catalog.now())
    where t.id = initialize_tenant.tenant_id;
  return true;
end;
$$;
comment on function app_private.initialize_tenant(uuid) is 'Creates the tenant''s default configuration (missing system_config rows only) and sets tenants.initialized_at. Idempotent; returns false when the tenant does not exist. Run by the tenant__initialize job.';

create function app_private.purge_expired_sessions() returns integer
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_count integer;
begin
  delete from app_public.user_sessions s
  where s.expires_at < pg_catalog.now() - interval '30 days'
     or s.revoked_at < pg_catalog.now() - interval '30 days';
  get diagnostics v_count = row_count;
  return v_count;
end;
$$;
comment on function app_private.purge_expired_sessions() is 'Deletes sessions that expired or were revoked more than 30 days ago; returns how many. Run nightly by maintenance__purge_sessions.';

--------------------------------------------------------------------------------
-- Public functions (GraphQL queries and mutations)
--------------------------------------------------------------------------------

create function app_public."current_user"() returns app_public.users
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select u.* from app_public.users u where u.id = app_public.current_user_id();
$$;
comment on function app_public."current_user"() is 'The logged-in user, or null.';

create function app_public.current_tenant() returns app_public.tenants
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select t.* from app_public.tenants t where t.id = app_public.current_tenant_id();
$$;
comment on function app_public.current_tenant() is 'The tenant you are acting in, or null.';

create function app_public.current_user_tenants() returns setof app_public.user_tenant
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select m.tenant_id, t.business_name, t.trade_type, m.role, m.created_at,
         coalesce(m.tenant_id = app_public.current_tenant_id(), false)
  from app_public.memberships m
  join app_public.tenants t on t.id = m.tenant_id
  where m.user_id = app_public.current_user_id()
  order by t.business_name, m.tenant_id;
$$;
comment on function app_public.current_user_tenants() is 'The tenants you belong to, with your role in each, for a tenant switcher.';

create function app_public.register(
  email text,
  password text,
  business_name text default null,
  first_name text default null,
  last_name text default null,
  timezone text default null
) returns app_public.jwt_token
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_email public.citext := app_private.validate_email(register.email);
  v_business_name text := nullif(pg_catalog.btrim(register.business_name), '');
  v_timezone text := coalesce(nullif(pg_catalog.btrim(register.timezone), ''), 'America/New_York');
  v_user app_public.users;
  v_tenant_id uuid;
  v_invitation app_public.invitations;
  v_session app_public.user_sessions;
begin
  perform app_private.validate_password(register.password);
  perform app_private.validate_timezone(v_timezone);
  if exists (select 1 from app_public.users u where u.email = v_email) then
    raise exception 'An account with this email already exists' using errcode = '23505';
  end if;
  if v_business_name is null and not exists (
    select 1 from app_public.invitations i where i.email = v_email and i.accepted_at is null
  ) then
    raise exception 'Business name is required' using errcode = '22023';
  end if;

  v_user := app_private.create_user(v_email::text, register.password);

  if v_business_name is not null then
    v_tenant_id := (app_private.create_tenant(v_business_name, v_user.id, v_timezone, null,
      register.first_name, register.last_name)).id;
  end if;

  -- Accept every pending invitation for this email (newest first: it becomes the
  -- session's tenant when no business was created).
  for v_invitation in
    select i.* from app_public.invitations i
    where i.email = v_email and i.accepted_at is null
    order by i.created_at desc, i.id
    for update
  loop
    perform app_private.add_member(v_invitation.tenant_id, v_user.id, v_invitation.role,
      v_invitation.invited_by, register.first_name, register.last_name);
    update app_public.invitations i set accepted_at = pg_catalog.now() where i.id = v_invitation.id;
    v_tenant_id := coalesce(v_tenant_id, v_invitation.tenant_id);
  end loop;

  v_session := app_private.create_session(v_user.id, v_tenant_id);
  update app_public.user_status s set last_seen_at = pg_catalog.now() where s.user_id = v_user.id;
  return app_private.session_jwt(v_session.id);
end;
$$;
comment on function app_public.register(text, text, text, text, text, text) is 'Creates your account and logs you in. With a business name it also creates your business (you are its owner); pending invitations to your email are accepted. The business name may be left out only when you have been invited. Errors: 22023 invalid email, weak password (at least 10 characters with a letter and a digit or symbol), unknown timezone or missing business name; 23505 when an account with this email already exists.';

create function app_public.login(email text, password text) returns app_public.jwt_token
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

  if v_secret.user_id is null or v_secret.locked_until > pg_catalog.now() then
    -- Unknown email or locked account: spend the same time as a real check, then fail.
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
    where s.user_id = v_user_id
    returning s.* into v_secret;
    if v_secret.failed_login_attempts >= 5 then
      update app_private.user_secrets s set
        locked_until = pg_catalog.now() + interval '15 minutes',
        failed_login_attempts = 0,
        first_failed_login_at = null
      where s.user_id = v_user_id;
    end if;
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
comment on function app_public.login(text, text) is E'@behavior -queryField -mutationField\nLogs in with email and password and returns a token for a new session in your most recently used tenant. Returns null on any failure (unknown email, wrong password, locked account) so that the failed attempt is recorded; the API reports that as 28P01 "Incorrect email or password". After 5 failures within 15 minutes the account is locked for 15 minutes.';

create function app_public.logout() returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  update app_public.user_sessions s
    set revoked_at = pg_catalog.now()
    where s.id = app_public.current_session_id() and s.revoked_at is null;
  return true;
end;
$$;
comment on function app_public.logout() is 'Ends your current session: its token stops working at once. Always returns true.';

create function app_public.switch_tenant(tenant_id uuid) returns app_public.jwt_token
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_user_id uuid := app_public.current_user_id();
  v_session_id uuid := app_public.current_session_id();
begin
  if v_user_id is null or v_session_id is null then
    raise exception 'You must be logged in to switch tenants' using errcode = '28000';
  end if;
  if switch_tenant.tenant_id is null or not exists (
    select 1 from app_public.memberships m
    where m.tenant_id = switch_tenant.tenant_id and m.user_id = v_user_id
  ) then
    raise exception 'You are not a member of that tenant' using errcode = '42501';
  end if;
  update app_public.user_sessions s
    set tenant_id = switch_tenant.tenant_id, last_used_at = pg_catalog.now()
    where s.id = v_session_id;
  return app_private.session_jwt(v_session_id);
end;
$$;
comment on function app_public.switch_tenant(uuid) is 'Makes another of your tenants the current one and returns a new token for it (same session). Errors: 28000 when not logged in; 42501 when you are not a member of that tenant.';

create function app_public.invite_member(email text, role text default 'agent') returns app_public.invite_result
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_tenant_id uuid := app_private.require_tenant_role('admin', 'invite members');
  v_email public.citext := app_private.validate_email(invite_member.email);
  v_role text := coalesce(nullif(pg_catalog.btrim(invite_member.role), ''), 'agent');
  v_inviter uuid := app_public.current_user_id();
  v_user_id uuid;
  v_membership app_public.memberships;
  v_invitation app_public.invitations;
begin
  if v_role not in ('owner', 'admin', 'manager', 'agent') then
    raise exception 'Invalid role ''%'': use owner, admin, manager or agent', v_role using errcode = '22023';
  end if;
  if v_role = 'owner' and not app_hidden.current_user_has_role('owner') then
    raise exception 'Only owners can invite owners' using errcode = '42501';
  end if;
  -- A member acting through an API key has no user: the inviter stays null.
  if v_inviter is not null and not exists (
    select 1 from app_public.memberships m where m.tenant_id = v_tenant_id and m.user_id = v_inviter
  ) then
    v_inviter := null;
  end if;

  select u.id into v_user_id from app_public.users u where u.email = v_email;
  if v_user_id is not null then
    if exists (select 1 from app_public.memberships m where m.tenant_id = v_tenant_id and m.user_id = v_user_id) then
      raise exception 'That user is already a member of this tenant' using errcode = '23505';
    end if;
    v_membership := app_private.add_member(v_tenant_id, v_user_id, v_role, v_inviter);
    return (v_membership.id, null, v_user_id, v_email, v_role)::app_public.invite_result;
  end if;

  -- No account yet: create the invitation, or refresh the pending one.
  update app_public.invitations i
    set role = v_role, invited_by = v_inviter
    where i.tenant_id = v_tenant_id and i.email = v_email and i.accepted_at is null
    returning i.* into v_invitation;
  if v_invitation.id is null then
    begin
      insert into app_public.invitations (tenant_id, email, role, invited_by)
        values (v_tenant_id, v_email, v_role, v_inviter)
        returning * into v_invitation;
    exception when unique_violation then
      raise exception 'That email has just been invited' using errcode = '23505';
    end;
  end if;
  return (null, v_invitation.id, null, v_email, v_role)::app_public.invite_result;
end;
$$;
comment on function app_public.invite_member(text, text) is 'Invites someone to the current tenant with a role (default agent). If the email already has an account they become a member at once; otherwise an invitation waits until they register (inviting the same email again updates it). Owners and admins only; only owners can invite owners. Errors: 42501 not allowed; 22023 invalid email or role; 23505 already a member.';

create function app_public.remove_member(user_id uuid) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_tenant_id uuid := app_private.require_tenant_role('admin', 'remove members');
  v_target app_public.memberships;
begin
  -- Serialise membership removals per tenant so two owners cannot remove each other at once.
  perform 1 from app_public.tenants t where t.id = v_tenant_id for no key update;
  select m.* into v_target
  from app_public.memberships m
  where m.tenant_id = v_tenant_id and m.user_id = remove_member.user_id;
  if v_target.id is null then
    raise exception 'That user is not a member of this tenant' using errcode = 'P0002';
  end if;
  if v_target.role = 'owner' then
    if not app_hidden.current_user_has_role('owner') then
      raise exception 'Only owners can remove owners' using errcode = '42501';
    end if;
    if (select count(*) from app_public.memberships m where m.tenant_id = v_tenant_id and m.role = 'owner') <= 1 then
      raise exception 'The last owner cannot be removed: make someone else an owner first' using errcode = '42501';
    end if;
  end if;
  delete from app_public.memberships m where m.id = v_target.id;
  return true;
end;
$$;
comment on function app_public.remove_member(uuid) is 'Removes a member from the current tenant (their profile goes too; their next request no longer sees the tenant). Owners and admins only; only owners can remove owners, and the last owner cannot be removed. Errors: 42501 not allowed; P0002 not a member.';

create function app_public.create_api_key(name text, role text default 'agent') returns app_public.created_api_key
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_tenant_id uuid := app_private.require_tenant_role('admin', 'create API keys');
  v_name text := nullif(pg_catalog.btrim(create_api_key.name), '');
  v_role text := coalesce(nullif(pg_catalog.btrim(create_api_key.role), ''), 'agent');
  v_creator uuid := app_public.current_user_id();
  v_id uuid := pg_catalog.gen_random_uuid();
  v_secret text;
  v_key app_public.api_keys;
begin
  if v_name is null then
    raise exception 'API key name is required' using errcode = '22023';
  end if;
  if v_role not in ('admin', 'manager', 'agent') then
    raise exception 'Invalid role ''%'' for an API key: use admin, manager or agent', v_role using errcode = '22023';
  end if;
  if v_creator is not null and not exists (
    select 1 from app_public.memberships m where m.tenant_id = v_tenant_id and m.user_id = v_creator
  ) then
    v_creator := null;
  end if;
  v_secret := 'sbk_' || pg_catalog.replace(v_id::text, '-', '') || '_' || pg_catalog.encode(public.gen_random_bytes(32), 'hex');
  insert into app_public.api_keys (id, tenant_id, name, role, prefix, created_by)
    values (v_id, v_tenant_id, v_name, v_role, pg_catalog.left(v_secret, 12), v_creator)
    returning * into v_key;
  insert into app_private.api_key_secrets (api_key_id, tenant_id, key_hash)
    values (v_id, v_tenant_id, public.digest(v_secret, 'sha256'));
  return (v_key.id, v_key.tenant_id, v_key.name, v_key.role, v_key.prefix, v_key.created_at, v_secret)::app_public.created_api_key;
end;
$$;
comment on function app_public.create_api_key(text, text) is 'Creates an API key for the current tenant with a role (admin, manager or agent; default agent) and returns it with its secret, which is shown only this once. Owners and admins only. Errors: 42501 not allowed; 22023 blank name or invalid role.';

create function app_public.revoke_api_key(id uuid) returns app_public.api_keys
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_tenant_id uuid := app_private.require_tenant_role('admin', 'revoke API keys');
  v_key app_public.api_keys;
begin
  update app_public.api_keys k
    set revoked_at = coalesce(k.revoked_at, pg_catalog.now())
    where k.id = revoke_api_key.id and k.tenant_id = v_tenant_id
    returning k.* into v_key;
  if v_key.id is null then
    raise exception 'API key not found' using errcode = 'P0002';
  end if;
  return v_key;
end;
$$;
comment on function app_public.revoke_api_key(uuid) is 'Revokes an API key of the current tenant: it stops working at once (revoking twice is harmless). Owners and admins only. Errors: 42501 not allowed; P0002 no such key in this tenant.';

--------------------------------------------------------------------------------
-- Function privileges: nothing for PUBLIC; the visitor gets exactly these.
--------------------------------------------------------------------------------

revoke all on all functions in schema app_public, app_hidden, app_private, raw from public;

grant execute on function
  app_public.current_session_id(),
  app_public.current_user_id(),
  app_public.current_api_key_id(),
  app_public.current_tenant_id(),
  app_public.current_user_role(),
  app_public.is_valid_business_hours(jsonb),
  app_public.is_valid_timezone(text),
  app_public."current_user"(),
  app_public.current_tenant(),
  app_public.current_user_tenants(),
  app_public.register(text, text, text, text, text, text),
  app_public.login(text, text),
  app_public.logout(),
  app_public.switch_tenant(uuid),
  app_public.invite_member(text, text),
  app_public.remove_member(uuid),
  app_public.create_api_key(text, text),
  app_public.revoke_api_key(uuid),
  app_hidden.current_user_has_role(text),
  app_hidden.visible_user_ids(),
  app_hidden.is_valid_email(text),
  app_hidden.business_hours_problem(jsonb)
to :DATABASE_VISITOR;
