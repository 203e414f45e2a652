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

--!include routing/tg_tracking_numbers__number_must_be_ours.sql
drop trigger if exists _200_number_must_be_ours on app_public.tracking_numbers;
create trigger _200_number_must_be_ours before insert or update on app_public.tracking_numbers
  for each row execute function app_private.tg_tracking_numbers__number_must_be_ours();

--!include messaging/tg_phone_numbers__end_tracking.sql
drop trigger if exists _600_end_tracking on app_public.phone_numbers;
create trigger _600_end_tracking after update of status on app_public.phone_numbers
  for each row when (NEW.status not in ('active', 'suspended') and OLD.status is distinct from NEW.status)
  execute function app_private.tg_phone_numbers__end_tracking();

-- Requests no longer write tracking numbers' phones: assign_tracking_number does.
revoke insert on app_public.tracking_numbers from :DATABASE_VISITOR;
revoke update on app_public.tracking_numbers from :DATABASE_VISITOR;
drop policy if exists insert_current_tenant on app_public.tracking_numbers;
grant update (agent_id, is_active) on app_public.tracking_numbers to :DATABASE_VISITOR;

--!include messaging/number_owner.sql
--!include routing/assign_tracking_number.sql

-- The forwarding phone is written only through set_forward_to_phone.
revoke insert (forward_to_phone), update (forward_to_phone) on app_public.business_settings from :DATABASE_VISITOR;
--!include messaging/set_forward_to_phone.sql

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
--!include messaging/phone_number_limit.sql
--!include messaging/request_phone_number.sql
