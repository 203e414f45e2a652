--! Previous: sha1:5267b313e317d2d1617803910c1b699480ea1839
--! Hash: sha1:c0238666dd0fdb4206a7fd6875aab3a5c4595660
--! Message: RawSyncState.stale: a ServiceTitan cache with no completed sync for 30 minutes (or another window) is stale, the field operations alert on

-- Migration 000019: whether a ServiceTitan cache is stale, as a field operations can alert on.
-- Incremental syncs run every 5 minutes, so a cache whose newest completed sync is older than
-- 30 minutes (six runs missed) is behind ServiceTitan; GraphQL shows it as RawSyncState.stale.

drop function if exists raw.sync_state_stale(raw.sync_state, interval);

create function raw.sync_state_stale(state raw.sync_state, older_than interval default interval '30 minutes') returns boolean
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select coalesce(greatest(state.last_full_sync, state.last_incremental_sync), '-infinity'::timestamptz)
         < pg_catalog.now() - coalesce(older_than, interval '30 minutes');
$$;
comment on function raw.sync_state_stale(raw.sync_state, interval) is $$True when this cache has had no completed sync (full or incremental) for longer than older_than (default 30 minutes: six incremental runs missed), or never had one: its rows may be behind ServiceTitan. last_error and consecutive_failures say why.$$;
grant execute on function raw.sync_state_stale(raw.sync_state, interval) to :DATABASE_VISITOR;
