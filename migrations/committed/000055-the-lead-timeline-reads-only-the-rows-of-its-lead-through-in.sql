--! Previous: sha1:413e288758e1eeafd8b4b2fdbe5eeeca9e0b4508
--! Hash: sha1:920eaceaf9f061a681a1d246630d1f4b1b704da9
--! Message: The lead timeline reads only the rows of its lead, through indexes led by (tenant_id, lead_id), whoever calls it (it read every enrollment of every tenant, and every table when called by the owner role); it is inlined into the API query

-- A lead's nurture enrollments, for its timeline (they were found by reading every enrollment).
create index if not exists lead_sequence_enrollments_by_lead on app_public.lead_sequence_enrollments (tenant_id, lead_id);
comment on index app_public.lead_sequence_enrollments_by_lead is 'lead_timeline: the enrollments of one lead.';

-- Without SET options, so that PostgreSQL inlines it (the options of a function cannot be changed
-- by create or replace: drop the old setting first).
alter function app_public.lead_timeline(uuid) reset all;
--! Included crm/lead_timeline.sql
create or replace function app_public.lead_timeline(lead_id uuid) returns setof app_public.lead_timeline_event
  language sql stable
  -- SECURITY INVOKER: row-level security decides what the caller sees.
  -- No SET options (every name below is schema-qualified), so that PostgreSQL inlines it into the
  -- query of the API instead of running it apart and storing all its rows first.
as $$
  -- One branch per source; a new source (messages, calls, routing decisions) is one more UNION ALL
  -- branch with the same columns. source_order and seq only break ties between equal times.
  -- Each branch names the tenant of the lead, so that its index led by (tenant_id, lead_id) applies
  -- whoever the caller is (row-level security adds the same condition for a request, but the owner
  -- role of the worker has none): a timeline reads the rows of its lead, never a whole table.
  select e.occurred_at, e.event_type, e.summary, e.details, e.actor_user_id
  from (
    -- Audit log: creation, field changes, deletion and restoration. Status, score and owner
    -- changes have their own, richer branches below.
    select a.changed_at as occurred_at, 1 as source_order, a.id as seq,
      case
        when a.field_name = '*created*' then 'created'
        when a.field_name = '*deleted*' or (a.field_name = 'deleted_at' and a.new_value is not null) then 'deleted'
        when a.field_name = '*restored*' or a.field_name = 'deleted_at' then 'restored'
        else 'field_changed'
      end as event_type,
      case
        when a.field_name = '*created*' then 'Lead created'
        when a.field_name = '*deleted*' or (a.field_name = 'deleted_at' and a.new_value is not null) then 'Lead deleted'
        when a.field_name = '*restored*' or a.field_name = 'deleted_at' then 'Lead restored'
        when a.old_value is null then
          pg_catalog.initcap(pg_catalog.left(pg_catalog.replace(a.field_name, '_', ' '), 1))
          || pg_catalog.substr(pg_catalog.replace(a.field_name, '_', ' '), 2)
          || ' set to ' || app_hidden.lead_timeline_value(a.new_value)
        when a.new_value is null then
          pg_catalog.initcap(pg_catalog.left(pg_catalog.replace(a.field_name, '_', ' '), 1))
          || pg_catalog.substr(pg_catalog.replace(a.field_name, '_', ' '), 2)
          || ' cleared (was ' || app_hidden.lead_timeline_value(a.old_value) || ')'
        else
          pg_catalog.initcap(pg_catalog.left(pg_catalog.replace(a.field_name, '_', ' '), 1))
          || pg_catalog.substr(pg_catalog.replace(a.field_name, '_', ' '), 2)
          || ' changed from ' || app_hidden.lead_timeline_value(a.old_value)
          || ' to ' || app_hidden.lead_timeline_value(a.new_value)
      end
      || case when a.change_source <> 'manual' then ' (' || a.change_source || ')' else '' end as summary,
      pg_catalog.jsonb_build_object('field', a.field_name, 'old_value', a.old_value, 'new_value', a.new_value,
        'change_source', a.change_source, 'api_key_id', a.changed_by_api_key_id) as details,
      a.changed_by_user_id as actor_user_id
    from app_public.lead_audit_log a
    where a.tenant_id = (select l.tenant_id from app_public.leads l where l.id = lead_timeline.lead_id)
      and a.lead_id = lead_timeline.lead_id
      and a.field_name not in ('status', 'lead_score', 'lead_score_factors', 'owner_user_id')

    union all

    select s.changed_at, 2, s.id,
      'status_changed',
      case when s.from_status is null then 'Status set to ' || s.to_status
           else 'Status changed from ' || s.from_status || ' to ' || s.to_status end
      || case when s.trigger_type <> 'manual' then ' (' || s.trigger_type || ')' else '' end,
      pg_catalog.jsonb_build_object('from_status', s.from_status, 'to_status', s.to_status, 'trigger_type', s.trigger_type),
      s.changed_by_user_id
    from app_public.lead_status_history s
    where s.tenant_id = (select l.tenant_id from app_public.leads l where l.id = lead_timeline.lead_id)
      and s.lead_id = lead_timeline.lead_id

    union all

    select sc.calculated_at, 3, sc.id,
      'score_changed',
      case
        when sc.previous_score is null then 'Score set to ' || sc.score
        when sc.previous_score = sc.score then 'Score factors updated (score stays ' || sc.score || ')'
        else 'Score changed from ' || sc.previous_score || ' to ' || sc.score
      end,
      pg_catalog.jsonb_build_object('score', sc.score, 'previous_score', sc.previous_score, 'factors', sc.factors),
      null::uuid
    from (
      select h.*, pg_catalog.lag(h.score) over (order by h.calculated_at, h.id) as previous_score
      from app_public.lead_score_history h
      where h.tenant_id = (select l.tenant_id from app_public.leads l where l.id = lead_timeline.lead_id)
        and h.lead_id = lead_timeline.lead_id
    ) sc

    union all

    select g.assigned_at, 4, g.id,
      'assigned',
      case
        when g.from_user_id is null then 'Assigned to ' || app_hidden.lead_timeline_member_name(g.tenant_id, g.to_user_id)
        when g.to_user_id is null then 'Unassigned from ' || app_hidden.lead_timeline_member_name(g.tenant_id, g.from_user_id)
        else 'Reassigned from ' || app_hidden.lead_timeline_member_name(g.tenant_id, g.from_user_id)
          || ' to ' || app_hidden.lead_timeline_member_name(g.tenant_id, g.to_user_id)
      end
      || case when g.strategy <> 'manual' then ' (' || pg_catalog.replace(g.strategy, '_', ' ') || ')' else '' end
      || coalesce(': ' || g.reason, ''),
      pg_catalog.jsonb_build_object('from_user_id', g.from_user_id, 'to_user_id', g.to_user_id,
        'strategy', g.strategy, 'reason', g.reason),
      g.assigned_by_user_id
    from app_public.lead_assignments g
    where g.tenant_id = (select l.tenant_id from app_public.leads l where l.id = lead_timeline.lead_id)
      and g.lead_id = lead_timeline.lead_id

    union all

    -- Texts to and from the lead.
    select coalesce(m.sent_at, m.created_at), 5, 0::bigint,
      case when m.direction = 'inbound' then 'sms_received' else 'sms_sent' end,
      case when m.direction = 'inbound' then 'Text received: '
           else 'Text ' || case m.status when 'queued' then 'queued' when 'sending' then 'sending' when 'canceled' then 'canceled'
                                         when 'failed' then 'failed' when 'undelivered' then 'undelivered' else 'sent' end
                || case when m.purpose in ('marketing', 'nurture', 'notification', 'auto_response') then ' (' || pg_catalog.replace(m.purpose, '_', ' ') || ')' else '' end
                || ': ' end
      || pg_catalog.left(m.body, 80) || case when pg_catalog.length(m.body) > 80 then '…' else '' end,
      pg_catalog.jsonb_build_object('message_id', m.id, 'direction', m.direction, 'status', m.status, 'purpose', m.purpose,
        'sender', m.sender, 'nurture_enrollment_id', m.nurture_enrollment_id, 'nurture_step', m.nurture_step),
      null::uuid
    from app_public.messages m
    where m.tenant_id = (select l.tenant_id from app_public.leads l where l.id = lead_timeline.lead_id)
      and m.lead_id = lead_timeline.lead_id

    union all

    -- Emails to the lead.
    select coalesce(em.sent_at, em.created_at), 6, 0::bigint,
      'email_sent',
      'Email ' || case em.status when 'sent' then 'sent' else em.status end
      || case when em.purpose <> 'transactional' then ' (' || em.purpose || ')' else '' end || ': ' || em.subject,
      pg_catalog.jsonb_build_object('email_message_id', em.id, 'status', em.status, 'purpose', em.purpose,
        'nurture_enrollment_id', em.nurture_enrollment_id, 'nurture_step', em.nurture_step),
      null::uuid
    from app_public.email_messages em
    where em.tenant_id = (select l.tenant_id from app_public.leads l where l.id = lead_timeline.lead_id)
      and em.lead_id = lead_timeline.lead_id and em.user_id is null

    union all

    -- Nurture: enrolled, each step, completed or stopped (times on the clock of the tenant).
    select x.occurred_at, 7, x.seq, x.event_type, x.summary, x.details, x.actor_user_id
    from app_public.lead_sequence_enrollments e
    join app_public.nurture_sequences s on s.tenant_id = e.tenant_id and s.id = e.sequence_id
    cross join lateral (
      select e.enrolled_at as occurred_at, 0::bigint as seq, 'nurture_enrolled' as event_type,
        'Enrolled in nurture sequence "' || s.name || '"' || case when e.enrolled_via <> 'manual' then ' (' || pg_catalog.replace(e.enrolled_via, '_', ' ') || ')' else '' end as summary,
        pg_catalog.jsonb_build_object('enrollment_id', e.id, 'sequence_id', s.id, 'version', e.version, 'enrolled_via', e.enrolled_via) as details,
        e.enrolled_by_user_id as actor_user_id
      union all
      select e.completed_at, 1000000::bigint, 'nurture_completed', 'Completed nurture sequence "' || s.name || '"',
        pg_catalog.jsonb_build_object('enrollment_id', e.id, 'sequence_id', s.id), null::uuid
      where e.status = 'completed'
      union all
      select e.stopped_at, 1000000::bigint, 'nurture_stopped',
        'Nurture sequence "' || s.name || '" stopped: ' || pg_catalog.replace(e.stop_reason, '_', ' '),
        pg_catalog.jsonb_build_object('enrollment_id', e.id, 'sequence_id', s.id, 'stop_reason', e.stop_reason, 'after_step', e.current_step), null::uuid
      where e.status = 'stopped'
      union all
      select r.ran_at, r.step_number::bigint, 'nurture_step',
        'Nurture "' || s.name || '" step ' || r.step_number || ' (' || r.channel || ') '
        || case when r.outcome = 'skipped' then 'skipped: ' || pg_catalog.replace(r.skip_reason, '_', ' ') else 'queued' end,
        pg_catalog.jsonb_build_object('enrollment_id', e.id, 'step_number', r.step_number, 'channel', r.channel, 'outcome', r.outcome,
          'skip_reason', r.skip_reason, 'message_id', r.message_id, 'email_message_id', r.email_message_id), null::uuid
      from app_public.nurture_step_runs r
      where r.tenant_id = e.tenant_id and r.enrollment_id = e.id
    ) x
    where e.tenant_id = (select l.tenant_id from app_public.leads l where l.id = lead_timeline.lead_id)
      and e.lead_id = lead_timeline.lead_id
  ) e
  order by e.occurred_at, e.source_order, e.seq;
$$;

comment on function app_public.lead_timeline(uuid) is $$Everything that happened to a lead, oldest first: creation, field changes, status, score, owner changes, deletion and restoration, texts sent and received, emails sent, and nurture enrollments with each step, completion or stop. Row-level security applies: you see the timeline of leads of your current tenant.$$;

grant execute on function app_public.lead_timeline(uuid) to :DATABASE_VISITOR;
--! EndIncluded crm/lead_timeline.sql
