--! Previous: sha1:b6becab7620b2c869b69d2bca9513dc9491b77d3
--! Hash: sha1:c1af55064960704043d09664cca530b0bbe653c5
--! Message: Leads queued while nobody was on duty are routed as soon as someone starts: drain_queues_coming_on_duty, run every minute by routing__duty_drain, drains the queues of tenants where working hours began, time off ended or a holiday ended

-- Leads queued while nobody was on duty are routed as soon as someone starts: every minute,
-- routing__duty_drain enqueues a drain for the tenants where working hours began, time off ended or
-- a holiday ended.

--! Included routing/drain_queues_coming_on_duty.sql
create or replace function app_private.drain_queues_coming_on_duty(since timestamptz, until timestamptz) returns integer
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_variable
declare
  v_since timestamptz := drain_queues_coming_on_duty.since;
  v_until timestamptz := drain_queues_coming_on_duty.until;
  v_tenant uuid;
  v_count integer := 0;
begin
  for v_tenant in
    -- Working hours that began in the window (local time of each agent).
    select w.tenant_id
      from app_public.agent_working_hours w
      join app_public.agents a on a.tenant_id = w.tenant_id and a.id = w.agent_id and a.is_active
      left join app_public.business_settings bs on bs.tenant_id = w.tenant_id
      cross join lateral (select v_since at time zone coalesce(a.timezone, bs.timezone, 'UTC') as local_since,
                                 v_until at time zone coalesce(a.timezone, bs.timezone, 'UTC') as local_until) l
     where w.weekday = pg_catalog.date_part('isodow', l.local_until)
       and l.local_until::date + w.starts_at > l.local_since
       and l.local_until::date + w.starts_at <= l.local_until
    union
    -- Time off that ended in the window.
    select t.tenant_id from app_public.agent_time_off t where t.ends_at > v_since and t.ends_at <= v_until
    union
    -- A holiday that ended at midnight in the window (the business's time zone).
    select h.tenant_id
      from app_public.holidays h
      join app_public.business_settings bs on bs.tenant_id = h.tenant_id
     where h.day = (v_until at time zone bs.timezone)::date - 1
       and (v_since at time zone bs.timezone)::date < (v_until at time zone bs.timezone)::date
  loop
    -- Only tenants with leads waiting get a drain (one job per tenant, keyed).
    perform app_private.enqueue_queue_drain(v_tenant);
    v_count := v_count + 1;
  end loop;
  return v_count;
end;
$$;

comment on function app_private.drain_queues_coming_on_duty(timestamptz, timestamptz) is 'For every tenant where an agent came on duty between since (excluded) and until (included): working hours that began (in the agent''s time zone), time off that ended, or a holiday that ended at midnight: enqueues a drain of its routing queue when leads are waiting (app_private.enqueue_queue_drain), so leads queued while nobody worked are routed as soon as someone starts. Returns how many tenants were looked at. Run every minute by routing__duty_drain.';
--! EndIncluded routing/drain_queues_coming_on_duty.sql
