--! Previous: sha1:3e8c9a9e5ac093d77a6c667ffca12533e5a198c9
--! Hash: sha1:abb5b486afc0092ace59bd4c9640407c7ed6efcd
--! Message: Review of the ServiceTitan cache: row level security on the five raw caches written out table by table (000017 turned it on in a DO loop), policies commented; stale(olderThan) refuses a window that is not positive (22023)

-- Migration 000022: review of the ServiceTitan cache.
-- 1. Row level security on the five raw caches, written out table by table. Migration 000017 turned
--    it on (and created the owner_all and select_current_tenant policies) inside a DO loop, where a
--    DBA reading the schema's history, or a search for "enable row level security", does not see it.
--    These statements change nothing on a database migrated by 000017; they make the rule visible.
-- 2. RawSyncState.stale(olderThan) refuses a window that is not positive (22023) instead of calling
--    every cache stale.

alter table raw.st_locations enable row level security;
alter table raw.st_locations force row level security;
alter table raw.st_jobs enable row level security;
alter table raw.st_jobs force row level security;
alter table raw.st_appointments enable row level security;
alter table raw.st_appointments force row level security;
alter table raw.st_technicians enable row level security;
alter table raw.st_technicians force row level security;
alter table raw.st_appointment_assignments enable row level security;
alter table raw.st_appointment_assignments force row level security;

comment on policy select_current_tenant on raw.st_locations is 'Members read the cached locations of their current tenant.';
comment on policy select_current_tenant on raw.st_jobs is 'Members read the cached jobs of their current tenant.';
comment on policy select_current_tenant on raw.st_appointments is 'Members read the cached appointments of their current tenant.';
comment on policy select_current_tenant on raw.st_technicians is 'Members read the cached technicians of their current tenant.';
comment on policy select_current_tenant on raw.st_appointment_assignments is 'Members read the cached appointment assignments of their current tenant.';
comment on policy owner_all on raw.st_locations is 'The owner (the worker’s sync functions) writes the cache.';
comment on policy owner_all on raw.st_jobs is 'The owner (the worker’s sync functions) writes the cache.';
comment on policy owner_all on raw.st_appointments is 'The owner (the worker’s sync functions) writes the cache.';
comment on policy owner_all on raw.st_technicians is 'The owner (the worker’s sync functions) writes the cache.';
comment on policy owner_all on raw.st_appointment_assignments is 'The owner (the worker’s sync functions) writes the cache.';

create or replace function raw.sync_state_stale(state raw.sync_state, older_than interval default interval '30 minutes') returns boolean
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if older_than is not null and older_than <= interval '0' then
    raise exception 'olderThan must be a positive length of time (got %)', older_than using errcode = '22023';
  end if;
  return coalesce(greatest(state.last_full_sync, state.last_incremental_sync), '-infinity'::timestamptz)
         < pg_catalog.now() - coalesce(older_than, interval '30 minutes');
end;
$$;
comment on function raw.sync_state_stale(raw.sync_state, interval) is $$True when this cache has had no completed sync (full or incremental) for longer than older_than (default 30 minutes: six incremental runs missed), or never had one: its rows may be behind ServiceTitan. last_error and consecutive_failures say why. 22023 when older_than is not positive.$$;
