--! Previous: sha1:238d1de92274c772cc0cefbfe0ba507196af39fc
--! Hash: sha1:3e8c9a9e5ac093d77a6c667ffca12533e5a198c9
--! Message: ServiceTitan's rate limit kept by every worker process together: request slots in PostgreSQL (st_take_rate_slot / st_release_rate_slot), free a second after the answer, freed by their hold when a process dies

-- Migration 000021: ServiceTitan's rate limit (60 requests per second per app and tenant) kept by
-- every worker process together. The client's limiter counted only its own process, so two workers
-- syncing one tenant could send twice the limit. Now a request takes one of `limit` slots in
-- PostgreSQL before it is sent and gives it back a second after its answer, the rule the in-process
-- limiter follows, so any one-second window on ServiceTitan's side holds at most `limit` requests
-- from all our processes. A slot whose process died frees itself when its hold (the request timeout
-- plus a second) runs out.

drop function if exists app_private.st_take_rate_slot(text, int, interval);
drop function if exists app_private.st_release_rate_slot(text, int);
drop table if exists app_private.service_titan_rate_slots;

create table app_private.service_titan_rate_slots (
  limiter_key text not null,
  slot int not null,
  busy_until timestamptz not null default '-infinity',
  constraint service_titan_rate_slots_pkey primary key (limiter_key, slot),
  constraint service_titan_rate_slot_numbers_start_at_zero check (slot >= 0)
);
comment on table app_private.service_titan_rate_slots is $$Request slots shared by every worker process, per ServiceTitan API origin, app key and tenant (what ServiceTitan counts its 60 requests per second against): a request holds one from before it is sent until a second after its answer. Taken by st_take_rate_slot, given back by st_release_rate_slot.$$;
comment on column app_private.service_titan_rate_slots.limiter_key is 'API origin | app key | ServiceTitan tenant id.';
comment on column app_private.service_titan_rate_slots.slot is 'The slot’s number, 0 to the limit minus one.';
comment on column app_private.service_titan_rate_slots.busy_until is 'Free from this moment: the end of the hold while a request is in flight (a dead process’s slot frees itself then), a second after the answer once it is back.';
alter table app_private.service_titan_rate_slots enable row level security;
alter table app_private.service_titan_rate_slots force row level security;
create policy owner_all on app_private.service_titan_rate_slots for all to :DATABASE_OWNER using (true) with check (true);
comment on policy owner_all on app_private.service_titan_rate_slots is 'Only the owner (the worker’s ServiceTitan client) takes and gives back slots.';

create function app_private.st_take_rate_slot(limiter_key text, slots int, hold interval) returns table (slot int, wait_ms int)
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_key text := st_take_rate_slot.limiter_key;
  v_slot int;
  v_next timestamptz;
begin
  if v_key is null or v_key = '' then
    raise exception 'A rate limiter key is required' using errcode = '22023';
  end if;
  if slots is null or slots < 1 or slots > 59 then
    raise exception 'A ServiceTitan rate limit is 1 to 59 requests per second (ServiceTitan allows 60), not %', slots using errcode = '22023';
  end if;
  if hold is null or hold <= interval '0' then
    raise exception 'A slot’s hold must be a positive interval, not %', hold using errcode = '22023';
  end if;
  if not exists (select 1 from app_private.service_titan_rate_slots s where s.limiter_key = v_key and s.slot = slots - 1) then
    insert into app_private.service_titan_rate_slots (limiter_key, slot)
    select v_key, g from pg_catalog.generate_series(0, slots - 1) g
    on conflict do nothing;
  end if;

  update app_private.service_titan_rate_slots s
     set busy_until = pg_catalog.clock_timestamp() + hold
   where s.limiter_key = v_key
     and s.slot = (select f.slot from app_private.service_titan_rate_slots f
                    where f.limiter_key = v_key and f.slot < slots and f.busy_until <= pg_catalog.clock_timestamp()
                    order by f.busy_until
                    limit 1
                    for update skip locked)
  returning s.slot into v_slot;
  if v_slot is not null then
    return query select v_slot, 0;
    return;
  end if;

  -- None free: say how long until the first busy one frees up (at least 5 ms, at most a second, then
  -- ask again). When none is busy, the free ones are being taken by other callers right now (locked,
  -- skipped): 5 ms. (Only busy ones count: a new slot’s -infinity can’t be subtracted before PG 17.)
  select pg_catalog.min(f.busy_until) into v_next
    from app_private.service_titan_rate_slots f
   where f.limiter_key = v_key and f.slot < slots and f.busy_until > pg_catalog.clock_timestamp();
  return query select null::int,
    case when v_next is null then 5
         else greatest(5, least(1000, pg_catalog.ceil(pg_catalog.date_part('epoch', v_next - pg_catalog.clock_timestamp()) * 1000)))::int
    end;
end;
$$;
comment on function app_private.st_take_rate_slot(text, int, interval) is $$Takes a free request slot of this limiter (the first `slots` of them; they are created on first use) and holds it for `hold` (the request’s timeout plus a second): returns its number and wait_ms 0. When all are busy returns a null slot and how many milliseconds to wait before asking again. 22023 for a missing key, a limit outside 1 to 59 or a hold that is not positive.$$;

create function app_private.st_release_rate_slot(limiter_key text, slot int) returns void
  language sql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
  update app_private.service_titan_rate_slots s
     set busy_until = pg_catalog.clock_timestamp() + interval '1 second'
   where s.limiter_key = st_release_rate_slot.limiter_key and s.slot = st_release_rate_slot.slot;
$$;
comment on function app_private.st_release_rate_slot(text, int) is 'Gives a slot back once its request’s answer (or failure) is in: it is free again a second later, so ServiceTitan counts at most the limit in any second, however long the request took.';
