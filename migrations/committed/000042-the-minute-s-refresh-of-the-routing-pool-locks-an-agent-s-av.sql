--! Previous: sha1:c5164af8d97808231a60a8f70664c75e80ad7f15
--! Hash: sha1:05f802f8d5326311ca4c2514e40a2d92125e211f
--! Message: The minute's refresh of the routing pool locks an agent's availability row only when its pool rows must change (routing_pool_sync checks first, routing_pool_write writes), so a large tenant with schedules is not kept from routing while it runs.

-- The minute's refresh of the routing pool no longer locks every agent it looks at: an agent's
-- availability row is locked only when its pool rows must change (routing skips locked agents, so a
-- refresh of a large tenant with schedules kept routing off them for as long as it ran).
--! Included routing/routing_pool_write.sql
create or replace function app_private.routing_pool_write(tenant_id uuid, agent_id uuid) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_agent uuid := routing_pool_write.agent_id;
  v_old text;
  v_new record;
begin
  select p.state into v_old from app_private.routing_pool p where p.agent_id = v_agent limit 1;
  if v_old is null then
    return false;
  end if;
  select * into v_new from app_private.routing_pool_state(routing_pool_write.tenant_id, v_agent);
  if v_new.state is null then
    return false;
  end if;
  update app_private.routing_pool p
     set state = v_new.state, pass = v_new.pass, weight = v_new.weight, load_ratio = v_new.load_ratio
   where p.agent_id = v_agent
     and (p.state, p.pass, p.weight, p.load_ratio) is distinct from (v_new.state, v_new.pass, v_new.weight, v_new.load_ratio);
  if v_old <> 'ready' and v_new.state = 'ready' then
    perform app_private.routing_pool_clamp(routing_pool_write.tenant_id, v_agent);
    return true;
  end if;
  return false;
end;
$$;

comment on function app_private.routing_pool_write(uuid, uuid) is 'Writes the state, round-robin pass, weight and load ratio of an agent (app_private.routing_pool_state) into its rows of app_private.routing_pool, where they changed; returns true when the agent has just become ready, after raising its pass to the virtual time of its pools (app_private.routing_pool_clamp: no burst). The caller holds the agent''s availability row: the trigger on agent_availability (the row it just wrote), or app_private.routing_pool_sync.';
--! EndIncluded routing/routing_pool_write.sql
--! Included routing/routing_pool_sync.sql
create or replace function app_private.routing_pool_sync(tenant_id uuid, agent_id uuid) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_agent uuid := routing_pool_sync.agent_id;
begin
  -- Nothing to do (the common case of the minute's refresh): no lock taken, so routing is never
  -- kept from agents whose state stands.
  if exists (select 1 from app_private.routing_pool p
              cross join lateral app_private.routing_pool_state(routing_pool_sync.tenant_id, v_agent) s
              where p.agent_id = v_agent
                and (p.state, p.pass, p.weight, p.load_ratio) is not distinct from (s.state, s.pass, s.weight, s.load_ratio)
              limit 1)
     or not exists (select 1 from app_private.routing_pool p where p.agent_id = v_agent) then
    return false;
  end if;
  -- After any routing decision holding the agent (its availability row), and computed again
  -- then, so that the state written is never older than the one a concurrent decision commits.
  perform 1 from app_public.agent_availability av
   where av.tenant_id = routing_pool_sync.tenant_id and av.agent_id = v_agent for no key update;
  return app_private.routing_pool_write(routing_pool_sync.tenant_id, v_agent);
end;
$$;

comment on function app_private.routing_pool_sync(uuid, uuid) is 'Refreshes an agent''s rows of app_private.routing_pool when its state, pass, weight or load ratio changed: locks its availability row (after any routing decision holding it), then writes them (app_private.routing_pool_write); returns true when the agent has just become ready. Takes no lock when nothing changed. Called by the triggers on agent_working_hours, agent_time_off, holidays, business_settings and agents (weight, caps, time zone), and every minute for states that change with the clock (app_private.routing_pool_refresh_timed).';
--! EndIncluded routing/routing_pool_sync.sql
--! Included routing/tg_routing_pool__sync.sql
create or replace function app_private.tg_routing_pool__sync() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if tg_table_name = 'agents' then
    perform app_private.routing_pool_sync(new.tenant_id, new.id);
    return null;
  end if;
  if tg_table_name = 'agent_availability' then
    -- The row this statement wrote is locked by this transaction: write the pool at once.
    if tg_op = 'DELETE' then
      perform app_private.routing_pool_write(old.tenant_id, old.agent_id);
    else
      perform app_private.routing_pool_write(new.tenant_id, new.agent_id);
    end if;
    return null;
  end if;
  if tg_op in ('UPDATE', 'DELETE') then
    perform app_private.routing_pool_sync(old.tenant_id, old.agent_id);
  end if;
  if tg_op = 'INSERT' or (tg_op = 'UPDATE' and new.agent_id is distinct from old.agent_id) then
    perform app_private.routing_pool_sync(new.tenant_id, new.agent_id);
  end if;
  return null;
end;
$$;

comment on function app_private.tg_routing_pool__sync() is 'Trigger (after each row of agent_availability, agent_working_hours and agent_time_off, and after a change of an agent''s routing_weight, caps or time zone): refreshes the agent''s state in the routing pool (app_private.routing_pool_write for agent_availability, whose row the statement holds; app_private.routing_pool_sync otherwise).';
--! EndIncluded routing/tg_routing_pool__sync.sql
--! Included routing/routing_pool_clamp.sql
create or replace function app_private.routing_pool_clamp(tenant_id uuid, agent_id uuid) returns numeric
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_agent uuid := routing_pool_clamp.agent_id;
  v_vt numeric;
  v_pass numeric;
begin
  -- The virtual time of the agent's pools: in each (line, area key), where the other ready agent
  -- who goes next (the first entry of the round-robin index) started its turn (pass - 1 / weight);
  -- the latest of these. The agent starts its own turn there (its pass = that + 1 / its weight),
  -- unless it is already further on: a fresh team, all starting at 0, is left as it is.
  select pg_catalog.max((select p2.pass - 1::numeric / p2.weight from app_private.routing_pool p2
                          where p2.tenant_id = p.tenant_id and p2.line = p.line and p2.area_key = p.area_key
                            and p2.state = 'ready' and p2.agent_id <> p.agent_id
                          order by p2.pass, p2.weight desc, p2.agent_id
                          limit 1)) + 1::numeric / pg_catalog.min(p.weight),
         pg_catalog.min(p.pass)
    into v_vt, v_pass
    from app_private.routing_pool p
   where p.agent_id = v_agent;
  if v_vt is null or v_vt <= v_pass then
    return null;
  end if;
  insert into app_public.agent_routing_credits as c (agent_id, tenant_id, pass)
  values (v_agent, routing_pool_clamp.tenant_id, v_vt)
  on conflict on constraint agent_routing_credits_pkey do update set pass = greatest(c.pass, excluded.pass), updated_at = pg_catalog.now();
  update app_private.routing_pool p set pass = v_vt where p.agent_id = v_agent and p.pass < v_vt;
  return v_vt;
end;
$$;

comment on function app_private.routing_pool_clamp(uuid, uuid) is 'No burst for an agent who becomes ready (back from offline, a break, capacity, a cap or time off; new or reactivated): raises its round-robin pass (agent_routing_credits and its pool rows) so that its turn starts at the virtual time of its pools (the latest among them of the start of the turn of the other ready agent who goes next: pass - 1 / weight), so that it takes its turn with them instead of receiving every lead until its old pass catches up. Returns the new pass, or null when the agent was not behind. Called by app_private.routing_pool_write and app_private.routing_pool_build; the agent''s availability row is locked by then (lock order: availability, then ledger, as in routing).';
--! EndIncluded routing/routing_pool_clamp.sql
