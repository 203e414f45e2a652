--! Previous: sha1:c0238666dd0fdb4206a7fd6875aab3a5c4595660
--! Hash: sha1:238d1de92274c772cc0cefbfe0ba507196af39fc
--! Message: A full ServiceTitan sync rewrites only the records that changed: unchanged ones are remembered in app_private.st_sync_seen, and what the run neither wrote nor saw is marked deleted (the nightly sync of an unchanged cache wrote every row)

-- Migration 000020: a full sync no longer rewrites records that did not change. The nightly full
-- sync used to update every cached row (to stamp synced_at, which told it what it had seen), so an
-- unchanged cache of 100,000 jobs was rewritten nightly with its seven indexes: slower than the first
-- fill, and 100,000 dead rows for vacuum. Now a full run rewrites a record only when it changed, keeps
-- the ids of the ones it saw but left alone in app_private.st_sync_seen (narrow, cleared when the run
-- ends), and marks deleted what it neither wrote nor saw.

drop table if exists app_private.st_sync_seen;

create table app_private.st_sync_seen (
  tenant_id uuid not null references app_public.tenants (id) on delete cascade,
  table_name text not null,
  id bigint not null,
  constraint st_sync_seen_pkey primary key (tenant_id, table_name, id),
  constraint st_sync_seen_table_must_be_a_cache
    check (table_name in ('st_locations', 'st_jobs', 'st_appointments', 'st_technicians', 'st_appointment_assignments'))
);
comment on table app_private.st_sync_seen is $$The ids the full sync run in progress (or interrupted, to be resumed) has seen but not rewritten (unchanged records), per tenant and cache; the records it rewrote have a synced_at from the run. At the end of the run the cache’s records it neither rewrote nor saw are marked deleted and these rows are removed; a new full run starts with none. Written only by app_private.st_apply_page and st_begin_sync.$$;
comment on column app_private.st_sync_seen.tenant_id is 'The Switchboard tenant.';
comment on column app_private.st_sync_seen.table_name is 'The cache (st_jobs, …).';
comment on column app_private.st_sync_seen.id is 'ServiceTitan’s id of a record the run saw.';
alter table app_private.st_sync_seen enable row level security;
alter table app_private.st_sync_seen force row level security;
create policy owner_all on app_private.st_sync_seen for all to :DATABASE_OWNER using (true) with check (true);
comment on policy owner_all on app_private.st_sync_seen is 'Only the owner (the worker’s sync functions) reads and writes it; members have no access.';

create or replace function app_private.st_upsert_records(tenant_id uuid, table_name text, records jsonb) returns bigint[]
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
        where t.modified_on < excluded.modified_on
           or (t.modified_on = excluded.modified_on and (t.deleted_at is not null or t.full_data is distinct from excluded.full_data))
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
        where t.modified_on < excluded.modified_on
           or (t.modified_on = excluded.modified_on and (t.deleted_at is not null or t.full_data is distinct from excluded.full_data))
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
        where t.modified_on < excluded.modified_on
           or (t.modified_on = excluded.modified_on and (t.deleted_at is not null or t.full_data is distinct from excluded.full_data))
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
        where t.modified_on < excluded.modified_on
           or (t.modified_on = excluded.modified_on and (t.deleted_at is not null or t.full_data is distinct from excluded.full_data))
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
        where t.modified_on < excluded.modified_on
           or (t.modified_on = excluded.modified_on and (t.deleted_at is not null or t.full_data is distinct from excluded.full_data))
      returning t.id
    ) select pg_catalog.array_agg(id) into v_ids from up;
  else
    raise exception 'Unknown ServiceTitan cache "%"', table_name using errcode = '22023';
  end case;
  return coalesce(v_ids, '{}');
end;
$$;
comment on function app_private.st_upsert_records(uuid, text, jsonb) is 'Writes a page of ServiceTitan records (a JSON array as the API returned it) into a cache: typed columns plus the whole record, newest version first (a record older than the cached one is left alone, and one identical to it is not rewritten: a nightly full sync of an unchanged cache writes no row), deleted_at cleared. Returns the ids written. 22023 for a page that is not an array of records with a numeric id and a modifiedOn, or a value of the wrong type.';

create or replace function app_private.st_begin_sync(tenant_id uuid, table_name text, mode text, lease interval default interval '15 minutes')
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

  -- A new run. Incremental starts from the last completed sync’s token; without one it is a full sync.
  if v_mode = 'incremental' and v_state.cursor is null then
    v_mode := 'full';
  end if;
  -- What an abandoned full run saw says nothing about this one.
  delete from app_private.st_sync_seen ss where ss.tenant_id = v_tenant and ss.table_name = v_table;
  update raw.sync_state s
     set run_id = v_run, run_mode = v_mode, run_started_at = pg_catalog.now(), run_heartbeat_at = pg_catalog.now(),
         run_cursor = case when v_mode = 'full' then null else s.cursor end, run_records = 0, run_pages = 0
   where s.tenant_id = v_tenant and s.table_name = v_table;
  return query select v_run, app_hidden.st_resource(v_table), v_mode,
    case when v_mode = 'full' then null::text else v_state.cursor end, false, 0, 0::bigint;
end;
$$;
comment on function app_private.st_begin_sync(uuid, text, text, interval) is $$Claims a cache of a tenant for one sync run and says where to start. 55P03 while another run holds it (its heartbeat younger than lease): never two syncs of the same tenant and table at once. An interrupted run is resumed from its stored continuation token (resumed = true), unless a full sync is asked for while an incremental one was interrupted. A new full run starts from the beginning of ServiceTitan’s export; a new incremental run from the token of the last completed sync (a full run when there is none). 22023 for an unknown table or mode.$$;

create or replace function app_private.st_apply_page(run_id uuid, records jsonb, next_cursor text, has_more boolean) returns int
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

  if v_state.run_mode = 'full' then
    -- A record this run wrote has synced_at from the run; the ones it saw but left alone (unchanged,
    -- or older than the cached version) are remembered in st_sync_seen. A first fill writes them all
    -- and remembers none.
    insert into app_private.st_sync_seen (tenant_id, table_name, id)
    select v_state.tenant_id, v_state.table_name, x.id
      from (select (r ->> 'id')::bigint as id from pg_catalog.jsonb_array_elements(records) r
            except
            select w.id from pg_catalog.unnest(v_ids) w (id)) x
    on conflict do nothing;
    -- Its end: what ServiceTitan no longer has was deleted there; mark it, keep it.
    if not has_more then
      execute pg_catalog.format(
        -- EXCEPT (a hashed or sorted set difference) rather than NOT EXISTS: the statistics of both
        -- tables are stale by the end of a run (a first fill was analyzed empty), and a nested loop
        -- the planner would pick on them costs minutes for 100,000 records.
        'with gone as (
           update raw.%1$I t set deleted_at = pg_catalog.now()
             from (select c.id from raw.%1$I c where c.tenant_id = $1 and c.deleted_at is null and c.synced_at < $3
                   except
                   select ss.id from app_private.st_sync_seen ss where ss.tenant_id = $1 and ss.table_name = $2) unseen
            where t.tenant_id = $1 and t.id = unseen.id
           returning t.id)
         select pg_catalog.array_agg(id) from gone', v_state.table_name)
        into v_deleted using v_state.tenant_id, v_state.table_name, v_state.run_started_at;
      delete from app_private.st_sync_seen ss where ss.tenant_id = v_state.tenant_id and ss.table_name = v_state.table_name;
    end if;
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
comment on function app_private.st_apply_page(uuid, jsonb, text, boolean) is $$Applies one page of a sync run in the caller’s transaction: the records (st_upsert_records; unchanged ones are not rewritten), their projections for what changed (technicians → agents, appointments and assignments → busy periods), the ids a full run saw (app_private.st_sync_seen) and the continuation token to resume from, all or nothing. On the last page (has_more false) the run completes: a full run marks what it did not see as deleted; sync_state gets the completion time, records_synced, the token for the next incremental sync, and loses the error. 55000 when the run lost its claim. Returns the number of records in the page.$$;


do $do$
declare
  t text;
begin
  foreach t in array array['st_locations', 'st_jobs', 'st_appointments', 'st_technicians', 'st_appointment_assignments'] loop
    execute pg_catalog.format($c$comment on column raw.%I.synced_at is 'When a sync last wrote the record (created it, or found it changed or back from deleted); a full sync that finds it unchanged leaves it alone.'$c$, t);
  end loop;
end
$do$;
