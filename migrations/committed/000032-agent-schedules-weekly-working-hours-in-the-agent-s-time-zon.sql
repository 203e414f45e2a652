--! Previous: sha1:8295743db1b30b88fcb5ac06ed59b4580ec3ec3b
--! Hash: sha1:c8debb2a58bdfb9275c517c4b7468842678f6f4f
--! Message: Agent schedules: weekly working hours in the agent's time zone (overlaps refused, also from two writers at once), time off and the business's holidays; outside them an agent fails routing's schedule check, with the reason; a returning agent gets no burst

-- Issue 15, point 4 (second half): when agents work. A weekly schedule per agent in the agent's time
-- zone (else the business's), time off (out of office), and the business's holidays. Outside them an
-- agent fails routing's schedule check; an agent without working hours works at any time, as before.
-- Coming back gives no burst: round robin raises a returning agent's pass to the others' virtual time.

create table if not exists app_public.agent_working_hours (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null default app_public.current_tenant_id(),
  agent_id uuid not null,
  weekday smallint not null,
  starts_at time not null,
  ends_at time not null,
  created_at timestamptz not null default now(),
  constraint agent_working_hours_agent_must_exist foreign key (tenant_id, agent_id) references app_public.agents (tenant_id, id) on delete cascade,
  constraint agent_working_hours_weekday_must_be_1_monday_to_7_sunday check (weekday between 1 and 7),
  constraint agent_working_hours_must_start_before_they_end check (starts_at < ends_at)
);
create index if not exists agent_working_hours_by_agent on app_public.agent_working_hours (tenant_id, agent_id, weekday, starts_at);
comment on table app_public.agent_working_hours is 'When an agent works, week by week: intervals per weekday in the agent''s time zone (agents.timezone, else the business''s). An agent with no rows works at any time; one with rows is off duty outside them (routing''s schedule check). Intervals of one day may not overlap (22023); a night shift is two rows (e.g. Monday 22:00–24:00 and Tuesday 00:00–06:00).';
comment on column app_public.agent_working_hours.id is 'The interval''s id.';
comment on column app_public.agent_working_hours.tenant_id is 'The tenant.';
comment on column app_public.agent_working_hours.agent_id is 'The agent.';
comment on column app_public.agent_working_hours.weekday is 'The day of the week: 1 Monday to 7 Sunday (ISO).';
comment on column app_public.agent_working_hours.starts_at is 'When work starts that day, local time.';
comment on column app_public.agent_working_hours.ends_at is 'When work ends that day, local time (24:00 for midnight); after starts_at.';
comment on column app_public.agent_working_hours.created_at is 'When the interval was added.';
alter table app_public.agent_working_hours enable row level security;
alter table app_public.agent_working_hours force row level security;
drop policy if exists owner_all on app_public.agent_working_hours;
create policy owner_all on app_public.agent_working_hours for all to :DATABASE_OWNER using (true) with check (true);
drop policy if exists select_current_tenant on app_public.agent_working_hours;
create policy select_current_tenant on app_public.agent_working_hours for select to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
drop policy if exists insert_current_tenant on app_public.agent_working_hours;
create policy insert_current_tenant on app_public.agent_working_hours for insert to :DATABASE_VISITOR with check (tenant_id = (select app_public.current_tenant_id()));
drop policy if exists update_current_tenant on app_public.agent_working_hours;
create policy update_current_tenant on app_public.agent_working_hours for update to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id())) with check (tenant_id = (select app_public.current_tenant_id()));
drop policy if exists delete_current_tenant on app_public.agent_working_hours;
create policy delete_current_tenant on app_public.agent_working_hours for delete to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
drop trigger if exists _050_require_tenant_role on app_public.agent_working_hours;
create trigger _050_require_tenant_role before insert or update or delete on app_public.agent_working_hours
  for each row execute function app_private.tg__require_tenant_role('manager', 'agent working hours');
comment on trigger _050_require_tenant_role on app_public.agent_working_hours is 'Owners, admins and managers change working hours (42501 otherwise).';
grant select, delete on app_public.agent_working_hours to :DATABASE_VISITOR;
grant insert (tenant_id, agent_id, weekday, starts_at, ends_at) on app_public.agent_working_hours to :DATABASE_VISITOR;
grant update (weekday, starts_at, ends_at) on app_public.agent_working_hours to :DATABASE_VISITOR;

create table if not exists app_public.agent_time_off (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null default app_public.current_tenant_id(),
  agent_id uuid not null,
  starts_at timestamptz not null,
  ends_at timestamptz not null,
  reason text,
  created_at timestamptz not null default now(),
  constraint agent_time_off_agent_must_exist foreign key (tenant_id, agent_id) references app_public.agents (tenant_id, id) on delete cascade,
  constraint agent_time_off_must_start_before_it_ends check (starts_at < ends_at),
  constraint agent_time_off_reason_must_be_at_most_200_characters check (pg_catalog.length(reason) <= 200)
);
create index if not exists agent_time_off_by_agent on app_public.agent_time_off (tenant_id, agent_id, ends_at);
comment on table app_public.agent_time_off is 'An agent out of office (vacation, sick leave, training) from starts_at to ends_at: off duty then, whatever the working hours.';
comment on column app_public.agent_time_off.id is 'The period''s id.';
comment on column app_public.agent_time_off.tenant_id is 'The tenant.';
comment on column app_public.agent_time_off.agent_id is 'The agent.';
comment on column app_public.agent_time_off.starts_at is 'When it starts.';
comment on column app_public.agent_time_off.ends_at is 'When it ends (after starts_at); the agent is back from then.';
comment on column app_public.agent_time_off.reason is 'Why, shown in the routing explanation (at most 200 characters).';
comment on column app_public.agent_time_off.created_at is 'When it was added.';
alter table app_public.agent_time_off enable row level security;
alter table app_public.agent_time_off force row level security;
drop policy if exists owner_all on app_public.agent_time_off;
create policy owner_all on app_public.agent_time_off for all to :DATABASE_OWNER using (true) with check (true);
drop policy if exists select_current_tenant on app_public.agent_time_off;
create policy select_current_tenant on app_public.agent_time_off for select to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
drop policy if exists insert_current_tenant on app_public.agent_time_off;
create policy insert_current_tenant on app_public.agent_time_off for insert to :DATABASE_VISITOR with check (tenant_id = (select app_public.current_tenant_id()));
drop policy if exists update_current_tenant on app_public.agent_time_off;
create policy update_current_tenant on app_public.agent_time_off for update to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id())) with check (tenant_id = (select app_public.current_tenant_id()));
drop policy if exists delete_current_tenant on app_public.agent_time_off;
create policy delete_current_tenant on app_public.agent_time_off for delete to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
drop trigger if exists _050_require_tenant_role on app_public.agent_time_off;
create trigger _050_require_tenant_role before insert or update or delete on app_public.agent_time_off
  for each row execute function app_private.tg__require_tenant_role('manager', 'agent time off');
comment on trigger _050_require_tenant_role on app_public.agent_time_off is 'Owners, admins and managers change time off (42501 otherwise).';
grant select, delete on app_public.agent_time_off to :DATABASE_VISITOR;
grant insert (tenant_id, agent_id, starts_at, ends_at, reason) on app_public.agent_time_off to :DATABASE_VISITOR;
grant update (starts_at, ends_at, reason) on app_public.agent_time_off to :DATABASE_VISITOR;

create table if not exists app_public.holidays (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null default app_public.current_tenant_id(),
  day date not null,
  name text not null,
  created_at timestamptz not null default now(),
  constraint holidays_tenant_must_exist foreign key (tenant_id) references app_public.tenants (id) on delete cascade,
  constraint holidays_day_must_be_unique_per_tenant unique (tenant_id, day),
  constraint holidays_name_must_not_be_blank check (pg_catalog.btrim(name) <> ''),
  constraint holidays_name_must_be_at_most_100_characters check (pg_catalog.length(name) <= 100)
);
comment on table app_public.holidays is 'The business''s holidays: on that date (each agent''s own local date) no agent is on duty.';
comment on column app_public.holidays.id is 'The holiday''s id.';
comment on column app_public.holidays.tenant_id is 'The tenant.';
comment on column app_public.holidays.day is 'The date, one holiday a day.';
comment on column app_public.holidays.name is 'Its name, shown in the routing explanation ("holiday: Thanksgiving").';
comment on column app_public.holidays.created_at is 'When it was added.';
alter table app_public.holidays enable row level security;
alter table app_public.holidays force row level security;
drop policy if exists owner_all on app_public.holidays;
create policy owner_all on app_public.holidays for all to :DATABASE_OWNER using (true) with check (true);
drop policy if exists select_current_tenant on app_public.holidays;
create policy select_current_tenant on app_public.holidays for select to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
drop policy if exists insert_current_tenant on app_public.holidays;
create policy insert_current_tenant on app_public.holidays for insert to :DATABASE_VISITOR with check (tenant_id = (select app_public.current_tenant_id()));
drop policy if exists update_current_tenant on app_public.holidays;
create policy update_current_tenant on app_public.holidays for update to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id())) with check (tenant_id = (select app_public.current_tenant_id()));
drop policy if exists delete_current_tenant on app_public.holidays;
create policy delete_current_tenant on app_public.holidays for delete to :DATABASE_VISITOR using (tenant_id = (select app_public.current_tenant_id()));
drop trigger if exists _050_require_tenant_role on app_public.holidays;
create trigger _050_require_tenant_role before insert or update or delete on app_public.holidays
  for each row execute function app_private.tg__require_tenant_role('manager', 'holidays');
comment on trigger _050_require_tenant_role on app_public.holidays is 'Owners, admins and managers change holidays (42501 otherwise).';
grant select, delete on app_public.holidays to :DATABASE_VISITOR;
grant insert (tenant_id, day, name) on app_public.holidays to :DATABASE_VISITOR;
grant update (day, name) on app_public.holidays to :DATABASE_VISITOR;

--! Included routing/tg_agent_working_hours__no_overlap.sql
create or replace function app_private.tg_agent_working_hours__no_overlap() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_other app_public.agent_working_hours;
  v_days constant text[] := array['Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday', 'Sunday'];
begin
  -- One writer per agent at a time, so two overlapping intervals can't be added at once.
  perform 1 from app_public.agents a where a.tenant_id = new.tenant_id and a.id = new.agent_id for no key update;
  select w.* into v_other from app_public.agent_working_hours w
   where w.tenant_id = new.tenant_id and w.agent_id = new.agent_id and w.weekday = new.weekday and w.id <> new.id
     and new.starts_at < w.ends_at and w.starts_at < new.ends_at
   order by w.starts_at
   limit 1;
  if v_other.id is not null then
    raise exception 'Working hours overlap on %: %–% and %–%', v_days[new.weekday],
      pg_catalog.to_char(v_other.starts_at, 'HH24:MI'), pg_catalog.to_char(v_other.ends_at, 'HH24:MI'),
      pg_catalog.to_char(new.starts_at, 'HH24:MI'), pg_catalog.to_char(new.ends_at, 'HH24:MI')
      using errcode = '22023';
  end if;
  return new;
end;
$$;

comment on function app_private.tg_agent_working_hours__no_overlap() is 'Trigger on agent_working_hours: refuses an interval that overlaps another of the same agent on the same weekday (22023, naming both), after locking the agent so that two writers cannot add overlapping intervals at once.';
--! EndIncluded routing/tg_agent_working_hours__no_overlap.sql
drop trigger if exists _200_no_overlap on app_public.agent_working_hours;
create trigger _200_no_overlap before insert or update on app_public.agent_working_hours
  for each row execute function app_private.tg_agent_working_hours__no_overlap();
comment on trigger _200_no_overlap on app_public.agent_working_hours is 'Refuses overlapping intervals of one agent on one weekday (22023).';

--! Included routing/agent_off_duty_reason.sql
create or replace function app_hidden.agent_off_duty_reason(tenant_id uuid, agent_id uuid, timezone text, at timestamptz) returns text
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_tenant uuid := agent_off_duty_reason.tenant_id;
  v_agent uuid := agent_off_duty_reason.agent_id;
  v_at timestamptz := agent_off_duty_reason.at;
  v_local timestamp := v_at at time zone agent_off_duty_reason.timezone;
  v_until timestamptz;
  v_why text;
begin
  -- Out of office (time off covering this moment), the longest first.
  select t.ends_at, t.reason into v_until, v_why
    from app_public.agent_time_off t
   where t.tenant_id = v_tenant and t.agent_id = v_agent and t.starts_at <= v_at and t.ends_at > v_at
   order by t.ends_at desc
   limit 1;
  if v_until is not null then
    return pg_catalog.format('out of office until %s%s',
      pg_catalog.to_char(v_until at time zone agent_off_duty_reason.timezone, 'YYYY-MM-DD HH24:MI'),
      case when v_why is not null then ' (' || v_why || ')' else '' end);
  end if;
  -- A holiday of the business, on the agent's own date.
  select h.name into v_why from app_public.holidays h where h.tenant_id = v_tenant and h.day = v_local::date;
  if v_why is not null then
    return 'holiday: ' || v_why;
  end if;
  -- Working hours: an agent with none works at any time.
  if exists (select 1 from app_public.agent_working_hours w where w.tenant_id = v_tenant and w.agent_id = v_agent)
     and not exists (
       select 1 from app_public.agent_working_hours w
        where w.tenant_id = v_tenant and w.agent_id = v_agent
          and w.weekday = pg_catalog.date_part('isodow', v_local)
          and w.starts_at <= v_local::time and (v_local::time < w.ends_at or w.ends_at = '24:00'::time)) then
    return pg_catalog.format('outside working hours (%s %s in %s)', pg_catalog.to_char(v_local, 'Dy'), pg_catalog.to_char(v_local, 'HH24:MI'),
      agent_off_duty_reason.timezone);
  end if;
  return null;
end;
$$;

comment on function app_hidden.agent_off_duty_reason(uuid, uuid, text, timestamptz) is 'Why an agent is off duty at a moment, or null when on duty: out of office (agent_time_off covering it, with the end and the reason), a holiday of the business on the agent''s local date, or outside the agent''s weekly working hours in their time zone (an agent without working hours works at any time). Routing''s schedule check.';
--! EndIncluded routing/agent_off_duty_reason.sql
--! Included routing/routing_candidates.sql
create or replace function app_private.routing_candidates(ctx app_private.routing_context, out candidates jsonb, out agent_order uuid[], out pass_floor numeric)
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_tenant uuid := ctx.tenant_id;
  v_lead app_public.leads := ctx.lead;
  v_restrict uuid[] := ctx.restrict;
  v_order_strategy text := ctx.order_strategy;
  v_tier text := ctx.tier;
  v_tier_weight numeric := ctx.tier_weight;
  v_lat numeric := ctx.lat;
  v_lon numeric := ctx.lon;
  v_appt_range tstzrange := ctx.appt_range;
  v_prev_owner uuid := ctx.prev_owner;
  -- Caps and working hours count in the agent's time zone, else the business's.
  v_business_tz text := coalesce((select bs.timezone from app_public.business_settings bs where bs.tenant_id = ctx.tenant_id), 'UTC');
begin
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
           coalesce(pm.conv_hot, 0.5) as conversion_hot,
           a.daily_cap, a.weekly_cap,
           case when av.cap_day = cp.day then av.cap_day_count else 0 end as received_today,
           case when av.cap_week = cp.week then av.cap_week_count else 0 end as received_this_week,
           app_hidden.agent_off_duty_reason(v_tenant, a.id, coalesce(a.timezone, v_business_tz), pg_catalog.now()) as off_duty
      from app_public.agents a
      left join app_public.agent_availability av on av.tenant_id = a.tenant_id and av.agent_id = a.id
      cross join lateral app_hidden.agent_cap_period(coalesce(a.timezone, v_business_tz), pg_catalog.now()) cp
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
           b.skill_ok and b.language_ok and b.area_ok and b.availability_ok and b.capacity_ok and b.slot_ok and b.free_ok and b.not_rejected
             and b.off_duty is null
             and (b.daily_cap is null or b.received_today < b.daily_cap) and (b.weekly_cap is null or b.received_this_week < b.weekly_cap) as eligible,
           (b.daily_cap is null or b.received_today < b.daily_cap) and (b.weekly_cap is null or b.received_this_week < b.weekly_cap) as cap_ok,
           b.off_duty is null as schedule_ok,
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
             'capacity', r.capacity_ok, 'slot', r.slot_ok, 'free', r.free_ok, 'not_rejected', r.not_rejected, 'schedule', r.schedule_ok, 'cap', r.cap_ok),
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
             'not_rejected', case when not r.not_rejected then 'already rejected this lead or let its offer expire' end,
             'schedule', r.off_duty,
             'cap', case when r.daily_cap is not null and r.received_today >= r.daily_cap
                           then pg_catalog.format('daily cap reached (%s of %s)', r.received_today, r.daily_cap)
                         when r.weekly_cap is not null and r.received_this_week >= r.weekly_cap
                           then pg_catalog.format('weekly cap reached (%s of %s)', r.received_this_week, r.weekly_cap) end)),
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
    into candidates, agent_order, pass_floor
    from ranked r;
end;
$$;

comment on function app_private.routing_candidates(app_private.routing_context) is 'The candidates of a routing decision: every active agent of the tenant (only the rule''s agents when the plan restricts them), each with its checks (skill, language, area, availability, capacity, slot, free, not_rejected, schedule: on duty by its working hours, time off and the business''s holidays, cap: under its daily and weekly caps), the reasons of the failed ones, its score and rank in the strategy''s order (candidates, the jsonb stored in lead_routing_history), the eligible agents'' ids in that order (agent_order), and the round-robin virtual time of the eligible agents (pass_floor). Reads only. Part of route_lead.';
--! EndIncluded routing/routing_candidates.sql
--! Included routing/routing_try_agent.sql
create or replace function app_private.routing_try_agent(tenant_id uuid, agent_id uuid, lead app_public.leads, appt_range tstzrange, wait boolean,
  out claimed boolean, out skipped boolean, out slot_id uuid, out note text)
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_tenant uuid := routing_try_agent.tenant_id;
  v_agent uuid := routing_try_agent.agent_id;
  v_lead app_public.leads := routing_try_agent.lead;
  v_av app_public.agent_availability;
begin
  claimed := false;
  skipped := false;
  -- Lock the agent's availability row: without waiting on the first pass (a row another routing
  -- holds is skipped), waiting on the second.
  if not wait then
    select av.* into v_av from app_public.agent_availability av
     where av.tenant_id = v_tenant and av.agent_id = v_agent
     for update skip locked;
    if not found then
      skipped := true;
      return;
    end if;
  else
    begin
      select av.* into v_av from app_public.agent_availability av
       where av.tenant_id = v_tenant and av.agent_id = v_agent
       for update;
    exception when deadlock_detected then
      note := 'could not be locked (deadlock avoided)';
      return;
    end;
  end if;
  -- Re-check under the lock what may have changed since the candidates were read.
  if v_av.agent_id is null or v_av.status <> 'available' or v_av.current_load >= v_av.max_capacity then
    note := pg_catalog.format('changed while routing: status %s, load %s of %s', v_av.status, v_av.current_load, v_av.max_capacity);
    return;
  end if;
  -- Caps, counted under the same lock as the load, so concurrent routings can never exceed them.
  select pg_catalog.format('reached its %s cap while routing (%s of %s)', c.which, c.received, c.cap) into note
    from app_public.agents a
    cross join lateral app_hidden.agent_cap_period(coalesce(a.timezone,
      (select bs.timezone from app_public.business_settings bs where bs.tenant_id = v_tenant), 'UTC'), pg_catalog.now()) cp
    cross join lateral (values
      ('daily', a.daily_cap, case when v_av.cap_day = cp.day then v_av.cap_day_count else 0 end),
      ('weekly', a.weekly_cap, case when v_av.cap_week = cp.week then v_av.cap_week_count else 0 end)) c(which, cap, received)
   where a.tenant_id = v_tenant and a.id = v_agent and c.cap is not null and c.received >= c.cap
   limit 1;
  if note is not null then
    return;
  end if;
  -- Still on duty (working hours may have ended, or time off begun, since the candidates were read).
  select 'went off duty while routing: ' || app_hidden.agent_off_duty_reason(v_tenant, v_agent, coalesce(a.timezone,
      (select bs.timezone from app_public.business_settings bs where bs.tenant_id = v_tenant), 'UTC'), pg_catalog.now())
    into note
    from app_public.agents a where a.tenant_id = v_tenant and a.id = v_agent;
  if note is not null then
    return;
  end if;
  if appt_range is not null and app_hidden.agent_is_busy(v_tenant, v_agent, appt_range, v_lead.id) then
    note := 'became busy at the requested time while routing';
    return;
  end if;
  if v_lead.event_date is not null then
    select s.id into slot_id from app_public.availability_slots s
     where s.tenant_id = v_tenant and s.agent_id = v_agent and s.slot_date = v_lead.event_date and s.status = 'free'
       and (s.locked_until is null or s.locked_until <= pg_catalog.now() or s.locked_by_lead_id = v_lead.id)
     order by s.start_time
     limit 1
     for update skip locked;
    if slot_id is null then
      note := 'the slot was taken while routing';
      return;
    end if;
  end if;
  claimed := true;
end;
$$;

comment on function app_private.routing_try_agent(uuid, uuid, app_public.leads, tstzrange, boolean) is 'Tries to take one candidate for a lead: locks the agent''s agent_availability row (skip locked unless wait; skipped = another routing holds it), re-checks status, load, the daily and weekly caps, the schedule (working hours, time off, holidays), busy time and, for an event lead, locks a free slot on the event date (slot_id). claimed when all hold; otherwise note says what changed. The single copy of the lock-and-recheck step of route_lead (routing_claim calls it).';
--! EndIncluded routing/routing_try_agent.sql
