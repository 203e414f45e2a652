--! Previous: sha1:1f37615b7e67c34cacf5db686ea0c01fb2348cf3
--! Hash: sha1:3c33e25cd52679f3ae14001f340ed22b039fcc5d
--! Message: Phone numbers a tenant can prove: a tracking number is one of the tenant's own active phone_numbers, assigned only through assign_tracking_number (an unknown, released or another tenant's number gets the same P0002); requests lose direct writes of phone columns (set_forward_to_phone instead); a number leaving service deactivates its tracking numbers; buying a number needs an owner with a verified email, within limits.phone_numbers (default 3)

-- Issue 14, point 5: numbers. A tracking number is one of the tenant's own provisioned numbers
-- (phone_numbers), written only through assign_tracking_number; the forwarding phone only through
-- set_forward_to_phone; buying a number is for owners, within a per-tenant limit.

-- Tracking numbers reference the phone_numbers row they are (same tenant, same id, same number).
alter table app_public.tracking_numbers add column if not exists phone_number_id uuid;
alter table app_public.tracking_numbers add column if not exists inactive_reason text;
comment on column app_public.tracking_numbers.phone_number_id is 'The phone number of this business (phone_numbers) that this tracking number is; required while active.';
comment on column app_public.tracking_numbers.inactive_reason is 'Why the tracking number is inactive, in words, when the system made it so (e.g. its number was released, or it was never one of the business''s numbers).';
comment on column app_public.tracking_numbers.phone is 'The number (E.164): the phone_number of its phone_numbers row.';
comment on column app_public.tracking_numbers.provider_sid is 'The provider''s id of the number (e.g. Twilio PN…), copied from its phone_numbers row.';
comment on table app_public.tracking_numbers is 'A phone number of the business (one of its phone_numbers) given to one agent (the DJ marketplace''s tracking numbers): calls and texts to it are attributed to that agent and the caller''s lead. Created with assignTrackingNumber; managers and up may move it to another agent or deactivate it.';

alter table app_public.tracking_numbers drop constraint if exists tracking_numbers_number_must_be_one_of_the_tenants_numbers;
alter table app_public.phone_numbers drop constraint if exists phone_numbers_number_must_be_unique_per_tenant_and_id;
alter table app_public.phone_numbers
  add constraint phone_numbers_number_must_be_unique_per_tenant_and_id unique (tenant_id, id, phone_number);

-- Existing tracking numbers: linked when their tenant holds the number (active or suspended);
-- otherwise kept for the calls attributed to them, but made inactive with the reason, since nothing
-- proves the number was ever ours (it could be another tenant's, or nobody's yet).
update app_public.tracking_numbers t
set phone_number_id = p.id, provider_sid = coalesce(t.provider_sid, p.phone_number_sid)
from app_public.phone_numbers p
where t.phone_number_id is null and p.tenant_id = t.tenant_id and p.phone_number = t.phone
  and p.status in ('active', 'suspended');
update app_public.tracking_numbers t
set is_active = false,
    inactive_reason = 'Not one of the business''s phone numbers: assign one of them with assignTrackingNumber'
where t.is_active and (t.phone_number_id is null
  or not exists (select 1 from app_public.phone_numbers p where p.id = t.phone_number_id and p.status = 'active'));

alter table app_public.tracking_numbers
  add constraint tracking_numbers_number_must_be_one_of_the_tenants_numbers
  foreign key (tenant_id, phone_number_id, phone) references app_public.phone_numbers (tenant_id, id, phone_number) on delete cascade;
alter table app_public.tracking_numbers drop constraint if exists tracking_numbers_active_number_must_be_one_of_the_tenants_numbers;
alter table app_public.tracking_numbers
  add constraint tracking_numbers_active_number_must_be_one_of_the_tenants_numbers check (not is_active or phone_number_id is not null);
create index if not exists tracking_numbers_by_phone_number on app_public.tracking_numbers (tenant_id, phone_number_id);

--! Included routing/tg_tracking_numbers__number_must_be_ours.sql
create or replace function app_private.tg_tracking_numbers__number_must_be_ours() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if NEW.is_active and not exists (
    select 1 from app_public.phone_numbers p
    where p.tenant_id = NEW.tenant_id and p.id = NEW.phone_number_id and p.phone_number = NEW.phone and p.status = 'active'
  ) then
    raise exception 'Not one of your numbers: a tracking number must be an active phone number of this business (request one with requestPhoneNumber)'
      using errcode = 'P0002';
  end if;
  return NEW;
end;
$$;
comment on function app_private.tg_tracking_numbers__number_must_be_ours() is 'Trigger (_200_number_must_be_ours, before insert or update on tracking_numbers): an active tracking number must be an active phone_numbers row of its own tenant (same id and number), whoever writes it. Raises P0002 "Not one of your numbers …", the same text whether the number is unknown, released or another tenant''s.';
--! EndIncluded routing/tg_tracking_numbers__number_must_be_ours.sql
drop trigger if exists _200_number_must_be_ours on app_public.tracking_numbers;
create trigger _200_number_must_be_ours before insert or update on app_public.tracking_numbers
  for each row execute function app_private.tg_tracking_numbers__number_must_be_ours();

--! Included messaging/tg_phone_numbers__end_tracking.sql
create or replace function app_private.tg_phone_numbers__end_tracking() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  update app_public.tracking_numbers t
  set is_active = false, inactive_reason = 'Its phone number is ' || NEW.status
  where t.tenant_id = NEW.tenant_id and t.phone_number_id = NEW.id and t.is_active;
  return NEW;
end;
$$;
comment on function app_private.tg_phone_numbers__end_tracking() is 'Trigger (_600_end_tracking, after update of status on phone_numbers, when the number is no longer active or suspended): its tracking numbers become inactive, with the reason, so a released number reaches no agent.';
--! EndIncluded messaging/tg_phone_numbers__end_tracking.sql
drop trigger if exists _600_end_tracking on app_public.phone_numbers;
create trigger _600_end_tracking after update of status on app_public.phone_numbers
  for each row when (NEW.status not in ('active', 'suspended') and OLD.status is distinct from NEW.status)
  execute function app_private.tg_phone_numbers__end_tracking();

-- Requests no longer write tracking numbers' phones: assign_tracking_number does.
revoke insert on app_public.tracking_numbers from :DATABASE_VISITOR;
revoke update on app_public.tracking_numbers from :DATABASE_VISITOR;
drop policy if exists insert_current_tenant on app_public.tracking_numbers;
grant update (agent_id, is_active) on app_public.tracking_numbers to :DATABASE_VISITOR;

--! Included messaging/number_owner.sql
create or replace function app_private.number_owner(phone text,
    out tenant_id uuid, out phone_number_id uuid, out tracking_number_id uuid, out agent_id uuid, out messaging_service_sid text)
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  -- Only a number we provisioned (a phone_numbers row, active or suspended) reaches a tenant. A tracking
  -- number is one of those rows given to an agent, so the same number yields the agent as well.
  select p.tenant_id, p.id, t.id, t.agent_id, p.messaging_service_sid
  from app_public.phone_numbers p
  left join app_public.tracking_numbers t
    on t.tenant_id = p.tenant_id and t.phone_number_id = p.id and t.is_active
  where p.phone_number = number_owner.phone and p.status in ('active', 'suspended')
  limit 1
$$;
comment on function app_private.number_owner(text) is 'Whose number this is: the tenant of the active (or suspended) phone_numbers row with this number, and, when that number is the active tracking number of an agent, the tracking number and its agent. No row when the number is not one we provisioned (a tracking number that is no phone_numbers row of its tenant reaches nobody).';
--! EndIncluded messaging/number_owner.sql
--! Included routing/assign_tracking_number.sql
create or replace function app_public.assign_tracking_number(agent_id uuid, phone text) returns app_public.tracking_numbers
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid := app_private.require_tenant_role('manager', 'assign tracking numbers');
  v_number app_public.phone_numbers;
  v_tracking app_public.tracking_numbers;
begin
  if assign_tracking_number.phone is null or assign_tracking_number.phone !~ '^\+[1-9][0-9]{6,14}$' then
    raise exception 'phone must be in E.164 form, e.g. +12125551234' using errcode = '22023';
  end if;
  if not exists (select 1 from app_public.agents a where a.tenant_id = v_tenant_id and a.id = assign_tracking_number.agent_id) then
    raise exception 'No agent % in this tenant', assign_tracking_number.agent_id using errcode = 'P0002';
  end if;
  -- Ownership first, and only within this tenant: an unknown number, a released one and another
  -- tenant's get the same error, so the answer says nothing about other tenants.
  select p.* into v_number from app_public.phone_numbers p
  where p.tenant_id = v_tenant_id and p.phone_number = assign_tracking_number.phone and p.status = 'active'
  for update;
  if not found then
    raise exception 'Not one of your numbers: a tracking number must be an active phone number of this business (request one with requestPhoneNumber)'
      using errcode = 'P0002';
  end if;
  select t.* into v_tracking from app_public.tracking_numbers t
  where t.tenant_id = v_tenant_id and t.phone = v_number.phone_number;
  if found and v_tracking.is_active and v_tracking.agent_id = assign_tracking_number.agent_id then
    return v_tracking;
  end if;
  if found and v_tracking.is_active then
    raise exception 'This number is already the tracking number of another agent of this business: deactivate that one first'
      using errcode = '23505';
  end if;
  begin
    insert into app_public.tracking_numbers (tenant_id, agent_id, phone, phone_number_id, provider_sid, is_active)
    values (v_tenant_id, assign_tracking_number.agent_id, v_number.phone_number, v_number.id, v_number.phone_number_sid, true)
    on conflict on constraint tracking_numbers_phone_must_be_unique_per_tenant do update
      set agent_id = excluded.agent_id, phone_number_id = excluded.phone_number_id, provider_sid = excluded.provider_sid,
          is_active = true, inactive_reason = null
    returning * into v_tracking;
  exception when unique_violation then
    -- Only a number held elsewhere can collide here (the global index on active numbers): say no more than above.
    raise exception 'Not one of your numbers: a tracking number must be an active phone number of this business (request one with requestPhoneNumber)'
      using errcode = 'P0002';
  end;
  return v_tracking;
end;
$$;
comment on function app_public.assign_tracking_number(uuid, text) is $$Makes one of the business's own active phone numbers (phone_numbers, bought through requestPhoneNumber) the tracking number of an agent (owners, admins and managers): calls and texts to it are attributed to that agent. An inactive tracking number of the same number is reused. Calling it again with the same agent returns the same row. Errors: P0002 "Not one of your numbers" for a number that is not an active number of this business (the same error whether it is unknown, released or another business's), or no such agent; 23505 the number is already the active tracking number of another agent of this business; 22023 a number not in E.164 form; 42501 not a manager or above.$$;
grant execute on function app_public.assign_tracking_number(uuid, text) to :DATABASE_VISITOR;
--! EndIncluded routing/assign_tracking_number.sql

-- The forwarding phone is written only through set_forward_to_phone.
revoke insert (forward_to_phone), update (forward_to_phone) on app_public.business_settings from :DATABASE_VISITOR;
--! Included messaging/set_forward_to_phone.sql
create or replace function app_public.set_forward_to_phone(phone text) returns app_public.business_settings
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid := app_private.require_tenant_role('admin', 'change the forwarding phone');
  v_settings app_public.business_settings;
  v_phone text := nullif(pg_catalog.btrim(set_forward_to_phone.phone), '');
begin
  if v_phone is not null and v_phone !~ '^\+[1-9][0-9]{6,14}$' then
    raise exception 'phone must be in E.164 form, e.g. +12125551234' using errcode = '22023';
  end if;
  -- Only this tenant's own numbers are looked at, so the answer says nothing about other tenants.
  if v_phone is not null and exists (
    select 1 from app_public.phone_numbers p
    where p.tenant_id = v_tenant_id and p.phone_number = v_phone and p.status not in ('released', 'failed')
  ) then
    raise exception 'Calls cannot be forwarded to one of this business''s own Switchboard numbers: give the phone that should ring (e.g. the office line)'
      using errcode = '22023';
  end if;
  update app_public.business_settings s set forward_to_phone = v_phone
  where s.tenant_id = v_tenant_id
  returning * into v_settings;
  if not found then
    raise exception 'This business has no settings row' using errcode = 'P0002';
  end if;
  return v_settings;
end;
$$;
comment on function app_public.set_forward_to_phone(text) is $$Sets (or, with null or an empty string, clears) the phone that calls to the business's numbers ring first (owners and admins); the column cannot be written directly. It must be a phone outside Switchboard, e.g. the office line: one of the business's own numbers would forward calls to itself. Errors: 22023 a number not in E.164 form, or one of the business's own numbers; 42501 not an owner or admin.$$;
grant execute on function app_public.set_forward_to_phone(text) to :DATABASE_VISITOR;
--! EndIncluded messaging/set_forward_to_phone.sql

-- Buying numbers: owners only, at most limits.phone_numbers (default 3) per tenant. Keys under
-- limits. are set by Switchboard operators, never by a request.
drop policy if exists write_no_limits_keys on app_public.system_config;
drop policy if exists insert_no_limits_keys on app_public.system_config;
drop policy if exists update_no_limits_keys on app_public.system_config;
drop policy if exists delete_no_limits_keys on app_public.system_config;
create policy insert_no_limits_keys on app_public.system_config as restrictive for insert to :DATABASE_VISITOR
  with check (key !~ '^limits\.');
create policy update_no_limits_keys on app_public.system_config as restrictive for update to :DATABASE_VISITOR
  using (key !~ '^limits\.') with check (key !~ '^limits\.');
create policy delete_no_limits_keys on app_public.system_config as restrictive for delete to :DATABASE_VISITOR
  using (key !~ '^limits\.');
--! Included messaging/phone_number_limit.sql
create or replace function app_private.phone_number_limit(tenant_id uuid) returns integer
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select coalesce(
    (select case when c.value_type = 'number' and (c.value #>> '{}')::numeric >= 0
                 then least(pg_catalog.floor((c.value #>> '{}')::numeric), 1000)::integer end
     from app_public.system_config c
     where c.tenant_id = phone_number_limit.tenant_id and c.key = 'limits.phone_numbers'),
    3)
$$;
comment on function app_private.phone_number_limit(uuid) is 'How many phone numbers a tenant may hold (provisioning, active, suspended or releasing): system_config limits.phone_numbers (a number, at most 1000), else 3. Keys under limits. are written only by Switchboard operators (the database owner), never by a request.';
--! EndIncluded messaging/phone_number_limit.sql
--! Included messaging/request_phone_number.sql
create or replace function app_public.request_phone_number(area_code text, friendly_name text default null)
  returns app_public.phone_numbers
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  -- Owners only: it spends money on the provider account of Switchboard.
  v_tenant_id uuid := app_private.require_tenant_role('owner', 'request phone numbers');
  v_number app_public.phone_numbers;
  v_limit integer;
  v_held integer;
begin
  -- A person who proved their email address: not an API key, not a brand-new unverified signup.
  if not exists (select 1 from app_public.users u where u.id = app_public.current_user_id() and u.email_verified_at is not null) then
    raise exception 'Verify your email address first: buying a phone number needs an owner logged in with a verified email address (verifyEmail; resendVerificationEmail sends a new token)'
      using errcode = '55000';
  end if;
  if request_phone_number.area_code is null or request_phone_number.area_code !~ '^[2-9][0-9]{2}$' then
    raise exception 'area_code must be 3 digits, the first 2 to 9 (e.g. 305), got %', coalesce(pg_catalog.quote_literal(request_phone_number.area_code), 'nothing')
      using errcode = '22023';
  end if;
  -- One request per tenant at a time, so that concurrent requests cannot pass the quota together.
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('phone-number-quota:' || v_tenant_id, 0));
  v_limit := app_private.phone_number_limit(v_tenant_id);
  select pg_catalog.count(*) into v_held
  from app_public.phone_numbers p
  where p.tenant_id = v_tenant_id and p.status in ('provisioning', 'active', 'suspended', 'releasing');
  if v_held >= v_limit then
    raise exception 'This business already has % phone numbers active or being provisioned, its limit: release one, or ask Switchboard support to raise the limit (system_config limits.phone_numbers)', v_limit
      using errcode = '55000';
  end if;
  insert into app_public.phone_numbers (tenant_id, area_code, friendly_name, status)
  values (v_tenant_id, request_phone_number.area_code,
    coalesce(nullif(pg_catalog.btrim(request_phone_number.friendly_name), ''), (select t.business_name from app_public.tenants t where t.id = v_tenant_id)),
    'provisioning')
  returning * into v_number;
  perform app_private.add_job('phone_number__provision', pg_catalog.json_build_object('phone_number_id', v_number.id),
    job_key => 'provision:' || v_number.id);
  return v_number;
end;
$$;
comment on function app_public.request_phone_number(text, text) is $$Asks for a new local number in an area code (owners only: it buys a number on Switchboard's provider account). The row starts as provisioning; the phone_number__provision job buys a number with voice and SMS, points its webhooks at Switchboard, creates its Messaging Service, and makes it active (or failed, with status_reason). A business may hold at most limits.phone_numbers numbers (system_config, set by Switchboard operators; default 3) that are provisioning, active, suspended or releasing. Only an owner logged in with a verified email address may buy (not an API key). Errors: 22023 a malformed area code; 55000 the email address is not verified, or the limit is reached (nothing is queued); 42501 not an owner.$$;
grant execute on function app_public.request_phone_number(text, text) to :DATABASE_VISITOR;
--! EndIncluded messaging/request_phone_number.sql
