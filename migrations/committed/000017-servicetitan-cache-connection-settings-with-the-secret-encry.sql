--! Previous: sha1:a4bdeeaaab2af2b7a10272d8746258887ff8a705
--! Hash: sha1:306b689bba98612bc5466223f2e311c76fa56401
--! Message: ServiceTitan cache: connection settings with the secret encrypted by the application, raw caches of locations, jobs, appointments, technicians and appointment assignments, sync_state with a lease and resumable runs, pages applied with their token in one transaction, technicians as agents and appointments as busy time for route_lead

-- Migration 000017: the ServiceTitan cache. Per-tenant connection settings (the secret encrypted by
-- the application, never readable through GraphQL), the raw schema's caches of locations, jobs,
-- appointments, technicians and appointment assignments with the full API record, sync_state with a
-- lease per tenant and table so a sync resumes where it stopped and never runs twice at once, pages
-- applied in one transaction together with their continuation token, and technicians projected into
-- routable agents whose appointments make them busy for route_lead.

drop table if exists raw.st_appointment_assignments, raw.st_technicians, raw.st_appointments, raw.st_jobs, raw.st_locations,
  raw.sync_state cascade;
drop table if exists app_public.agent_busy_periods, app_public.service_titan_skill_lines, app_private.service_titan_credentials,
  app_public.service_titan_connections cascade;
alter table app_public.agent_specializations drop column if exists source;
alter table app_public.business_settings drop column if exists service_appointment_minutes;
do $do$
declare
  f record;
begin
  for f in
    select p.oid::regprocedure as sig
    from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
    where (n.nspname, p.proname) in (('app_hidden', 'st_resource'),
      ('app_hidden', 'st_service_line'),
      ('app_hidden', 'agent_is_busy'),
      ('app_hidden', 'save_service_titan_connection'),
      ('app_hidden', 'record_service_titan_connection_test'),
      ('app_private', 'service_titan_connection_for_sync'),
      ('app_private', 'st_begin_sync'),
      ('app_private', 'st_apply_page'),
      ('app_private', 'st_fail_sync'),
      ('app_private', 'st_upsert_records'),
      ('app_private', 'st_sync_technician_agents'),
      ('app_private', 'st_sync_busy_periods'),
      ('app_private', 'st_schedule_syncs'),
      ('app_public', 'request_service_titan_sync'),
      ('app_private', 'tg_service_titan_skill_lines__resync'))
  loop
    execute pg_catalog.format('drop function %s cascade', f.sig);
  end loop;
end
$do$;

--------------------------------------------------------------------------------
-- Connection settings
--------------------------------------------------------------------------------

create table app_public.service_titan_connections (
  tenant_id uuid primary key default app_public.current_tenant_id(),
  client_id text not null,
  service_titan_tenant_id text not null,
  environment text not null default 'production',
  enabled boolean not null default true,
  status text not null default 'untested',
  last_tested_at timestamptz,
  last_test_error text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint service_titan_connections_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint service_titan_connections_client_id_must_not_be_blank check (pg_catalog.btrim(client_id) <> '' and pg_catalog.length(client_id) <= 200),
  constraint service_titan_connections_tenant_id_must_be_digits check (service_titan_tenant_id ~ '^[0-9]{1,20}$'),
  constraint service_titan_connections_environment_must_be_known check (environment in ('production', 'integration')),
  constraint service_titan_connections_status_must_be_known check (status in ('untested', 'connected', 'failed'))
);
comment on table app_public.service_titan_connections is $$A tenant’s connection to ServiceTitan (one per tenant): who we are at ServiceTitan and whether the last test worked. The client secret and app key are kept encrypted in app_private and never shown. Saved and tested with the saveServiceTitanConnection mutation (owners and admins); managers and up can read it.$$;
comment on column app_public.service_titan_connections.tenant_id is 'The Switchboard tenant.';
comment on column app_public.service_titan_connections.client_id is 'The OAuth client id of the tenant’s ServiceTitan app connection.';
comment on column app_public.service_titan_connections.service_titan_tenant_id is 'ServiceTitan’s numeric tenant id.';
comment on column app_public.service_titan_connections.environment is 'production or integration (ServiceTitan’s sandbox).';
comment on column app_public.service_titan_connections.enabled is 'When false, no sync runs for this tenant (scheduled or requested).';
comment on column app_public.service_titan_connections.status is 'untested, connected (the last test got a token and read a technician) or failed (see last_test_error).';
comment on column app_public.service_titan_connections.last_tested_at is 'When the settings were last tested.';
comment on column app_public.service_titan_connections.last_test_error is 'Why the last test failed, in words; null when it worked.';
comment on column app_public.service_titan_connections.created_at is 'When the connection was first saved.';
comment on column app_public.service_titan_connections.updated_at is 'When the connection last changed.';

alter table app_public.service_titan_connections enable row level security;
alter table app_public.service_titan_connections force row level security;
create policy owner_all on app_public.service_titan_connections for all to :DATABASE_OWNER using (true) with check (true);
create policy select_managers on app_public.service_titan_connections for select to :DATABASE_VISITOR
  using (tenant_id = (select app_public.current_tenant_id()) and (select app_hidden.current_user_has_role('manager')));
create trigger _100_timestamps before insert or update on app_public.service_titan_connections for each row execute function app_private.tg__timestamps();
grant select on app_public.service_titan_connections to :DATABASE_VISITOR;

create table app_private.service_titan_credentials (
  tenant_id uuid primary key,
  app_key text not null,
  client_secret_encrypted bytea not null,
  key_fingerprint text not null,
  updated_at timestamptz not null default now(),
  constraint service_titan_credentials_connection_must_exist foreign key (tenant_id)
    references app_public.service_titan_connections (tenant_id) on delete cascade,
  constraint service_titan_credentials_app_key_must_not_be_blank check (pg_catalog.btrim(app_key) <> '' and pg_catalog.length(app_key) <= 200),
  constraint service_titan_credentials_secret_must_not_be_empty check (pg_catalog.length(client_secret_encrypted) > 28)
);
comment on table app_private.service_titan_credentials is $$The secret half of a ServiceTitan connection. client_secret_encrypted is AES-256-GCM ciphertext made by the application with SECRETS_KEY (src/secrets.ts), which never reaches the database; key_fingerprint names the key it was made with, so a changed key is reported instead of producing garbage. Read only by the worker (service_titan_connection_for_sync).$$;
comment on column app_private.service_titan_credentials.tenant_id is 'The Switchboard tenant.';
comment on column app_private.service_titan_credentials.app_key is 'The ServiceTitan application key (ST-App-Key header).';
comment on column app_private.service_titan_credentials.client_secret_encrypted is 'The OAuth client secret, encrypted by the application (version byte, 12-byte IV, 16-byte tag, ciphertext).';
comment on column app_private.service_titan_credentials.key_fingerprint is 'First 16 hex digits of SHA-256 of the encryption key.';
comment on column app_private.service_titan_credentials.updated_at is 'When the credentials were last saved.';
alter table app_private.service_titan_credentials enable row level security;
alter table app_private.service_titan_credentials force row level security;
create policy owner_all on app_private.service_titan_credentials for all to :DATABASE_OWNER using (true) with check (true);

create function app_hidden.save_service_titan_connection(
  client_id text, client_secret_encrypted bytea, key_fingerprint text, app_key text,
  service_titan_tenant_id text, environment text
) returns app_public.service_titan_connections
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant uuid := app_public.current_tenant_id();
  v_row app_public.service_titan_connections;
begin
  if v_tenant is null or not app_hidden.current_user_has_role('admin') then
    raise exception 'Only owners and admins can change the ServiceTitan connection' using errcode = '42501';
  end if;
  if coalesce(pg_catalog.btrim(client_id), '') = '' then
    raise exception 'clientId must not be empty' using errcode = '22023';
  end if;
  if coalesce(pg_catalog.btrim(app_key), '') = '' then
    raise exception 'appKey must not be empty' using errcode = '22023';
  end if;
  if coalesce(service_titan_tenant_id, '') !~ '^[0-9]{1,20}$' then
    raise exception 'serviceTitanTenantId must be ServiceTitan''s numeric tenant id (digits only), got "%"', pg_catalog.left(coalesce(service_titan_tenant_id, ''), 40)
      using errcode = '22023';
  end if;
  if coalesce(environment, '') not in ('production', 'integration') then
    raise exception 'environment must be production or integration, got "%"', pg_catalog.left(coalesce(environment, ''), 40) using errcode = '22023';
  end if;
  insert into app_public.service_titan_connections as c (tenant_id, client_id, service_titan_tenant_id, environment, status, last_tested_at, last_test_error)
  values (v_tenant, pg_catalog.btrim(save_service_titan_connection.client_id), save_service_titan_connection.service_titan_tenant_id,
          save_service_titan_connection.environment, 'untested', null, null)
  on conflict (tenant_id) do update
    set client_id = excluded.client_id, service_titan_tenant_id = excluded.service_titan_tenant_id,
        environment = excluded.environment, status = 'untested', last_tested_at = null, last_test_error = null
  returning * into v_row;
  insert into app_private.service_titan_credentials as k (tenant_id, app_key, client_secret_encrypted, key_fingerprint)
  values (v_tenant, pg_catalog.btrim(save_service_titan_connection.app_key), save_service_titan_connection.client_secret_encrypted,
          save_service_titan_connection.key_fingerprint)
  on conflict (tenant_id) do update
    set app_key = excluded.app_key, client_secret_encrypted = excluded.client_secret_encrypted,
        key_fingerprint = excluded.key_fingerprint, updated_at = pg_catalog.now();
  return v_row;
end;
$$;
comment on function app_hidden.save_service_titan_connection(text, bytea, text, text, text, text) is $$Saves the current tenant’s ServiceTitan connection (owners and admins, else 42501; bad values 22023) with status untested. The secret arrives already encrypted by the API (saveServiceTitanConnection), which then tests the settings and calls record_service_titan_connection_test, in the same transaction.$$;
grant execute on function app_hidden.save_service_titan_connection(text, bytea, text, text, text, text) to :DATABASE_VISITOR;

create function app_hidden.record_service_titan_connection_test(error text) returns app_public.service_titan_connections
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant uuid := app_public.current_tenant_id();
  v_row app_public.service_titan_connections;
  v_first boolean;
begin
  if v_tenant is null or not app_hidden.current_user_has_role('admin') then
    raise exception 'Only owners and admins can change the ServiceTitan connection' using errcode = '42501';
  end if;
  select c.status = 'untested' and not exists (
           select 1 from raw.sync_state s where s.tenant_id = v_tenant and s.last_full_sync is not null)
    into v_first
    from app_public.service_titan_connections c where c.tenant_id = v_tenant;
  update app_public.service_titan_connections c
     set status = case when error is null then 'connected' else 'failed' end,
         last_tested_at = pg_catalog.now(), last_test_error = pg_catalog.left(error, 2000)
   where c.tenant_id = v_tenant
  returning * into v_row;
  if v_row.tenant_id is null then
    raise exception 'No ServiceTitan connection is saved for this tenant' using errcode = 'P0002';
  end if;
  -- The first working connection starts the first full sync of every table.
  if error is null and v_first and v_row.enabled then
    perform app_private.st_schedule_syncs('full', v_tenant);
  end if;
  return v_row;
end;
$$;
comment on function app_hidden.record_service_titan_connection_test(text) is 'Records the outcome of testing the current tenant’s ServiceTitan settings (error null: it worked). The first time a connection works, a full sync of every table is enqueued. Owners and admins (42501).';
grant execute on function app_hidden.record_service_titan_connection_test(text) to :DATABASE_VISITOR;

create function app_private.service_titan_connection_for_sync(tenant_id uuid)
  returns table (client_id text, client_secret_encrypted bytea, key_fingerprint text, app_key text,
                 service_titan_tenant_id text, environment text, enabled boolean)
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select c.client_id, k.client_secret_encrypted, k.key_fingerprint, k.app_key, c.service_titan_tenant_id, c.environment, c.enabled
    from app_public.service_titan_connections c
    join app_private.service_titan_credentials k on k.tenant_id = c.tenant_id
   where c.tenant_id = service_titan_connection_for_sync.tenant_id;
$$;
comment on function app_private.service_titan_connection_for_sync(uuid) is 'The worker’s view of a tenant’s ServiceTitan connection, secret still encrypted; no row when none is saved.';

--------------------------------------------------------------------------------
-- The caches
--------------------------------------------------------------------------------

create table raw.sync_state (
  tenant_id uuid not null,
  table_name text not null,
  last_full_sync timestamptz,
  last_incremental_sync timestamptz,
  records_synced bigint not null default 0,
  last_error text,
  last_error_at timestamptz,
  consecutive_failures int not null default 0,
  cursor text,
  run_id uuid,
  run_mode text,
  run_started_at timestamptz,
  run_heartbeat_at timestamptz,
  run_cursor text,
  run_records bigint not null default 0,
  run_pages int not null default 0,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint sync_state_must_be_one_row_per_tenant_and_table primary key (tenant_id, table_name),
  constraint sync_state_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint sync_state_table_must_be_a_cache check (table_name in ('st_locations', 'st_jobs', 'st_appointments', 'st_technicians', 'st_appointment_assignments')),
  constraint sync_state_run_mode_must_be_known check (run_mode in ('full', 'incremental')),
  constraint sync_state_claimed_run_needs_a_mode check (run_id is null or run_mode is not null)
);
comment on table raw.sync_state is $$Where each cache of each tenant stands. last_full_sync and last_incremental_sync say when a sync last completed, records_synced how many records it applied, last_error why the last attempt failed. A run in progress (or interrupted by a crash or an error) keeps its mode and continuation token in run_mode and run_cursor: the next run of that table continues from there. run_id is the live claim; a claim whose heartbeat is older than 15 minutes is considered dead. cursor is the continuation token incremental syncs start from.$$;
comment on column raw.sync_state.tenant_id is 'The Switchboard tenant.';
comment on column raw.sync_state.table_name is 'The cache: st_locations, st_jobs, st_appointments, st_technicians or st_appointment_assignments.';
comment on column raw.sync_state.last_full_sync is 'When the last full sync completed.';
comment on column raw.sync_state.last_incremental_sync is 'When the last incremental sync completed.';
comment on column raw.sync_state.records_synced is 'Records applied by the last completed sync.';
comment on column raw.sync_state.last_error is 'Why the last attempt failed; cleared when a sync completes.';
comment on column raw.sync_state.last_error_at is 'When the last attempt failed.';
comment on column raw.sync_state.consecutive_failures is 'Failed attempts since the last completed sync.';
comment on column raw.sync_state.cursor is 'ServiceTitan’s continueFrom after the last completed sync: where the next incremental sync starts.';
comment on column raw.sync_state.run_id is 'The worker run holding this table now (null: nobody).';
comment on column raw.sync_state.run_mode is 'full or incremental while a run is in progress or interrupted; null when the last run completed.';
comment on column raw.sync_state.run_started_at is 'When the run in progress began (kept when it is resumed).';
comment on column raw.sync_state.run_heartbeat_at is 'When the run in progress last applied a page.';
comment on column raw.sync_state.run_cursor is 'The continuation token the run in progress continues from.';
comment on column raw.sync_state.run_records is 'Records applied so far by the run in progress.';
comment on column raw.sync_state.run_pages is 'Pages applied so far by the run in progress.';
comment on column raw.sync_state.created_at is 'When the table was first synced for this tenant.';
comment on column raw.sync_state.updated_at is 'When this row last changed.';

create table raw.st_locations (
  tenant_id uuid not null,
  id bigint not null,
  customer_id bigint,
  name text,
  street text,
  unit text,
  city text,
  state text,
  zip text,
  country text,
  latitude double precision,
  longitude double precision,
  tax_zone_id bigint,
  active boolean not null,
  created_on timestamptz,
  modified_on timestamptz not null,
  full_data jsonb not null,
  synced_at timestamptz not null default now(),
  deleted_at timestamptz,
  constraint st_locations_must_be_unique_per_tenant primary key (tenant_id, id),
  constraint st_locations_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade
);
create index st_locations_by_customer on raw.st_locations (tenant_id, customer_id);
create index st_locations_by_place on raw.st_locations (tenant_id, state, city) where active and deleted_at is null;
create index st_locations_by_modified on raw.st_locations (tenant_id, modified_on);
create index st_locations_full_data on raw.st_locations using gin (full_data jsonb_path_ops);
comment on table raw.st_locations is 'ServiceTitan locations (service addresses of customers), cached per tenant: typed columns for filtering and the full API record in full_data.';

create table raw.st_jobs (
  tenant_id uuid not null,
  id bigint not null,
  job_number text,
  customer_id bigint,
  location_id bigint,
  job_status text,
  priority text,
  business_unit_id bigint,
  job_type_id bigint,
  campaign_id bigint,
  summary text,
  completed_on timestamptz,
  total numeric(14, 2),
  appointment_count int,
  first_appointment_id bigint,
  last_appointment_id bigint,
  active boolean not null,
  created_on timestamptz,
  modified_on timestamptz not null,
  full_data jsonb not null,
  synced_at timestamptz not null default now(),
  deleted_at timestamptz,
  constraint st_jobs_must_be_unique_per_tenant primary key (tenant_id, id),
  constraint st_jobs_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade
);
create index st_jobs_by_status on raw.st_jobs (tenant_id, job_status, business_unit_id);
create index st_jobs_by_customer on raw.st_jobs (tenant_id, customer_id);
create index st_jobs_by_location on raw.st_jobs (tenant_id, location_id);
create index st_jobs_by_created on raw.st_jobs (tenant_id, created_on);
create index st_jobs_by_modified on raw.st_jobs (tenant_id, modified_on);
create index st_jobs_full_data on raw.st_jobs using gin (full_data jsonb_path_ops);
comment on table raw.st_jobs is 'ServiceTitan jobs cached per tenant: status, priority, customer, location, business unit, campaign; technician assignments are in st_appointment_assignments, everything else in full_data.';

create table raw.st_appointments (
  tenant_id uuid not null,
  id bigint not null,
  job_id bigint,
  appointment_number text,
  starts_at timestamptz,
  ends_at timestamptz,
  arrival_window_start timestamptz,
  arrival_window_end timestamptz,
  status text,
  customer_id bigint,
  is_confirmed boolean,
  active boolean not null,
  created_on timestamptz,
  modified_on timestamptz not null,
  full_data jsonb not null,
  synced_at timestamptz not null default now(),
  deleted_at timestamptz,
  constraint st_appointments_must_be_unique_per_tenant primary key (tenant_id, id),
  constraint st_appointments_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade
);
create index st_appointments_by_start on raw.st_appointments (tenant_id, starts_at, ends_at);
create index st_appointments_by_job on raw.st_appointments (tenant_id, job_id);
create index st_appointments_by_status on raw.st_appointments (tenant_id, status, starts_at);
create index st_appointments_by_modified on raw.st_appointments (tenant_id, modified_on);
create index st_appointments_full_data on raw.st_appointments using gin (full_data jsonb_path_ops);
comment on table raw.st_appointments is 'ServiceTitan appointments (visits of a job) cached per tenant, indexed for schedule queries by start and end.';

create table raw.st_technicians (
  tenant_id uuid not null,
  id bigint not null,
  user_id bigint,
  name text,
  email text,
  phone_number text,
  mobile_phone text,
  team text,
  business_unit_id bigint,
  main_zone_id bigint,
  zone_ids bigint[] not null default '{}',
  skills jsonb not null default '[]',
  status text,
  active boolean not null,
  created_on timestamptz,
  modified_on timestamptz not null,
  full_data jsonb not null,
  synced_at timestamptz not null default now(),
  deleted_at timestamptz,
  constraint st_technicians_must_be_unique_per_tenant primary key (tenant_id, id),
  constraint st_technicians_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade
);
create index st_technicians_by_team on raw.st_technicians (tenant_id, team, business_unit_id) where active and deleted_at is null;
create index st_technicians_by_modified on raw.st_technicians (tenant_id, modified_on);
create index st_technicians_skills on raw.st_technicians using gin (skills jsonb_path_ops);
create index st_technicians_full_data on raw.st_technicians using gin (full_data jsonb_path_ops);
comment on table raw.st_technicians is 'ServiceTitan technicians cached per tenant: contact, team, business unit, zones and skills (certifications). Each becomes a routable agent (agents.external_source = servicetitan).';

create table raw.st_appointment_assignments (
  tenant_id uuid not null,
  id bigint not null,
  appointment_id bigint,
  technician_id bigint,
  job_id bigint,
  status text,
  is_paused boolean,
  assigned_on timestamptz,
  active boolean not null,
  created_on timestamptz,
  modified_on timestamptz not null,
  full_data jsonb not null,
  synced_at timestamptz not null default now(),
  deleted_at timestamptz,
  constraint st_appointment_assignments_must_be_unique_per_tenant primary key (tenant_id, id),
  constraint st_appointment_assignments_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade
);
create index st_appointment_assignments_by_technician on raw.st_appointment_assignments (tenant_id, technician_id, appointment_id);
create index st_appointment_assignments_by_appointment on raw.st_appointment_assignments (tenant_id, appointment_id);
create index st_appointment_assignments_by_modified on raw.st_appointment_assignments (tenant_id, modified_on);
create index st_appointment_assignments_full_data on raw.st_appointment_assignments using gin (full_data jsonb_path_ops);
comment on table raw.st_appointment_assignments is 'ServiceTitan’s Dispatch appointment assignments cached per tenant: which technician works which appointment (ServiceTitan keeps them apart from appointments). They make technicians busy for routing.';

-- Columns every cache shares.
do $do$
declare
  t text;
begin
  foreach t in array array['st_locations', 'st_jobs', 'st_appointments', 'st_technicians', 'st_appointment_assignments'] loop
    execute pg_catalog.format($c$comment on column raw.%I.tenant_id is 'The Switchboard tenant.'$c$, t);
    execute pg_catalog.format($c$comment on column raw.%I.id is 'ServiceTitan’s id of the record.'$c$, t);
    execute pg_catalog.format($c$comment on column raw.%I.active is 'ServiceTitan’s active flag: inactive records are kept, marked.'$c$, t);
    execute pg_catalog.format($c$comment on column raw.%I.created_on is 'When the record was created in ServiceTitan.'$c$, t);
    execute pg_catalog.format($c$comment on column raw.%I.modified_on is 'When the record last changed in ServiceTitan; an older version never overwrites a newer one.'$c$, t);
    execute pg_catalog.format($c$comment on column raw.%I.full_data is 'The whole record as ServiceTitan’s API returned it (GIN-indexed for jsonpath and containment queries).'$c$, t);
    execute pg_catalog.format($c$comment on column raw.%I.synced_at is 'When a sync last wrote or confirmed the record.'$c$, t);
    execute pg_catalog.format($c$comment on column raw.%I.deleted_at is 'When a full sync no longer found the record at ServiceTitan (deleted there); null while it exists.'$c$, t);
    execute pg_catalog.format('alter table raw.%I enable row level security', t);
    execute pg_catalog.format('alter table raw.%I force row level security', t);
    execute pg_catalog.format('create policy owner_all on raw.%I for all to :DATABASE_OWNER using (true) with check (true)', t);
    execute pg_catalog.format('create policy select_current_tenant on raw.%I for select to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()))', t);
    execute pg_catalog.format('grant select on raw.%I to :DATABASE_VISITOR', t);
  end loop;
end
$do$;
comment on column raw.st_locations.customer_id is 'The ServiceTitan customer the location belongs to.';
comment on column raw.st_locations.name is 'The location’s name.';
comment on column raw.st_locations.street is 'Street address.';
comment on column raw.st_locations.unit is 'Unit or apartment.';
comment on column raw.st_locations.city is 'City.';
comment on column raw.st_locations.state is 'State.';
comment on column raw.st_locations.zip is 'Postal code.';
comment on column raw.st_locations.country is 'Country.';
comment on column raw.st_locations.latitude is 'Latitude (geocoded by ServiceTitan).';
comment on column raw.st_locations.longitude is 'Longitude (geocoded by ServiceTitan).';
comment on column raw.st_locations.tax_zone_id is 'ServiceTitan tax zone.';
comment on column raw.st_jobs.job_number is 'The job number shown to people.';
comment on column raw.st_jobs.customer_id is 'The ServiceTitan customer.';
comment on column raw.st_jobs.location_id is 'The ServiceTitan location (st_locations.id).';
comment on column raw.st_jobs.job_status is 'Scheduled, Dispatched, InProgress, Hold, Completed or Canceled.';
comment on column raw.st_jobs.priority is 'Low, Normal, High or Urgent.';
comment on column raw.st_jobs.business_unit_id is 'The business unit doing the job.';
comment on column raw.st_jobs.job_type_id is 'The job type.';
comment on column raw.st_jobs.campaign_id is 'The marketing campaign the job is attributed to.';
comment on column raw.st_jobs.summary is 'What the job is about.';
comment on column raw.st_jobs.completed_on is 'When the job was completed.';
comment on column raw.st_jobs.total is 'Invoice total of the job.';
comment on column raw.st_jobs.appointment_count is 'Number of appointments.';
comment on column raw.st_jobs.first_appointment_id is 'The first appointment.';
comment on column raw.st_jobs.last_appointment_id is 'The latest appointment.';
comment on column raw.st_appointments.job_id is 'The job (st_jobs.id).';
comment on column raw.st_appointments.appointment_number is 'The appointment number shown to people.';
comment on column raw.st_appointments.starts_at is 'When the appointment starts.';
comment on column raw.st_appointments.ends_at is 'When the appointment ends.';
comment on column raw.st_appointments.arrival_window_start is 'Start of the arrival window promised to the customer.';
comment on column raw.st_appointments.arrival_window_end is 'End of the arrival window.';
comment on column raw.st_appointments.status is 'Scheduled, Dispatched, Working, Hold, Done or Canceled.';
comment on column raw.st_appointments.customer_id is 'The ServiceTitan customer.';
comment on column raw.st_appointments.is_confirmed is 'Whether the customer confirmed.';
comment on column raw.st_technicians.user_id is 'The technician’s ServiceTitan user.';
comment on column raw.st_technicians.name is 'Full name.';
comment on column raw.st_technicians.email is 'Email address.';
comment on column raw.st_technicians.phone_number is 'Phone number.';
comment on column raw.st_technicians.mobile_phone is 'Mobile phone number.';
comment on column raw.st_technicians.team is 'Team name.';
comment on column raw.st_technicians.business_unit_id is 'Business unit.';
comment on column raw.st_technicians.main_zone_id is 'The zone the technician mainly serves.';
comment on column raw.st_technicians.zone_ids is 'Every zone the technician serves.';
comment on column raw.st_technicians.skills is 'Skills and certifications, [{id, name}], as ServiceTitan lists them.';
comment on column raw.st_technicians.status is 'Live dispatch status (Idle, Dispatched, Working, …).';
comment on column raw.st_appointment_assignments.appointment_id is 'The appointment (st_appointments.id).';
comment on column raw.st_appointment_assignments.technician_id is 'The technician (st_technicians.id).';
comment on column raw.st_appointment_assignments.job_id is 'The job.';
comment on column raw.st_appointment_assignments.status is 'Scheduled, Dispatched, Working or Done.';
comment on column raw.st_appointment_assignments.is_paused is 'Whether the technician paused work on it.';
comment on column raw.st_appointment_assignments.assigned_on is 'When the technician was assigned.';

alter table raw.sync_state enable row level security;
alter table raw.sync_state force row level security;
create policy owner_all on raw.sync_state for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on raw.sync_state for select to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
create trigger _100_timestamps before insert or update on raw.sync_state for each row execute function app_private.tg__timestamps();
grant usage on schema raw to :DATABASE_VISITOR;
grant select on raw.sync_state to :DATABASE_VISITOR;

--------------------------------------------------------------------------------
-- Technicians as agents, appointments as busy time
--------------------------------------------------------------------------------

alter table app_public.agent_specializations add column source text not null default 'manual';
alter table app_public.agent_specializations add constraint agent_specializations_source_must_be_known check (source in ('manual', 'servicetitan'));
comment on column app_public.agent_specializations.source is 'manual, or servicetitan for one derived from a technician’s ServiceTitan skills (replaced at every sync of the technician).';

alter table app_public.business_settings add column service_appointment_minutes int not null default 120;
alter table app_public.business_settings add constraint business_settings_service_appointment_minutes_must_be_between_15_and_1440
  check (service_appointment_minutes between 15 and 1440);
comment on column app_public.business_settings.service_appointment_minutes is 'How long a requested service appointment (leads.appointment_at) lasts when routing checks that a technician is free (default 120).';
grant update (service_appointment_minutes) on app_public.business_settings to :DATABASE_VISITOR;

create table app_public.service_titan_skill_lines (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null default app_public.current_tenant_id(),
  skill_name public.citext not null,
  service_line text not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint service_titan_skill_lines_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint service_titan_skill_lines_skill_must_be_unique_per_tenant unique (tenant_id, skill_name),
  constraint service_titan_skill_lines_service_line_must_not_be_blank check (pg_catalog.btrim(service_line) <> '')
);
comment on table app_public.service_titan_skill_lines is $$Which lead service line a ServiceTitan skill or certification qualifies a technician for (e.g. "Plumbing Service" → plumbing). A skill without a row here gives the service line spelled like the skill in lowercase with underscores ("EPA 608 Certified" → epa_608_certified). Managers and up change them; technicians are re-derived at once.$$;
comment on column app_public.service_titan_skill_lines.id is 'The row’s id.';
comment on column app_public.service_titan_skill_lines.tenant_id is 'The tenant.';
comment on column app_public.service_titan_skill_lines.skill_name is 'The skill’s name at ServiceTitan (case-insensitive).';
comment on column app_public.service_titan_skill_lines.service_line is 'The service line (leads.service_line) it qualifies for.';
comment on column app_public.service_titan_skill_lines.created_at is 'When it was added.';
comment on column app_public.service_titan_skill_lines.updated_at is 'When it last changed.';
alter table app_public.service_titan_skill_lines enable row level security;
alter table app_public.service_titan_skill_lines force row level security;
create policy owner_all on app_public.service_titan_skill_lines for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.service_titan_skill_lines for select to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
create policy insert_current_tenant on app_public.service_titan_skill_lines for insert to :DATABASE_VISITOR with check (tenant_id = (select app_public.current_tenant_id()));
create policy update_current_tenant on app_public.service_titan_skill_lines for update to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id())) with check (tenant_id = (select app_public.current_tenant_id()));
create policy delete_current_tenant on app_public.service_titan_skill_lines for delete to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
create trigger _050_require_tenant_role before insert or update or delete on app_public.service_titan_skill_lines
  for each row execute function app_private.tg__require_tenant_role('manager', 'ServiceTitan skill lines');
create trigger _100_timestamps before insert or update on app_public.service_titan_skill_lines for each row execute function app_private.tg__timestamps();
grant select, delete on app_public.service_titan_skill_lines to :DATABASE_VISITOR;
grant insert (tenant_id, skill_name, service_line), update (skill_name, service_line) on app_public.service_titan_skill_lines to :DATABASE_VISITOR;

create table app_public.agent_busy_periods (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null,
  agent_id uuid not null,
  during tstzrange not null,
  source text not null,
  external_ref text not null,
  created_at timestamptz not null default now(),
  constraint agent_busy_periods_agent_must_exist foreign key (tenant_id, agent_id) references app_public.agents (tenant_id, id) on delete cascade,
  constraint agent_busy_periods_must_be_unique_per_source_ref_and_agent unique (tenant_id, source, external_ref, agent_id),
  constraint agent_busy_periods_must_not_be_empty check (not pg_catalog.isempty(during) and not pg_catalog.lower_inf(during) and not pg_catalog.upper_inf(during)),
  constraint agent_busy_periods_source_must_be_known check (source in ('servicetitan'))
);
create index agent_busy_periods_by_agent on app_public.agent_busy_periods using gist (tenant_id, agent_id, during);
comment on table app_public.agent_busy_periods is $$Times an agent is busy elsewhere, from an outside calendar: for a ServiceTitan technician, every live appointment they are assigned to (source servicetitan, external_ref appointment:<id>), kept in step by the sync. route_lead does not offer a lead whose appointment_at falls in one.$$;
comment on column app_public.agent_busy_periods.id is 'The row’s id.';
comment on column app_public.agent_busy_periods.tenant_id is 'The tenant.';
comment on column app_public.agent_busy_periods.agent_id is 'The busy agent.';
comment on column app_public.agent_busy_periods.during is 'When the agent is busy.';
comment on column app_public.agent_busy_periods.source is 'Where it comes from (servicetitan).';
comment on column app_public.agent_busy_periods.external_ref is 'What it is at the source (appointment:<ServiceTitan appointment id>).';
comment on column app_public.agent_busy_periods.created_at is 'When it was recorded.';
alter table app_public.agent_busy_periods enable row level security;
alter table app_public.agent_busy_periods force row level security;
create policy owner_all on app_public.agent_busy_periods for all to :DATABASE_OWNER using (true) with check (true);
create policy select_current_tenant on app_public.agent_busy_periods for select to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
grant select on app_public.agent_busy_periods to :DATABASE_VISITOR;

create function app_hidden.st_service_line(tenant_id uuid, skill_name text) returns text
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select coalesce(
    (select m.service_line from app_public.service_titan_skill_lines m
      where m.tenant_id = st_service_line.tenant_id and m.skill_name = st_service_line.skill_name::public.citext),
    nullif(pg_catalog.btrim(pg_catalog.regexp_replace(pg_catalog.lower(skill_name), '[^a-z0-9]+', '_', 'g'), '_'), ''));
$$;
comment on function app_hidden.st_service_line(uuid, text) is 'The service line a ServiceTitan skill qualifies for in a tenant: its service_titan_skill_lines row, else the skill’s name in lowercase with underscores.';

create function app_private.st_sync_busy_periods(tenant_id uuid, appointment_ids bigint[]) returns void
  language sql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
  delete from app_public.agent_busy_periods b
   where b.tenant_id = st_sync_busy_periods.tenant_id and b.source = 'servicetitan'
     and b.external_ref = any (select 'appointment:' || x from pg_catalog.unnest(appointment_ids) x);
  insert into app_public.agent_busy_periods (tenant_id, agent_id, during, source, external_ref)
  select distinct on (g.id, ap.id) ap.tenant_id, g.id, pg_catalog.tstzrange(ap.starts_at, ap.ends_at), 'servicetitan', 'appointment:' || ap.id
    from raw.st_appointments ap
    join raw.st_appointment_assignments aa on aa.tenant_id = ap.tenant_id and aa.appointment_id = ap.id
    join app_public.agents g on g.tenant_id = ap.tenant_id and g.external_source = 'servicetitan' and g.external_id = aa.technician_id::text
   where ap.tenant_id = st_sync_busy_periods.tenant_id and ap.id = any (appointment_ids)
     and ap.active and ap.deleted_at is null and aa.active and aa.deleted_at is null
     and ap.status is distinct from 'Canceled' and ap.starts_at < ap.ends_at;
$$;
comment on function app_private.st_sync_busy_periods(uuid, bigint[]) is 'Rebuilds the busy periods of these ServiceTitan appointments: one per technician agent assigned (active assignment, live appointment not canceled).';

create function app_private.st_sync_technician_agents(tenant_id uuid, technician_ids bigint[]) returns void
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
begin
  insert into app_public.agents as a (tenant_id, display_name, email, phone, kind, external_source, external_id, is_active)
  select t.tenant_id, coalesce(nullif(pg_catalog.btrim(t.name), ''), 'Technician ' || t.id),
         case when app_hidden.is_valid_email(t.email) then t.email end,
         case when t.phone_number ~ '^\+[1-9][0-9]{7,14}$' then t.phone_number
              when t.mobile_phone ~ '^\+[1-9][0-9]{7,14}$' then t.mobile_phone end,
         'technician', 'servicetitan', t.id::text, t.active and t.deleted_at is null
    from raw.st_technicians t
   where t.tenant_id = st_sync_technician_agents.tenant_id and t.id = any (technician_ids)
  on conflict (tenant_id, external_source, external_id) where external_id is not null do update
    set display_name = excluded.display_name, email = excluded.email, phone = excluded.phone, is_active = excluded.is_active
    where (a.display_name, a.email, a.phone, a.is_active) is distinct from (excluded.display_name, excluded.email, excluded.phone, excluded.is_active);

  -- A new technician agent starts available (their appointments say when they are not).
  insert into app_public.agent_availability (tenant_id, agent_id, status)
  select a.tenant_id, a.id, 'available'
    from app_public.agents a
   where a.tenant_id = st_sync_technician_agents.tenant_id and a.external_source = 'servicetitan'
     and a.external_id = any (select x::text from pg_catalog.unnest(technician_ids) x)
  on conflict do nothing;

  delete from app_public.agent_specializations s
   using app_public.agents a
   where s.tenant_id = st_sync_technician_agents.tenant_id and s.source = 'servicetitan'
     and a.tenant_id = s.tenant_id and a.id = s.agent_id and a.external_source = 'servicetitan'
     and a.external_id = any (select x::text from pg_catalog.unnest(technician_ids) x);
  insert into app_public.agent_specializations (tenant_id, agent_id, service_line, source)
  select distinct a.tenant_id, a.id, app_hidden.st_service_line(t.tenant_id, skill ->> 'name'), 'servicetitan'
    from raw.st_technicians t
    join app_public.agents a on a.tenant_id = t.tenant_id and a.external_source = 'servicetitan' and a.external_id = t.id::text
    cross join lateral pg_catalog.jsonb_array_elements(case when pg_catalog.jsonb_typeof(t.skills) = 'array' then t.skills else '[]' end) skill
   where t.tenant_id = st_sync_technician_agents.tenant_id and t.id = any (technician_ids)
     and app_hidden.st_service_line(t.tenant_id, skill ->> 'name') is not null
  on conflict (tenant_id, agent_id, service_line, customer_segment) do nothing;

  -- Their appointments (from a day ago on) may now have an agent to be busy.
  perform app_private.st_sync_busy_periods(st_sync_technician_agents.tenant_id, pg_catalog.array_agg(distinct aa.appointment_id))
     from raw.st_appointment_assignments aa
     join raw.st_appointments ap on ap.tenant_id = aa.tenant_id and ap.id = aa.appointment_id
    where aa.tenant_id = st_sync_technician_agents.tenant_id and aa.technician_id = any (technician_ids)
      and ap.ends_at > pg_catalog.now() - interval '1 day'
   having pg_catalog.count(*) > 0;
end;
$$;
comment on function app_private.st_sync_technician_agents(uuid, bigint[]) is $$Makes these cached ServiceTitan technicians routable agents (kind technician, external_source servicetitan, external_id = ServiceTitan id): name, email and phone (when valid), active unless inactive or deleted at ServiceTitan; a new one starts available; their specializations are their skills through st_service_line (manual specializations are kept); their current appointments become busy periods.$$;

create function app_private.tg_service_titan_skill_lines__resync() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant uuid := case when TG_OP = 'DELETE' then OLD.tenant_id else NEW.tenant_id end;
begin
  perform app_private.st_sync_technician_agents(v_tenant, pg_catalog.array_agg(t.id))
     from raw.st_technicians t where t.tenant_id = v_tenant having pg_catalog.count(*) > 0;
  return null;
end;
$$;
comment on function app_private.tg_service_titan_skill_lines__resync() is 'Trigger: a changed skill mapping re-derives the specializations of the tenant’s technicians at once.';
create trigger _900_resync_technicians after insert or update or delete on app_public.service_titan_skill_lines
  for each row execute function app_private.tg_service_titan_skill_lines__resync();

create function app_hidden.agent_is_busy(tenant_id uuid, agent_id uuid, during tstzrange, lead_id uuid) returns boolean
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select exists (
           select 1 from app_public.agent_busy_periods b
            where b.tenant_id = agent_is_busy.tenant_id and b.agent_id = agent_is_busy.agent_id and b.during && agent_is_busy.during)
      or exists (
           -- Another open lead at an overlapping time, owned by the agent or offered to them.
           select 1 from app_public.leads l
            join app_public.lead_statuses st on st.status = l.status
            where l.tenant_id = agent_is_busy.tenant_id and l.id <> agent_is_busy.lead_id and l.deleted_at is null
              and not st.is_final and l.appointment_at is not null
              and l.appointment_at >= pg_catalog.lower(agent_is_busy.during) - (pg_catalog.upper(agent_is_busy.during) - pg_catalog.lower(agent_is_busy.during))
              and l.appointment_at < pg_catalog.upper(agent_is_busy.during)
              and (l.owner_agent_id = agent_is_busy.agent_id or exists (
                    select 1 from app_public.routing_offers o
                     where o.tenant_id = l.tenant_id and o.lead_id = l.id and o.agent_id = agent_is_busy.agent_id and o.status = 'pending')));
$$;
comment on function app_hidden.agent_is_busy(uuid, uuid, tstzrange, uuid) is 'True when the agent is busy at some moment of during: a busy period from an outside calendar (ServiceTitan appointments), or another open lead whose appointment (of the same length) overlaps and which the agent owns or has a pending offer for.';

-- route_lead: the candidate check "slot_ok" now also needs, for a lead with appointment_at, an agent
-- who is not busy then (see below, the only change to the body of migration 000005).

create or replace function app_private.route_lead(tenant_id uuid, lead_id uuid, trigger text) returns bigint
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_tenant uuid := route_lead.tenant_id;
  v_trigger text := route_lead.trigger;
  v_lead app_public.leads;
  v_rule app_public.routing_rules;
  v_strategy text;
  v_order_strategy text;
  v_params jsonb := '{}';
  v_experiment_id uuid;
  v_variant_id uuid;
  v_variant_strategy text;
  v_variant_params jsonb;
  v_restrict uuid[];
  v_tier text;
  v_tier_weight numeric;
  v_hot_threshold int;
  v_lat numeric;
  v_lon numeric;
  v_prev_owner uuid;
  v_candidates jsonb := '[]';
  v_order uuid[];
  v_eligible uuid[];
  v_skipped uuid[] := '{}';
  v_agent uuid;
  v_av app_public.agent_availability;
  v_slot uuid;
  v_chosen uuid;
  v_chosen_slot uuid;
  v_notes jsonb := '{}';
  v_wrr_used boolean := false;
  v_pass_floor numeric;
  v_stride numeric;
  v_wait_from int;
  v_appt_range tstzrange;
  v_outcome text;
  v_reason text;
  v_queue_type text;
  v_history_id bigint;
  v_offer_id uuid;
  v_expires timestamptz;
  v_timeout numeric;
  v_direct boolean;
  v_sla numeric;
  v_agent_name text;
  v_agent_user uuid;
  v_assign_strategy text;
  v_prev_setting_strategy text;
  v_prev_setting_reason text;
  v_prev_setting_source text;
  v_failed text;
  v_setting jsonb;
begin
  if v_trigger is null or v_trigger not in ('new_lead', 'manual', 'offer_rejected', 'offer_expired', 'agent_available', 'escalation', 'requeue') then
    raise exception 'Invalid routing trigger ''%'': use new_lead, manual, offer_rejected, offer_expired, agent_available, escalation or requeue', v_trigger
      using errcode = '22023';
  end if;

  -- 1. The lead, locked: one routing decision per lead at a time.
  select l.* into v_lead from app_public.leads l
   where l.tenant_id = v_tenant and l.id = route_lead.lead_id
   for no key update;
  if not found then
    raise exception 'Lead not found' using errcode = 'P0002';
  end if;

  -- 2. Leads that must not be routed.
  if v_lead.deleted_at is not null then
    v_reason := 'The lead is deleted';
  elsif v_lead.status = 'dnc' or (v_lead.phone is not null and app_public.is_on_dnc_list(v_lead.phone, v_tenant)) then
    v_reason := pg_catalog.format('The lead''s number %s is on the do-not-contact list', coalesce(v_lead.phone::text, '(none)'));
  elsif exists (select 1 from app_public.lead_statuses s where s.status = v_lead.status and s.is_final) then
    v_reason := pg_catalog.format('The lead is closed (status %s)', v_lead.status);
  end if;
  if v_reason is not null then
    update app_public.assignment_queue q set dequeued_at = pg_catalog.now(), dequeue_reason = 'lead_closed'
     where q.tenant_id = v_tenant and q.lead_id = v_lead.id and q.dequeued_at is null;
  elsif v_lead.owner_agent_id is not null then
    v_reason := pg_catalog.format('The lead is already assigned to agent %s',
      coalesce((select a.display_name from app_public.agents a where a.tenant_id = v_tenant and a.id = v_lead.owner_agent_id), v_lead.owner_agent_id::text));
  else
    select pg_catalog.format('The lead already has a pending offer (offer %s to %s)', o.id, a.display_name) into v_reason
      from app_public.routing_offers o join app_public.agents a on a.tenant_id = o.tenant_id and a.id = o.agent_id
     where o.tenant_id = v_tenant and o.lead_id = v_lead.id and o.status = 'pending';
  end if;
  if v_reason is not null then
    insert into app_public.lead_routing_history (tenant_id, lead_id, trigger, lead_score, outcome, reason)
    values (v_tenant, v_lead.id, v_trigger, v_lead.lead_score, 'not_routed', v_reason)
    returning id into v_history_id;
    insert into app_public.routing_events (tenant_id, lead_id, event_type, data)
    values (v_tenant, v_lead.id, 'not_routed', pg_catalog.jsonb_build_object('reason', v_reason, 'history_id', v_history_id));
    return v_history_id;
  end if;

  -- 3. Rule, strategy, experiment variant.
  v_rule := app_private.matching_routing_rule(v_tenant, v_lead.id);
  if v_rule.id is not null then
    v_strategy := v_rule.strategy;
    v_params := v_rule.strategy_params;
    -- An escalation widens the candidate set: the rule's agent list no longer limits it.
    if v_rule.action in ('route_to_agent', 'route_to_agents') and v_trigger <> 'escalation' then
      v_restrict := v_rule.agent_ids;
    end if;
  end if;
  if v_strategy is null then
    v_setting := app_private.routing_setting(v_tenant, 'routing.default_strategy');
    v_strategy := case when v_setting #>> '{}' in ('weighted_round_robin', 'least_loaded', 'best_match', 'score_tiered', 'direct_to_owner')
      then v_setting #>> '{}' else 'weighted_round_robin' end;
  end if;
  if pg_catalog.to_regprocedure('app_private.experiment_variant_for_lead(uuid,uuid)') is not null then
    execute 'select c.experiment_id, c.variant_id, c.strategy, c.parameters from app_private.experiment_variant_for_lead($1, $2) c'
      into v_experiment_id, v_variant_id, v_variant_strategy, v_variant_params
      using v_tenant, v_lead.id;
    if v_variant_id is not null and v_variant_strategy is not null then
      v_strategy := v_variant_strategy;
      v_params := coalesce(v_variant_params, '{}');
    end if;
  end if;

  if v_rule.action = 'route_to_queue' and v_trigger <> 'escalation' then
    v_strategy := null;
    v_queue_type := v_rule.queue_type;
    v_reason := pg_catalog.format('Rule "%s" sends the lead to the %s queue', v_rule.name, v_rule.queue_type);
  else
    -- 4. Candidates and their checks, ordered by the strategy.
    v_hot_threshold := coalesce(case when v_params ->> 'hot_threshold' ~ '^\d{1,3}$' then (v_params ->> 'hot_threshold')::int end, 70);
    v_tier := case when v_lead.lead_score >= v_hot_threshold then 'hot' when v_lead.lead_score >= 40 then 'warm' else 'cold' end;
    v_tier_weight := coalesce(
      case when v_params #>> array['tier_weights', v_tier] ~ '^\d+(\.\d+)?$' then (v_params #>> array['tier_weights', v_tier])::numeric end,
      case v_tier when 'hot' then 1.0 when 'warm' then 0.8 else 0.6 end);
    if v_lead.attributes ->> 'latitude' ~ '^-?\d{1,2}(\.\d+)?$' and v_lead.attributes ->> 'longitude' ~ '^-?\d{1,3}(\.\d+)?$' then
      v_lat := (v_lead.attributes ->> 'latitude')::numeric;
      v_lon := (v_lead.attributes ->> 'longitude')::numeric;
    end if;
    v_order_strategy := case
      when v_strategy = 'score_tiered' and v_tier <> 'hot' then 'weighted_round_robin'
      else v_strategy end;
    if v_strategy = 'direct_to_owner' then
      select la.to_agent_id into v_prev_owner from app_public.lead_assignments la
       where la.tenant_id = v_tenant and la.lead_id = v_lead.id and la.to_agent_id is not null
       order by la.assigned_at desc, la.id desc limit 1;
      if v_prev_owner is null then
        select o.agent_id into v_prev_owner from app_public.routing_offers o
         where o.tenant_id = v_tenant and o.lead_id = v_lead.id and o.status = 'accepted'
         order by o.responded_at desc nulls last limit 1;
      end if;
      if v_prev_owner is null and (v_lead.phone is not null or v_lead.email is not null) then
        select l2.owner_agent_id into v_prev_owner from app_public.leads l2
         where l2.tenant_id = v_tenant and l2.id <> v_lead.id and l2.owner_agent_id is not null
           and (l2.phone = v_lead.phone or l2.email = v_lead.email)
         order by l2.updated_at desc limit 1;
      end if;
    end if;

    -- A requested appointment (service leads): the agent must not be busy then (app_hidden.agent_is_busy).
    if v_lead.appointment_at is not null then
      v_appt_range := pg_catalog.tstzrange(v_lead.appointment_at, v_lead.appointment_at + pg_catalog.make_interval(mins => coalesce(
        (select bs.service_appointment_minutes from app_public.business_settings bs where bs.tenant_id = v_tenant), 120)));
    end if;
    with base as materialized (
      select a.id as agent_id, a.display_name as name, a.routing_weight as weight,
             av.status, av.current_load, av.max_capacity,
             cr.pass as stored_pass,
             v_lead.service_line is null or sk.n > 0 as skill_ok,
             coalesce(sk.proficiency, 3) as proficiency,
             case when v_lead.service_line is not null and sk.n > 0 then coalesce(sk.lang_ok, false)
                  else v_lead.language = any (a.languages) or app_hidden.language_matches(v_lead.language, a.languages) end as language_ok,
             ar.n = 0 or coalesce(ar.matched, false) as area_ok,
             ar.n > 0 and not coalesce(ar.matched, false) and coalesce(ar.has_radius, false) and v_lat is null as area_unknown,
             coalesce(av.status = 'available', false) as availability_ok,
             coalesce(av.current_load < av.max_capacity, false) as capacity_ok,
             v_lead.event_date is null or exists (
               select 1 from app_public.availability_slots s
                where s.tenant_id = v_tenant and s.agent_id = a.id and s.slot_date = v_lead.event_date and s.status = 'free'
                  and (s.locked_until is null or s.locked_until <= pg_catalog.now() or s.locked_by_lead_id = v_lead.id)) as slot_ok,
             v_appt_range is null or not app_hidden.agent_is_busy(v_tenant, a.id, v_appt_range, v_lead.id) as free_ok,
             not exists (
               select 1 from app_public.routing_offers o
                where o.tenant_id = v_tenant and o.lead_id = v_lead.id and o.agent_id = a.id and o.status in ('rejected', 'expired')) as not_rejected,
             coalesce(pm.conv, 0.5) as conversion,
             coalesce(pm.conv_hot, 0.5) as conversion_hot
        from app_public.agents a
        left join app_public.agent_availability av on av.tenant_id = a.tenant_id and av.agent_id = a.id
        left join app_public.agent_routing_credits cr on cr.agent_id = a.id
        left join lateral (
          select pg_catalog.count(*) as n, pg_catalog.max(s.proficiency) as proficiency,
                 pg_catalog.bool_or(v_lead.language = any (case when pg_catalog.cardinality(s.languages) > 0 then s.languages else a.languages end)
                   or app_hidden.language_matches(v_lead.language,
                        case when pg_catalog.cardinality(s.languages) > 0 then s.languages else a.languages end)) as lang_ok
            from app_public.agent_specializations s
           where s.tenant_id = a.tenant_id and s.agent_id = a.id
             and (v_lead.service_line is null or (
                   s.service_line = v_lead.service_line
               and (s.customer_segment = 'any' or v_lead.customer_segment is null or s.customer_segment = v_lead.customer_segment)
               and (pg_catalog.cardinality(s.territories) = 0 or v_lead.region = any (s.territories))))
        ) sk on true
        left join lateral (
          select pg_catalog.count(*) as n,
                 pg_catalog.bool_or(case z.kind
                   when 'region' then pg_catalog.upper(z.region) = pg_catalog.upper(v_lead.region) and z.country = v_lead.country
                   when 'city' then pg_catalog.lower(z.city) = pg_catalog.lower(v_lead.city)
                                    and (z.region is null or v_lead.region is null or pg_catalog.upper(z.region) = pg_catalog.upper(v_lead.region))
                   when 'postal_code' then pg_catalog.upper(pg_catalog.btrim(z.postal_code)) = pg_catalog.upper(pg_catalog.btrim(v_lead.postal_code))
                   when 'radius' then app_hidden.distance_miles(z.center_latitude, z.center_longitude, v_lat, v_lon) <= z.radius_miles
                 end) as matched,
                 pg_catalog.bool_or(z.kind = 'radius') as has_radius
            from app_public.agent_service_areas z
           where z.tenant_id = a.tenant_id and z.agent_id = a.id
        ) ar on true
        left join lateral (
          select case v_tier when 'hot' then m.conversion_rate_hot when 'warm' then m.conversion_rate_warm else m.conversion_rate_cold end as conv,
                 m.conversion_rate_hot as conv_hot
            from app_public.agent_performance_metrics m
           where m.tenant_id = a.tenant_id and m.agent_id = a.id
           order by m.period_start desc, m.computed_at desc
           limit 1
        ) pm on true
       where a.tenant_id = v_tenant and a.is_active
         and (v_restrict is null or a.id = any (v_restrict))
    ),
    scored as (
      select b.*,
             b.skill_ok and b.language_ok and b.area_ok and b.availability_ok and b.capacity_ok and b.slot_ok and b.free_ok and b.not_rejected as eligible,
             case when b.max_capacity > 0 then b.current_load::numeric / b.max_capacity else 1 end as load_ratio,
             1::numeric / b.weight as stride
        from base b
    ),
    paced as (
      -- Stride scheduling: an agent without a ledger row starts one stride after virtual time 0.
      -- v_floor = the latest virtual start among the eligible (pass - stride); in steady state every
      -- eligible pass is at least that, so clamping to it only moves agents who fell behind while
      -- they could not take leads (no burst on return).
      select s.*, greatest(coalesce(s.stored_pass, s.stride),
               pg_catalog.max(coalesce(s.stored_pass, s.stride) - s.stride) filter (where s.eligible) over ()) as pass,
             pg_catalog.max(coalesce(s.stored_pass, s.stride) - s.stride) filter (where s.eligible) over () as pass_floor
        from scored s
    ),
    paced_min as (
      select p.*, pg_catalog.min(p.pass) filter (where p.eligible) over () as min_pass
        from paced p
    ),
    keyed as (
      select s.*,
             case v_order_strategy
               when 'weighted_round_robin' then s.min_pass - s.pass
               when 'least_loaded' then s.load_ratio
               when 'best_match' then s.proficiency * s.conversion * v_tier_weight
               when 'score_tiered' then s.conversion_hot
               when 'direct_to_owner' then case when s.agent_id = v_prev_owner then 1 else 0 end
             end as score,
             case v_order_strategy
               when 'weighted_round_robin' then -s.pass
               when 'least_loaded' then -s.load_ratio
               when 'best_match' then s.proficiency * s.conversion * v_tier_weight
               when 'score_tiered' then s.conversion_hot
               when 'direct_to_owner' then case when s.agent_id = v_prev_owner then 1 else 0 end
             end as k1,
             case v_order_strategy
               when 'weighted_round_robin' then s.weight::numeric
               when 'least_loaded' then -s.pass
               when 'direct_to_owner' then -s.pass
               else -s.load_ratio
             end as k2
        from paced_min s
    ),
    ranked as (
      select k.*, case when k.eligible then pg_catalog.row_number() over (partition by k.eligible order by k.k1 desc, k.k2 desc, k.agent_id) end as rank
        from keyed k
    )
    select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
             'agent_id', r.agent_id,
             'name', r.name,
             'checks', pg_catalog.jsonb_build_object(
               'skill', r.skill_ok, 'language', r.language_ok, 'area', r.area_ok, 'availability', r.availability_ok,
               'capacity', r.capacity_ok, 'slot', r.slot_ok, 'free', r.free_ok, 'not_rejected', r.not_rejected),
             'reasons', pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
               'skill', case when not r.skill_ok then pg_catalog.format('no specialization in %s%s%s', v_lead.service_line,
                   case when v_lead.customer_segment is not null then ' for segment ' || v_lead.customer_segment else '' end,
                   case when v_lead.region is not null then ' licensed for ' || v_lead.region else '' end) end,
               'language', case when not r.language_ok then pg_catalog.format('does not speak %s', v_lead.language) end,
               'area', case when not r.area_ok then case when r.area_unknown then 'unknown location'
                   else pg_catalog.format('outside the service areas (lead in %s)',
                     coalesce(nullif(pg_catalog.concat_ws(', ', v_lead.city, v_lead.region, v_lead.postal_code), ''), 'an unknown place')) end end,
               'availability', case when not r.availability_ok then
                   case when r.status is null then 'no availability record' else pg_catalog.format('status is %s', r.status) end end,
               'capacity', case when not r.capacity_ok then
                   case when r.status is null then 'no availability record' else pg_catalog.format('at capacity (%s of %s)', r.current_load, r.max_capacity) end end,
               'slot', case when not r.slot_ok then pg_catalog.format('no free slot on %s', v_lead.event_date) end,
               'free', case when not r.free_ok then pg_catalog.format('busy at %s (an appointment or another lead)', v_lead.appointment_at) end,
               'not_rejected', case when not r.not_rejected then 'already rejected this lead or let its offer expire' end)),
             'eligible', r.eligible,
             'score', pg_catalog.trim_scale(pg_catalog.round(r.score, 4)),
             'rank', r.rank,
             'weight', r.weight,
             'pass', pg_catalog.trim_scale(pg_catalog.round(r.pass, 6)),
             'load', r.current_load,
             'capacity', r.max_capacity,
             'proficiency', r.proficiency,
             'conversion', r.conversion)
           order by r.rank nulls last, r.name, r.agent_id), '[]'::jsonb),
           pg_catalog.array_agg(r.agent_id order by r.rank) filter (where r.eligible),
           pg_catalog.max(r.pass_floor)
      into v_candidates, v_order, v_pass_floor
      from ranked r;

    -- 5. Take the first candidate whose availability (and slot) can be locked and still holds.
    --    Pass 1 skips rows other routings hold; only if that finds nobody, wait for the skipped ones.
    if v_order is not null then
      foreach v_agent in array v_order loop
        select av.* into v_av from app_public.agent_availability av
         where av.tenant_id = v_tenant and av.agent_id = v_agent
         for update skip locked;
        if not found then
          v_skipped := v_skipped || v_agent;
          continue;
        end if;
        if v_av.status <> 'available' or v_av.current_load >= v_av.max_capacity then
          v_notes := v_notes || pg_catalog.jsonb_build_object(v_agent::text, pg_catalog.format('changed while routing: status %s, load %s of %s', v_av.status, v_av.current_load, v_av.max_capacity));
          continue;
        end if;
        if v_appt_range is not null and app_hidden.agent_is_busy(v_tenant, v_agent, v_appt_range, v_lead.id) then
          v_notes := v_notes || pg_catalog.jsonb_build_object(v_agent::text, 'became busy at the requested time while routing');
          continue;
        end if;
        v_slot := null;
        if v_lead.event_date is not null then
          select s.id into v_slot from app_public.availability_slots s
           where s.tenant_id = v_tenant and s.agent_id = v_agent and s.slot_date = v_lead.event_date and s.status = 'free'
             and (s.locked_until is null or s.locked_until <= pg_catalog.now() or s.locked_by_lead_id = v_lead.id)
           order by s.start_time
           limit 1
           for update skip locked;
          if v_slot is null then
            v_notes := v_notes || pg_catalog.jsonb_build_object(v_agent::text, 'the slot was taken while routing');
            continue;
          end if;
        end if;
        v_chosen := v_agent;
        v_chosen_slot := v_slot;
        exit;
      end loop;

      if v_chosen is null and pg_catalog.cardinality(v_skipped) > 0 then
        -- Waiters start at different agents, so a burst does not queue up behind one row: the first
        -- agent to wait for is drawn in proportion to routing_weight, which keeps round-robin
        -- shares close to the weights when most routes have to wait.
        select o.n - 1 into v_wait_from
          from (select u.n, pg_catalog.sum(a.routing_weight) over (order by u.n) as upto,
                       pg_catalog.sum(a.routing_weight) over () as total
                  from pg_catalog.unnest(v_skipped) with ordinality u(agent_id, n)
                  join app_public.agents a on a.tenant_id = v_tenant and a.id = u.agent_id) o
         where o.upto > pg_catalog.random() * o.total
         order by o.n
         limit 1;
        v_wait_from := coalesce(v_wait_from, 0);
        v_skipped := v_skipped[v_wait_from + 1:] || v_skipped[:v_wait_from];
        foreach v_agent in array v_skipped loop
          begin
            select av.* into v_av from app_public.agent_availability av
             where av.tenant_id = v_tenant and av.agent_id = v_agent
             for update;
          exception when deadlock_detected then
            v_notes := v_notes || pg_catalog.jsonb_build_object(v_agent::text, 'could not be locked (deadlock avoided)');
            continue;
          end;
          if not found or v_av.status <> 'available' or v_av.current_load >= v_av.max_capacity then
            v_notes := v_notes || pg_catalog.jsonb_build_object(v_agent::text, pg_catalog.format('changed while routing: status %s, load %s of %s', v_av.status, v_av.current_load, v_av.max_capacity));
            continue;
          end if;
          if v_appt_range is not null and app_hidden.agent_is_busy(v_tenant, v_agent, v_appt_range, v_lead.id) then
            v_notes := v_notes || pg_catalog.jsonb_build_object(v_agent::text, 'became busy at the requested time while routing');
            continue;
          end if;
          v_slot := null;
          if v_lead.event_date is not null then
            select s.id into v_slot from app_public.availability_slots s
             where s.tenant_id = v_tenant and s.agent_id = v_agent and s.slot_date = v_lead.event_date and s.status = 'free'
               and (s.locked_until is null or s.locked_until <= pg_catalog.now() or s.locked_by_lead_id = v_lead.id)
             order by s.start_time
             limit 1
             for update skip locked;
            if v_slot is null then
              v_notes := v_notes || pg_catalog.jsonb_build_object(v_agent::text, 'the slot was taken while routing');
              continue;
            end if;
          end if;
          v_chosen := v_agent;
          v_chosen_slot := v_slot;
          exit;
        end loop;
      end if;
    end if;

    if v_chosen is null then
      if v_order is null then
        select pg_catalog.string_agg(pg_catalog.format('%s %s', c.n, c.k), ', ' order by c.n desc, c.k) into v_failed
          from (select k.key as k, pg_catalog.count(*) as n
                  from pg_catalog.jsonb_array_elements(v_candidates) e, pg_catalog.jsonb_each(e -> 'checks') k
                 where k.value = 'false'::jsonb group by k.key) c;
        v_reason := case when pg_catalog.jsonb_array_length(v_candidates) = 0
          then case when v_restrict is not null then pg_catalog.format('No eligible agent: rule "%s" allows no active agent', v_rule.name)
                    else 'No eligible agent: the tenant has no active agents' end
          else pg_catalog.format('No eligible agent among %s considered (failed checks: %s)', pg_catalog.jsonb_array_length(v_candidates), v_failed) end;
      else
        v_reason := pg_catalog.format('No agent available: all %s eligible agents became busy or unavailable while routing', pg_catalog.cardinality(v_order));
      end if;
    end if;
  end if;

  -- 6. The decision.
  if v_chosen is not null then
    v_wrr_used := v_order_strategy = 'weighted_round_robin'
      or (v_order_strategy = 'direct_to_owner' and v_chosen is distinct from v_prev_owner);
    select a.display_name, a.user_id, 1::numeric / a.routing_weight into v_agent_name, v_agent_user, v_stride
      from app_public.agents a where a.tenant_id = v_tenant and a.id = v_chosen;
    update app_public.agent_availability av set current_load = av.current_load + 1
     where av.tenant_id = v_tenant and av.agent_id = v_chosen;
    if v_wrr_used then
      -- Stride scheduling: only the pass of the chosen agent moves (clamped to the virtual time
      -- of the eligible agents, then one stride on). Its agent_availability row is locked by this
      -- transaction, so no other routing writes this row before we commit.
      insert into app_public.agent_routing_credits as c (agent_id, tenant_id, pass)
      values (v_chosen, v_tenant, greatest(v_stride, coalesce(v_pass_floor, 0)) + v_stride)
      on conflict (agent_id) do update
        set pass = greatest(c.pass, coalesce(v_pass_floor, 0)) + v_stride,
            updated_at = pg_catalog.now();
    end if;
    v_assign_strategy := case
      when v_strategy = 'direct_to_owner' and v_chosen is distinct from v_prev_owner then 'weighted_round_robin'
      when v_rule.action in ('route_to_agent', 'route_to_agents') and v_rule.strategy is null and v_variant_id is null then 'rule'
      else v_strategy end;
    v_reason := pg_catalog.format('%s chosen by %s%s', v_agent_name, pg_catalog.replace(v_assign_strategy, '_', ' '),
      case when v_strategy = 'direct_to_owner' and v_chosen is distinct from v_prev_owner then
        case when v_prev_owner is null then ' (direct to owner: the lead has no previous owner)'
             else ' (direct to owner: the previous owner is not eligible or busy)' end
      when v_strategy = 'direct_to_owner' then ' (direct to owner: the previous owner)'
      when v_strategy = 'score_tiered' then pg_catalog.format(' (score tiered: %s lead)', v_tier)
      else '' end);

    v_direct := coalesce(case when pg_catalog.jsonb_typeof(app_private.routing_setting(v_tenant, 'routing.direct_assignment')) = 'boolean'
      then (app_private.routing_setting(v_tenant, 'routing.direct_assignment'))::text::boolean end, false);
    if v_direct then
      v_outcome := 'assigned';
      v_prev_setting_strategy := pg_catalog.current_setting('app.assignment_strategy', true);
      v_prev_setting_reason := pg_catalog.current_setting('app.assignment_reason', true);
      v_prev_setting_source := pg_catalog.current_setting('app.change_source', true);
      perform pg_catalog.set_config('app.assignment_strategy', v_assign_strategy, true);
      perform pg_catalog.set_config('app.assignment_reason', 'Routing: ' || v_reason, true);
      perform pg_catalog.set_config('app.change_source', 'routing', true);
      update app_public.leads l
         set owner_agent_id = v_chosen,
             owner_user_id = coalesce(v_agent_user, l.owner_user_id)
       where l.tenant_id = v_tenant and l.id = v_lead.id;
      perform pg_catalog.set_config('app.assignment_strategy', coalesce(v_prev_setting_strategy, ''), true);
      perform pg_catalog.set_config('app.assignment_reason', coalesce(v_prev_setting_reason, ''), true);
      perform pg_catalog.set_config('app.change_source', coalesce(v_prev_setting_source, ''), true);
      if v_chosen_slot is not null then
        update app_public.availability_slots s
           set status = 'booked', booked_lead_id = v_lead.id, locked_until = null, locked_by_lead_id = null
         where s.id = v_chosen_slot;
      end if;
    else
      v_outcome := 'offered';
      v_setting := app_private.routing_setting(v_tenant, 'routing.offer_timeout_seconds');
      v_timeout := case when pg_catalog.jsonb_typeof(v_setting) = 'number' and (v_setting::text)::numeric > 0 then (v_setting::text)::numeric else 120 end;
      v_expires := pg_catalog.now() + pg_catalog.make_interval(secs => v_timeout::float8);
      insert into app_public.routing_offers (tenant_id, lead_id, agent_id, slot_id, expires_at)
      values (v_tenant, v_lead.id, v_chosen, v_chosen_slot, v_expires)
      returning id into v_offer_id;
      if v_chosen_slot is not null then
        update app_public.availability_slots s set locked_until = v_expires, locked_by_lead_id = v_lead.id
         where s.id = v_chosen_slot;
      end if;
      perform app_private.add_job('routing__expire_offer', pg_catalog.json_build_object('offer_id', v_offer_id),
        run_at => v_expires, job_key => 'routing_offer:' || v_offer_id);
      v_reason := v_reason || pg_catalog.format('; offer expires in %s s', v_timeout);
    end if;
    update app_public.assignment_queue q set dequeued_at = pg_catalog.now(), dequeue_reason = 'routed'
     where q.tenant_id = v_tenant and q.lead_id = v_lead.id and q.dequeued_at is null;
  else
    -- 7. Nobody: wait in a queue with an SLA.
    v_outcome := 'queued';
    v_queue_type := coalesce(v_queue_type, case
      when v_trigger in ('escalation', 'offer_rejected', 'offer_expired') then 'reassignment'
      when v_lead.lead_score >= coalesce(v_hot_threshold, 70) or v_lead.status = 'hot' then 'hot'
      when v_lead.status in ('nurturing', 'cold') then 'nurture'
      when v_lead.event_date is not null then 'waiting'
      else 'active' end);
    v_setting := app_private.routing_setting(v_tenant, 'routing.sla_seconds.' || v_queue_type);
    v_sla := case when pg_catalog.jsonb_typeof(v_setting) = 'number' and (v_setting::text)::numeric > 0 then (v_setting::text)::numeric
      else case v_queue_type when 'hot' then 300 when 'active' then 900 when 'reassignment' then 600 when 'nurture' then 86400 else 3600 end end;
    -- A lead already waiting keeps its place (the lead row lock serialises routing of this lead;
    -- the unique index assignment_queue_one_waiting_entry_per_lead is the backstop).
    if not exists (select 1 from app_public.assignment_queue q
                    where q.tenant_id = v_tenant and q.lead_id = v_lead.id and q.dequeued_at is null) then
      begin
        insert into app_public.assignment_queue (tenant_id, lead_id, queue_type, priority, lead_score, sla_expires_at)
        values (v_tenant, v_lead.id, v_queue_type,
          case v_queue_type when 'reassignment' then 300 when 'hot' then 200 when 'active' then 100 when 'waiting' then 50 else 0 end,
          v_lead.lead_score, pg_catalog.now() + pg_catalog.make_interval(secs => v_sla::float8));
      exception when unique_violation then
        null;
      end;
    end if;
    v_reason := v_reason || pg_catalog.format('; queued in %s', v_queue_type);
  end if;

  -- Lock-time notes go with their candidates.
  if v_notes <> '{}'::jsonb then
    select pg_catalog.jsonb_agg(case when v_notes ? (e ->> 'agent_id') then e || pg_catalog.jsonb_build_object('lock', v_notes ->> (e ->> 'agent_id')) else e end
             order by o.n)
      into v_candidates
      from pg_catalog.jsonb_array_elements(v_candidates) with ordinality o(e, n);
  end if;

  insert into app_public.lead_routing_history (tenant_id, lead_id, trigger, strategy, rule_id, experiment_id, variant_id, lead_score,
    candidates, chosen_agent_id, outcome, reason)
  values (v_tenant, v_lead.id, v_trigger, v_strategy, v_rule.id, v_experiment_id, v_variant_id, v_lead.lead_score,
    v_candidates, v_chosen, v_outcome, v_reason)
  returning id into v_history_id;
  insert into app_public.routing_events (tenant_id, lead_id, agent_id, offer_id, event_type, data)
  values (v_tenant, v_lead.id, v_chosen, v_offer_id, v_outcome,
    pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('history_id', v_history_id, 'strategy', v_strategy,
      'queue_type', v_queue_type, 'expires_at', v_expires, 'slot_id', v_chosen_slot, 'reason', v_reason)));
  return v_history_id;
end;
$$;
comment on function app_private.route_lead(uuid, uuid, text) is $$Routes one lead in the caller’s transaction and returns the lead_routing_history id of the decision.
trigger: new_lead, manual, offer_rejected, offer_expired, agent_available, escalation or requeue (22023 otherwise); P0002 when the lead is not the tenant’s.
Not routed (with the reason): deleted lead, number on the DNC list (or status dnc), closed lead (final status), lead already assigned to an agent, lead with a pending offer.
Candidates: the tenant’s active agents (only the rule’s agents for route_to_agent/route_to_agents), each checked for skill (a specialization for the lead’s service_line, segment ’any’ or equal, territories empty or containing the lead’s region; no service_line matches everyone), language (lead.language among the specialization’s or agent’s languages, en-US ~ en), area (no areas = everywhere; region, city (case-insensitive), postal code, or radius around attributes.latitude/longitude, ’unknown location’ without them), availability (status available), capacity (current_load < max_capacity), slot (event leads: a free, unlocked slot on event_date) and not_rejected (no rejected/expired offer of this lead).
Escalation (trigger escalation) widens the candidate set: the rule’s agent list and route_to_queue action are ignored.
Strategy: the matching rule’s (app_private.matching_routing_rule), else system_config routing.default_strategy, else weighted_round_robin; a running experiment’s variant (app_private.experiment_variant_for_lead, when that function exists) overrides it. weighted_round_robin = stride scheduling on agent_routing_credits (the eligible agent with the lowest pass goes next and its pass grows by 1/routing_weight; a pass below the virtual time of the eligible agents, max(pass - 1/weight), is raised to it, so agents coming back get no burst; score shown = how far behind the next agent in virtual time, 0 for the next); least_loaded = lowest load/capacity (ties: lowest pass, id); best_match = proficiency x recent conversion for the lead’s tier (0.5 when unknown) x tier weight; score_tiered = hot leads (score >= 70) to the best hot converters, others WRR; direct_to_owner = the previous owner agent if eligible, else WRR.
Concurrency: the lead row is locked first (one decision per lead; routing_offers_one_pending_per_lead is the backstop); candidates are tried in strategy order with FOR UPDATE SKIP LOCKED on agent_availability, re-checking status and load under the lock, and only when every eligible agent was skipped does it wait (plain FOR UPDATE) for them, each waiter starting at one drawn in proportion to routing_weight, so busy tenants do not see false "no agent available"; the event slot is locked and re-checked too; only the round-robin row of the chosen agent is written, last. Lock order: lead, agent_availability, availability_slots, agent_routing_credits.
LOAD RULE: a pending offer reserves capacity. Offering adds 1 to the agent’s current_load (as does direct assignment); accept keeps it; reject, expiry and cancellation must give it back (current_load - 1) and release the slot lock.
Outcomes: offered (routing_offers row expiring after system_config routing.offer_timeout_seconds, default 120; slot locked until then; job routing__expire_offer {offer_id} at expires_at with job_key routing_offer:<id>), assigned (system_config routing.direct_assignment = true: owner_agent_id and, for members, owner_user_id; slot booked; recorded in lead_assignments with the strategy), queued (assignment_queue with the SLA of system_config routing.sla_seconds.<queue>, defaults hot 300, active 900, reassignment 600, nurture 86400, waiting 3600; an existing waiting entry keeps its place), not_routed. Every call writes lead_routing_history and a routing_events row.$$;
comment on function app_private.route_lead(uuid, uuid, text) is $$Routes one lead in the caller’s transaction and returns the lead_routing_history id of the decision.
trigger: new_lead, manual, offer_rejected, offer_expired, agent_available, escalation or requeue (22023 otherwise); P0002 when the lead is not the tenant’s.
Not routed (with the reason): deleted lead, number on the DNC list (or status dnc), closed lead (final status), lead already assigned to an agent, lead with a pending offer.
Candidates: the tenant’s active agents (for a lead with appointment_at: not busy then, see app_hidden.agent_is_busy; business_settings.service_appointment_minutes long) (only the rule’s agents for route_to_agent/route_to_agents), each checked for skill (a specialization for the lead’s service_line, segment ’any’ or equal, territories empty or containing the lead’s region; no service_line matches everyone), language (lead.language among the specialization’s or agent’s languages, en-US ~ en), area (no areas = everywhere; region, city (case-insensitive), postal code, or radius around attributes.latitude/longitude, ’unknown location’ without them), availability (status available), capacity (current_load < max_capacity), slot (event leads: a free, unlocked slot on event_date) and not_rejected (no rejected/expired offer of this lead).
Escalation (trigger escalation) widens the candidate set: the rule’s agent list and route_to_queue action are ignored.
Strategy: the matching rule’s (app_private.matching_routing_rule), else system_config routing.default_strategy, else weighted_round_robin; a running experiment’s variant (app_private.experiment_variant_for_lead, when that function exists) overrides it. weighted_round_robin = stride scheduling on agent_routing_credits (the eligible agent with the lowest pass goes next and its pass grows by 1/routing_weight; a pass below the virtual time of the eligible agents, max(pass - 1/weight), is raised to it, so agents coming back get no burst; score shown = how far behind the next agent in virtual time, 0 for the next); least_loaded = lowest load/capacity (ties: lowest pass, id); best_match = proficiency x recent conversion for the lead’s tier (0.5 when unknown) x tier weight; score_tiered = hot leads (score >= 70) to the best hot converters, others WRR; direct_to_owner = the previous owner agent if eligible, else WRR.
Concurrency: the lead row is locked first (one decision per lead; routing_offers_one_pending_per_lead is the backstop); candidates are tried in strategy order with FOR UPDATE SKIP LOCKED on agent_availability, re-checking status and load under the lock, and only when every eligible agent was skipped does it wait (plain FOR UPDATE) for them, each waiter starting at one drawn in proportion to routing_weight, so busy tenants do not see false "no agent available"; the event slot is locked and re-checked too; only the round-robin row of the chosen agent is written, last. Lock order: lead, agent_availability, availability_slots, agent_routing_credits.
LOAD RULE: a pending offer reserves capacity. Offering adds 1 to the agent’s current_load (as does direct assignment); accept keeps it; reject, expiry and cancellation must give it back (current_load - 1) and release the slot lock.
Outcomes: offered (routing_offers row expiring after system_config routing.offer_timeout_seconds, default 120; slot locked until then; job routing__expire_offer {offer_id} at expires_at with job_key routing_offer:<id>), assigned (system_config routing.direct_assignment = true: owner_agent_id and, for members, owner_user_id; slot booked; recorded in lead_assignments with the strategy), queued (assignment_queue with the SLA of system_config routing.sla_seconds.<queue>, defaults hot 300, active 900, reassignment 600, nurture 86400, waiting 3600; an existing waiting entry keeps its place), not_routed. Every call writes lead_routing_history and a routing_events row.$$;

--------------------------------------------------------------------------------
-- Sync runs
--------------------------------------------------------------------------------

create function app_hidden.st_resource(table_name text) returns text
  language sql immutable
  set search_path to pg_catalog, public, pg_temp
as $$
  select case table_name
    when 'st_locations' then 'locations'
    when 'st_jobs' then 'jobs'
    when 'st_appointments' then 'appointments'
    when 'st_technicians' then 'technicians'
    when 'st_appointment_assignments' then 'appointment-assignments'
  end;
$$;
comment on function app_hidden.st_resource(text) is 'The ServiceTitan export resource a cache is filled from (st_jobs → jobs, st_appointment_assignments → appointment-assignments); null for anything else.';

create function app_private.st_begin_sync(tenant_id uuid, table_name text, mode text, lease interval default interval '15 minutes')
  returns table (run_id uuid, resource text, run_mode text, from_cursor text, resumed boolean, pages_done int, records_done bigint)
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_tenant uuid := st_begin_sync.tenant_id;
  v_table text := st_begin_sync.table_name;
  v_mode text := st_begin_sync.mode;
  v_state raw.sync_state;
  v_run uuid := gen_random_uuid();
begin
  if app_hidden.st_resource(v_table) is null then
    raise exception 'Unknown ServiceTitan cache "%" (st_locations, st_jobs, st_appointments, st_technicians or st_appointment_assignments)', v_table
      using errcode = '22023';
  end if;
  if v_mode is null or v_mode not in ('full', 'incremental') then
    raise exception 'A sync is full or incremental, not "%"', v_mode using errcode = '22023';
  end if;
  insert into raw.sync_state (tenant_id, table_name) values (v_tenant, v_table) on conflict do nothing;
  select * into v_state from raw.sync_state s where s.tenant_id = v_tenant and s.table_name = v_table for update;

  if v_state.run_id is not null and v_state.run_heartbeat_at > pg_catalog.now() - lease then
    raise exception 'A % sync of % is already running for this tenant (since %)', v_state.run_mode, v_table, v_state.run_started_at
      using errcode = '55P03';
  end if;

  if v_state.run_mode is not null and not (v_mode = 'full' and v_state.run_mode = 'incremental') then
    -- An interrupted run (crash, error, lost lease) continues where it stopped, in its own mode:
    -- a full sync asked for while a full one is unfinished, or any sync while a full one is unfinished.
    update raw.sync_state s set run_id = v_run, run_heartbeat_at = pg_catalog.now()
     where s.tenant_id = v_tenant and s.table_name = v_table;
    return query select v_run, app_hidden.st_resource(v_table), v_state.run_mode, v_state.run_cursor, true, v_state.run_pages, v_state.run_records;
    return;
  end if;

  -- A new run. Incremental starts from the last completed sync's token; without one it is a full sync.
  if v_mode = 'incremental' and v_state.cursor is null then
    v_mode := 'full';
  end if;
  update raw.sync_state s
     set run_id = v_run, run_mode = v_mode, run_started_at = pg_catalog.now(), run_heartbeat_at = pg_catalog.now(),
         run_cursor = case when v_mode = 'full' then null else s.cursor end, run_records = 0, run_pages = 0
   where s.tenant_id = v_tenant and s.table_name = v_table;
  return query select v_run, app_hidden.st_resource(v_table), v_mode,
    case when v_mode = 'full' then null::text else v_state.cursor end, false, 0, 0::bigint;
end;
$$;
comment on function app_private.st_begin_sync(uuid, text, text, interval) is $$Claims a cache of a tenant for one sync run and says where to start. 55P03 while another run holds it (its heartbeat younger than lease): never two syncs of the same tenant and table at once. An interrupted run is resumed from its stored continuation token (resumed = true), unless a full sync is asked for while an incremental one was interrupted. A new full run starts from the beginning of ServiceTitan’s export; a new incremental run from the token of the last completed sync (a full run when there is none). 22023 for an unknown table or mode.$$;

create function app_private.st_upsert_records(tenant_id uuid, table_name text, records jsonb) returns bigint[]
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_tenant uuid := st_upsert_records.tenant_id;
  v_ids bigint[];
begin
  if pg_catalog.jsonb_typeof(records) is distinct from 'array' then
    raise exception 'A page of ServiceTitan records must be a JSON array' using errcode = '22023';
  end if;
  if exists (select 1 from pg_catalog.jsonb_array_elements(records) r
              where pg_catalog.jsonb_typeof(r) <> 'object' or pg_catalog.jsonb_typeof(r -> 'id') <> 'number'
                 or pg_catalog.jsonb_typeof(r -> 'modifiedOn') <> 'string') then
    raise exception 'Every ServiceTitan record needs a numeric id and a modifiedOn date (in a page of %)', table_name using errcode = '22023';
  end if;

  -- Within one page the newest version of a record wins; an older version never overwrites a newer one.
  case table_name
  when 'st_locations' then
    with page as (
      select distinct on ((r ->> 'id')::bigint) r from pg_catalog.jsonb_array_elements(records) r
       order by (r ->> 'id')::bigint, (r ->> 'modifiedOn')::timestamptz desc
    ), up as (
      insert into raw.st_locations as t (tenant_id, id, customer_id, name, street, unit, city, state, zip, country, latitude, longitude,
                                         tax_zone_id, active, created_on, modified_on, full_data, synced_at, deleted_at)
      select v_tenant, (r ->> 'id')::bigint, (r ->> 'customerId')::bigint, r ->> 'name', r #>> '{address,street}', r #>> '{address,unit}',
             r #>> '{address,city}', r #>> '{address,state}', r #>> '{address,zip}', r #>> '{address,country}',
             (r #>> '{address,latitude}')::double precision, (r #>> '{address,longitude}')::double precision,
             (r ->> 'taxZoneId')::bigint, coalesce((r ->> 'active')::boolean, true), (r ->> 'createdOn')::timestamptz,
             (r ->> 'modifiedOn')::timestamptz, r, pg_catalog.now(), null
        from page
      on conflict (tenant_id, id) do update
        set customer_id = excluded.customer_id, name = excluded.name, street = excluded.street, unit = excluded.unit, city = excluded.city,
            state = excluded.state, zip = excluded.zip, country = excluded.country, latitude = excluded.latitude, longitude = excluded.longitude,
            tax_zone_id = excluded.tax_zone_id, active = excluded.active, created_on = excluded.created_on, modified_on = excluded.modified_on,
            full_data = excluded.full_data, synced_at = excluded.synced_at, deleted_at = null
        where t.modified_on <= excluded.modified_on
      returning t.id
    ) select pg_catalog.array_agg(id) into v_ids from up;
  when 'st_jobs' then
    with page as (
      select distinct on ((r ->> 'id')::bigint) r from pg_catalog.jsonb_array_elements(records) r
       order by (r ->> 'id')::bigint, (r ->> 'modifiedOn')::timestamptz desc
    ), up as (
      insert into raw.st_jobs as t (tenant_id, id, job_number, customer_id, location_id, job_status, priority, business_unit_id, job_type_id,
                                    campaign_id, summary, completed_on, total, appointment_count, first_appointment_id, last_appointment_id,
                                    active, created_on, modified_on, full_data, synced_at, deleted_at)
      select v_tenant, (r ->> 'id')::bigint, r ->> 'jobNumber', (r ->> 'customerId')::bigint, (r ->> 'locationId')::bigint, r ->> 'jobStatus',
             r ->> 'priority', (r ->> 'businessUnitId')::bigint, (r ->> 'jobTypeId')::bigint, (r ->> 'campaignId')::bigint, r ->> 'summary',
             (r ->> 'completedOn')::timestamptz, (r ->> 'total')::numeric, (r ->> 'appointmentCount')::int,
             nullif((r ->> 'firstAppointmentId')::bigint, 0), nullif((r ->> 'lastAppointmentId')::bigint, 0),
             coalesce((r ->> 'active')::boolean, true), (r ->> 'createdOn')::timestamptz, (r ->> 'modifiedOn')::timestamptz, r, pg_catalog.now(), null
        from page
      on conflict (tenant_id, id) do update
        set job_number = excluded.job_number, customer_id = excluded.customer_id, location_id = excluded.location_id,
            job_status = excluded.job_status, priority = excluded.priority, business_unit_id = excluded.business_unit_id,
            job_type_id = excluded.job_type_id, campaign_id = excluded.campaign_id, summary = excluded.summary,
            completed_on = excluded.completed_on, total = excluded.total, appointment_count = excluded.appointment_count,
            first_appointment_id = excluded.first_appointment_id, last_appointment_id = excluded.last_appointment_id,
            active = excluded.active, created_on = excluded.created_on, modified_on = excluded.modified_on,
            full_data = excluded.full_data, synced_at = excluded.synced_at, deleted_at = null
        where t.modified_on <= excluded.modified_on
      returning t.id
    ) select pg_catalog.array_agg(id) into v_ids from up;
  when 'st_appointments' then
    with page as (
      select distinct on ((r ->> 'id')::bigint) r from pg_catalog.jsonb_array_elements(records) r
       order by (r ->> 'id')::bigint, (r ->> 'modifiedOn')::timestamptz desc
    ), up as (
      insert into raw.st_appointments as t (tenant_id, id, job_id, appointment_number, starts_at, ends_at, arrival_window_start,
                                            arrival_window_end, status, customer_id, is_confirmed, active, created_on, modified_on,
                                            full_data, synced_at, deleted_at)
      select v_tenant, (r ->> 'id')::bigint, (r ->> 'jobId')::bigint, r ->> 'appointmentNumber', (r ->> 'start')::timestamptz,
             (r ->> 'end')::timestamptz, (r ->> 'arrivalWindowStart')::timestamptz, (r ->> 'arrivalWindowEnd')::timestamptz, r ->> 'status',
             (r ->> 'customerId')::bigint, (r ->> 'isConfirmed')::boolean, coalesce((r ->> 'active')::boolean, true),
             (r ->> 'createdOn')::timestamptz, (r ->> 'modifiedOn')::timestamptz, r, pg_catalog.now(), null
        from page
      on conflict (tenant_id, id) do update
        set job_id = excluded.job_id, appointment_number = excluded.appointment_number, starts_at = excluded.starts_at,
            ends_at = excluded.ends_at, arrival_window_start = excluded.arrival_window_start, arrival_window_end = excluded.arrival_window_end,
            status = excluded.status, customer_id = excluded.customer_id, is_confirmed = excluded.is_confirmed, active = excluded.active,
            created_on = excluded.created_on, modified_on = excluded.modified_on, full_data = excluded.full_data,
            synced_at = excluded.synced_at, deleted_at = null
        where t.modified_on <= excluded.modified_on
      returning t.id
    ) select pg_catalog.array_agg(id) into v_ids from up;
  when 'st_technicians' then
    with page as (
      select distinct on ((r ->> 'id')::bigint) r from pg_catalog.jsonb_array_elements(records) r
       order by (r ->> 'id')::bigint, (r ->> 'modifiedOn')::timestamptz desc
    ), up as (
      insert into raw.st_technicians as t (tenant_id, id, user_id, name, email, phone_number, mobile_phone, team, business_unit_id,
                                           main_zone_id, zone_ids, skills, status, active, created_on, modified_on, full_data, synced_at, deleted_at)
      select v_tenant, (r ->> 'id')::bigint, (r ->> 'userId')::bigint, r ->> 'name', r ->> 'email', r ->> 'phoneNumber', r ->> 'mobilePhone',
             r ->> 'team', (r ->> 'businessUnitId')::bigint, (r ->> 'mainZoneId')::bigint,
             coalesce((select pg_catalog.array_agg(z::bigint) from pg_catalog.jsonb_array_elements_text(
                        case when pg_catalog.jsonb_typeof(r -> 'zoneIds') = 'array' then r -> 'zoneIds' else '[]' end) z), '{}'),
             case when pg_catalog.jsonb_typeof(r -> 'skills') = 'array' then r -> 'skills' else '[]' end,
             r ->> 'status', coalesce((r ->> 'active')::boolean, true), (r ->> 'createdOn')::timestamptz, (r ->> 'modifiedOn')::timestamptz,
             r, pg_catalog.now(), null
        from page
      on conflict (tenant_id, id) do update
        set user_id = excluded.user_id, name = excluded.name, email = excluded.email, phone_number = excluded.phone_number,
            mobile_phone = excluded.mobile_phone, team = excluded.team, business_unit_id = excluded.business_unit_id,
            main_zone_id = excluded.main_zone_id, zone_ids = excluded.zone_ids, skills = excluded.skills, status = excluded.status,
            active = excluded.active, created_on = excluded.created_on, modified_on = excluded.modified_on,
            full_data = excluded.full_data, synced_at = excluded.synced_at, deleted_at = null
        where t.modified_on <= excluded.modified_on
      returning t.id
    ) select pg_catalog.array_agg(id) into v_ids from up;
  when 'st_appointment_assignments' then
    with page as (
      select distinct on ((r ->> 'id')::bigint) r from pg_catalog.jsonb_array_elements(records) r
       order by (r ->> 'id')::bigint, (r ->> 'modifiedOn')::timestamptz desc
    ), up as (
      insert into raw.st_appointment_assignments as t (tenant_id, id, appointment_id, technician_id, job_id, status, is_paused, assigned_on,
                                                       active, created_on, modified_on, full_data, synced_at, deleted_at)
      select v_tenant, (r ->> 'id')::bigint, (r ->> 'appointmentId')::bigint, (r ->> 'technicianId')::bigint, (r ->> 'jobId')::bigint,
             r ->> 'status', (r ->> 'isPaused')::boolean, (r ->> 'assignedOn')::timestamptz, coalesce((r ->> 'active')::boolean, true),
             (r ->> 'createdOn')::timestamptz, (r ->> 'modifiedOn')::timestamptz, r, pg_catalog.now(), null
        from page
      on conflict (tenant_id, id) do update
        set appointment_id = excluded.appointment_id, technician_id = excluded.technician_id, job_id = excluded.job_id,
            status = excluded.status, is_paused = excluded.is_paused, assigned_on = excluded.assigned_on, active = excluded.active,
            created_on = excluded.created_on, modified_on = excluded.modified_on, full_data = excluded.full_data,
            synced_at = excluded.synced_at, deleted_at = null
        where t.modified_on <= excluded.modified_on
      returning t.id
    ) select pg_catalog.array_agg(id) into v_ids from up;
  else
    raise exception 'Unknown ServiceTitan cache "%"', table_name using errcode = '22023';
  end case;
  return coalesce(v_ids, '{}');
end;
$$;
comment on function app_private.st_upsert_records(uuid, text, jsonb) is 'Writes a page of ServiceTitan records (a JSON array as the API returned it) into a cache: typed columns plus the whole record, newest version first (a record older than the cached one is left alone), deleted_at cleared. Returns the ids written. 22023 for a page that is not an array of records with a numeric id and a modifiedOn, or a value of the wrong type.';

create function app_private.st_apply_page(run_id uuid, records jsonb, next_cursor text, has_more boolean) returns int
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_state raw.sync_state;
  v_ids bigint[];
  v_count int := pg_catalog.jsonb_array_length(case when pg_catalog.jsonb_typeof(records) = 'array' then records else '[]' end);
  v_deleted bigint[];
  v_touched bigint[];
begin
  select * into v_state from raw.sync_state s where s.run_id = st_apply_page.run_id for update;
  if not found then
    raise exception 'This sync run no longer holds its table (another run took it over after its lease ran out)' using errcode = '55000';
  end if;
  v_ids := app_private.st_upsert_records(v_state.tenant_id, v_state.table_name, records);

  -- The end of a full run: what ServiceTitan no longer has was deleted there; mark it, keep it.
  if not has_more and v_state.run_mode = 'full' then
    execute pg_catalog.format(
      'update raw.%I set deleted_at = pg_catalog.now() where tenant_id = $1 and synced_at < $2 and deleted_at is null', v_state.table_name)
      using v_state.tenant_id, v_state.run_started_at;
    execute pg_catalog.format(
      'select pg_catalog.array_agg(id) from raw.%I where tenant_id = $1 and deleted_at >= $2', v_state.table_name)
      into v_deleted using v_state.tenant_id, v_state.run_started_at;
  end if;
  v_touched := v_ids || coalesce(v_deleted, '{}');

  -- Projections into routing.
  if pg_catalog.cardinality(v_touched) > 0 then
    case v_state.table_name
    when 'st_technicians' then
      perform app_private.st_sync_technician_agents(v_state.tenant_id, v_touched);
    when 'st_appointments' then
      perform app_private.st_sync_busy_periods(v_state.tenant_id, v_touched);
    when 'st_appointment_assignments' then
      perform app_private.st_sync_busy_periods(v_state.tenant_id, pg_catalog.array_agg(distinct aa.appointment_id))
         from raw.st_appointment_assignments aa
        where aa.tenant_id = v_state.tenant_id and aa.id = any (v_touched) and aa.appointment_id is not null
       having pg_catalog.count(*) > 0;
    else
      null;
    end case;
  end if;

  if has_more then
    update raw.sync_state s
       set run_cursor = coalesce(next_cursor, s.run_cursor), run_records = s.run_records + v_count, run_pages = s.run_pages + 1,
           run_heartbeat_at = pg_catalog.now()
     where s.tenant_id = v_state.tenant_id and s.table_name = v_state.table_name;
  else
    update raw.sync_state s
       set last_full_sync = case when s.run_mode = 'full' then pg_catalog.now() else s.last_full_sync end,
           last_incremental_sync = case when s.run_mode = 'incremental' then pg_catalog.now() else s.last_incremental_sync end,
           records_synced = s.run_records + v_count, cursor = coalesce(next_cursor, s.run_cursor, s.cursor),
           last_error = null, last_error_at = null, consecutive_failures = 0,
           run_id = null, run_mode = null, run_started_at = null, run_heartbeat_at = null, run_cursor = null, run_records = 0, run_pages = 0
     where s.tenant_id = v_state.tenant_id and s.table_name = v_state.table_name;
  end if;
  return v_count;
end;
$$;
comment on function app_private.st_apply_page(uuid, jsonb, text, boolean) is $$Applies one page of a sync run in the caller’s transaction: the records (st_upsert_records), their projections (technicians → agents, appointments and assignments → busy periods) and the continuation token to resume from, all or nothing. On the last page (has_more false) the run completes: a full run marks what it did not see as deleted; sync_state gets the completion time, records_synced, the token for the next incremental sync, and loses the error. 55000 when the run lost its claim. Returns the number of records in the page.$$;

create function app_private.st_fail_sync(run_id uuid, error text) returns void
  language sql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
  update raw.sync_state s
     set run_id = null, run_heartbeat_at = null, last_error = pg_catalog.left(coalesce(error, 'unknown error'), 2000),
         last_error_at = pg_catalog.now(), consecutive_failures = s.consecutive_failures + 1
   where s.run_id = st_fail_sync.run_id;
$$;
comment on function app_private.st_fail_sync(uuid, text) is 'Records that a sync run failed: the claim is released but the run (mode, continuation token, counts) is kept, so the next attempt resumes it; last_error says why.';

create function app_private.st_schedule_syncs(mode text, only_tenant uuid default null, only_table text default null) returns int
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_count int := 0;
  r record;
begin
  if mode is null or mode not in ('full', 'incremental') then
    raise exception 'A sync is full or incremental, not "%"', mode using errcode = '22023';
  end if;
  if only_table is not null and app_hidden.st_resource(only_table) is null then
    raise exception 'Unknown ServiceTitan cache "%" (st_locations, st_jobs, st_appointments, st_technicians or st_appointment_assignments)', only_table
      using errcode = '22023';
  end if;
  for r in
    select c.tenant_id, t.table_name
      from app_public.service_titan_connections c
     cross join pg_catalog.unnest(array['st_technicians', 'st_locations', 'st_jobs', 'st_appointments', 'st_appointment_assignments']) with ordinality t (table_name, n)
     where c.enabled and c.status <> 'failed' and (only_tenant is null or c.tenant_id = only_tenant)
       and (only_table is null or t.table_name = only_table)
     order by c.tenant_id, t.n
  loop
    -- One queue per tenant and table: graphile-worker runs its jobs one after the other.
    perform app_private.add_job('servicetitan__sync',
      pg_catalog.json_build_object('tenant_id', r.tenant_id, 'table_name', r.table_name, 'mode', mode),
      queue_name => pg_catalog.format('servicetitan:%s:%s', r.tenant_id, r.table_name),
      max_attempts => 5,
      job_key => pg_catalog.format('servicetitan:%s:%s:%s', r.tenant_id, r.table_name, mode));
    v_count := v_count + 1;
  end loop;
  return v_count;
end;
$$;
comment on function app_private.st_schedule_syncs(text, uuid, text) is 'Enqueues a servicetitan__sync job of this mode for every table of every enabled connection whose last test did not fail (or only one tenant, only one table). Jobs of a tenant and table share a queue (one at a time) and a key per mode (asking twice queues once). The crontab calls it through servicetitan__schedule. Returns the number of jobs.';

create function app_public.request_service_titan_sync(mode text default 'incremental', table_name text default null) returns int
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant uuid := app_public.current_tenant_id();
  v_conn app_public.service_titan_connections;
begin
  if v_tenant is null or not app_hidden.current_user_has_role('manager') then
    raise exception 'Only owners, admins and managers can start a ServiceTitan sync' using errcode = '42501';
  end if;
  select * into v_conn from app_public.service_titan_connections c where c.tenant_id = v_tenant;
  if not found then
    raise exception 'No ServiceTitan connection is saved for this tenant (saveServiceTitanConnection)' using errcode = 'P0002';
  end if;
  if not v_conn.enabled then
    raise exception 'The ServiceTitan connection is disabled' using errcode = '55000';
  end if;
  if v_conn.status = 'failed' then
    raise exception 'The last test of the ServiceTitan connection failed (%): save working settings first', v_conn.last_test_error using errcode = '55000';
  end if;
  return app_private.st_schedule_syncs(coalesce(mode, 'incremental'), v_tenant, table_name);
end;
$$;
comment on function app_public.request_service_titan_sync(text, text) is $$Starts a ServiceTitan sync of the current tenant now: mode incremental (default: changes since the last sync) or full (everything, marking what ServiceTitan deleted), of one cache (table_name: st_locations, st_jobs, st_appointments, st_technicians, st_appointment_assignments) or all. Returns how many table syncs were queued; progress is in syncStates (raw.sync_state). Managers and up (42501); P0002 without a connection; 55000 when it is disabled or failed its last test; 22023 for an unknown mode or table.$$;
grant execute on function app_public.request_service_titan_sync(text, text) to :DATABASE_VISITOR;
